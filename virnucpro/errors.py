"""Errors a user can act on. The CLI prints them as one line and exits 2 (input/usage) or 1."""

import errno

# OSErrors that are the machine's, not a bug: full disk or quota, read-only or forbidden paths
ENVIRONMENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})
STORAGE_ADVICE = ("free disk space or fix permissions, then rerun; a fast-engine run keeps its finished work "
                  "units: add --resume")


def is_environment_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in ENVIRONMENT_ERRNOS


class VirnucproError(Exception):
    """Base class: message is shown to the user as-is, without a traceback."""

    exit_code = 1


class InputError(VirnucproError):
    """Bad input file or bad usage (exit code 2)."""

    exit_code = 2


class ModelError(VirnucproError):
    """A model file is missing, malformed, unsafe, or does not fit the run (exit code 2)."""

    exit_code = 2
