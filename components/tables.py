"""The scoring output as SQL: DuckDB views over the Hive-partitioned Parquet of complete runs.

    con = open_tables(predictions="runs/local/scores")      # or gs://bucket/scores
    con.sql("SELECT predicted_class, count(*) FROM predictions GROUP BY ALL")

Views: `predictions` and `errors` (the Parquet columns of components/schema.py plus the
partition key `run_date` as a DATE; `run_id` is in the files and in the path), and `runs`
(one row per run summary). Only complete runs are visible: a run is complete when its
summary `runs/<run_id>.json`, written last by `score`, exists; files of a run still being
written or abandoned half-way are never read.

The Parquet is read with pyarrow.dataset over the storage layer's Arrow file system and
handed to DuckDB as Arrow datasets (projection and partition filters are pushed down), so
no DuckDB extension has to be downloaded to read `gs://`.
"""
from __future__ import annotations

import datetime
import json
import os
import tempfile

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
from pyarrow import fs

from components import storage
from components.errors import InputError
from components.schema import (
    ERROR_SCHEMA,
    ERRORS_TABLE,
    PARTITION_KEYS,
    PARTITION_SCHEMA,
    PREDICTION_SCHEMA,
    PREDICTIONS_TABLE,
    RUNS_FOLDER,
)

RUNS_VIEW = "runs"
RUNS_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string()),
        pa.field("run_date", pa.date32()),
        pa.field("model_version", pa.string()),
        pa.field("read", pa.int64()),
        pa.field("scored", pa.int64()),
        pa.field("failed", pa.int64()),
        pa.field("failed_by_type", pa.map_(pa.string(), pa.int64())),
        pa.field("summary", pa.string()),  # the whole summary JSON: query it with json_extract
    ]
)
OUTPUT_FORMATS = (".csv", ".parquet")


def read_run_summaries(predictions: str) -> list[dict]:
    """The summaries of the complete runs under a scoring output root, sorted by run id."""
    summaries = []
    for uri in storage.glob(storage.join(predictions, RUNS_FOLDER, "*.json")):
        try:
            summary = json.loads(storage.read_bytes(uri))
        except json.JSONDecodeError as error:
            raise InputError(f"{uri}: run summary is not valid JSON ({error})") from error
        summary.setdefault("run_id", storage.basename(uri)[: -len(".json")])
        summaries.append(summary)
    return sorted(summaries, key=lambda summary: summary["run_id"])


def open_tables(*, predictions: str) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the views `predictions`, `errors` and `runs` of complete runs."""
    summaries = read_run_summaries(predictions)
    if not summaries:
        raise InputError(
            f"{predictions}: no complete scoring run (no {RUNS_FOLDER}/*.json); "
            "expected the --output root of `fmnist score`"
        )
    complete = {summary["run_id"]: summary.get("run_date") for summary in summaries}
    connection = duckdb.connect()
    for table, schema in ((PREDICTIONS_TABLE, PREDICTION_SCHEMA), (ERRORS_TABLE, ERROR_SCHEMA)):
        connection.register(table, _table_dataset(storage.join(predictions, table), schema, complete))
    connection.register(RUNS_VIEW, _runs_table(summaries))
    return connection


def _table_dataset(table_uri: str, schema: pa.Schema, complete: dict[str, str | None]) -> ds.Dataset:
    """The Parquet files of the complete runs of one table, as one Hive-partitioned dataset."""
    filesystem, base = storage.arrow_filesystem(table_uri)
    listing = filesystem.get_file_info(fs.FileSelector(base, recursive=True, allow_not_found=True))
    files = [info.path for info in listing if info.type == fs.FileType.File and _is_complete(info.path, base, complete)]
    full_schema = pa.schema(list(schema) + [field for field in PARTITION_SCHEMA if field.name not in schema.names])
    return ds.dataset(
        files,
        schema=full_schema,
        format="parquet",
        filesystem=filesystem,
        partitioning=ds.partitioning(PARTITION_SCHEMA, flavor="hive"),
        partition_base_dir=base,
    )


def _is_complete(path: str, base: str, complete: dict[str, str | None]) -> bool:
    """True for a data file in the partition folder of a run whose summary exists."""
    parts = path[len(base) :].strip("/").split("/")
    if len(parts) != len(PARTITION_KEYS) + 1 or not parts[-1].endswith(".parquet") or parts[-1][0] in "._":
        return False  # staging folders, temporary and hidden files
    values = dict(part.partition("=")[::2] for part in parts[:-1])
    run_id, run_date = values.get("run_id"), values.get("run_date")
    return run_id in complete and complete[run_id] in (None, run_date)


def _runs_table(summaries: list[dict]) -> pa.Table:
    rows = []
    for summary in summaries:
        counts = summary.get("counts", {})
        try:
            run_date = _date(summary.get("run_date"))
        except (TypeError, ValueError) as error:
            raise InputError(f"run {summary['run_id']}: run_date {summary.get('run_date')!r} is not YYYY-MM-DD") from error
        rows.append(
            {
                "run_id": summary["run_id"],
                "run_date": run_date,
                "model_version": summary.get("model_version"),
                "read": counts.get("read"),
                "scored": counts.get("scored"),
                "failed": counts.get("failed"),
                "failed_by_type": list((counts.get("failed_by_type") or {}).items()),
                "summary": json.dumps(summary, sort_keys=True),
            }
        )
    return pa.Table.from_pylist(rows, schema=RUNS_SCHEMA)


def _date(value: str | None) -> datetime.date | None:
    return None if value is None else datetime.date.fromisoformat(value)


def query(*, sql: str, predictions: str) -> pa.Table:
    """Runs one SQL statement against the views of a scoring output; the result as Arrow."""
    connection = open_tables(predictions=predictions)
    try:
        relation = connection.sql(sql)
        if relation is None:
            raise InputError("SQL: the statement returns no rows (use a query, e.g. SELECT ...)")
        return relation.to_arrow_table()
    except duckdb.Error as error:
        first_line = str(error).strip().splitlines()[0]
        raise InputError(f"SQL: {type(error).__name__}: {first_line}") from error
    finally:
        connection.close()


def write_result(table: pa.Table, out: str) -> None:
    """Writes a query result as CSV or Parquet, chosen by the extension of `out` (a URI)."""
    extension = os.path.splitext(out)[1].lower()
    if extension not in OUTPUT_FORMATS:
        raise InputError(f"{out}: unknown output format; use one of {', '.join(OUTPUT_FORMATS)}")
    connection = duckdb.connect()
    try:
        relation = connection.from_arrow(table)
        with tempfile.TemporaryDirectory(prefix="fmnist-query-") as folder:
            local = os.path.join(folder, f"result{extension}")
            if extension == ".csv":
                relation.write_csv(local, header=True)
            else:
                relation.write_parquet(local)
            storage.upload_file(local, out)
    finally:
        connection.close()


def format_table(table: pa.Table, *, max_rows: int = 100) -> str:
    """A result as a boxed text table for the terminal (the first max_rows rows)."""
    connection = duckdb.connect()
    try:
        text = str(connection.from_arrow(table.slice(0, max_rows))).rstrip("\n")
    finally:
        connection.close()
    if table.num_rows > max_rows:
        text += f"\n({table.num_rows} rows, first {max_rows} shown; --out FILE.csv for all)"
    return text
