"""A background producer with a bounded queue, for iterators that assemble batches ahead."""
import queue
import threading
import weakref
from typing import Any

__all__ = ["Prefetcher"]


class Prefetcher:
    """Calls ``produce(k)`` for k = 0 .. count-1 on a background thread, at most ``depth``
    results ahead of :meth:`get`; an exception in ``produce`` is raised by the next get.

    ``produce`` is held as a ``weakref.WeakMethod``: the thread ends when its iterator is
    garbage-collected, so an abandoned iterator leaves no thread behind.
    """

    def __init__(self, produce, count, depth):
        self._queue = queue.Queue(maxsize=max(1, int(depth)))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="mxcnn-prefetch",
                                        args=(weakref.WeakMethod(produce), count))
        self._thread.start()

    def _put(self, item):
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, produce, count):
        try:
            for k in range(count):
                method = produce()
                if method is None or self._stop.is_set():
                    return
                item, method = method(k), None
                if not self._put((True, item)):
                    return
        except BaseException as exc:  # handed to the consumer, which raises it
            self._put((False, exc))

    def get(self) -> Any:
        ok, item = self._queue.get()
        if not ok:
            raise item
        return item

    def close(self) -> None:
        """Stop the thread (it notices within 50 ms) and wait for it."""
        self._stop.set()
        self._thread.join()
