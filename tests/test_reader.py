"""The Python reader (components/analysts/reader.py) returns what the SQL views return, locally and on gs://."""

from __future__ import annotations

import dataclasses
import datetime
import os

import pyarrow.compute as pc
import pytest

from components.analysts import read
from components.analysts.reader import view_schema
from components.analysts.tables import MODELS_VIEW, VIEWS, query
from components.contracts.schema import partition_uri, run_summary_uri
from components.errors import InputError
from components.io import storage
from tests.scoring_fixture import RUNS, UNFINISHED, ScoredRun, write_run


def copy_of(scores: str, target: str) -> str:
    for uri in storage.list_prefix(scores):
        storage.copy(uri, storage.join(target, os.path.relpath(uri, scores)))
    return target


@pytest.fixture(scope="module")
def history(scored_output, tmp_path_factory) -> str:
    """Two complete runs, a rerun of the second day, a run that failed its error-rate check
    (published, status error_rate_exceeded) and the files of a run that never finished."""
    data, scores = scored_output
    root = copy_of(scores, str(tmp_path_factory.mktemp("history") / "scores"))
    shards = storage.glob(storage.join(data, "test-*.tfrecord"))
    write_run(root, shards, ScoredRun("rerun-2026-11-28", "2026-11-28", "v3", seed=4))
    failed = write_run(
        root, shards, ScoredRun("failed-2026-11-30", "2026-11-30", "v3", seed=5, failures=((0, 1, "decode_error"),))
    )
    failed = dataclasses.replace(failed, status="error_rate_exceeded")
    storage.write_bytes(run_summary_uri(root, failed.run_id), (failed.to_json() + "\n").encode())
    assert storage.glob(storage.join(partition_uri(root, "predictions", UNFINISHED.run_date, UNFINISHED.run_id), "*"))
    return root


def sorted_rows(table) -> list[dict]:
    return sorted(table.to_pylist(), key=lambda row: tuple(str(value) for value in row.values()))


# The fixture's runs name no model root that exists: the models view (one table for both, built
# by tables.models_table) has its rows checked in tests/test_registry.py.
@pytest.mark.parametrize("view", [view for view in VIEWS if view != MODELS_VIEW])
def test_every_view_returns_the_rows_and_columns_of_its_sql(history, view):
    sql = query(sql=f"SELECT * FROM {view}", scores=history)
    ours = read(history, view)
    assert ours.column_names == sql.column_names == view_schema(view).names
    assert ours.num_rows == sql.num_rows > 0
    assert sorted_rows(ours) == sorted_rows(sql)


def test_the_current_view_keeps_one_ok_run_per_date_and_no_unfinished_files(history):
    runs = pc.unique(read(history, "predictions_current", columns=["run_date", "run_id"]).column("run_id")).to_pylist()
    assert sorted(runs) == ["nightly-2026-11-27", "rerun-2026-11-28"]  # a run that failed its check is never current


def damage_row_data(uri: str) -> None:
    """Zeroes a Parquet file's pages, keeping its footer: the file lists and counts as before,
    but reading its rows fails."""
    data = bytearray(storage.read_bytes(uri))
    footer_length = int.from_bytes(data[-8:-4], "little")
    data[4 : len(data) - footer_length - 8] = bytes(len(data) - footer_length - 12)
    storage.write_bytes(uri, bytes(data))


def test_a_date_filter_opens_only_that_dates_files(history, tmp_path):
    copy = copy_of(history, str(tmp_path / "scores"))
    for uri in storage.glob(storage.join(partition_uri(copy, "predictions", RUNS[0].run_date, RUNS[0].run_id), "*.parquet")):
        damage_row_data(uri)  # reading this date's rows now fails: another date's read must not open them
    day = datetime.date(2026, 11, 28)
    table = read(copy, "predictions", where=pc.field("run_date") == day, columns=["run_id", "image_id"])
    assert table.num_rows == 80 and set(table.column("run_id").to_pylist()) == {RUNS[1].run_id, "rerun-2026-11-28"}
    assert read(copy, "predictions", where=[("run_date", "=", day)]).num_rows == 80  # pandas' filters form
    # The SQL views too: DuckDB hands the WHERE on a partition key to the dataset, which skips the files.
    [row] = query(sql="SELECT count(*) AS n FROM predictions_current WHERE run_date = '2026-11-28'", scores=copy).to_pylist()
    assert row == {"n": 40}
    with pytest.raises(InputError, match="cannot be read"):
        read(copy, "predictions", where=pc.field("run_date") == datetime.date(2026, 11, 27))


def test_errors_of_clean_runs_are_an_empty_table_with_the_views_columns(history):
    clean = read(history, "errors", where=pc.field("run_id") == RUNS[1].run_id)
    assert clean.num_rows == 0 and clean.column_names == view_schema("errors").names


def test_columns_and_filters_on_any_column(history):
    table = read(history, "predictions_current", where=pc.field("confidence") >= 0.5, columns=["true_class", "confidence"])
    assert table.column_names == ["true_class", "confidence"]
    assert table.num_rows > 0 and pc.min(table.column("confidence")).as_py() >= 0.5
    [row] = query(sql="SELECT count(*) AS n FROM predictions_current WHERE confidence >= 0.5", scores=history).to_pylist()
    assert table.num_rows == row["n"]


@pytest.mark.parametrize(
    "arguments, message",
    [
        (("tables",), "unknown"),
        (("runs", None, ["nope"]), "not columns of runs"),
        (("predictions", [("run_date", "~", 1)]), "where"),
    ],
)
def test_bad_arguments_are_input_errors(history, arguments, message):
    with pytest.raises(InputError, match=message):
        read(history, *arguments)


def test_reads_gcs_through_the_emulator(history, gcs_bucket):
    remote = copy_of(history, f"{gcs_bucket}/reader-scores")
    assert sorted_rows(read(remote, "predictions_current")) == sorted_rows(read(history, "predictions_current"))


def test_parts_written_before_a_nullable_column_existed_read_as_null(scored_output, tmp_path):
    """A part without `image_uri` (written before the column was added) reads through the views and the reader."""
    import pyarrow.parquet as pq

    _, scores = scored_output
    copy = copy_of(scores, str(tmp_path / "scores"))
    for uri in storage.glob(storage.join(copy, "predictions", "**", "*.parquet")):
        table = pq.read_table(uri)
        pq.write_table(table.drop_columns(["image_uri"]), uri)
    assert "image_uri" not in pq.read_schema(uri).names
    [row] = query(sql="SELECT count(*) AS n, count(image_uri) AS with_uri FROM predictions", scores=copy).to_pylist()
    assert row == {"n": 78, "with_uri": 0}
    assert read(copy, "predictions", columns=["image_uri"]).column("image_uri").null_count == 78


def test_a_root_of_clean_runs_only_has_an_empty_errors_view(scored_output, tmp_path):
    data, _ = scored_output
    root = str(tmp_path / "scores")
    write_run(root, storage.glob(storage.join(data, "test-*.tfrecord")), RUNS[1])  # no record failed: no errors folder
    assert not os.path.exists(os.path.join(root, "errors"))
    errors = read(root, "errors")
    assert errors.num_rows == 0 and errors.column_names == view_schema("errors").names
    assert query(sql="SELECT count(*) AS n FROM errors", scores=root).to_pylist() == [{"n": 0}]
