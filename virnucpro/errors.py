"""Errors a user can act on. The CLI prints them as one line and exits 2 (input/usage) or 1."""


class VirnucproError(Exception):
    """Base class: message is shown to the user as-is, without a traceback."""

    exit_code = 1


class InputError(VirnucproError):
    """Bad input file or bad usage (exit code 2)."""

    exit_code = 2


class ModelError(VirnucproError):
    """A model file is missing, malformed, unsafe, or does not fit the run (exit code 2)."""

    exit_code = 2
