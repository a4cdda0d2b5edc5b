"""Scoring tables -> one self-contained HTML report (trend, class mix, calibration, accuracy, errors, thumbnails).

fmnist report --scores runs/local/scores --out runs/local/report --days 14
fmnist report --scores gs://bucket/scores --run-date 2026-11-28 --out gs://bucket/reports/2026-11-28
fmnist report --scores runs/local/scores --run-id RUN --baseline-run OLDER_RUN --out report/
"""

import argparse
import sys

from components.report import report
from jobs.runner import main_of, new_parser, uri


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser("fmnist report", __doc__.splitlines()[0])
    parser.add_argument(
        "--scores",
        "--predictions",
        dest="scores",
        type=uri,
        required=True,
        help="the scoring output root (the --output given to `fmnist score`); --predictions is a deprecated alias",
    )
    parser.add_argument("--out", type=uri, required=True, help="folder for report.html and summary.json")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--run-id", dest="run_id", help="the run to report on (default: the latest complete run)")
    which.add_argument("--run-date", dest="run_date", help="report on every complete run of this day (YYYY-MM-DD)")
    parser.add_argument(
        "--baseline-run",
        dest="baseline_run",
        help="the run to compare with on the images both scored (default: the previous complete run, "
        "i.e. the current run of the latest earlier run date; `none` for no comparison)",
    )
    parser.add_argument("--days", type=int, help="run dates in the trend section, ending at the report's (default 14)")
    parser.add_argument(
        "--manifest",
        type=uri,
        help="data set manifest.json (or its folder) holding the training class histogram "
        "(default: the manifest beside the scored shards)",
    )
    parser.add_argument("--lowest", type=int, help="how many lowest-confidence images to show (default 24)")
    parser.add_argument("--wrong", type=int, help="how many confidently wrong images to show, labeled runs (default 24)")
    return parser


def report_and_print(**kwargs) -> dict:
    """Writes the report, prints the terminal summary, and returns where everything went."""
    result = report(**kwargs)
    print(result.terminal, flush=True)
    return {"report": result.report_uri, "summary": result.summary_uri}


main = main_of(build_parser, report_and_print)

if __name__ == "__main__":
    sys.exit(main())
