"""The prediction tables load into BigQuery without surprises: its rules for Parquet, checked here.

BigQuery reads Parquet columns by their physical + logical types. The rules these tests hold
the tables to: no unsigned integers (no BigQuery type), no INT96, timestamps as INT64
TIMESTAMP(MICROS, isAdjustedToUTC=true) (-> TIMESTAMP), lists as the standard 3-level LIST
(`<name> (List) { repeated group list { element } }`, which list inference turns into a
REPEATED column), column names BigQuery accepts. Checked on the schema module (Arrow level)
and on files written the way the scorer writes them (Parquet level), with counter-examples
proving that the checks catch each violation.
"""

from __future__ import annotations

import datetime
import json
import os
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.contracts.schema import (
    ERROR_COLUMNS,
    ERROR_SCHEMA,
    PARTITION_KEYS,
    PARTITION_SCHEMA,
    PREDICTION_COLUMNS,
    PREDICTION_SCHEMA,
    bigquery_schema,
)
from components.io import storage

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,299}$")
_UNSIGNED = {"UINT_8", "UINT_16", "UINT_32", "UINT_64"}


def arrow_violations(schema: pa.Schema) -> list[str]:
    """BigQuery's Parquet rules, on an Arrow schema before anything is written."""
    problems = []

    def check(name: str, dtype: pa.DataType) -> None:
        if pa.types.is_unsigned_integer(dtype):
            problems.append(f"{name}: unsigned {dtype}")
        elif pa.types.is_timestamp(dtype) and (dtype.unit != "us" or dtype.tz not in ("UTC", "+00:00")):
            problems.append(f"{name}: timestamp[{dtype.unit}, tz={dtype.tz}], expected microseconds UTC")
        elif pa.types.is_large_list(dtype) or pa.types.is_fixed_size_list(dtype):
            problems.append(f"{name}: {dtype}, expected a plain list")
        elif pa.types.is_list(dtype):
            if dtype.value_field.name != "element":
                problems.append(f"{name}: list item named {dtype.value_field.name!r}, expected 'element'")
            check(f"{name}.element", dtype.value_type)
        elif pa.types.is_dictionary(dtype) or pa.types.is_float16(dtype) or pa.types.is_large_string(dtype):
            problems.append(f"{name}: {dtype} has no BigQuery type")

    for field in schema:
        if not _NAME.match(field.name):
            problems.append(f"{field.name}: not a BigQuery column name")
        check(field.name, field.type)
    return problems


def parquet_violations(schema: pq.ParquetSchema) -> list[str]:
    """BigQuery's Parquet rules, on the schema of a written file."""
    problems = []
    text = str(schema)
    for index in range(len(schema)):
        column = schema.column(index)
        logical = json.loads(column.logical_type.to_json()) if column.logical_type.type != "NONE" else {}
        if column.physical_type == "INT96":
            problems.append(f"{column.path}: INT96 (legacy timestamp)")
        if logical.get("Type") == "Int" and not logical.get("isSigned", True) or str(column.converted_type) in _UNSIGNED:
            problems.append(f"{column.path}: unsigned integer")
        if logical.get("Type") == "Timestamp" and (
            logical.get("timeUnit") != "microseconds" or not logical.get("isAdjustedToUTC")
        ):
            problems.append(f"{column.path}: timestamp {logical}, expected microseconds adjusted to UTC")
        if column.max_repetition_level:
            top = column.path.split(".")[0]
            if column.path != f"{top}.list.element" or not re.search(rf"group field_id=-?\d+ {top} \(List\)", text):
                problems.append(f"{column.path}: not a standard 3-level LIST with items named 'element'")
    return problems


def written_schema(table: pa.Table, path: str, **options) -> pq.ParquetSchema:
    pq.write_table(table, path, **options)
    return pq.ParquetFile(path).schema


def one_prediction() -> dict:
    return {
        "image_id": "a",
        "source_uri": "gs://b/s",
        "predicted_label": 3,
        "predicted_class": "Dress",
        "confidence": 0.9,
        "probabilities": [0.01] * 9 + [0.91],
        "true_label": None,
        "model_version": "v",
        "run_id": "r",
        "scored_at": datetime.datetime(2026, 11, 28, tzinfo=datetime.UTC),
    }


@pytest.mark.parametrize("schema", [PREDICTION_SCHEMA, ERROR_SCHEMA], ids=["predictions", "errors"])
def test_schema_module_follows_bigquery_rules(schema):
    assert arrow_violations(schema) == []


