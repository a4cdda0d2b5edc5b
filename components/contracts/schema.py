"""The output tables of batch scoring: one module, the single source of truth.

Types are those BigQuery loads from Parquet without surprises: signed integers, float32,
strings, standard LIST, timestamps in microseconds UTC. Layout (Hive partitioning):

    <out>/predictions/run_date=YYYY-MM-DD/run_id=<id>/part-p<publication>-<attempt>-NNNNN.parquet
    <out>/errors/run_date=YYYY-MM-DD/run_id=<id>/part-p<publication>-<attempt>-NNNNN.parquet
    <out>/runs/<run_id>.json      (run summary, one JSON line, written last: names the parts)

The partition keys live in the paths only (Hive, Spark and BigQuery refuse keys that are
also file columns); a single part carries its lineage in its Parquet key-value metadata.
"""

from __future__ import annotations

import datetime
import re

import pyarrow as pa

from components.io import storage

TABLE_SCHEMA_VERSION = "fmnist-predictions/2"
V1_SCHEMA_VERSION = "fmnist-predictions/1"
PREDICTIONS_TABLE = "predictions"
ERRORS_TABLE = "errors"
RUNS_FOLDER = "runs"
PARTITION_KEYS = ("run_date", "run_id")
# Run ids are folder names and file names on every file system and object store.
RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# part-p<publication>-<attempt>-<shard index>.parquet: the publication (the how-many-th summary of
# the run id it belongs to) tells which files no summary can name any more (components/score/run.py).
_PART_NAME = re.compile(r"part-p(\d{1,9})-[A-Za-z0-9._-]+\.parquet")
_ANY_PART_NAME = re.compile(r"part-[A-Za-z0-9._-]+\.parquet")
# Published parts are between PART_MIN_BYTES and PART_TARGET_BYTES, whatever the shards' size
# (unless the whole run is smaller): the consecutive parts below the minimum are merged into
# parts of up to the target (a day of 10M images in shards of 1,250 is a few dozen parts, not
# 8,000: docs/benchmarks.md), larger ones stay as they are. The usual sizes for Parquet files
# read by BigQuery, DuckDB or Spark: few enough files that opening one costs little against
# reading it, and row groups (components/io/parquet_parts.py) to split on.
PART_TARGET_BYTES = 128 * 1024 * 1024
PART_MIN_BYTES = 8 * 1024 * 1024
# Columns of either table with few distinct values in a part: dictionary-encoded in Parquet.
# The others (ids, probabilities, confidences: nearly one value per row) are written plain;
# a dictionary there only costs its build before Parquet drops it. Measured on 700,000
# prediction rows (docs/benchmarks.md): encoding 2.6x faster than pyarrow's dictionary for
# every column, and parts 20% smaller.
DICTIONARY_COLUMNS = frozenset(
    {"source_uri", "predicted_label", "predicted_class", "true_label", "model_version", "scored_at", "error_type"}
)

TIMESTAMP = pa.timestamp("us", tz="UTC")
# Types of the partition keys when a reader turns the folder names back into columns.
PARTITION_SCHEMA = pa.schema([pa.field("run_date", pa.date32()), pa.field("run_id", pa.string())])

# (name, type, nullable, description): the description feeds docs/prediction_table.md.
PREDICTION_COLUMNS: tuple[tuple[str, pa.DataType, bool, str], ...] = (
    (
        "image_id",
        pa.string(),
        False,
        "Id of the image, from the shard's `image_id` feature (`fmnist prepare-images`: the file's path below "
        "the folder given, without extension, or the product key its `--keys` file gives); unique within a run "
        "(a repeated id is a `duplicate_image_id` error row), not across runs: an image scored again keeps its id.",
    ),
    (
        "image_uri",
        pa.string(),
        True,
        "Where the picture came from, from the shard's optional `image/uri` feature: the full URI of the file "
        "`fmnist prepare-images` read (`file:///...` or `gs://...`), to join predictions to product data; null "
        "for shards without it (`fmnist prepare`'s, and parts written before the column existed).",
    ),
    ("source_uri", pa.string(), False, "Absolute URI of the shard the record came from (`file:///...` or `gs://...`)."),
    ("predicted_label", pa.int32(), False, "Predicted class index, 0-9."),
    ("predicted_class", pa.string(), False, 'Predicted class name, "T-shirt/top" ... "Ankle boot".'),
    (
        "confidence",
        pa.float32(),
        False,
        "Probability of the predicted class, calibrated: the softmax of the logits divided by the temperature "
        "fitted at training (so 0.9 means right about 9 times in 10).",
    ),
    (
        "probabilities",
        pa.list_(pa.field("element", pa.float32(), nullable=False)),
        False,
        "Calibrated probabilities of all 10 classes, in label order.",
    ),
    ("true_label", pa.int32(), True, "Label from the shard, when the shard carries labels; else null."),
    ("model_version", pa.string(), False, "Version of the model that scored the row (lineage)."),
    ("scored_at", TIMESTAMP, False, "When the row was scored (UTC, microseconds)."),
)

