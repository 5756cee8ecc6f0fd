"""The one exception type for problems the user can fix (bad input, a missing GPU, a path)."""
import sys

__all__ = ["UserError", "cli_error"]


class UserError(ValueError):
    """Bad input or an environment problem; the message names it and says what to do.

    Subclasses ``ValueError`` so that library callers that catch ``ValueError`` keep
    working, but every CLI catches ``UserError`` alone: a plain ``ValueError`` from deep
    inside is a bug and must show its traceback.
    """


def cli_error(prog, message, code=2):
    """Print ``prog: error: <first line of message>`` to stderr and return ``code``."""
    text = str(message).strip()
    print("%s: error: %s" % (prog, text.splitlines()[0] if text else repr(message)), file=sys.stderr)
    return code
