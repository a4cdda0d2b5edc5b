"""The files generated from components/contracts/schema.py are committed as generated (`make schema-docs`)."""

from __future__ import annotations

import os

import pyarrow as pa
import pytest

from components.analysts import schema_docs
from components.contracts.schema import PREDICTION_COLUMNS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("relative", sorted(schema_docs.generated_files()))
def test_committed_file_matches_the_schema_module(relative):
    with open(os.path.join(REPO, relative)) as file:
        committed = file.read()
    assert committed == schema_docs.generated_files()[relative], f"{relative} is stale: run `make schema-docs`"


def test_data_dictionary_lists_every_column_with_its_types():
    text = schema_docs.data_dictionary()
    section = text.split("## `predictions`")[1].split("## `errors`")[0]
    for name, dtype, _, description in PREDICTION_COLUMNS:
        row = next(line for line in section.splitlines() if line.startswith(f"| `{name}` |"))
        assert f"`{schema_docs.arrow_type_name(dtype)}`" in row and description in row
    assert "| `probabilities` | `list<float32>` | FLOAT | REPEATED |" in text
    assert "| `run_date` | `date` |" in text
    assert schema_docs.arrow_type_name(pa.timestamp("us", tz="UTC")) == "timestamp[us, UTC]"


@pytest.mark.parametrize("relative", sorted(schema_docs.REFERENCE_PARQUET_FILES))
def test_reference_parquet_files_have_the_tables_schema_and_no_rows(relative):
    import pyarrow.parquet as pq

    committed = pq.read_table(os.path.join(REPO, relative))
    assert committed.num_rows == 0
    assert committed.schema.remove_metadata().equals(schema_docs.REFERENCE_PARQUET_FILES[relative].remove_metadata()), (
        f"{relative} is stale: run `make schema-docs`"
    )
