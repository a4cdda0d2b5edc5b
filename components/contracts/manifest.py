"""The data set's manifest as a type: `manifest.json` beside the shards (fmnist-shards/1).

`prepare` builds a `Manifest` and writes it with `to_bytes`; every reader parses it back with
`from_json`, so a field is declared once. The bytes written are the ones the format always had
(two-space indented JSON, keys in declaration order): the manifest's digest, and with it every
model version trained on it, depends on them.

    manifest = Manifest.from_json(storage.read_bytes(uri))
    manifest.split("train").shards[0].sha256
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from typing import Any

from components.constants import CLASS_NAMES, IMAGE_SIZE, SHARD_SCHEMA_VERSION, tool_version
from components.contracts.summary import _JsonRecord


@dataclasses.dataclass(frozen=True, kw_only=True)
class ShardEntry(_JsonRecord):
    """One shard as its writer saw it: file name, record count, SHA-256 and size of its bytes."""

    name: str  # a plain file name beside the manifest (shard_name)
    num_records: int
    sha256: str
    bytes: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class SplitEntry(_JsonRecord):
    """One split: its record count, its class histogram (None for unlabeled data) and its shards in order."""

    num_records: int
    class_histogram: list[int] | None
    shards: list[ShardEntry]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ImageFormat(_JsonRecord):
    height: int = IMAGE_SIZE
    width: int = IMAGE_SIZE
    channels: int = 1
    format: str = "png"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Manifest(_JsonRecord):
    """What a data set holds; written last, so a folder without one is not a data set."""

    schema_version: str = SHARD_SCHEMA_VERSION
    tool: dict[str, str]
    created_at: str  # excluded from the digest: the same data prepared twice is the same data set
    image: ImageFormat = dataclasses.field(default_factory=ImageFormat)
    class_names: list[str] = dataclasses.field(default_factory=lambda: list(CLASS_NAMES))
    source: dict[str, Any]  # where the data came from; its keys depend on the preparing step
    splits: dict[str, SplitEntry]

    @classmethod
    def new(cls, *, source: dict[str, Any], splits: dict[str, SplitEntry]) -> Manifest:
        """The manifest of a data set written now by this tool."""
        return cls(
            tool={"name": "fmnist-jobs", "version": tool_version()},
            created_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            source=source,
            splits=splits,
        )

    def to_bytes(self) -> bytes:
        """The file's bytes: two-space indented JSON, as the format has always been written."""
        return json.dumps(self.to_dict(), indent=2).encode()

    def split(self, name: str) -> SplitEntry | None:
        return self.splits.get(name)

    def shard_names(self) -> set[str]:
        """Every shard file the manifest lists, over all splits."""
        return {shard.name for split in self.splits.values() for shard in split.shards}
