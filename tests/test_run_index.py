"""The run index and the date scope of queries: what a reader of some dates reads, and that the
answers are those of the whole history's views."""

from __future__ import annotations

import datetime
import json
import logging
import os
import shutil

import pyarrow.compute as pc
import pytest

from benchmarks.history import CountingRelay, synthesize
from components.analysts import read
from components.analysts.date_scope import query_dates
from components.analysts.report import report_dates
from components.analysts.tables import DATED_VIEWS, query, read_run_summaries
from components.contracts import run_index
from components.contracts.run_index import DateRange
from components.io import storage
from tests.cli_runs import run_cli
from tests.test_tables import copy_of, rewrite_summary, summary_of

D = datetime.date


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("run_date = '2026-11-28'", DateRange(D(2026, 11, 28), D(2026, 11, 28))),
        ("p.run_date = DATE '2026-11-28' AND confidence > 0.5", DateRange(D(2026, 11, 28), D(2026, 11, 28))),
        ("'2026-11-28' = run_date", DateRange(D(2026, 11, 28), D(2026, 11, 28))),
        ("run_date BETWEEN '2026-11-01' AND '2026-11-30'", DateRange(D(2026, 11, 1), D(2026, 11, 30))),
        ("run_date IN ('2026-11-03', '2026-11-01')", DateRange(D(2026, 11, 1), D(2026, 11, 3))),
        ("run_date > '2026-11-28'", DateRange(D(2026, 11, 29), None)),
        ("run_date >= '2026-11-28' AND run_date < '2026-12-01'", DateRange(D(2026, 11, 28), D(2026, 11, 30))),
        ("'2026-11-28' > run_date", DateRange(None, D(2026, 11, 27))),
        # Anything the scope cannot be sure of reads every date.
        ("run_date = '2026-11-28' OR confidence > 0.5", None),
        ("NOT run_date = '2026-11-28'", None),
        ("run_date = current_date", None),
        ("run_date = '20261128'", None),
        ("run_date = TRY_CAST('2026-11-28' AS DATE)", None),
        ("confidence > 0.5", None),
    ],
)
def test_the_date_scope_of_a_where_clause(where, expected):
    assert query_dates(f"SELECT count(*) FROM predictions_current p WHERE {where}", dated_views=DATED_VIEWS) == expected


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT count(*) FROM predictions WHERE run_date = '2026-11-28' AND run_id IN (SELECT run_id FROM runs)",
        "SELECT count(*) FROM predictions p JOIN runs r USING (run_id) WHERE p.run_date = '2026-11-28'",
        "WITH d AS (SELECT * FROM predictions) SELECT count(*) FROM d WHERE run_date = '2026-11-28'",
        "SELECT count(*) FROM predictions WHERE run_date = '2026-11-28' UNION ALL SELECT count(*) FROM errors",
        "SELECT count(*) FROM models WHERE run_date = '2026-11-28'",
        "SELECT count(*) FROM (SELECT * FROM predictions) WHERE run_date = '2026-11-28'",
        "SELECT (SELECT count(*) FROM errors) FROM predictions WHERE run_date = '2026-11-28'",
    ],
)
def test_queries_over_more_than_one_table_read_every_date(sql):
    assert query_dates(sql, dated_views=DATED_VIEWS) is None


def reads_of_summaries(monkeypatch) -> list[str]:
    """The summary URIs the readers read from now on."""
    seen: list[str] = []
    original = storage.read_snapshot

    def recording(uri, **options):
        if "/runs/" in uri.replace(os.sep, "/"):
            seen.append(uri)
        return original(uri, **options)

    monkeypatch.setattr(storage, "read_snapshot", recording)
    return seen


