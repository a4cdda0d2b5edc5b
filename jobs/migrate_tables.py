"""Scoring output of table contract v1 (run_id inside the files) -> contract v2, in place, run by run.

fmnist migrate-tables --scores runs/local/scores
"""

import argparse
import sys

from components.migration import migrate_tables
from jobs.runner import main_of, new_parser


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser("fmnist migrate-tables", __doc__.splitlines()[0])
    parser.add_argument("--scores", required=True, help="the scoring output root (the --output given to `fmnist score`)")
    return parser


main = main_of(build_parser, migrate_tables)

if __name__ == "__main__":
    sys.exit(main())
