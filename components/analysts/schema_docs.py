"""Files generated from components/contracts/schema.py: the data dictionary and the BigQuery JSON schemas.

    python -m components.analysts.schema_docs        # or: make schema-docs

Writes docs/prediction_table.md and infra/bigquery/{predictions,errors,runs}.schema.json in
the source tree (runs: the run summaries, components/contracts/summary.py); tests/test_schema_docs.py fails when a
committed copy differs from this output. Also infra/bigquery/{predictions,errors}.reference.parquet:
zero-row Parquet files of the tables' schemas, from which BigQuery's external tables take their
columns (infra/terraform/bigquery.tf); the test compares their schemas.
"""

from __future__ import annotations

import json
import pathlib

import pyarrow as pa
import pyarrow.parquet as pq

from components.contracts.run_index import INDEX_FOLDER
from components.contracts.schema import (
    ERROR_COLUMNS,
    ERROR_SCHEMA,
    ERRORS_TABLE,
    PART_MIN_BYTES,
    PART_TARGET_BYTES,
    PARTITION_SCHEMA,
    PREDICTION_COLUMNS,
    PREDICTION_SCHEMA,
    PREDICTIONS_TABLE,
    RUNS_FOLDER,
    TABLE_SCHEMA_VERSION,
    bigquery_schema,
)
from components.contracts.summary import run_summary_bigquery_schema

DATA_DICTIONARY = "docs/prediction_table.md"
BIGQUERY_SCHEMA_FILES = {
    PREDICTIONS_TABLE: f"infra/bigquery/{PREDICTIONS_TABLE}.schema.json",
    ERRORS_TABLE: f"infra/bigquery/{ERRORS_TABLE}.schema.json",
    RUNS_FOLDER: f"infra/bigquery/{RUNS_FOLDER}.schema.json",
}
_TABLES = {PREDICTIONS_TABLE: PREDICTION_COLUMNS, ERRORS_TABLE: ERROR_COLUMNS}
REFERENCE_PARQUET_FILES = {
    f"infra/bigquery/{PREDICTIONS_TABLE}.reference.parquet": PREDICTION_SCHEMA,
    f"infra/bigquery/{ERRORS_TABLE}.reference.parquet": ERROR_SCHEMA,
}
_PARTITION_NOTES = {
    "run_date": (
        "The logical date of the data scored, `YYYY-MM-DD` (folder `run_date=…`), not the day the run ran: "
        "`fmnist score --run-date` sets it (default: today, UTC); a schedule derives it from its scheduled time "
        "in its time zone plus `date_offset_days` (the daily schedule's 03:00 run on day D scores day D-1); "
        "a backfill passes it."
    ),
    "run_id": "Id of the scoring run (folder `run_id=…`); not a file column.",
}


def arrow_type_name(dtype: pa.DataType) -> str:
    """A short readable name of an Arrow type: int32, float32, list<float32>, timestamp[us, UTC]."""
    if pa.types.is_list(dtype):
        return f"list<{arrow_type_name(dtype.value_type)}>"
    if pa.types.is_timestamp(dtype):
        return f"timestamp[{dtype.unit}, {dtype.tz}]"
    return {pa.float32(): "float32", pa.float64(): "float64", pa.date32(): "date"}.get(dtype, str(dtype))


def bigquery_schema_json(columns) -> str:
    """The BigQuery JSON schema file of a table (`bq mk --schema`, terraform `schema = file(...)`)."""
    return json.dumps(bigquery_schema(columns), indent=2) + "\n"