@pytest.mark.parametrize("view", ["predictions", "predictions_current", "errors", "runs"])
def test_a_one_date_query_reads_only_that_dates_summary_and_answers_as_the_whole_history(scored_output, view, monkeypatch):
    _, scores = scored_output
    columns = "count(*), min(run_id)" if view == "runs" else "count(*), min(run_id), min(image_id), max(image_id)"
    for day in ("2026-11-27", "2026-11-28", "2026-11-29"):
        seen = reads_of_summaries(monkeypatch)
        narrowed = query(sql=f"SELECT {columns} FROM {view} WHERE run_date = '{day}'", scores=scores).to_pylist()
        assert [storage.basename(uri) for uri in seen] == (
            [f"nightly-{day}.json"] if day != "2026-11-29" else ["unfinished.json"]
        )
        # OR false defeats the scope: the same query over every date's views
        whole = query(sql=f"SELECT {columns} FROM {view} WHERE run_date = '{day}' OR false", scores=scores).to_pylist()
        assert narrowed == whole


@pytest.mark.parametrize("view", ["predictions", "predictions_current", "errors", "runs"])
def test_a_one_date_python_read_reads_only_that_dates_summary_and_answers_as_sql(scored_output, view, monkeypatch):
    _, scores = scored_output
    for day in (D(2026, 11, 27), D(2026, 11, 28), D(2026, 11, 30)):
        seen = reads_of_summaries(monkeypatch)
        rows = read(scores, view, where=pc.field("run_date") == day, columns=["run_id", "run_date"])
        assert [storage.basename(uri) for uri in seen] == ([f"nightly-{day}.json"] if day.day != 30 else [])
        sql = query(sql=f"SELECT run_id, run_date FROM {view} WHERE run_date = '{day}' OR false", scores=scores)
        assert sorted(rows.to_pylist(), key=str) == sorted(sql.to_pylist(), key=str)
    both = read(scores, view, where=[("run_date", "in", [D(2026, 11, 27), D(2026, 11, 28)])], columns=["run_id"])
    assert both.num_rows == query(sql=f"SELECT count(*) AS n FROM {view}", scores=scores).column("n")[0].as_py()


def test_a_marker_without_a_summary_is_nothing_and_a_rerun_on_another_date_shows_on_its_new_date(scored_output, tmp_path, caplog):
    scores = copy_of(scored_output[1], tmp_path)
    # the run of 2026-11-27 rerun under the same id on 2026-11-26: the old date's marker stays
    run_index.add_run(scores, "2026-11-26", "nightly-2026-11-27")
    moved = json.loads(json.dumps(summary_of(scores, "nightly-2026-11-27")).replace("run_date=2026-11-27", "run_date=2026-11-26"))
    rewrite_summary(scores, "nightly-2026-11-27", {**moved, "run_date": "2026-11-26"})
    shutil.move(
        os.path.join(scores, "predictions", "run_date=2026-11-27"), os.path.join(scores, "predictions", "run_date=2026-11-26")
    )
    shutil.move(os.path.join(scores, "errors", "run_date=2026-11-27"), os.path.join(scores, "errors", "run_date=2026-11-26"))
    with caplog.at_level(logging.WARNING):
        by_date = {
            day: query(sql=f"SELECT run_id FROM runs WHERE run_date = '{day}'", scores=scores).column("run_id").to_pylist()
            for day in ("2026-11-26", "2026-11-27", "2026-11-29")
        }
    assert by_date == {"2026-11-26": ["nightly-2026-11-27"], "2026-11-27": [], "2026-11-29": []}
    assert not caplog.records  # the unfinished run's marker (2026-11-29) and the moved run's old one say nothing


