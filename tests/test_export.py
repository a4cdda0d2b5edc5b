"""`fmnist query --out`: CSV and xlsx a spreadsheet reads as numbers and dates, Parquet that keeps the types."""

from __future__ import annotations

import datetime

import numpy as np
import openpyxl
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.analysts.export import csv_table, write_result
from components.analysts.tables import query
from components.constants import CLASS_NAMES
from components.errors import InputError
from jobs import query as query_job

# The first rows of the prediction view, with image ids a spreadsheet would run as formulas.
SQL = (
    "SELECT CASE WHEN row_number() OVER (ORDER BY image_id, run_id) = 1 THEN '=1+1' "
    "WHEN row_number() OVER (ORDER BY image_id, run_id) = 2 THEN '@SUM(A1)' ELSE image_id END AS image_id, "
    "predicted_class, confidence, probabilities, scored_at, run_date, run_id "
    "FROM predictions ORDER BY image_id, run_id"
)


@pytest.fixture(scope="module")
def result(scored_output) -> pa.Table:
    return query(sql=SQL, scores=scored_output[1])


def test_csv_opens_in_pandas_with_numbers_per_class_real_timestamps_and_no_formula(result, scored_output, tmp_path):
    out = str(tmp_path / "result.csv")
    assert query_job.main([SQL, "--scores", scored_output[1], "--out", out]) == 0
    frame = pd.read_csv(out)  # default options, as a person would
    assert list(frame.columns) == ["image_id", "predicted_class", "confidence", *CLASS_NAMES, "scored_at", "run_date", "run_id"]
    assert all(pd.api.types.is_float_dtype(frame[name]) for name in CLASS_NAMES)
    expected = result.column("probabilities").to_pylist()
    np.testing.assert_allclose(frame[list(CLASS_NAMES)].to_numpy(), np.array(expected), rtol=1e-6)
    stamps = pd.to_datetime(frame["scored_at"], format="ISO8601")
    assert str(stamps.dt.tz) == "UTC"
    assert stamps.dt.to_pydatetime().tolist() == result.column("scored_at").to_pylist()
    assert frame["scored_at"][0].endswith("Z") and "T" in frame["scored_at"][0]
    assert frame["image_id"][:2].tolist() == ["'=1+1", "'@SUM(A1)"]  # text, with the convention's leading '
    assert frame["image_id"][2:].tolist() == result.column("image_id").to_pylist()[2:]


def test_csv_guards_every_formula_start_and_nothing_else():
    table = pa.table({"text": ["=1+1", "+1", "-1", "@A1", "\tx", "\rx", "a=b", "", None], "number": [-1] * 9})
    guarded = csv_table(table)
    assert guarded.column("text").to_pylist() == ["'=1+1", "'+1", "'-1", "'@A1", "'\tx", "'\rx", "a=b", "", None]
    assert guarded.column("number").to_pylist() == [-1] * 9  # numbers stay numbers


def test_xlsx_holds_numbers_dates_and_text_never_formulas(result, tmp_path):
    out = str(tmp_path / "result.xlsx")
    write_result(result, out)
    sheet = openpyxl.load_workbook(out).active
    rows = list(sheet.iter_rows(values_only=True))
    header = rows[0]
    assert header == ("image_id", "predicted_class", "confidence", *CLASS_NAMES, "scored_at", "run_date", "run_id")
    assert len(rows) == result.num_rows + 1
    first = dict(zip(header, rows[1]))
    assert first["image_id"] == "=1+1" and sheet.cell(row=2, column=1).data_type == "s"
    assert all(isinstance(first[name], float) for name in CLASS_NAMES)
    assert first["scored_at"] == result.column("scored_at")[0].as_py().astimezone(datetime.UTC).replace(tzinfo=None)
    frame = pd.read_excel(out)
    assert pd.api.types.is_datetime64_any_dtype(frame["scored_at"]) and pd.api.types.is_float_dtype(frame[CLASS_NAMES[0]])


def test_parquet_keeps_the_types(result, tmp_path):
    out = str(tmp_path / "result.parquet")
    write_result(result, out)
    back = pq.read_table(out)
    assert back.schema.field("probabilities").type == result.schema.field("probabilities").type
    assert back.schema.field("scored_at").type.tz is not None and back.equals(result)


def test_unknown_format_and_other_list_columns(tmp_path):
    with pytest.raises(InputError, match="unknown output format"):
        write_result(pa.table({"a": [1]}), str(tmp_path / "x.json"))
    table = pa.table({"probabilities": [[0.5, 0.5]], "tags": [["a", "b"]]})  # not one number per class
    assert csv_table(table).to_pylist() == [{"probabilities": "[0.5, 0.5]", "tags": '["a", "b"]'}]
