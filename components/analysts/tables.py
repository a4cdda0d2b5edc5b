"""The scoring output as SQL: DuckDB views over exactly the Parquet parts that complete runs' summaries name.

    con = open_tables(scores="runs/local/scores")      # or gs://bucket/scores
    con.sql("SELECT predicted_class, count(*) FROM predictions_current GROUP BY ALL")

Views (table contract v2, components/contracts/schema.py):
- `predictions`: rows of every complete run: the Parquet columns, `true_class` (the name of
  `true_label`), and the partition keys `run_date` (DATE) and `run_id` from the paths;
- `predictions_current`: the same, for the latest complete run of each `run_date` whose
  status is `ok` only (a rerun under a new id or a backfill does not double-count a day; a
  run that failed its error-rate or manifest check stays in `predictions`, never current);
- `errors`: the error rows of every complete run, with the partition keys;
- `runs`: one row per run summary, failure records (status `failed`, nothing published) too;
- `models` (in `fmnist query`): one row per model version, the columns of `fmnist model list`
  (components/contracts/model_versions.py), of the model root given with `--models`, or else
  of the model roots the complete runs' summaries name (the folder above each `model_uri`), so
  `predictions` joins `models` on `model_version`.
A run is complete when its summary `runs/<run_id>.json` (written last by `score`) exists,
and only the parts it names are read: a stray or foreign file in a partition is never
counted, files of a run being written or abandoned never show. A summary a writer of this
project would not produce, or whose parts cannot be read or hold other counts, is skipped
with a warning naming it (read_run_summaries): one broken run never takes the others down.
Runs of contract v1 (run_id inside the files) are skipped with how to migrate them.

The connection is a sandbox: the Parquet is read by pyarrow.dataset over the storage
layer's Arrow file system (no DuckDB extension is downloaded for `gs://`) and handed to
DuckDB as Arrow datasets; then DuckDB's own file and network access is switched off and its
configuration locked, and `query` runs exactly one read-only SELECT.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import logging
import re
from collections.abc import Iterator
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from components.analysts.date_scope import query_dates
from components.constants import CLASS_NAMES
from components.contracts import model_versions, run_index
from components.contracts.parameters import parameter
from components.contracts.run_index import DateRange
from components.contracts.schema import (
    ERROR_SCHEMA,
    ERRORS_TABLE,
    PARTITION_SCHEMA,
    PREDICTION_SCHEMA,
    PREDICTIONS_TABLE,
    RUNS_FOLDER,
    TABLE_SCHEMA_VERSION,
    V1_SCHEMA_VERSION,
    is_run_id,
    parse_run_date,
    partition_uri,
    run_summary_uri,
)
from components.contracts.summary import MAX_SUMMARY_BYTES, OK_STATUS, ContractError, RunSummary
from components.errors import InputError
from components.io import storage
from components.io.parquet_parts import part_rows

log = logging.getLogger(__name__)

RUNS_VIEW = "runs"
CURRENT_PREDICTIONS_VIEW = "predictions_current"
# Which complete run of a run date is its current one (a rerun or backfill replaces it): the
# last to finish. A window over the `runs` view; the report's trend uses the same one.
CURRENT_RUN_WINDOW = "PARTITION BY run_date ORDER BY finished_at DESC NULLS LAST, run_id DESC"
MODELS_VIEW = "models"
VIEWS = (PREDICTIONS_TABLE, CURRENT_PREDICTIONS_VIEW, ERRORS_TABLE, RUNS_VIEW, MODELS_VIEW)
DATED_VIEWS = (PREDICTIONS_TABLE, CURRENT_PREDICTIONS_VIEW, ERRORS_TABLE, RUNS_VIEW)  # with a run_date column
RUNS_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string()),
        pa.field("run_date", pa.date32()),
        pa.field("status", pa.string()),
        pa.field("model_version", pa.string()),
        pa.field("read", pa.int64()),
        pa.field("scored", pa.int64()),
        pa.field("failed", pa.int64()),
        pa.field("expected", pa.int64()),
        pa.field("failed_by_type", pa.map_(pa.string(), pa.int64())),
        pa.field("error_rate", pa.float64()),
        pa.field("started_at", pa.timestamp("us", tz="UTC")),
        pa.field("finished_at", pa.timestamp("us", tz="UTC")),
        # Set for failure records (status failed) only: where and how the run ended.
        pa.field("failed_task", pa.string()),
        pa.field("exit_code", pa.int64()),
        pa.field("last_error", pa.string()),
        pa.field("pipeline_job", pa.string()),
        pa.field("summary", pa.string()),  # the whole summary JSON: query it with json_extract
    ]
)
MODELS_SCHEMA = pa.schema(
    [
        pa.field("model_version", pa.string()),
        pa.field("test_accuracy", pa.float64()),
        pa.field("test_ece", pa.float64()),
        pa.field("architecture", pa.string()),
        pa.field("trained_at", pa.timestamp("us", tz="UTC")),
        pa.field("verdict", pa.string()),
        pa.field("champion_version", pa.string()),
        pa.field("is_latest", pa.bool_()),
        pa.field("manifest_digest", pa.string()),
        pa.field("model_uri", pa.string()),
    ]
)


def scores_root(*, deprecated_aliases: tuple[str, ...] = ("--predictions",)) -> Any:
    """The `scores` parameter of every step that reads a scoring output (query, report, migrate-tables)."""
    return parameter(
        help="the scoring output root (the --output given to `fmnist score`)",
        location=True,
        deprecated_aliases=deprecated_aliases,
    )


@dataclasses.dataclass(frozen=True)
class QueryParameters:
    """`fmnist query`: one read-only SQL query over the scoring tables."""

    sql: str = parameter(help="one SELECT (DuckDB dialect); examples in docs/analysts.md", positional=True)
    scores: str = scores_root()
    out: str | None = parameter(
        None,
        help="write the result to FILE.csv, FILE.xlsx or FILE.parquet (a path or gs:// URI) instead of printing it",
        location=True,
    )
    models: str | None = parameter(
        None,
        help="model root of the `models` view (default: the model roots the runs' summaries name)",
        location=True,
    )


SUMMARY_READERS = 16  # summaries read and checked at once (round trips on GCS)
MIGRATE_HINT = "rewrite it as contract v2 with `fmnist migrate-tables --scores {root}`, or score it again"


def read_run_summaries(scores: str, *, dates: DateRange | None = None, skipped: dict[str, str] | None = None) -> list[RunSummary]:
    """The summaries of the complete runs below a scoring output root, sorted by run id; with
    `dates`, of the runs of those run dates only, found by the run index (components/contracts/
    run_index.py) when the root has a complete one: then only those dates' summaries are read.

    A summary is skipped with one warning naming it and why when it is not one a writer of this
    project produces (unreadable, too large, invalid, a date that is not a date, a part named
    twice or outside its run's partition, counts that do not add up) or when a part it names
    cannot be read or holds other row counts than the summary says (from the Parquet footers):
    one broken run never takes the other runs' tables down. `skipped`, when given, receives each
    skipped summary's URI and why. A summary of table contract v1 is skipped with how to
    migrate; an InputError when nothing else is left. Summaries are read and checked by a few
    threads at once: on GCS each is a round trip.
    """
    dates = dates or DateRange()
    return _read_summaries(scores, summary_uris(scores, dates), dates, skipped=skipped)


def _read_summaries(scores: str, uris: list[str], dates: DateRange, *, skipped: dict[str, str] | None = None) -> list[RunSummary]:
    """read_run_summaries of the summaries at `uris`."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=SUMMARY_READERS) as pool:
        outcomes = list(pool.map(lambda uri: _checked_run(uri, scores, dates), uris))
    summaries, v1_uris = [], []
    for uri, outcome in zip(uris, outcomes, strict=True):
        if outcome is None:  # indexed, but no summary of those dates: not a complete run there
            continue
        if isinstance(outcome, RunSummary):
            summaries.append(outcome)
            continue
        if outcome.v1:
            v1_uris.append(uri)
        log.warning("%s: skipped, %s", uri, outcome)
        if skipped is not None:
            skipped[uri] = str(outcome)
    if not summaries and v1_uris:
        raise InputError(f"{v1_uris[0]}: a run of table contract v1 ({V1_SCHEMA_VERSION}); " + MIGRATE_HINT.format(root=scores))
    return sorted(summaries, key=lambda summary: summary.run_id)


def published_dates_newest_first(scores: str, *, before: datetime.date | None = None) -> Iterator[datetime.date] | None:
    """The run dates before `before` that have a published run (not only failure records), newest
    first, found by the run index date by date (a caller that stops at the first reads only the
    summaries of the dates it passed); None when the root has no complete index."""
    if not run_index.is_complete(scores):
        return None
    return (
        day
        for day, run_ids in run_index.dates_newest_first(scores, before=before)
        if any(
            summary.published
            for summary in _read_summaries(scores, [run_summary_uri(scores, run_id) for run_id in run_ids], DateRange(day, day))
        )
    )


def run_date_of(scores: str, run_id: str) -> datetime.date | None:
    """The run date of run `run_id` from its summary; None when it has no valid one."""
    if not is_run_id(run_id):
        return None
    try:
        summary = _valid_summary(run_summary_uri(scores, run_id), scores)
    except _Skipped:
        return None
    return parse_run_date(summary.run_date) if summary else None


def summary_uris(scores: str, dates: DateRange) -> list[str]:
    """The summaries that can hold runs of `dates`: those the run index names for those dates
    when the root has a complete index, else every summary there is."""
    if dates != DateRange() and run_index.is_complete(scores):
        return [run_summary_uri(scores, run_id) for run_id in run_index.run_ids(scores, dates)]
    return storage.glob(storage.join(scores, RUNS_FOLDER, "*.json"))


def _checked_run(uri: str, scores: str, dates: DateRange) -> RunSummary | _Skipped | None:
    """The summary at `uri` when it and its parts pass every check; otherwise why not; None when
    there is no summary there (an indexed attempt that never published) or its run date is not
    one of `dates`."""
    try:
        summary = _valid_summary(uri, scores)
        if summary is None or parse_run_date(summary.run_date) not in dates:
            return None
        _check_parts(scores, summary)
    except _Skipped as why:
        return why
    return summary


def complete_run_summaries(scores: str, dates: DateRange | None = None) -> list[RunSummary]:
    """`read_run_summaries`, or an InputError when the root has none at all (not a scoring
    output root); none of `dates` is an empty list."""
    summaries = read_run_summaries(scores, dates=dates)
    if not summaries and (dates is None or not storage.glob(storage.join(scores, RUNS_FOLDER, "*.json"))):
        raise InputError(
            f"{scores}: no complete scoring run (no valid {RUNS_FOLDER}/*.json); expected the --output root of `fmnist score`"
        )
    return summaries


class _Skipped(Exception):
    """Why a summary is not read (the warning's text)."""

    def __init__(self, why: str, *, v1: bool = False) -> None:
        super().__init__(why)
        self.v1 = v1


def _valid_summary(uri: str, scores: str) -> RunSummary | None:
    """The summary at `uri`, checked against everything a reader can check without the parts;
    None when there is none."""
    try:
        data = storage.read_snapshot(uri, max_bytes=MAX_SUMMARY_BYTES).data
    except InputError as error:  # too large, a folder, a link
        raise _Skipped(str(error).removeprefix(f"{uri}: ")) from error
    if data is None:
        return None
    try:
        summary = RunSummary.from_json(data)
    except ContractError as error:
        if _is_v1(data):
            raise _Skipped(
                f"a run of table contract v1 ({V1_SCHEMA_VERSION}); {MIGRATE_HINT.format(root=scores)}", v1=True
            ) from error
        raise _Skipped(f"not a valid run summary ({error})") from error
    if summary.schema_version != TABLE_SCHEMA_VERSION or storage.basename(uri) != f"{summary.run_id}.json":
        raise _Skipped(f"a summary of run {summary.run_id!r}, schema {summary.schema_version!r}")
    try:
        summary.check()
    except ContractError as error:
        raise _Skipped(f"not a valid run summary ({error})") from error
    return summary


def _is_v1(data: bytes) -> bool:
    return V1_SCHEMA_VERSION.encode() in data


def _check_parts(scores: str, summary: RunSummary) -> None:
    """_Skipped unless every part the summary names can be read and the parts hold exactly the
    rows its counts say (Parquet footers only)."""
    expected = {PREDICTIONS_TABLE: summary.counts.scored, ERRORS_TABLE: summary.counts.failed}
    for table in (PREDICTIONS_TABLE, ERRORS_TABLE):
        rows = 0
        for part in named_parts(scores, table, summary):
            try:
                rows += part_rows(part)
            except (InputError, OSError, pa.ArrowException) as error:
                raise _Skipped(f"run {summary.run_id}: its {table} part {part} cannot be read ({_first_line(error)})") from None
        if rows != expected[table]:
            raise _Skipped(f"run {summary.run_id}: its {table} parts hold {rows} rows, its summary counts {expected[table]}")


def named_parts(scores: str, table: str, summary: RunSummary) -> list[str]:
    """The URIs of a table's parts that a summary names, each looked up by its name in the run's
    own partition below `scores` (so a summary never makes a file elsewhere count, and an output
    root copied to another place stays readable)."""
    folder = partition_uri(scores, table, summary.run_date, summary.run_id)
    return [storage.join(folder, storage.basename(part)) for part in summary.parts.of(table)]


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def open_tables(
    *, scores: str, model_roots: list[str] | None = None, dates: DateRange | None = None
) -> duckdb.DuckDBPyConnection:
    """A locked DuckDB connection with the views `predictions`, `predictions_current`, `errors`
    and `runs` of the complete runs below `scores` (the --output root of `fmnist score`), and
    `models` of the model roots when `model_roots` is given ([]: the roots the summaries name).
    With `dates`, the views hold the runs of those run dates only (and read nothing else)."""
    summaries = complete_run_summaries(scores, dates)
    connection = duckdb.connect()
    try:
        for table, schema in ((PREDICTIONS_TABLE, PREDICTION_SCHEMA), (ERRORS_TABLE, ERROR_SCHEMA)):
            connection.register(f"_{table}_parts", parts_dataset(scores, table, schema, summaries))
        # The current runs are chosen on the small side (the summaries), so the view reads only
        # their files: no join over every prediction row of the history.
        connection.register(
            f"_{CURRENT_PREDICTIONS_VIEW}_parts",
            parts_dataset(scores, PREDICTIONS_TABLE, PREDICTION_SCHEMA, current_summaries(summaries)),
        )
        connection.register(f"_{RUNS_VIEW}", runs_table(summaries))
        if model_roots is not None:
            connection.register(f"_{MODELS_VIEW}", models_table(model_roots or model_roots_of(summaries)))
            connection.execute(f"CREATE VIEW {MODELS_VIEW} AS SELECT * FROM _{MODELS_VIEW}")
        class_names = ", ".join("'" + name.replace("'", "''") + "'" for name in CLASS_NAMES)
        columns = []
        for name in PREDICTION_SCHEMA.names:
            columns.append(name)
            if name == "true_label":
                columns.append(f"[{class_names}][true_label + 1] AS true_class")  # NULL stays NULL
        partition_keys = ", ".join(PARTITION_SCHEMA.names)
        for view in (PREDICTIONS_TABLE, CURRENT_PREDICTIONS_VIEW):
            connection.execute(f"CREATE VIEW {view} AS SELECT {', '.join(columns)}, {partition_keys} FROM _{view}_parts")
        connection.execute(f"CREATE VIEW {ERRORS_TABLE} AS SELECT * FROM _{ERRORS_TABLE}_parts")
        connection.execute(f"CREATE VIEW {RUNS_VIEW} AS SELECT * FROM _{RUNS_VIEW}")
        # The sandbox: no file or network access of DuckDB's own, and nobody can switch it back.
        connection.execute("SET enable_external_access = false")
        connection.execute("SET lock_configuration = true")
    except BaseException:
        connection.close()
        raise
    return connection


def current_summaries(summaries: list[RunSummary]) -> list[RunSummary]:
    """The current run of each run date among `summaries`: its `ok` run that CURRENT_RUN_WINDOW puts
    first (a run that failed its check, or a failure record, is never current): what
    `predictions_current` reads, in the SQL views and in the Python reader alike."""
    connection = duckdb.connect()
    try:
        connection.register(f"_{RUNS_VIEW}", runs_table(summaries))
        current = connection.sql(
            f"SELECT run_id FROM _{RUNS_VIEW} WHERE status = '{OK_STATUS}' QUALIFY row_number() OVER ({CURRENT_RUN_WINDOW}) = 1"
        ).fetchall()
    finally:
        connection.close()
    current_ids = {run_id for (run_id,) in current}
    return [summary for summary in summaries if summary.run_id in current_ids]


def parts_dataset(scores: str, table: str, schema: pa.Schema, summaries: list[RunSummary]) -> ds.Dataset:
    """The parts of one table that the summaries name, as one dataset with the partition keys as columns.

    The parts are `named_parts`, on the Arrow file system of `scores`. Nothing is opened here:
    the file list and each file's partition keys come from the summaries, so a filter on
    `run_date` or `run_id` (a WHERE that DuckDB pushes down, or the Python reader's) skips the
    other files without a request.
    """
    filesystem, root = storage.arrow_filesystem(scores)
    paths, partitions = [], []
    for summary in summaries:
        keys = (pc.field("run_date") == parse_run_date(summary.run_date)) & (pc.field("run_id") == summary.run_id)
        for path in named_parts(root, table, summary):
            paths.append(path)
            partitions.append(keys)
    listed = ds.FileSystemDataset.from_paths(
        paths,
        schema=pa.schema(list(schema) + list(PARTITION_SCHEMA)),
        format=ds.ParquetFileFormat(),
        filesystem=filesystem,
        partitions=partitions,
    )
    return ScannedOnce(list(listed.get_fragments()), listed.schema, listed.format, listed.filesystem)


class ScannedOnce(ds.FileSystemDataset):
    """A dataset whose scans keep no Parquet footer in its fragments once a file is read.

    pyarrow caches each footer in its fragment by default, for the next scan of the same
    dataset: over a long history that is tens of KB per part held outside DuckDB's memory
    limit (GB for a whole-history count). Each view scans its files once per query, so the
    cache buys nothing. DuckDB makes its scans through `scanner()`, as does the Python reader.
    """

    def scanner(self, *args: Any, **options: Any) -> ds.Scanner:
        return super().scanner(*args, **{**options, "cache_metadata": False})


def runs_table(summaries: list[RunSummary]) -> pa.Table:
    """The rows of the `runs` view."""
    rows = []
    for summary in summaries:
        counts, failure = summary.counts, summary.failure
        rows.append(
            {
                "run_id": summary.run_id,
                "run_date": parse_run_date(summary.run_date),
                "status": summary.status,
                "model_version": summary.model_version,
                "read": counts.read,
                "scored": counts.scored,
                "failed": counts.failed,
                "expected": counts.expected,
                "failed_by_type": list(counts.failed_by_type.items()),
                "error_rate": summary.error_rate,
                "started_at": _timestamp(summary.timings.get("started_at")),
                "finished_at": _timestamp(summary.timings.get("finished_at")),
                "failed_task": failure.task if failure else None,
                "exit_code": failure.exit_code if failure else None,
                "last_error": failure.error if failure else None,
                "pipeline_job": failure.pipeline_job if failure else None,
                "summary": summary.to_json(),
            }
        )
    return pa.Table.from_pylist(rows, schema=RUNS_SCHEMA)


def model_roots_of(summaries: list[RunSummary]) -> list[str]:
    """The model roots that runs scored with: the folder above each summary's model version."""
    roots = {storage.dirname(storage.from_absolute_uri(summary.model_uri)) for summary in summaries if summary.model_uri}
    return sorted(roots)


def models_table(model_roots: list[str]) -> pa.Table:
    rows = []
    for root in model_roots:
        try:
            versions = model_versions.list_versions(root)
        except Exception as error:  # a root gone, unreadable or forbidden: one warning, the other views still answer
            log.warning("%s: skipped in the %s view (%s: %s)", root, MODELS_VIEW, type(error).__name__, error)
            continue
        for version in versions:
            row = dataclasses.asdict(version)
            rows.append({**row, "trained_at": _timestamp(row["trained_at"])})
    return pa.Table.from_pylist(rows, schema=MODELS_SCHEMA)


def _timestamp(value: object) -> datetime.datetime | None:
    try:
        return datetime.datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def read_only_statement(sql: str) -> str:
    """The one SELECT in `sql`; InputError for anything else (a second statement, COPY, ATTACH, SET, ...)."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as error:
        raise InputError(f"SQL: {type(error).__name__}: {str(error).strip().splitlines()[0]}") from error
    if len(statements) != 1:
        raise InputError(f"SQL: exactly one statement is allowed, found {len(statements)}")
    (statement,) = statements
    if statement.type != duckdb.StatementType.SELECT:
        raise InputError(
            f"SQL: only a read-only SELECT is allowed, found {statement.type.name}; "
            "use --out FILE.csv, FILE.xlsx or FILE.parquet to export a result"
        )
    return statement.query


def query(*, sql: str, scores: str, models: str | None = None) -> pa.Table:
    """Runs one read-only SELECT against the views of a scoring output (and `models`); the result as Arrow."""
    statement = read_only_statement(sql)
    # The model roots are read only for a query of the models view: the other views never need
    # the model registry's bucket (nor an analyst's right to read it).
    wants_models = re.search(rf"\b{MODELS_VIEW}\b", statement, flags=re.IGNORECASE) is not None
    connection = open_tables(
        scores=scores,
        model_roots=([models] if models else []) if wants_models else None,
        dates=query_dates(statement, dated_views=DATED_VIEWS),
    )
    try:
        return connection.sql(statement).to_arrow_table()
    except duckdb.Error as error:
        first_line = str(error).strip().splitlines()[0]
        raise InputError(f"SQL: {type(error).__name__}: {first_line}") from error
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
