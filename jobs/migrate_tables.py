"""Scoring output of table contract v1 (run_id inside the files) -> contract v2, in place, run by run.

fmnist migrate-tables --scores runs/local/scores
"""

import argparse
import sys

from components.analysts.migration import MigrateTablesParameters, migrate_tables
from jobs.entrypoint import main_of, new_parser


def build_parser() -> argparse.ArgumentParser:
    return new_parser("fmnist migrate-tables", __doc__.splitlines()[0], MigrateTablesParameters)


main = main_of(build_parser, migrate_tables)

if __name__ == "__main__":
    sys.exit(main())
