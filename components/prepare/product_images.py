"""Ordinary product pictures (PNG/JPEG, any size or colour) -> unlabeled scoring shards."""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
import logging
import math
import os

import numpy as np

from components.contracts.manifest import Manifest, SplitEntry
from components.contracts.parameters import parameter
from components.errors import InputError
from components.io import storage
from components.io.images import ImageError, to_model_image
from components.prepare.dataset import (
    OutputFence,
    exclusive_output,
    publish_manifest,
    refuse_complete_output,
    run_parallel,
    shard_tasks,
)

log = logging.getLogger(__name__)

UNLABELED_SPLIT = "unlabeled"
REJECTS_NAME = "rejects.jsonl"
IMAGES_PER_SHARD = 10_000


@dataclasses.dataclass(frozen=True)
class PrepareImagesParameters:
    """`fmnist prepare-images`: product pictures -> unlabeled scoring shards."""

    images: str = parameter(help="glob, folder or gs:// prefix of pictures", location=True)
    output: str = parameter(help="where the shards, manifest.json and rejects.jsonl go", location=True)
    keys: str | None = parameter(
        None,
        help="CSV with columns `image` (a picture's path or URI as matched, or its absolute URI) and `key` "
        "(its product key, which becomes its image_id); a picture without a key is rejected",
        location=True,
    )
    overwrite: bool = parameter(False, help="replace a complete data set at --output")
    workers: int | None = parameter(None, help="decoding processes", default_help="all cores")


def prepare_images(
    *,
    images: str,
    output: str,
    keys: str | None = PrepareImagesParameters.keys,
    overwrite: bool = PrepareImagesParameters.overwrite,
    workers: int | None = PrepareImagesParameters.workers,
) -> Manifest:
    """Converts every picture matching the `images` glob (or below a folder) into shards.

    Each record keeps where its picture came from (`image/uri`: the file's absolute URI), so
    predictions join to product data. Its `image_id` is the file's path below the glob's fixed
    folder without extension (`photos/**/*.jpg`: `shirts/red` for `photos/shirts/red.jpg`), or
    the product key the `keys` CSV gives it. Pictures that cannot be read, have no key or
    repeat an id go to `{output}/rejects.jsonl` with the reason; they do not abort the run.
    Returns the manifest (written last).
    """
    uris = find_images(images)
    product_keys = read_product_keys(keys) if keys else None
    refuse_complete_output(output, overwrite=overwrite)  # early: before the pictures are decoded
    storage.ensure_writable(output)
    with exclusive_output(output):
        refuse_complete_output(output, overwrite=overwrite)  # again: a run may have finished meanwhile
        return _write_data_set(images, output, uris, product_keys, workers)


def _write_data_set(
    images: str, output: str, uris: list[str], product_keys: dict[str, str] | None, workers: int | None
) -> Manifest:
    converted = run_parallel(convert_image, uris, workers=workers)

    image_ids, image_uris, pixels, rejects = [], [], [], []
    seen: dict[str, str] = {}
    base = fixed_folder(images, uris)
    for uri, result in zip(uris, converted):
        image_uri = storage.absolute_uri(uri)
        if product_keys is None:
            image_id = path_id(base, uri)
        else:
            image_id = product_keys.get(uri) or product_keys.get(image_uri)
        if isinstance(result, str):
            rejects.append({"uri": uri, "reason": result})
        elif not image_id:
            rejects.append({"uri": uri, "reason": "no_key: the keys file names no product key for it"})
        elif image_id in seen:
            rejects.append({"uri": uri, "reason": f"duplicate image_id {image_id!r} (also {seen[image_id]})"})
        else:
            seen[image_id] = uri
            image_ids.append(image_id)
            image_uris.append(image_uri)
            pixels.append(result)
    if not image_ids:
        raise InputError(f"{images}: none of the {len(uris)} matching files is a readable picture")

    shard_count = math.ceil(len(image_ids) / IMAGES_PER_SHARD)
    tasks = shard_tasks(output, UNLABELED_SPLIT, image_ids, np.stack(pixels), None, shard_count, image_uris=image_uris)
    with OutputFence(output) as fence:
        fence.unpublish()
        entries = fence.write_shards(tasks, workers=workers)
        fence.write(REJECTS_NAME, "".join(json.dumps(r) + "\n" for r in rejects).encode())
        manifest = Manifest.new(
            source={"uri": images, "files_matched": len(uris), "rejected": len(rejects)},
            splits={UNLABELED_SPLIT: SplitEntry(num_records=len(image_ids), class_histogram=None, shards=entries)},
        )
        publish_manifest(output, manifest, fence)
    for reject in rejects:
        log.warning("rejected %s: %s", reject["uri"], reject["reason"])
    return manifest


def find_images(pattern: str) -> list[str]:
    """Files matching a glob; a plain folder or bucket prefix means every file below it."""
    uris = storage.glob(pattern)
    if not uris and not any(c in pattern for c in "*?["):
        uris = storage.list_prefix(pattern)
    if not uris:
        raise InputError(f"{pattern}: no file matches")
    return uris


def fixed_folder(pattern: str, uris: list[str]) -> str:
    """The folder a glob's matches are named below: its segments before the first wildcard
    (`photos/**/*.jpg` -> `photos`); a folder itself; the folder of a single named file."""
    segments = pattern.rstrip("/").split("/")
    fixed = list(itertools.takewhile(lambda segment: not any(c in segment for c in "*?["), segments))
    if len(fixed) == len(segments) and uris == [pattern]:
        fixed = fixed[:-1]
    return "/".join(fixed)


def path_id(base: str, uri: str) -> str:
    """A picture's id: its path below `base` without extension (the file name when directly in it)."""
    relative = uri[len(base) + 1 :] if base and uri.startswith(base + "/") else storage.basename(uri)
    return os.path.splitext(relative)[0]


def read_product_keys(keys: str) -> dict[str, str]:
    """The `image` -> `key` mapping of a user's CSV (UTF-8, a header row naming both columns)."""
    try:
        rows = list(csv.DictReader(io.StringIO(storage.read_bytes(keys).decode("utf-8-sig"))))
    except (UnicodeDecodeError, csv.Error) as error:
        raise InputError(f"{keys}: not a UTF-8 CSV file ({error})") from error
    if not rows or not {"image", "key"} <= set(rows[0]):
        raise InputError(f"{keys}: expected a header with the columns `image` and `key`, and a row per picture")
    mapping: dict[str, str] = {}
    for line, row in enumerate(rows, start=2):
        image, key = (row.get("image") or "").strip(), (row.get("key") or "").strip()
        if not image or not key:
            raise InputError(f"{keys}: line {line} has an empty `image` or `key`")
        if image in mapping and mapping[image] != key:
            raise InputError(f"{keys}: line {line} gives {image} a second key {key!r} (also {mapping[image]!r})")
        mapping[image] = key
    return mapping


def convert_image(uri: str) -> np.ndarray | str:
    """The 28x28 model image of one picture, or the reason it cannot be one."""
    try:
        return to_model_image(storage.read_bytes(uri))
    except (ImageError, InputError) as error:
        return f"{getattr(error, 'error_type', 'read_error')}: {error}"
