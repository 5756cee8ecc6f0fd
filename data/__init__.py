"""CIFAR-10/100 and image-folder data sets packed as RecordIO, and the iterators that read them.

Modules (kept import-light: nothing here loads MXNet until an iterator is built):

* ``prepare_cifar`` -- the ``mxcnn-prepare-cifar`` CLI: official archives (python/binary),
  their folders or class-per-folder trees -> ``NAME_{train,val}.{rec,idx,lst}`` + stats.
* ``im2rec`` -- the ``im2rec`` CLI: images of any size (a tree, an archive or im2rec
  ``.lst`` files, listed by ``image_lists``) resized, centre-cropped and packed by worker
  processes (``packing``).
* ``iterators`` -- ``get_rec_iters`` (in-memory or ``ImageRecordIter`` backend, CIFAR or
  ImageNet-style augmentation, exact per-epoch determinism, sharding) and ``SyntheticIter``.
* ``prefetch`` -- the background batch producer of the in-memory iterator (GPU runs).
* ``sources`` / ``recfile`` / ``safety`` -- reading sources, RecordIO files, and the
  restricted unpickler + archive member checks; ``errors.DataError`` for bad input.
"""
