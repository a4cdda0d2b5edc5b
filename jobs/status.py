"""Did every night produce its tables? One line per run date; exit 0 when each has an ok run, else 3.

    fmnist status --scores gs://b/scores                       # the 7 run dates up to yesterday (UTC)
    fmnist status --scores runs/local/scores --days 3 --as-of 2026-11-28 --json

States: ok, late (ok, finished after --late-after-hours), failed (a failure record or a run that
failed its own check), missing (no summary); the window is stale when its newest ok run's date is
more than --stale-days old. Exit 3 names the dates that are not ok: cron or an uptime check pages on it.
"""

import argparse
import sys
from json import dumps

from components.analysts.run_status import StatusParameters, check_status, format_status, run_status
from jobs.entrypoint import main_of, new_parser


def build_parser() -> argparse.ArgumentParser:
    return new_parser("fmnist status", __doc__.splitlines()[0], StatusParameters)


def show_status(*, json: bool = False, **kwargs) -> None:
    """Prints the status (lines, or one JSON object on stdout), then exits 3 unless every date is ok."""
    status = run_status(**kwargs)
    print(dumps(status) if json else format_status(status), flush=True)
    check_status(status)


main = main_of(build_parser, show_status)

if __name__ == "__main__":
    sys.exit(main())
