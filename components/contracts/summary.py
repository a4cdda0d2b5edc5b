"""The scoring step's contracts as types: the receipt of one scored group of shards and the run summary.

Every writer builds these classes and every reader parses them back with `from_json`, so a
field is declared once. Both serialize to one JSON line: the summaries are read as a
NEWLINE_DELIMITED_JSON table (the `runs` table), one object per file.

A run summary has one schema for every way a run ends. `status` says which:
- `ok`: published and passed its checks; the only status whose predictions are current;
- `error_rate_exceeded`, `source_mismatch`: published (its parts are readable), but it failed
  its own check (the step exited 3);
- `failed`: a failure record, written by a pipeline's exit handler when a run ended without
  publishing (`RunSummary.failure_record`): no parts, zero counts, and `failure` saying which
  task failed, with what exit code and last error line, in which pipeline job. It takes a run
  id's place in `runs/` only where no published summary is (a published run is never replaced
  by the record of a later attempt that changed nothing), and the next published summary of
  the run id replaces it.

    receipt = GroupReceipt(group_index=0, shards=[ShardReceipt(shard_index=0, ...)], predictions=..., errors=...)
    GroupReceipt.from_json(receipt.to_json()) == receipt
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from components.contracts.schema import (
    ERRORS_TABLE,
    PREDICTIONS_TABLE,
    TABLE_SCHEMA_VERSION,
    is_part_name,
    is_run_id,
    parse_run_date,
    partition_uri,
)
from components.io import storage

T = TypeVar("T", bound="_JsonRecord")
# The largest summary a reader opens: a run of 10,000 shards names about 3 MB of part URIs.
MAX_SUMMARY_BYTES = 32 * 1024 * 1024


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
    """What scoring one shard counted: its records and the shard's hash as read."""

    shard_index: int
    source_uri: str
    read: int
    scored: int
    failed: int
    failed_by_type: dict[str, int]
    expected: int | None = None  # record count of the shard in the data set's manifest, if known
    sha256: str | None = None  # SHA-256 of the shard's bytes as read
    expected_sha256: str | None = None  # the manifest's SHA-256 of the shard, if known

    def source_mismatch(self) -> str | None:
        """Why the shard contradicts its manifest (other bytes, another record count); None when it does not."""
        if self.expected_sha256 and self.sha256 != self.expected_sha256:
            return f"{self.source_uri}: sha256 {self.sha256} differs from the manifest's {self.expected_sha256}"
        if self.expected is not None and self.read != self.expected:
            return f"{self.source_uri}: {self.read} records, the manifest says {self.expected}"
        return None


@dataclasses.dataclass(frozen=True, kw_only=True)
class GroupReceipt(_JsonRecord):
    """What one scored group of consecutive shards left in staging (written after its parts):
    one part per table, holding the rows of its shards in shard order, and each shard's counts.
    A shard's rows in a part follow those of the shards before it: its `scored` prediction rows
    after the earlier shards' `scored`, its `failed` error rows after their `failed`."""

    group_index: int  # the index of its first shard
    shards: list[ShardReceipt]
    predictions: str | None  # staged part URI; None when no row was scored
    errors: str | None  # staged part URI; None when no record failed

    def part(self, table: str) -> str | None:
        """The staged part of a table (PREDICTIONS_TABLE or ERRORS_TABLE)."""
        return {PREDICTIONS_TABLE: self.predictions, ERRORS_TABLE: self.errors}[table]

    @property
    def failed_by_type(self) -> dict[str, int]:
        """Its shards' failed records by error type, added up."""
        return summed_counts(*(shard.failed_by_type for shard in self.shards))


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunCounts(_JsonRecord):
    """Record counts of a run. Invariant: read = scored + failed."""

    read: int
    scored: int
    failed: int
    failed_by_type: dict[str, int]
    expected: int | None = None  # sum of the manifest's counts of the input shards, when they have one


def summed_counts(*counts: Mapping[str, int]) -> dict[str, int]:
    """Counts by error type added up (a type keeps the place where it first appears)."""
    total: dict[str, int] = {}
    for by_type in counts:
        for error_type, count in by_type.items():
            total[error_type] = total.get(error_type, 0) + count
    return total


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


