"""Error types that jobs map to exit codes (see jobs/entrypoint.py), and how SIGTERM becomes one."""

import contextlib
import threading
from collections.abc import Iterator


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


_termination = {"deferring": 0, "pending": None}  # signal handlers run in the main thread only


def raise_terminated(signum: int, _frame=None) -> None:
    """Every job's SIGTERM handler: Terminated now, or at the end of a `termination_deferred` block."""
    if _termination["deferring"]:
        _termination["pending"] = signum
        return
    raise Terminated(f"signal {signum}")


@contextlib.contextmanager
def termination_deferred() -> Iterator[None]:
    """Holds a SIGTERM back until the block is done, for work that must not stop half-way: a
    lease created but not yet in the hands of the code that releases it. The signal is raised
    as Terminated when the block ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _termination["deferring"] += 1
    try:
        yield
    finally:
        _termination["deferring"] -= 1
    if not _termination["deferring"] and _termination["pending"] is not None:
        signum, _termination["pending"] = _termination["pending"], None
        raise Terminated(f"signal {signum}")
