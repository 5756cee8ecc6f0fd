"""Helpers every package shares: atomic files, usable cores, the user-error type.

Import-light on purpose (no MXNet): ``mxcnn.common.runtime.configure()`` must run before MXNet
loads, and ``data``/``symbols``/``graph`` import this at package import time.

* :func:`atomic_write` / :func:`atomic_write_text` -- a file appears whole or not at all,
  with the permissions the user's umask gives; :class:`FileSet` -- a group of files
  replaced as a unit by one rename; :func:`file_digest` / :func:`digest_mismatch` -- what a
  manifest records of a file, and whether it still holds (``files``).
* :func:`usable_cores` -- the cores this process may run on (``system``).
* :class:`UserError` -- bad input or an environment problem: every CLI prints it as one
  line and exits 2; any other exception is a bug and keeps its traceback (``errors``).
"""
from .errors import UserError, cli_error, error_line, short_list
from .files import (
    TMP_SUFFIX,
    FileSet,
    atomic_write,
    atomic_write_text,
    digest_mismatch,
    file_digest,
    stale_temp_files,
    umask,
)
from .system import usable_cores

__all__ = ["UserError", "cli_error", "error_line", "short_list", "TMP_SUFFIX", "FileSet",
           "atomic_write", "atomic_write_text", "stale_temp_files", "file_digest",
           "digest_mismatch", "umask", "usable_cores"]
