"""Ordinary product pictures (PNG/JPEG, any size or colour) -> unlabeled scoring shards."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os

import numpy as np

from components.contracts.manifest import Manifest, SplitEntry
from components.contracts.parameters import parameter
from components.contracts.shards import write_shard
from components.errors import InputError
from components.io import storage
from components.io.images import ImageError, to_model_image
from components.prepare.dataset import (
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
    overwrite: bool = parameter(False, help="replace a complete data set at --output")
    workers: int | None = parameter(None, help="decoding processes", default_help="all cores")


def prepare_images(
    *,
    images: str,
    output: str,
    overwrite: bool = PrepareImagesParameters.overwrite,
    workers: int | None = PrepareImagesParameters.workers,
) -> Manifest:
    """Converts every picture matching the `images` glob (or below a folder) into shards.

    Pictures that cannot be read go to `{output}/rejects.jsonl` with the reason; they do
    not abort the run. Returns the manifest (written last).
    """
    uris = find_images(images)
    refuse_complete_output(output, overwrite=overwrite)  # early: before the pictures are decoded
    storage.ensure_writable(output)
    with exclusive_output(output):
        refuse_complete_output(output, overwrite=overwrite)  # again: a run may have finished meanwhile
        return _write_data_set(images, output, uris, workers)


def _write_data_set(images: str, output: str, uris: list[str], workers: int | None) -> Manifest:
    converted = run_parallel(convert_image, uris, workers=workers)

    image_ids, pixels, rejects = [], [], []
    seen: dict[str, str] = {}
    for uri, result in zip(uris, converted):
        image_id = os.path.splitext(storage.basename(uri))[0]
        if isinstance(result, str):
            rejects.append({"uri": uri, "reason": result})
        elif image_id in seen:
            rejects.append({"uri": uri, "reason": f"duplicate image_id {image_id!r} (also {seen[image_id]})"})
        else:
            seen[image_id] = uri
            image_ids.append(image_id)
            pixels.append(result)
    if not image_ids:
        raise InputError(f"{images}: none of the {len(uris)} matching files is a readable picture")

    shard_count = math.ceil(len(image_ids) / IMAGES_PER_SHARD)
    tasks = shard_tasks(output, UNLABELED_SPLIT, image_ids, np.stack(pixels), None, shard_count)
    storage.delete(storage.join(output, "manifest.json"))  # unpublish before rewriting
    entries = run_parallel(write_shard, tasks, workers=workers)
    storage.write_bytes(storage.join(output, REJECTS_NAME), "".join(json.dumps(r) + "\n" for r in rejects).encode())
    manifest = Manifest.new(
        source={"uri": images, "files_matched": len(uris), "rejected": len(rejects)},
        splits={UNLABELED_SPLIT: SplitEntry(num_records=len(image_ids), class_histogram=None, shards=entries)},
    )
    publish_manifest(output, manifest)
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


def convert_image(uri: str) -> np.ndarray | str:
    """The 28x28 model image of one picture, or the reason it cannot be one."""
    try:
        return to_model_image(storage.read_bytes(uri))
    except (ImageError, InputError) as error:
        return f"{getattr(error, 'error_type', 'read_error')}: {error}"