def test_file_written_like_the_scorer_follows_bigquery_rules(tmp_path):
    table = pa.Table.from_pylist([one_prediction()], schema=PREDICTION_SCHEMA)
    assert parquet_violations(written_schema(table, str(tmp_path / "p.parquet"))) == []
    errors = pa.Table.from_pylist([], schema=ERROR_SCHEMA)
    assert parquet_violations(written_schema(errors, str(tmp_path / "e.parquet"))) == []


def test_fixture_tables_follow_bigquery_rules(scored_output):
    """Every Parquet file of the scoring output the reader tests use (point this at real `score` output too)."""
    _, scores = scored_output
    files = [uri for uri in storage.list_prefix(scores) if uri.endswith(".parquet")]
    assert len(files) >= 6
    for uri in files:
        assert parquet_violations(pq.ParquetFile(uri).schema) == [], uri


def test_the_checks_catch_each_violation(tmp_path):
    bad = pa.schema(
        [
            pa.field("count", pa.uint8()),
            pa.field("at", pa.timestamp("ns", tz="UTC")),
            pa.field("local", pa.timestamp("us")),
            pa.field("probabilities", pa.list_(pa.float32())),
            pa.field("bad-name", pa.string()),
        ]
    )
    assert len(arrow_violations(bad)) == 5  # list<item: float> is the non-standard item name
    table = pa.Table.from_pylist(
        [
            {
                "count": 1,
                "at": datetime.datetime(2026, 1, 1),
                "local": datetime.datetime(2026, 1, 1),
                "probabilities": [0.5],
                "bad-name": "x",
            }
        ],
        schema=bad,
    )
    problems = parquet_violations(written_schema(table, str(tmp_path / "bad.parquet"), use_compliant_nested_type=False))
    assert [problem.split(":")[0] for problem in problems] == ["count", "at", "local", "probabilities.list.item"]
    legacy = parquet_violations(
        written_schema(table.select(["at"]), str(tmp_path / "int96.parquet"), use_deprecated_int96_timestamps=True)
    )
    assert legacy and "INT96" in legacy[0]


def test_bigquery_schema_of_the_prediction_table():
    fields = {field["name"]: field for field in bigquery_schema(PREDICTION_COLUMNS)}
    assert list(fields) == PREDICTION_SCHEMA.names
    assert (fields["probabilities"]["type"], fields["probabilities"]["mode"]) == ("FLOAT", "REPEATED")
    assert (fields["scored_at"]["type"], fields["scored_at"]["mode"]) == ("TIMESTAMP", "REQUIRED")
    assert (fields["true_label"]["type"], fields["true_label"]["mode"]) == ("INTEGER", "NULLABLE")
    assert all(field["description"] for field in fields.values())
    assert [field["name"] for field in bigquery_schema(ERROR_COLUMNS)] == ERROR_SCHEMA.names
    with pytest.raises(TypeError, match="uint8"):
        bigquery_schema([("n", pa.uint8(), False, "")])


def test_committed_bigquery_schema_files_match_the_module():
    for name, columns in (("predictions", PREDICTION_COLUMNS), ("errors", ERROR_COLUMNS)):
        with open(os.path.join(REPO, "infra", "bigquery", f"{name}.schema.json")) as file:
            assert json.load(file) == bigquery_schema(columns), f"run `make schema-docs` ({name})"


def test_partition_schema_names_the_partition_keys():
    assert PARTITION_SCHEMA.names == list(PARTITION_KEYS)
    assert arrow_violations(PARTITION_SCHEMA) == []


def test_partition_keys_live_in_the_paths_only():
    """Contract v2: run_date and run_id are Hive path keys and never file columns, which BigQuery's
    Hive partitioning refuses (and pandas/pyarrow cannot merge) - in the schema module, the schema
    files the external tables read, and the CUSTOM prefix of those tables."""
    assert not set(PARTITION_KEYS) & set(PREDICTION_SCHEMA.names)
    assert not set(PARTITION_KEYS) & set(ERROR_SCHEMA.names)
    for name in ("predictions", "errors"):
        with open(os.path.join(REPO, "infra", "bigquery", f"{name}.schema.json")) as file:
            assert not set(PARTITION_KEYS) & {field["name"] for field in json.load(file)}, name
    with open(os.path.join(REPO, "infra", "terraform", "bigquery.tf")) as file:
        prefixes = re.findall(r'source_uri_prefix\s*=\s*"[^"]*?((?:/\{\w+:\w+\})+)"', file.read())
    assert prefixes == ["/{run_date:DATE}/{run_id:STRING}"]
    assert PARTITION_SCHEMA.field("run_date").type == pa.date32()