OK_STATUS = "ok"
FAILED_STATUS = "failed"  # a failure record: the run published nothing
# Published, but the run failed its own check (exit 3): readable, never current.
CHECK_FAILED_STATUSES = ("error_rate_exceeded", "source_mismatch")
RUN_STATUSES = (OK_STATUS, *CHECK_FAILED_STATUSES, FAILED_STATUS)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunFailure(_JsonRecord):
    """Why a run ended without publishing: what a failure record adds to the summary's fields."""

    task: str  # the pipeline task (or step) that failed, e.g. "score"; "unknown" when nobody said
    exit_code: int | None  # its exit code (jobs/entrypoint.py), None when it is not known
    error: str  # its last error line
    pipeline_job: str  # the pipeline job's name (Vertex AI resource name or KFP run), "" when run by hand
    recorded_at: str  # when the record was written (UTC, ISO 8601)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunSummary(_JsonRecord):
    """The run's manifest, written last at runs/<run_id>.json: a run is what its summary says."""

    schema_version: str = TABLE_SCHEMA_VERSION
    run_id: str
    run_date: str
    status: str  # one of RUN_STATUSES
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
    publication: int = 0  # the how-many-th summary of this run id (0: written before it was counted)

    def check(self) -> None:
        """ContractError unless the summary is one a writer of this project produces: a run id and a
        date of the layout, each part once and in the run's own partition, counts that add up."""
        if not is_run_id(self.run_id):
            raise ContractError(f"run id {self.run_id!r} is not a run id of the layout")
        try:
            parse_run_date(self.run_date)
        except ValueError as error:
            raise ContractError(f"run date {self.run_date!r} is not a date in YYYY-MM-DD form") from error
        counts = self.counts
        if min(counts.read, counts.scored, counts.failed, *counts.failed_by_type.values(), self.publication) < 0:
            raise ContractError("a negative count")
        if counts.read != counts.scored + counts.failed or counts.failed != sum(counts.failed_by_type.values()):
            raise ContractError(f"counts do not add up (read {counts.read}, scored {counts.scored}, failed {counts.failed})")
        for table in (PREDICTIONS_TABLE, ERRORS_TABLE):
            names = [storage.basename(part) for part in self.parts.of(table)]
            if len(set(names)) != len(names):
                raise ContractError(f"names a {table} part twice")
            own_folder = partition_uri("", table, self.run_date, self.run_id)
            for part, name in zip(self.parts.of(table), names, strict=True):
                if not is_part_name(name) or not storage.dirname(part).endswith(own_folder):
                    raise ContractError(f"{part}: not a {table} part of run {self.run_id} on {self.run_date}")

    failure: RunFailure | None = None  # set on failure records (status "failed") only

    @property
    def published(self) -> bool:
        """True for a summary of a run that published its parts; False for a failure record."""
        return self.status != FAILED_STATUS

    @classmethod
    def failure_record(cls, *, run_id: str, run_date: str, failure: RunFailure, model_version: str = "") -> RunSummary:
        """The summary of a run that ended without publishing: no parts, zero counts, and why."""
        return cls(
            run_id=run_id,
            run_date=run_date,
            status=FAILED_STATUS,
            model_version=model_version,
            model_uri="",
            inputs=RunInputs(glob="", shards=[]),
            parts=RunParts(predictions=[], errors=[]),
            counts=RunCounts(read=0, scored=0, failed=0, failed_by_type={}),
            error_rate=0.0,
            max_error_rate=0.0,
            attempt="",
            timings={"finished_at": failure.recorded_at},
            failure=failure,
        )


def _field(name: str, bigquery_type: str, description: str, mode: str = "NULLABLE", fields: list | None = None) -> dict:
    field = {"name": name, "type": bigquery_type, "mode": mode, "description": description}
    if fields:
        field["fields"] = fields
    return field


