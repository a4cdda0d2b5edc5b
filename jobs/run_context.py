"""A scheduled run's logical date -> the partition date, shards glob and run id it scores.

fmnist run-context --scheduled-time 2026-11-29T03:00:00Z --date-offset-days -1 --shards-template 'gs://b/in/{date}/*'
"""

import argparse
import sys

from components.cloud.run_context import RunContextParameters, run_context
from jobs.entrypoint import main_of, new_parser


def build_parser() -> argparse.ArgumentParser:
    return new_parser("fmnist run-context", __doc__.splitlines()[0], RunContextParameters)


main = main_of(build_parser, run_context)

if __name__ == "__main__":
    sys.exit(main())
