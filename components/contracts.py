"""The scoring step's contracts as types: the receipt of one scored shard and the run summary.

Every writer builds these classes and every reader parses them back with `from_json`, so a
field is declared once. Both serialize to one JSON line: the summaries are read as a
NEWLINE_DELIMITED_JSON table (the `runs` table), one object per file.

    receipt = ShardReceipt(shard_index=0, source_uri="file:///d/test-00000-of-00001.tfrecord", ...)
    ShardReceipt.from_json(receipt.to_json()) == receipt
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any, TypeVar

from components.schema import ERRORS_TABLE, PREDICTIONS_TABLE, TABLE_SCHEMA_VERSION

T = TypeVar("T", bound="_JsonRecord")


class ContractError(ValueError):
    """A document that does not follow its contract (missing field, wrong type, bad JSON)."""


class _JsonRecord:
    """to_json/from_json for a dataclass of JSON values (str, int, float, bool, None, lists, dicts)
    and nested dataclasses; unknown fields are ignored, so an older reader reads a newer writer."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def to_json(self) -> str:
        """One line of JSON, keys in declaration order."""
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_dict(cls: type[T], document: Any) -> T:
        if not isinstance(document, dict):
            raise ContractError(f"{cls.__name__}: expected a JSON object, found {type(document).__name__}")
        hints = typing.get_type_hints(cls)
        values = {}
        for field in dataclasses.fields(cls):  # type: ignore[arg-type]
            if field.name not in document:
                if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                    raise ContractError(f"{cls.__name__}: field {field.name!r} is missing")
                continue
            values[field.name] = _checked(cls.__name__, field.name, hints[field.name], document[field.name])
        return cls(**values)

    @classmethod
    def from_json(cls: type[T], text: str | bytes) -> T:
        try:
            document = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ContractError(f"{cls.__name__}: not valid JSON ({error})") from error
        return cls.from_dict(document)


def _checked(owner: str, name: str, hint: Any, value: Any) -> Any:
    """The value of a field, converted to its nested dataclass, or ContractError on a wrong type."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (hint,) = [arg for arg in args if arg is not type(None)]
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return hint.from_dict(value)
    expected = origin or hint
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is typing.Any or (isinstance(value, expected) and not (expected is int and isinstance(value, bool))):
        if expected is list and args:
            return [_checked(owner, name, args[0], item) for item in value]
        if expected is dict and args:
            return {key: _checked(owner, name, args[1], item) for key, item in value.items()}
        return value
    raise ContractError(f"{owner}: field {name!r} is {type(value).__name__}, expected {getattr(expected, '__name__', expected)}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ShardReceipt(_JsonRecord):
    """What one scored shard left in staging: its counts and its staged parts (written after them)."""

    shard_index: int
    source_uri: str
    read: int
    scored: int
    failed: int
    failed_by_type: dict[str, int]
    predictions: str | None  # staged part URI; None when no row was scored
    errors: str | None  # staged part URI; None when no record failed
    expected: int | None = None  # record count of the shard in the data set's manifest, if known
    sha256_matched: bool | None = None  # the shard's bytes against the manifest's sha256, if checked

    def part(self, table: str) -> str | None:
        """The staged part of a table (PREDICTIONS_TABLE or ERRORS_TABLE)."""
        return {PREDICTIONS_TABLE: self.predictions, ERRORS_TABLE: self.errors}[table]


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunCounts(_JsonRecord):
    """Record counts of a run. Invariant: read = scored + failed."""

    read: int
    scored: int
    failed: int
    failed_by_type: dict[str, int]
    expected: int | None = None  # sum of the manifest's counts of the input shards, when they have one


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunInputs(_JsonRecord):
    glob: str
    shards: list[str]  # absolute URIs, sorted: the order that decides which duplicate is scored


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunParts(_JsonRecord):
    """The exact part files a run published (absolute URIs): readers read these and no others."""

    predictions: list[str]
    errors: list[str]

    def of(self, table: str) -> list[str]:
        return {PREDICTIONS_TABLE: self.predictions, ERRORS_TABLE: self.errors}[table]


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunSummary(_JsonRecord):
    """The run's manifest, written last at runs/<run_id>.json: a run is what its summary says."""

    schema_version: str = TABLE_SCHEMA_VERSION
    run_id: str
    run_date: str
    status: str  # "ok" or "error_rate_exceeded"
    model_version: str
    model_uri: str
    inputs: RunInputs
    parts: RunParts
    counts: RunCounts
    error_rate: float
    max_error_rate: float
    attempt: str  # the attempt that published the run (its id is in the part file names)
    timings: dict[str, Any]
    runner: str | None = None
    tool: dict[str, str] = dataclasses.field(default_factory=dict)
    beam_counters: dict[str, int] | None = None
