"""Product pictures (PNG/JPEG, any size or colour) -> unlabeled scoring shards.

    fmnist prepare-images --images 'photos/*.jpg' --output runs/local/photo-shards
"""
import argparse
import sys

from components.prepare_images import prepare_images
from jobs.runner import main_of, new_parser, uri


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser("fmnist prepare-images", __doc__.splitlines()[0])
    parser.add_argument("--images", type=uri, required=True, help="glob, folder or gs:// prefix of pictures")
    parser.add_argument("--output", type=uri, required=True, help="where the shards, manifest.json and rejects.jsonl go")
    parser.add_argument("--overwrite", action="store_true", help="replace a complete data set at --output")
    parser.add_argument("--workers", type=int, help="decoding processes (default: all cores)")
    return parser


main = main_of(build_parser, prepare_images)

if __name__ == "__main__":
    sys.exit(main())
