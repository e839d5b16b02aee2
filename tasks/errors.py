"""One base for the errors bakeoff reports as one line (`bakeoff: MESSAGE` on stderr) and an exit code.

The CLI maps any BakeoffError to its message and `exit_code`; nothing else reaches the user as a
traceback-free line, so a bug still shows its traceback.
"""

from __future__ import annotations


class BakeoffError(Exception):
    """An error whose message is one line for the user; `exit_code` is what the CLI exits with."""

    exit_code = 1


class BadInput(BakeoffError):
    """The user's input (a file, a field, a value, their setup) cannot be used: exit 2."""

    exit_code = 2


class Busy(BakeoffError):
    """Something is held by another process; the same command can succeed later: EX_TEMPFAIL."""

    exit_code = 75


class NightFailed(BakeoffError):
    """The night ran but did not end clean (the validation gate refused or rejected rows): exit 1."""

    exit_code = 1


class BrokenInstall(BakeoffError):
    """bakeoff's own files are wrong (a packaging fault, not the user's input): exit 1, reinstall."""

    exit_code = 1
