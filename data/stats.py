"""The per-channel statistics files (``NAME_stats.json``) that data/prepare_cifar.py writes
beside ``NAME_train.rec`` / ``NAME_val.rec``: finding and validating them."""
import json
import os
from typing import Any

from mxcnn.data.errors import DataError

__all__ = ["load_stats", "stats_files_beside"]


def stats_files_beside(rec_path: str | os.PathLike[str]) -> list[str]:
    """Stats files that describe ``rec_path`` by name: ``NAME_stats.json`` for
    ``NAME_train.rec``, ``NAME_val.rec``, ``NAME_test.rec`` or ``NAME.rec``."""
    stem = os.path.splitext(os.fspath(rec_path))[0]
    names = [stem[:-len(s)] for s in ("_train", "_val", "_test") if stem.endswith(s)] + [stem]
    return [n + "_stats.json" for n in names if os.path.isfile(n + "_stats.json")]


def load_stats(stats: str | os.PathLike[str] | dict[str, Any] | None,
               rec_path: str | os.PathLike[str] | None = None) -> dict[str, Any] | None:
    """The stats dict from a path, a dict, or (None) the ``<prefix>_stats.json`` beside
    ``rec_path``; None when there is none.  DataError for an unreadable or invalid file."""
    source = "stats"
    if stats is None:
        beside = stats_files_beside(rec_path) if rec_path else []
        if not beside:
            return None
        stats = beside[0]
    if isinstance(stats, (str, os.PathLike)):
        source = os.fspath(stats)
        try:
            with open(source) as f:
                stats = json.load(f)
        except OSError as exc:
            raise DataError("cannot read stats file %s (%s)" % (source, exc.strerror)) from None
        except ValueError as exc:
            raise DataError("%s is not valid JSON (%s); convert the data again" % (source, exc)) from None
    if not isinstance(stats, dict):
        raise DataError("%s must be a dict with 'mean' and 'std'" % source)
    for key in ("mean", "std"):
        value = stats.get(key)
        if not isinstance(value, (list, tuple)) or len(value) != 3:
            raise DataError("%s: %r must list 3 per-channel values (R, G, B)" % (source, key))
    if min(float(v) for v in stats["std"]) <= 0:
        raise DataError("%s: 'std' values must be positive" % source)
    stats = dict(stats)
    stats.setdefault("_source", source)
    return stats
