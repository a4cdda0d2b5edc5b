"""Scoring tables -> one self-contained HTML report (trend, class mix, calibration, accuracy, errors, thumbnails).

fmnist report --scores runs/local/scores --out runs/local/report --days 14
fmnist report --scores gs://bucket/scores --run-date 2026-11-28 --out gs://bucket/reports/2026-11-28
fmnist report --scores runs/local/scores --run-id RUN --baseline-run OLDER_RUN --out report/
"""

import argparse
import sys

from components.analysts.report import ReportParameters, report
from jobs.entrypoint import main_of, new_parser


def build_parser() -> argparse.ArgumentParser:
    return new_parser("fmnist report", __doc__.splitlines()[0], ReportParameters)


def report_and_print(**kwargs) -> dict:
    """Writes the report, prints the terminal summary, and returns where everything went."""
    result = report(**kwargs)
    print(result.terminal, flush=True)
    return {"report": result.report_uri, "summary": result.summary_uri}


main = main_of(build_parser, report_and_print)

if __name__ == "__main__":
    sys.exit(main())
