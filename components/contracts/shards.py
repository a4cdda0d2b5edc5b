"""The image-shard contract: tf.train.Example records in TFRecord files plus a manifest.

Shards are named `{split}-{i:05d}-of-{n:05d}.tfrecord`; `manifest.json` is written last, so
a prefix without a manifest is not (yet) a data set.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Iterator, Sequence

import numpy as np

from components.constants import (
    FEATURE_FORMAT,
    FEATURE_IMAGE,
    FEATURE_IMAGE_ID,
    FEATURE_IMAGE_URI,
    FEATURE_LABEL,
    MANIFEST_NAME,
    NUM_CLASSES,
    SHARD_SCHEMA_VERSION,
)
from components.contracts.manifest import Manifest, ShardEntry
from components.contracts.summary import ContractError
from components.errors import InputError
from components.io import storage
from components.io.images import encode_png
from components.io.tfrecord import frame_record, read_records

SHARD_NAME_RE = re.compile(r"^(?P<split>[a-z0-9_]+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.tfrecord$")


def shard_name(split: str, index: int, count: int) -> str:
    """The contract's file name of shard `index` of `count` in a split."""
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def serialize_example(
    image_id: str, png: bytes, label: int | None, image_format: bytes = b"png", image_uri: str | None = None
) -> bytes:
    """One tf.train.Example record, byte-identical to TensorFlow's deterministic serialization.

    Encoded here rather than with TensorFlow's proto classes so that `prepare` needs no
    TensorFlow: each worker process would otherwise spend seconds importing it (measured;
    docs/benchmarks.md). tests/test_shards.py proves the bytes equal TensorFlow's.
    """
    features = {
        FEATURE_IMAGE_ID: _bytes_feature(image_id.encode()),
        FEATURE_IMAGE: _bytes_feature(png),
        FEATURE_FORMAT: _bytes_feature(image_format),
    }
    if label is not None:
        features[FEATURE_LABEL] = _int64_feature(int(label))
    if image_uri:
        features[FEATURE_IMAGE_URI] = _bytes_feature(image_uri.encode())
    entries = b"".join(_field(1, _field(1, key.encode()) + _field(2, value)) for key, value in sorted(features.items()))
    return _field(1, entries)


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64 -> two's complement, as protobuf does
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _bytes_feature(value: bytes) -> bytes:
    return _field(1, _field(1, value))  # Feature.bytes_list = BytesList{value: [value]}


def _int64_feature(value: int) -> bytes:
    return _field(3, _field(1, _varint(value)))  # Feature.int64_list, packed repeated int64


@dataclasses.dataclass(frozen=True)
class ShardTask:
    """Everything one worker needs to write one shard."""

    uri: str
    image_ids: Sequence[str]
    images: np.ndarray  # (n, 28, 28) uint8
    labels: np.ndarray | None  # (n,) or None for unlabeled data
    image_uris: Sequence[str] | None = None  # where each picture came from, when known


def write_shard(task: ShardTask) -> ShardEntry:
    """Encodes and writes one shard; returns its manifest entry."""
    data = encode_shard(task)
    storage.write_bytes(task.uri, data)
    return shard_entry(task, data)


def encode_shard(task: ShardTask) -> bytes:
    """The shard file of a task: its images as PNG Examples in TFRecord framing."""
    chunks = []
    for position, image_id in enumerate(task.image_ids):
        label = None if task.labels is None else int(task.labels[position])
        image_uri = None if task.image_uris is None else task.image_uris[position]
        png = encode_png(task.images[position])
        chunks.append(frame_record(serialize_example(image_id, png, label, image_uri=image_uri)))
    return b"".join(chunks)


def shard_entry(task: ShardTask, data: bytes) -> ShardEntry:
    """The manifest entry of a task's shard file."""
    return ShardEntry(
        name=storage.basename(task.uri),
        num_records=len(task.image_ids),
        sha256=hashlib.sha256(data).hexdigest(),
        bytes=len(data),
    )


def class_histogram(labels: np.ndarray) -> list[int]:
    """Count of each label 0-9."""
    return np.bincount(labels, minlength=NUM_CLASSES).astype(int).tolist()


def read_manifest(data_uri: str) -> Manifest:
    """Loads and checks a data set's manifest; a prefix without one is not a data set."""
    uri = storage.join(data_uri, MANIFEST_NAME)
    if not storage.exists(uri):
        raise InputError(f"{uri}: no manifest; {data_uri} is not a complete data set (run prepare)")
    try:
        document = json.loads(storage.read_bytes(uri))
    except json.JSONDecodeError as error:
        raise InputError(f"{uri}: manifest is not valid JSON ({error})") from error
    if not isinstance(document, dict):
        raise InputError(f"{uri}: manifest is a JSON {type(document).__name__}, expected an object")
    if document.get("schema_version") != SHARD_SCHEMA_VERSION:
        raise InputError(f"{uri}: schema version {document.get('schema_version')!r}, expected {SHARD_SCHEMA_VERSION!r}")
    try:
        return Manifest.from_dict(document)
    except ContractError as error:
        raise InputError(f"{uri}: manifest does not follow {SHARD_SCHEMA_VERSION} ({error})") from error


