"""The image-shard contract: tf.train.Example records in TFRecord files plus a manifest.

Shards are named `{split}-{i:05d}-of-{n:05d}.tfrecord`; `manifest.json` is written last, so
a prefix without a manifest is not (yet) a data set.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Sequence

import numpy as np

from components import storage
from components.constants import (
    FEATURE_FORMAT,
    FEATURE_IMAGE,
    FEATURE_IMAGE_ID,
    FEATURE_LABEL,
    MANIFEST_NAME,
    NUM_CLASSES,
    SHARD_SCHEMA_VERSION,
)
from components.errors import InputError
from components.images import encode_png
from components.tfrecord import frame_record

SHARD_NAME_RE = re.compile(r"^(?P<split>[a-z0-9_]+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.tfrecord$")


def shard_name(split: str, index: int, count: int) -> str:
    """The contract's file name of shard `index` of `count` in a split."""
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def serialize_example(image_id: str, png: bytes, label: int | None, image_format: bytes = b"png") -> bytes:
    """One tf.train.Example record (deterministic bytes for deterministic shards)."""
    from tensorflow.core.example import example_pb2  # TF's own proto: the canonical encoding

    example = example_pb2.Example()
    feature = example.features.feature
    feature[FEATURE_IMAGE_ID].bytes_list.value.append(image_id.encode())
    feature[FEATURE_IMAGE].bytes_list.value.append(png)
    feature[FEATURE_FORMAT].bytes_list.value.append(image_format)
    if label is not None:
        feature[FEATURE_LABEL].int64_list.value.append(int(label))
    return example.SerializeToString(deterministic=True)


@dataclasses.dataclass(frozen=True)
class ShardTask:
    """Everything one worker needs to write one shard."""

    uri: str
    image_ids: Sequence[str]
    images: np.ndarray  # (n, 28, 28) uint8
    labels: np.ndarray | None  # (n,) or None for unlabeled data


def write_shard(task: ShardTask) -> dict:
    """Encodes and writes one shard; returns its manifest entry."""
    chunks = []
    for position, image_id in enumerate(task.image_ids):
        label = None if task.labels is None else int(task.labels[position])
        chunks.append(frame_record(serialize_example(image_id, encode_png(task.images[position]), label)))
    data = b"".join(chunks)
    storage.write_bytes(task.uri, data)
    return {
        "name": storage.basename(task.uri),
        "num_records": len(task.image_ids),
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
    }


def class_histogram(labels: np.ndarray) -> list[int]:
    """Count of each label 0-9."""
    return np.bincount(labels, minlength=NUM_CLASSES).astype(int).tolist()


def read_manifest(data_uri: str) -> dict:
    """Loads and checks a data set's manifest; a prefix without one is not a data set."""
    uri = storage.join(data_uri, MANIFEST_NAME)
    if not storage.exists(uri):
        raise InputError(f"{uri}: no manifest; {data_uri} is not a complete data set (run prepare)")
    try:
        manifest = json.loads(storage.read_bytes(uri))
    except json.JSONDecodeError as error:
        raise InputError(f"{uri}: manifest is not valid JSON ({error})") from error
    if manifest.get("schema_version") != SHARD_SCHEMA_VERSION:
        raise InputError(
            f"{uri}: schema version {manifest.get('schema_version')!r}, expected {SHARD_SCHEMA_VERSION!r}"
        )
    return manifest


def manifest_digest(manifest: dict) -> str:
    """A content hash of a manifest, for lineage (same data set -> same digest)."""
    stable = {key: value for key, value in manifest.items() if key != "created_at"}
    return hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()


def split_shard_uris(data_uri: str, manifest: dict, split: str) -> list[str]:
    """URIs of a split's shards as the manifest lists them; an absent or empty split is an error."""
    entry = manifest.get("splits", {}).get(split)
    if not entry or not entry.get("shards") or entry.get("num_records", 0) == 0:
        raise InputError(f"{data_uri}: split {split!r} is missing or empty in the manifest")
    return [storage.join(data_uri, shard["name"]) for shard in entry["shards"]]


@dataclasses.dataclass(frozen=True)
class ShardExample:
    """The features of one shard record."""

    image_id: str
    encoded: bytes
    image_format: str
    label: int | None


def parse_example(data: bytes) -> ShardExample:
    """Parses one tf.train.Example record of the shard contract.

    Raises ValueError for bytes that are no Example and KeyError naming a missing feature.
    """
    from google.protobuf.message import DecodeError
    from tensorflow.core.example import example_pb2

    try:
        feature = example_pb2.Example.FromString(data).features.feature
    except DecodeError as error:
        raise ValueError(f"not a tf.train.Example: {error}") from error
    for key in (FEATURE_IMAGE_ID, FEATURE_IMAGE):
        if key not in feature or not feature[key].bytes_list.value:
            raise KeyError(key)
    labels = feature[FEATURE_LABEL].int64_list.value if FEATURE_LABEL in feature else []
    formats = feature[FEATURE_FORMAT].bytes_list.value if FEATURE_FORMAT in feature else []
    return ShardExample(
        image_id=feature[FEATURE_IMAGE_ID].bytes_list.value[0].decode(),
        encoded=feature[FEATURE_IMAGE].bytes_list.value[0],
        image_format=formats[0].decode() if formats else "",
        label=int(labels[0]) if labels else None,
    )
