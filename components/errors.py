"""The one error type that means "the caller's input is wrong" (exit code 2)."""


class InputError(Exception):
    """Bad arguments or bad input data: reported as one line, exit code 2, nothing published."""