def data_dictionary() -> str:
    """docs/prediction_table.md."""
    lines = [
        "# Prediction tables: data dictionary",
        "",
        f"Generated from `components/contracts/schema.py` (schema version `{TABLE_SCHEMA_VERSION}`) by",
        "`make schema-docs`; do not edit by hand: a test fails when this file and the module differ.",
        "",
        "## Layout",
        "",
        "Parquet, Hive-partitioned, below the `--output` root of `fmnist score`:",
        "",
        "```",
        f"<out>/{PREDICTIONS_TABLE}/run_date=YYYY-MM-DD/run_id=<id>/part-p<publication>-<attempt>-NNNNN.parquet",
        f"<out>/{ERRORS_TABLE}/run_date=YYYY-MM-DD/run_id=<id>/part-p<publication>-<attempt>-NNNNN.parquet",
        f"<out>/{RUNS_FOLDER}/<run_id>.json      run summary: one JSON line, written last",
        f"<out>/{INDEX_FOLDER}/YYYY-MM/YYYY-MM-DD/<run_id>      run index: a marker per run, written first",
        "```",
        "",
        "A part holds the rows of consecutive shards (NNNNN is the first one's index). Parts are",
        f"between {PART_MIN_BYTES // 2**20} and {PART_TARGET_BYTES // 2**20} MB whatever the size of the shards scored, unless a",
        "run is smaller: consecutive smaller parts are merged into one when published, larger ones",
        "stay as they are. The run index lets a reader of some dates find their runs without",
        "reading every summary; the summaries stay what says a run is complete.",
        "",
        "A run is what its summary says: it is complete once its summary exists, and its rows are",
        "those of the part files the summary names (absolute URIs), no others. A rerun of a run id",
        "publishes new parts, then replaces the summary in one write, then removes the old parts.",
        "`fmnist query`, `fmnist report` and the BigQuery views read complete runs only, through",
        "their summaries. Worked SQL: [analysts.md](analysts.md).",
        "",
        "Within a schema version, a column is only ever added, and only as NULLABLE: every reader",
        "reads parts through the version's full schema, so a part written before a column existed",
        "reads as null there (`image_uri` was added so). Anything else is a new version.",
        "",
        "## Partition keys",
        "",
        "In the paths only, as Hive, Spark and BigQuery expect: no file has a `run_date` or `run_id`",
        "column, so every reader (DuckDB with `hive_partitioning`, `pyarrow.dataset`,",
        "`pyarrow.parquet.read_table` or `pandas.read_parquet` on a table folder, polars, a BigQuery",
        "external table with the custom prefix `{run_date:DATE}/{run_id:STRING}`) sees the same columns.",
        "A single part file keeps its lineage in its Parquet key-value metadata: `schema_version`,",
        "`run_id`, `run_date`, `model_version`.",
        "",
        "| key | type | note |",
        "|---|---|---|",
    ]
    lines += [
        f"| `{field.name}` | `{arrow_type_name(field.type)}` | {_PARTITION_NOTES[field.name]} |" for field in PARTITION_SCHEMA
    ]
    for table, columns in _TABLES.items():
        lines += [
            "",
            f"## `{table}`",
            "",
            "| column | Parquet (Arrow) type | BigQuery type | mode | description |",
            "|---|---|---|---|---|",
        ]
        for (name, dtype, _, description), field in zip(columns, bigquery_schema(columns)):
            lines.append(f"| `{name}` | `{arrow_type_name(dtype)}` | {field['type']} | {field['mode']} | {description} |")
    lines += [
        "",
        "## BigQuery",
        "",
        "The BigQuery schemas of the file columns are generated beside the infrastructure: "
        + ", ".join(f"`{path}`" for path in BIGQUERY_SCHEMA_FILES.values())
        + ".",
        "Types are the ones BigQuery reads from Parquet without conversion: signed integers,",
        "FLOAT (float32 widens to FLOAT64), STRING, TIMESTAMP from microsecond UTC timestamps, and",
        "`probabilities` as a standard 3-level LIST (`element` items), a REPEATED FLOAT with list",
        "inference on. The `runs` table reads the summaries as NEWLINE_DELIMITED_JSON; the maps",
        "whose keys vary by run (`counts.failed_by_type`, `beam_counters`) are JSON columns.",
        "",
        "## `runs` (the run summaries)",
        "",
        "| field | BigQuery type | mode | description |",
        "|---|---|---|---|",
    ]
    for field in run_summary_bigquery_schema():
        lines.append(f"| `{field['name']}` | {field['type']} | {field['mode']} | {field['description']} |")
        for child in field.get("fields", []):
            lines.append(f"| `{field['name']}.{child['name']}` | {child['type']} | {child['mode']} | {child['description']} |")
    lines += [
        "",
    ]
    return "\n".join(lines)


def generated_files() -> dict[str, str]:
    """Repository-relative path -> the content this module generates for it."""
    files = {DATA_DICTIONARY: data_dictionary()}
    files.update(
        {path: bigquery_schema_json(_TABLES[table]) for table, path in BIGQUERY_SCHEMA_FILES.items() if table in _TABLES}
    )
    files[BIGQUERY_SCHEMA_FILES[RUNS_FOLDER]] = json.dumps(run_summary_bigquery_schema(), indent=2) + "\n"
    return files


def main() -> None:
    root = pathlib.Path(__file__).resolve().parents[2]  # the repository: components/analysts/ is two folders down
    for relative, content in generated_files().items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
        print(f"wrote {relative}")
    for relative, schema in REFERENCE_PARQUET_FILES.items():
        pq.write_table(schema.empty_table(), root / relative)
        print(f"wrote {relative}")


if __name__ == "__main__":
    main()
