"""Product pictures (PNG/JPEG, any size or colour) -> unlabeled scoring shards.

fmnist prepare-images --images 'photos/*.jpg' --output runs/local/photo-shards
"""

import argparse
import sys

from components.io.storage import join
from components.prepare.dataset import manifest_summary
from components.prepare.product_images import REJECTS_NAME, PrepareImagesParameters, prepare_images
from jobs.entrypoint import main_of, new_parser


def build_parser() -> argparse.ArgumentParser:
    return new_parser("fmnist prepare-images", __doc__.splitlines()[0], PrepareImagesParameters)


def prepare_images_and_summarize(**kwargs) -> dict:
    """Prepares the shards; the result on stdout is the data set's summary and where the rejects are."""
    manifest = prepare_images(**kwargs)
    return {
        **manifest_summary(kwargs["output"], manifest),
        "rejected": manifest.source["rejected"],
        "rejects": join(kwargs["output"], REJECTS_NAME),
    }


main = main_of(build_parser, prepare_images_and_summarize)

if __name__ == "__main__":
    sys.exit(main())