def run_summary_bigquery_schema() -> list[dict]:
    """The BigQuery schema of the `runs` table: a NEWLINE_DELIMITED_JSON external table over the
    summaries, one line each. Maps of run-dependent keys (failed_by_type, beam_counters) are JSON."""
    return [
        _field("schema_version", "STRING", "Table contract version of the run's files, e.g. fmnist-predictions/2.", "REQUIRED"),
        _field("run_id", "STRING", "Id of the scoring run (folder `run_id=…` of its parts).", "REQUIRED"),
        _field(
            "run_date",
            "DATE",
            "Logical date of the data scored (folder `run_date=…`), not the day the run ran; a schedule derives it "
            "from its scheduled time plus date_offset_days.",
            "REQUIRED",
        ),
        _field(
            "status",
            "STRING",
            "ok; error_rate_exceeded or source_mismatch: published, but failed its check (exit 3); "
            "failed: a failure record, nothing published (see failure).",
            "REQUIRED",
        ),
        _field("model_version", "STRING", "Version of the model that scored the run.", "REQUIRED"),
        _field("model_uri", "STRING", "Absolute URI of the model version folder.", "REQUIRED"),
        _field(
            "inputs",
            "RECORD",
            "What was scored.",
            "REQUIRED",
            [
                _field("glob", "STRING", "The input glob, absolute.", "REQUIRED"),
                _field("shards", "STRING", "Absolute URIs of the shards, in scoring order.", "REPEATED"),
            ],
        ),
        _field(
            "parts",
            "RECORD",
            "The exact part files the run published: readers read these and no others.",
            "REQUIRED",
            [
                _field("predictions", "STRING", "Absolute URIs of the prediction parts.", "REPEATED"),
                _field("errors", "STRING", "Absolute URIs of the error parts.", "REPEATED"),
            ],
        ),
        _field(
            "counts",
            "RECORD",
            "Record counts; read = scored + failed.",
            "REQUIRED",
            [
                _field("read", "INTEGER", "Records read from the shards.", "REQUIRED"),
                _field("scored", "INTEGER", "Rows of the predictions table.", "REQUIRED"),
                _field("failed", "INTEGER", "Rows of the errors table.", "REQUIRED"),
                _field("failed_by_type", "JSON", "Error rows per error_type, as a JSON object.", "REQUIRED"),
                _field("expected", "INTEGER", "Records the shards' manifest announces, when there is one."),
            ],
        ),
        _field("error_rate", "FLOAT", "failed / read.", "REQUIRED"),
        _field("max_error_rate", "FLOAT", "The limit above which the run's status is error_rate_exceeded.", "REQUIRED"),
        _field("attempt", "STRING", "Id of the attempt that published the run (in its part file names).", "REQUIRED"),
        _field(
            "timings",
            "RECORD",
            "When the run started and finished, and how long its phases took.",
            "REQUIRED",
            [
                _field("started_at", "TIMESTAMP", "Start of the attempt (UTC)."),
                _field("finished_at", "TIMESTAMP", "End of the attempt, before the summary was written (UTC)."),
                _field("pipeline_seconds", "FLOAT", "Time spent scoring."),
                _field("publish_seconds", "FLOAT", "Time spent publishing."),
                _field("total_seconds", "FLOAT", "Whole attempt."),
            ],
        ),
        _field("runner", "STRING", "The Beam runner."),
        _field(
            "tool",
            "RECORD",
            "The tool that wrote the run.",
            "NULLABLE",
            [
                _field("name", "STRING", "fmnist-jobs."),
                _field("version", "STRING", "Its version."),
            ],
        ),
        _field("beam_counters", "JSON", "The pipeline's Beam counters, where the runner reports them."),
        _field(
            "publication",
            "INTEGER",
            "The how-many-th summary of this run id (in its part file names, part-p<publication>-…); 0 before it was counted.",
        ),
        _field(
            "failure",
            "RECORD",
            "Set on failure records (status failed) only: why the run ended without publishing.",
            "NULLABLE",
            [
                _field("task", "STRING", "The pipeline task that failed, e.g. score.", "REQUIRED"),
                _field("exit_code", "INTEGER", "Its exit code (0 ok, 1 environment, 2 bad input, 3 check failed, 143 stopped)."),
                _field("error", "STRING", "Its last error line.", "REQUIRED"),
                _field("pipeline_job", "STRING", "The pipeline job's name.", "REQUIRED"),
                _field("recorded_at", "TIMESTAMP", "When the record was written (UTC).", "REQUIRED"),
            ],
        ),
    ]
