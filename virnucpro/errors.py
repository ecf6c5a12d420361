"""Errors a user can act on. The CLI prints them as one line and exits 2 (input/usage), 3 (the
machine's: a full disk, a read-only file system, missing permissions) or 1."""

import errno

# OSErrors that are the machine's, not a bug: full disk or quota, read-only or forbidden paths
ENVIRONMENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})
ENVIRONMENT_EXIT = 3        # as `virnucpro models download` exits on network trouble: fix it, run again

# errno -> (what happened, what to do)
_CAUSES = {
    errno.ENOSPC: ("no space left on the device", "free disk space"),
    errno.EDQUOT: ("disk quota exceeded", "free space within your quota"),
    errno.EROFS: ("read-only file system", "write to a writable place"),
    errno.EACCES: ("permission denied", "fix the permissions or choose another place"),
    errno.EPERM: ("operation not permitted", "fix the permissions or choose another place"),
}


def is_environment_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in ENVIRONMENT_ERRNOS


def environment_message(exc: OSError, resumable: bool) -> str:
    """One line for an environment error: its actual cause, the path, what to do; ``--resume``
    only where a run left checkpoints to resume from."""
    cause, advice = _CAUSES.get(exc.errno, (exc.strerror or str(exc), "fix it"))
    where = f": {exc.filename}" if exc.filename else ""
    then = ("then rerun the same command with --resume: the finished work units are kept" if resumable
            else "then rerun")
    return f"{cause}{where} ({advice}, {then})"


class VirnucproError(Exception):
    """Base class: message is shown to the user as-is, without a traceback."""

    exit_code = 1


class InputError(VirnucproError):
    """Bad input file or bad usage (exit code 2)."""

    exit_code = 2


class ModelError(VirnucproError):
    """A model file is missing, malformed, unsafe, or does not fit the run (exit code 2)."""

    exit_code = 2


class EnvironmentProblem(VirnucproError):
    """The machine refused a write (disk full, read-only, no permission): fix it and rerun (exit 3)."""

    exit_code = ENVIRONMENT_EXIT