@dataclasses.dataclass(frozen=True)
class ShardExpectation:
    """What a data set's manifest says about one of its shards."""

    num_records: int
    sha256: str | None = None


def shard_expectations(shard_uris: Sequence[str]) -> dict[str, ShardExpectation]:
    """The manifest's record count (and hash) of each shard that has a manifest beside it
    naming it; shards without one are left out (nothing to check them against)."""
    expectations: dict[str, ShardExpectation] = {}
    for folder in sorted({storage.dirname(uri) for uri in shard_uris}):
        if not storage.exists(storage.join(folder, MANIFEST_NAME)):
            continue
        for split in read_manifest(folder).splits.values():
            for shard in split.shards:
                expectations[storage.join(folder, shard.name)] = ShardExpectation(shard.num_records, shard.sha256)
    return {uri: expectations[uri] for uri in shard_uris if uri in expectations}


def manifest_digest(manifest: Manifest) -> str:
    """A content hash of a manifest, for lineage (same data set -> same digest)."""
    stable = {key: value for key, value in manifest.to_dict().items() if key != "created_at"}
    return hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()


def split_shard_uris(data_uri: str, manifest: Manifest, split: str) -> list[str]:
    """URIs of a split's shards as the manifest lists them; an absent or empty split is an error."""
    entry = manifest.split(split)
    if entry is None or not entry.shards or entry.num_records == 0:
        raise InputError(f"{data_uri}: split {split!r} is missing or empty in the manifest")
    return [storage.child(data_uri, shard.name) for shard in entry.shards]  # never outside the data set


@dataclasses.dataclass(frozen=True)
class ShardExample:
    """The features of one shard record."""

    image_id: str
    encoded: bytes
    image_format: str
    label: int | None
    image_uri: str | None = None  # where the picture came from, when the shard says


class BadLabel(ValueError):
    """A label feature that is not one int64 (a float, two values): the record breaks the contract."""

    def __init__(self, message: str, image_id: str) -> None:
        super().__init__(message)
        self.image_id = image_id


def single_label(values: Sequence, image_id: str) -> int | None:
    """The record's label from its label feature's values: none, or exactly one int64."""
    if len(values) > 1 or any(not isinstance(value, int) for value in values):
        raise BadLabel(f"label {list(values)} is not one int64", image_id)
    return int(values[0]) if values else None


def parse_example(data: bytes) -> ShardExample:
    """Parses one tf.train.Example record of the shard contract.

    Raises ValueError for bytes that are no Example or a feature with more than one value,
    KeyError naming a missing or empty feature, and BadLabel for a label that is not one int64.
    """
    from google.protobuf.message import DecodeError
    from tensorflow.core.example import example_pb2

    try:
        feature = example_pb2.Example.FromString(data).features.feature
    except DecodeError as error:
        raise ValueError(f"not a tf.train.Example: {error}") from error
    for key in (FEATURE_IMAGE_ID, FEATURE_IMAGE):
        values = feature[key].bytes_list.value if key in feature else []
        if not values or not values[0]:
            raise KeyError(key)
        if len(values) > 1:
            raise ValueError(f"feature {key!r} holds {len(values)} values, the contract has one")
    image_id = feature[FEATURE_IMAGE_ID].bytes_list.value[0].decode()
    label = feature[FEATURE_LABEL] if FEATURE_LABEL in feature else None
    label_values = (
        []
        if label is None
        else {
            "int64_list": label.int64_list.value,
            "float_list": label.float_list.value,
            "bytes_list": label.bytes_list.value,
        }.get(label.WhichOneof("kind"), [])
    )
    formats = feature[FEATURE_FORMAT].bytes_list.value if FEATURE_FORMAT in feature else []
    image_uris = feature[FEATURE_IMAGE_URI].bytes_list.value if FEATURE_IMAGE_URI in feature else []
    return ShardExample(
        image_id=image_id,
        encoded=feature[FEATURE_IMAGE].bytes_list.value[0],
        image_format=formats[0].decode() if formats else "",
        label=single_label(label_values, image_id),
        image_uri=image_uris[0].decode() if image_uris and image_uris[0] else None,
    )


def read_shard(uri: str) -> Iterator[ShardExample]:
    """Every record of a shard, strictly: a damaged record is an InputError naming it."""
    with storage.open_read(uri) as stream:
        for record in read_records(stream):
            if record.data is None:
                raise InputError(f"{uri}: {record.error_message}")
            try:
                yield parse_example(record.data)
            except (KeyError, ValueError) as error:
                raise InputError(f"{uri}: record {record.index} is not a valid shard record ({error!r})") from error
