"""The one exception the data package raises for bad input (missing, corrupt or unsafe files)."""
from mxcnn import common


class DataError(common.UserError):
    """A data file or folder cannot be used; the message names it and says how to fix it.

    Command-line tools print the message as one line and exit with status 2.
    """
