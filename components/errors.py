"""Error types that jobs map to exit codes (see jobs/runner.py)."""


class InputError(Exception):
    """Bad arguments or bad input data: reported as one line, exit code 2, nothing published."""


class CheckFailed(Exception):
    """The run finished, but its result fails a check the scheduler must see (exit code 3).

    Examples: a model below the quality gate, a scoring run above its error-rate limit.
    Everything the run wrote stays for inspection; nothing is published as good.
    """


class Terminated(BaseException):
    """The process was asked to stop (SIGTERM from a scheduler or pod eviction).

    A BaseException, so that no `except Exception` swallows it: every `finally` on the way
    out runs (staging removed, leases released) and the entry point exits 143.
    """


class RunConflict(Exception):
    """Another live attempt holds the run (its lease): one line, exit code 2, nothing published."""