def test_a_root_written_before_the_index_gets_its_markers_from_the_first_writer(scored_output, tmp_path):
    scores = copy_of(scored_output[1], tmp_path)
    shutil.rmtree(run_index.index_uri(scores))
    assert not run_index.is_complete(scores)
    day = "SELECT count(*) AS n FROM predictions WHERE run_date = '2026-11-28'"
    assert query(sql=day, scores=scores).column("n").to_pylist() == [40]  # read by listing every summary
    # the first writer, a failure record of a new run, completes the index before it writes
    result = run_cli(
        "record-failure", "--scores", scores, "--run-id", "nightly-2026-11-30", "--run-date", "2026-11-30",
        "--task", "score", "--exit-code", "1", "--error", "the shards were not there",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert run_index.is_complete(scores)
    indexed = run_index.run_ids(scores, DateRange())
    assert indexed == ["nightly-2026-11-27", "nightly-2026-11-28", "nightly-2026-11-30"]
    assert query(sql=day, scores=scores).column("n").to_pylist() == [40]


def test_a_report_reads_the_dates_of_its_runs_trend_and_baseline_only(scored_output):
    _, scores = scored_output
    assert report_dates(scores, run_id=None, run_date=None, baseline_run=None, days=1) == DateRange(
        D(2026, 11, 27), D(2026, 11, 28)
    )  # the latest date, and the previous one for the baseline
    assert report_dates(scores, run_id=None, run_date="2026-11-27", baseline_run=None, days=3) == DateRange(
        D(2026, 11, 25), D(2026, 11, 27)
    )
    assert report_dates(scores, run_id="nightly-2026-11-28", run_date=None, baseline_run="none", days=1) == DateRange(
        D(2026, 11, 28), D(2026, 11, 28)
    )
    assert report_dates(scores, run_id="no-such-run", run_date=None, baseline_run=None, days=1) is None


def test_on_gcs_a_one_date_query_and_a_report_make_as_many_requests_with_a_long_history(scored_output, gcs_bucket, tmp_path):
    _, template = scored_output
    [run] = [summary for summary in read_run_summaries(template) if summary.run_id == "nightly-2026-11-28"]
    counted = {}
    for days in (3, 40):
        root = f"{gcs_bucket}/history-{days}"
        synthesize(template, run, root, days, parts_per_day=2)
        with CountingRelay(upstream=os.environ["STORAGE_EMULATOR_HOST"].removeprefix("http://")) as relay:
            env = {**os.environ, "STORAGE_EMULATOR_HOST": f"http://{relay.address}"}
            for name, arguments in {
                "one date": ["query", "SELECT count(*) FROM predictions_current WHERE run_date = '2026-11-30'"],
                "report": ["report", "--run-date", "2026-11-30", "--days", "2", "--out", str(tmp_path / f"report-{days}")],
            }.items():
                relay.requests = 0
                result = run_cli(*arguments, "--scores", root, env=env)
                assert result.returncode == 0, result.stderr
                counted[name, days] = relay.requests
        one_date = "SELECT count(*), sum(confidence) FROM predictions_current WHERE run_date = '2026-11-30'"
        assert query(sql=one_date, scores=root) == query(sql=one_date + " OR false", scores=root)
    assert counted["one date", 40] == counted["one date", 3] > 0
    assert counted["report", 40] == counted["report", 3] > 0


def test_a_storage_error_while_indexing_an_older_root_writes_no_flag(scored_output, tmp_path, monkeypatch):
    """A summary the backfill could not read for a storage error must not be left out of an index
    marked complete: the writer fails, and the next one indexes it."""
    scores = copy_of(scored_output[1], tmp_path)
    shutil.rmtree(run_index.index_uri(scores))
    original = storage.read_bytes

    def failing(uri, **options):
        if uri.endswith("nightly-2026-11-28.json"):
            raise OSError("connection reset")
        return original(uri, **options)

    monkeypatch.setattr(storage, "read_bytes", failing)
    with pytest.raises(OSError):
        run_index.ensure_complete(scores)
    assert not run_index.is_complete(scores)
    monkeypatch.setattr(storage, "read_bytes", original)
    run_index.ensure_complete(scores)
    assert run_index.run_ids(scores, DateRange()) == ["nightly-2026-11-27", "nightly-2026-11-28"]
