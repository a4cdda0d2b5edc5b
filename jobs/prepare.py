"""Raw Fashion-MNIST IDX files -> validated image shards.

fmnist prepare --output runs/local/shards
fmnist prepare --source gs://bucket/raw --output gs://bucket/shards --shards-per-split 16
"""

import argparse
import sys

from components.constants import DEFAULT_SOURCE
from components.prepare import manifest_summary, prepare
from jobs.runner import main_of, new_parser, uri


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser("fmnist prepare", __doc__.splitlines()[0])
    parser.add_argument(
        "--source", type=uri, help=f"folder, gs:// or https:// prefix with the IDX files (default {DEFAULT_SOURCE})"
    )
    parser.add_argument("--output", type=uri, required=True, help="where the shards and manifest.json go")
    parser.add_argument("--shards-per-split", dest="shards_per_split", type=int, help="shards per split (default 8)")
    parser.add_argument("--overwrite", action="store_true", help="replace a complete data set at --output")
    parser.add_argument(
        "--allow-unknown-source",
        dest="allow_unknown_source",
        action="store_true",
        help="accept IDX files whose content is not the published data set",
    )
    parser.add_argument("--workers", type=int, help="encoding processes (default: all cores)")
    return parser


def prepare_and_summarize(**kwargs) -> dict:
    """Prepares the data set; the result on stdout is its summary (the manifest is in the output)."""
    return manifest_summary(kwargs["output"], prepare(**kwargs))


main = main_of(build_parser, prepare_and_summarize)

if __name__ == "__main__":
    sys.exit(main())