ERROR_COLUMNS: tuple[tuple[str, pa.DataType, bool, str], ...] = (
    ("source_uri", pa.string(), False, "Absolute URI of the shard holding the bad record."),
    ("record_index", pa.int64(), False, "0-based position of the record in its shard."),
    ("image_id", pa.string(), True, "The record's `image_id`, when it could be read."),
    (
        "error_type",
        pa.string(),
        False,
        "Why: corrupt_record, truncated_record, unreadable_record, invalid_example, missing_feature, "
        "bad_label, decode_error, bad_shape, duplicate_image_id or non_finite_score.",
    ),
    ("error_message", pa.string(), False, "Human-readable reason."),
    ("scored_at", TIMESTAMP, False, "When the record was processed (UTC, microseconds)."),
)


def _schema(columns) -> pa.Schema:
    return pa.schema(
        [pa.field(name, dtype, nullable=nullable) for name, dtype, nullable, _ in columns],
        metadata={"schema_version": TABLE_SCHEMA_VERSION},
    )


PREDICTION_SCHEMA = _schema(PREDICTION_COLUMNS)
ERROR_SCHEMA = _schema(ERROR_COLUMNS)


def with_lineage(schema: pa.Schema, *, run_id: str, run_date: str, model_version: str) -> pa.Schema:
    """The schema of one run's part: the table schema plus the part's lineage as key-value metadata
    (the partition keys are not file columns, so a part copied elsewhere still says what it is)."""
    lineage = {"run_id": run_id, "run_date": run_date, "model_version": model_version}
    return schema.with_metadata({**schema.metadata, **{key.encode(): value.encode() for key, value in lineage.items()}})


def parse_run_date(run_date: str) -> datetime.date:
    """A run date (the partition key) as a date; ValueError unless it is exactly `YYYY-MM-DD`
    (fromisoformat alone would also take `20261129`, which is no folder name of the layout)."""
    day = datetime.date.fromisoformat(run_date)
    if day.isoformat() != run_date:
        raise ValueError(f"{run_date!r} is not in YYYY-MM-DD form")
    return day


def is_run_id(run_id: str) -> bool:
    """True for a run id of the layout: letters, digits, '.', '_' and '-', at most 128, no leading punctuation."""
    return bool(RUN_ID_PATTERN.fullmatch(run_id))


def part_file_name(*, publication: int, attempt: str, index: int) -> str:
    """The name under which an attempt publishes the part of one shard."""
    return f"part-p{publication}-{attempt}-{index:05d}.parquet"


def is_part_name(name: str) -> bool:
    """True for a name a writer of this project gives a published part (any version of the layout)."""
    return bool(_ANY_PART_NAME.fullmatch(name))


def part_publication(name: str) -> int:
    """The publication a part file belongs to; 0 for files of older writers and foreign files."""
    match = _PART_NAME.fullmatch(name)
    return int(match.group(1)) if match else 0


def partition_uri(output: str, table: str, run_date: str, run_id: str) -> str:
    """Folder of one run's files of a table (Hive partitioning)."""
    return storage.join(output, table, f"run_date={run_date}", f"run_id={run_id}")


def run_summary_uri(output: str, run_id: str) -> str:
    """Where a run's summary JSON goes (written last: its presence means the run is complete)."""
    return storage.join(output, RUNS_FOLDER, f"{run_id}.json")


# Arrow type -> BigQuery type of the column that BigQuery makes of it when it reads the Parquet.
_BIGQUERY_TYPES = {
    pa.string(): "STRING",
    pa.int32(): "INTEGER",
    pa.int64(): "INTEGER",
    pa.float32(): "FLOAT",
    pa.float64(): "FLOAT",
    pa.bool_(): "BOOLEAN",
    pa.date32(): "DATE",
    TIMESTAMP: "TIMESTAMP",
}


def bigquery_schema(columns) -> list[dict]:
    """The BigQuery JSON schema (name, type, mode, description) of a table's columns.

    A list<T> column is a REPEATED field of T: what BigQuery makes of a standard Parquet LIST
    with list inference on (`parquetOptions.enableListInference`).
    """
    fields = []
    for name, dtype, nullable, description in columns:
        mode = "NULLABLE" if nullable else "REQUIRED"
        if pa.types.is_list(dtype):
            dtype, mode = dtype.value_type, "REPEATED"
        if dtype not in _BIGQUERY_TYPES:
            raise TypeError(f"column {name}: Arrow type {dtype} has no BigQuery-safe Parquet mapping")
        fields.append({"name": name, "type": _BIGQUERY_TYPES[dtype], "mode": mode, "description": description})
    return fields
