"""What every job shares: flag parsing conventions, logging, and exit codes.

Exit codes: 0 success, 2 bad input or arguments (one line on stderr, nothing published),
1 an unexpected failure (with its traceback), 3 a completed run that failed its own check
(quality gate, error-rate limit).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from components.errors import CheckFailed, InputError, RunConflict
from components.storage import StorageConflictError

EXIT_OK, EXIT_UNEXPECTED, EXIT_BAD_INPUT, EXIT_CHECK_FAILED = 0, 1, 2, 3


class OneLineErrorParser(argparse.ArgumentParser):
    """Reports a bad flag in one line (not argparse's usage block), exit 2: the error contract."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"error: {self.prog}: {message} (see --help)\n")


def new_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """A parser whose unset flags stay unset, so the component's defaults apply."""
    return OneLineErrorParser(prog=prog, description=description, argument_default=argparse.SUPPRESS)


def run(component: Callable[..., Any], kwargs: dict[str, Any]) -> int:
    """Calls the component, prints its JSON result on stdout, and maps failures to exit codes."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        result = component(**kwargs)
    except (InputError, RunConflict, StorageConflictError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except CheckFailed as error:
        print(f"failed: {error}", file=sys.stderr)
        return EXIT_CHECK_FAILED
    except Exception:  # the catch-all of a process entry point: report, then exit 1
        logging.getLogger(component.__module__).exception("unexpected failure")
        return EXIT_UNEXPECTED
    if result is not None:
        print(json.dumps(result, default=str))
    return EXIT_OK


def main_of(parser_factory: Callable[[], argparse.ArgumentParser], component: Callable[..., Any]):
    """Builds a `main(argv)` that parses flags named like the component's keywords and runs it."""

    def main(argv: Sequence[str] | None = None) -> int:
        args = parser_factory().parse_args(argv)
        return run(component, vars(args))

    return main
