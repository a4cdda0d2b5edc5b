"""Query results as files: CSV and xlsx that a spreadsheet reads as numbers and dates, Parquet that keeps every type.

    write_result(table, "result.csv")      # or .xlsx, .parquet; a path or gs:// URI

For people (CSV, xlsx):
- `probabilities` becomes one numeric column per class, named after the class, in label order;
  any other list, map or struct column is written as JSON text;
- CSV timestamps are ISO 8601 with their zone (`2026-11-28T06:00:00.000000Z`, UTC); xlsx has no
  time zones: its timestamps are date-time cells in UTC;
- CSV: a text cell that a spreadsheet would run as a formula (it starts with `=`, `+`, `-`,
  `@`, a tab or a carriage return) gets a leading `'`, the common convention that makes it
  text; xlsx: every text cell is stored as text, so it is never a formula and keeps its value.
Parquet is the result as it is: timestamps with their zone, `probabilities` a list.
"""

from __future__ import annotations

import datetime
import decimal
import json
import os
import tempfile

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from components.constants import CLASS_NAMES
from components.errors import InputError
from components.io import storage

OUTPUT_FORMATS = (".csv", ".xlsx", ".parquet")
PROBABILITIES_COLUMN = "probabilities"
# Cells starting with these are formulas (or become one) in Excel, LibreOffice and Google Sheets.
FORMULA_START = r"^[=+\-@\t\r]"
FORMULA_GUARD = "'"
XLSX_MAX_ROWS = 1_048_576 - 1  # a worksheet's rows, less the header


def write_result(table: pa.Table, out: str) -> None:
    """Writes a query result as CSV, xlsx or Parquet, chosen by the extension of `out` (a URI)."""
    extension = os.path.splitext(out)[1].lower()
    if extension not in OUTPUT_FORMATS:
        raise InputError(f"{out}: unknown output format; use one of {', '.join(OUTPUT_FORMATS)}")
    if extension == ".xlsx" and table.num_rows > XLSX_MAX_ROWS:
        raise InputError(f"{out}: {table.num_rows} rows, a worksheet holds {XLSX_MAX_ROWS}; use .csv or .parquet")
    with tempfile.TemporaryDirectory(prefix="fmnist-query-") as folder:
        local = os.path.join(folder, f"result{extension}")
        if extension == ".csv":
            pa_csv.write_csv(csv_table(table), local)
        elif extension == ".xlsx":
            _write_xlsx(for_people(table), local)
        else:
            pq.write_table(table, local)
        storage.upload_file(local, out)


def for_people(table: pa.Table) -> pa.Table:
    """The result with `probabilities` as one column per class and other nested columns as JSON text."""
    columns, names = [], []
    for name, column in zip(table.column_names, table.columns):
        if name == PROBABILITIES_COLUMN and _is_class_probabilities(column):
            for index, class_name in enumerate(CLASS_NAMES):
                columns.append(pc.list_element(column, index))
                names.append(class_name)
        elif pa.types.is_nested(column.type):
            columns.append(pa.array([None if value is None else json.dumps(value, default=str) for value in column.to_pylist()]))
            names.append(name)
        else:
            columns.append(column)
            names.append(name)
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise InputError(f"result columns {duplicated}: named twice once probabilities are one column per class; rename them")
    return pa.table(columns, names=names)


def csv_table(table: pa.Table) -> pa.Table:
    """`for_people`, with timestamps as ISO 8601 text and formula-like text cells neutralised."""
    people = for_people(table)
    columns = []
    for column in people.columns:
        if pa.types.is_timestamp(column.type):
            column = _iso_8601(column)
        elif pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            column = pc.if_else(
                pc.match_substring_regex(column, FORMULA_START), pc.binary_join_element_wise(FORMULA_GUARD, column, ""), column
            )
        columns.append(column)
    return pa.table(columns, names=people.column_names)


def _iso_8601(column: pa.ChunkedArray) -> pa.ChunkedArray:
    if column.type.tz is None:  # a zone-less timestamp of the query's making stays zone-less
        return pc.strftime(column, format="%Y-%m-%dT%H:%M:%S")
    utc = column.cast(pa.timestamp(column.type.unit, tz="UTC"))
    return pc.strftime(utc, format="%Y-%m-%dT%H:%M:%SZ")


def _is_class_probabilities(column: pa.ChunkedArray) -> bool:
    """A list of one number per class in every row (the table's column, not a list of the query's making)."""
    if not pa.types.is_list(column.type) or not pa.types.is_floating(column.type.value_type) or column.null_count:
        return False
    return pc.all(pc.equal(pc.list_value_length(column), len(CLASS_NAMES))).as_py() is not False


def _write_xlsx(table: pa.Table, path: str) -> None:
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("result")
    sheet.append(table.column_names)

    def cell(value):
        if isinstance(value, datetime.datetime) and value.tzinfo is not None:
            value = value.astimezone(datetime.UTC).replace(tzinfo=None)  # xlsx has no zones: UTC
        elif isinstance(value, decimal.Decimal):
            value = float(value)
        written = WriteOnlyCell(sheet, value=value)
        if isinstance(value, str):
            written.data_type = "s"  # text, even when it starts with "=": never a formula
        return written

    for batch in table.to_batches():
        for row in zip(*(column.to_pylist() for column in batch.columns)):
            sheet.append([cell(value) for value in row])
    workbook.save(path)
