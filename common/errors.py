"""The one exception type for problems the user can fix (bad input, a missing GPU, a path)."""
import sys
from collections.abc import Iterable

__all__ = ["UserError", "cli_error", "error_line", "short_list"]


class UserError(ValueError):
    """Bad input or an environment problem; the message names it and says what to do.

    Subclasses ``ValueError`` so that library callers that catch ``ValueError`` keep
    working, but every CLI catches ``UserError`` alone: a plain ``ValueError`` from deep
    inside is a bug and must show its traceback.
    """


def cli_error(prog: str, message: object, code: int = 2) -> int:
    """Print ``prog: error: <first line of message>`` to stderr and return ``code``."""
    text = str(message).strip()
    print("%s: error: %s" % (prog, text.splitlines()[0] if text else repr(message)), file=sys.stderr)
    return code


#: Words that mark the informative line of an MXNet (or Graphviz) error message.
_TELLING = ("Check failed", "Error in operator", "shape")


def error_line(err: BaseException | str, limit: int = 400) -> str:
    """The informative line of an MXNet error (the failed check or the operator in error),
    else its first non-empty line; at most ``limit`` characters, for one-line messages."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    telling = [line for line in lines if any(word in line for word in _TELLING)]
    return (telling or lines or ["unknown error"])[0][:limit]


def short_list(names: Iterable[str], limit: int = 8) -> str:
    """``a, b, c ... (N more)``: at most ``limit`` names, for messages."""
    names = list(names)
    more = " ... (%d more)" % (len(names) - limit) if len(names) > limit else ""
    return ", ".join(names[:limit]) + more
