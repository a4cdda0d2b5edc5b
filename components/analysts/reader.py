"""The scoring tables from Python: the rows of a view as a pyarrow.Table, without SQL.

    import datetime
    import pyarrow.compute as pc
    from components.analysts import read

    day = read("runs/local/scores", "predictions_current", where=pc.field("run_date") == datetime.date(2026, 11, 28))
    day.to_pandas()                   # pandas
    polars.from_arrow(day)            # polars

`read` reads exactly what the DuckDB views of components.analysts.tables read: the parts that
complete runs' summaries name, and for `predictions_current` those of the current run of each
run date (the same choice, `current_summaries`). A filter on the partition keys (`run_date`,
`run_id`) is applied to the file list before anything is opened: a one-day read opens that
day's files only, and reads only that day's run summaries (found by the run index). A view
with no rows (the errors of clean runs) is an empty table with the view's columns, never an
error.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from pyarrow import fs as pa_fs

from components.analysts.tables import (
    CURRENT_PREDICTIONS_VIEW,
    MODELS_SCHEMA,
    MODELS_VIEW,
    RUNS_VIEW,
    VIEWS,
    _first_line,
    complete_run_summaries,
    current_summaries,
    model_roots_of,
    models_table,
    parts_dataset,
    runs_table,
)
from components.constants import CLASS_NAMES
from components.contracts import run_index
from components.contracts.run_index import DateRange
from components.contracts.schema import ERROR_SCHEMA, ERRORS_TABLE, PARTITION_SCHEMA, PREDICTION_SCHEMA, PREDICTIONS_TABLE
from components.errors import InputError

# A filter: a pyarrow expression, or pandas' `filters` form (a list of (column, op, value) tuples, ANDed).
Where = pc.Expression | Sequence[tuple] | None


def view_schema(view: str) -> pa.Schema:
    """The columns of a view, in the order `SELECT *` gives them."""
    if view == RUNS_VIEW:
        return runs_table([]).schema
    if view == MODELS_VIEW:
        return MODELS_SCHEMA
    if view == ERRORS_TABLE:
        return pa.schema(list(ERROR_SCHEMA) + list(PARTITION_SCHEMA))
    fields = []
    for field in PREDICTION_SCHEMA:
        fields.append(field)
        if field.name == "true_label":
            fields.append(pa.field("true_class", pa.string()))
    return pa.schema(fields + list(PARTITION_SCHEMA))


def read(scores: str, view: str, where: Where = None, columns: Sequence[str] | None = None) -> pa.Table:
    """The rows of one view (`predictions`, `predictions_current`, `errors`, `runs`, `models`) below
    a scoring output root (local or gs://), optionally filtered and narrowed to some columns. The
    `models` view lists the versions of the model roots the runs scored with, as `fmnist query` does
    without --models."""
    if view not in VIEWS:
        raise InputError(f"view {view!r}: unknown; use one of {', '.join(VIEWS)}")
    schema = view_schema(view)
    wanted = list(schema.names if columns is None else columns)
    unknown = [name for name in wanted if name not in schema.names]
    if unknown:
        raise InputError(f"columns {unknown}: not columns of {view}; it has {', '.join(schema.names)}")
    expression = _expression(where)
    summaries = complete_run_summaries(scores, None if view == MODELS_VIEW else _dates_kept(scores, schema, expression))
    if view in (RUNS_VIEW, MODELS_VIEW):
        table = runs_table(summaries) if view == RUNS_VIEW else models_table(model_roots_of(summaries))
        return (table if expression is None else table.filter(expression)).select(wanted)
    if view == CURRENT_PREDICTIONS_VIEW:
        summaries = current_summaries(summaries)
    table_name, file_schema = (ERRORS_TABLE, ERROR_SCHEMA) if view == ERRORS_TABLE else (PREDICTIONS_TABLE, PREDICTION_SCHEMA)
    dataset = parts_dataset(scores, table_name, file_schema, summaries)
    stored = [name for name in wanted if name != "true_class"]
    if "true_class" in wanted and "true_label" not in stored:
        stored.append("true_label")
    try:
        # Rows are filtered while scanning; files whose partition keys contradict the filter are never opened.
        table = dataset.to_table(columns=stored, filter=expression)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as error:
        raise InputError(f"where {where!r}: {_first_line(error)}") from error
    except OSError as error:  # FileNotFoundError and damaged pages included
        raise InputError(f"{scores}: a part named by a run summary cannot be read ({_first_line(error)})") from error
    if "true_class" in wanted:
        table = table.append_column("true_class", pc.take(pa.array(CLASS_NAMES, pa.string()), table.column("true_label")))
    return table.select(wanted)


def _dates_kept(scores: str, schema: pa.Schema, expression: pc.Expression | None) -> DateRange | None:
    """The run dates a filter can keep, from the run index (None: every date).

    pyarrow decides it, as it prunes a dataset's files by their partition keys: each indexed
    date stands for one file that is never opened, and the filter keeps the dates it does not
    contradict. So only those dates' summaries are read."""
    if expression is None or not run_index.is_complete(scores):
        return None
    days = [day for day, _ in run_index.dates_newest_first(scores)]
    probe = ds.FileSystemDataset.from_paths(
        [str(index) for index in range(len(days))],
        schema=schema,
        format=ds.ParquetFileFormat(),
        filesystem=pa_fs.LocalFileSystem(),
        partitions=[pc.field("run_date") == day for day in days],
    )
    try:
        kept = [days[int(fragment.path)] for fragment in probe.get_fragments(filter=expression)]
    except (pa.ArrowException, TypeError, ValueError):  # a filter pyarrow cannot apply: the scan says why
        return None
    if not kept:
        return DateRange(datetime.date.max, datetime.date.min)  # no date: nothing to read
    return DateRange(min(kept), max(kept))


def _expression(where: Where) -> pc.Expression | None:
    if where is None or isinstance(where, pc.Expression):
        return where
    try:
        return pq.filters_to_expression(list(where))
    except (TypeError, ValueError) as error:
        raise InputError(
            f"where {where!r}: not a pyarrow expression nor a list of (column, op, value) filters ({error})"
        ) from error
