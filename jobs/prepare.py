"""Raw Fashion-MNIST IDX files -> validated image shards.

fmnist prepare --output runs/local/shards
fmnist prepare --source gs://bucket/raw --output gs://bucket/shards --shards-per-split 16
"""

import argparse
import sys

from components.prepare.dataset import PrepareParameters, manifest_summary, prepare
from jobs.entrypoint import main_of, new_parser


def build_parser() -> argparse.ArgumentParser:
    return new_parser("fmnist prepare", __doc__.splitlines()[0], PrepareParameters)


def prepare_and_summarize(**kwargs) -> dict:
    """Prepares the data set; the result on stdout is its summary (the manifest is in the output)."""
    return manifest_summary(kwargs["output"], prepare(**kwargs))


main = main_of(build_parser, prepare_and_summarize)

if __name__ == "__main__":
    sys.exit(main())
