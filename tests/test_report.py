"""`fmnist report`: the numbers against the tables, run selection, thumbnails, baseline, CLI."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from components.analysts.report import report
from components.analysts.report_metrics import psi_band, psi_per_class, top_confused_pairs
from components.analysts.report_thumbnails import THUMBNAIL_SCALE, thumbnails
from components.analysts.tables import open_tables
from components.constants import CLASS_NAMES
from components.contracts.shards import parse_example
from components.errors import InputError
from components.io import storage
from components.io.images import to_model_image
from components.io.tfrecord import read_records
from components.metrics.calibration import reliability_bins
from components.metrics.classification import classification_metrics
from tests.cli_runs import run_cli
from tests.scoring_fixture import RUNS, TRAIN_LABELS, ScoredRun, write_run

LATEST, OLDER = RUNS[1].run_id, RUNS[0].run_id


@pytest.fixture(scope="module")
def latest_report(scored_output, tmp_path_factory):
    """The default report (latest run) compared with the older run."""
    _, scores = scored_output
    out = str(tmp_path_factory.mktemp("report"))
    return report(scores=scores, out=out, baseline_run=OLDER), scores


def week_runs() -> list[ScoredRun]:
    """A week of daily runs in the order they were written: a damaged shard, a rerun, a backfill."""
    damaged = tuple((1, record, "truncated_record") for record in range(5, 20))  # shard 1 broke at record 5
    days = [f"2026-11-{day}" for day in range(20, 27) if day != 23]
    return [
        *(
            ScoredRun(f"daily-{day}", day, "v1", seed=10 + i, failures=damaged if day == "2026-11-25" else ())
            for i, day in enumerate(days)
        ),
        ScoredRun("rerun-2026-11-26", "2026-11-26", "v2", seed=30),  # replaces daily-2026-11-26
        ScoredRun("backfill-2026-11-23", "2026-11-23", "v2", seed=31),  # a missed day, scored last
    ]


@pytest.fixture(scope="module")
def week_of_runs(scored_output, tmp_path_factory) -> str:
    """A scoring output holding `week_runs()` over the fixture's test shards (written in that order)."""
    data, _ = scored_output
    shards = [storage.join(data, f"test-0000{i}-of-00002.tfrecord") for i in range(2)]
    scores = str(tmp_path_factory.mktemp("week") / "scores")
    for run in week_runs():
        write_run(scores, shards, run)
    return scores


def sql(scores: str, statement: str) -> list[tuple]:
    connection = open_tables(scores=scores)
    try:
        return connection.execute(statement).fetchall()
    finally:
        connection.close()


def test_psi_and_classification_metrics_by_hand():
    assert psi_per_class([5, 5], [50, 50]).sum() == 0
    expected = 0.1 * math.log(0.6 / 0.5) + (-0.1) * math.log(0.4 / 0.5)
    assert psi_per_class([60, 40], [50, 50]).sum() == pytest.approx(expected)
    assert math.isfinite(psi_per_class([10, 0], [5, 5]).sum())  # an empty class is floored, not infinite
    assert [psi_band(value) for value in (0.05, 0.2, 0.3)] == ["stable", "moderate shift", "major shift"]
    metrics = classification_metrics([[3, 1], [0, 0]])
    assert metrics["accuracy"] == 0.75 and metrics["recall"][0] == 0.75 and metrics["precision"][0] == 1.0
    assert math.isnan(metrics["recall"][1]) and metrics["precision"][1] == 0.0


@pytest.mark.integration
def test_report_covers_the_latest_run_and_matches_the_tables(latest_report):
    result, scores = latest_report
    summary = result.summary
    assert [run["run_id"] for run in summary["runs"]] == [LATEST]
    counts = dict(sql(scores, f"SELECT predicted_label, count(*) FROM predictions WHERE run_id = '{LATEST}' GROUP BY 1"))
    assert [entry["predicted"] for entry in summary["classes"]] == [counts.get(label, 0) for label in range(10)]
    (accuracy,) = sql(scores, f"SELECT avg((predicted_label = true_label)::INT) FROM predictions WHERE run_id = '{LATEST}'")[0]
    assert summary["accuracy"] == pytest.approx(accuracy) and summary["labeled"] == 40
    # PSI from the training histogram of the data set's manifest, found beside the scored shards.
    assert summary["training_source"].endswith("data/manifest.json")
    train = np.bincount(TRAIN_LABELS, minlength=10)
    assert summary["overall_psi"] == pytest.approx(psi_per_class([counts.get(i, 0) for i in range(10)], train).sum())
    assert [entry["training_share"] for entry in summary["classes"]] == pytest.approx(list(train / train.sum()))
    assert json.loads(storage.read_bytes(result.summary_uri)) == summary


@pytest.mark.integration
def test_baseline_comparison_matches_a_join(latest_report):
    result, scores = latest_report
    baseline = result.summary["baseline"]
    common, agree = sql(
        scores,
        f"""
        SELECT count(*), sum((c.predicted_label = b.predicted_label)::INT)
        FROM predictions c JOIN predictions b USING (image_id)
        WHERE c.run_id = '{LATEST}' AND b.run_id = '{OLDER}'""",
    )[0]
    assert (baseline["run_id"], baseline["model_versions"]) == (OLDER, ["v1"])
    assert baseline["common_images"] == common == 38
    assert baseline["agreement"] == pytest.approx(agree / common)
    assert 0 < baseline["agreement"] < 1  # the two stand-in models disagree on some images
    assert sum(entry["baseline_delta"] for entry in result.summary["classes"]) == 0


def test_lowest_confidence_thumbnails_are_those_images(latest_report):
    result, scores = latest_report
    lowest = result.summary["lowest_confidence"]
    expected = sql(scores, f"SELECT image_id FROM predictions WHERE run_id = '{LATEST}' ORDER BY confidence, image_id LIMIT 24")
    assert [row["image_id"] for row in lowest] == [row[0] for row in expected]
    assert all(row["decoded"] for row in lowest)
    page = storage.read_bytes(result.report_uri).decode()
    wrong = len(result.summary["confidently_wrong"])
    assert wrong == 12  # every wrong prediction of the run (fewer than 24)
    assert len(re.findall(r'<div class="thumb"', page)) == 24 + wrong
    # thumbnails + 5 trend figures, class mix, confidence, reliability, confusion, baseline flips
    assert len(re.findall(r'src="data:image/png;base64,', page)) == 24 + wrong + 10
    assert 'src="http' not in page and "<script" not in page  # self-contained, nothing to fetch


def test_thumbnail_shows_the_image_of_the_record(scored_output):
    data, _ = scored_output
    uri = storage.join(data, "test-00001-of-00002.tfrecord")
    with storage.open_read(uri) as stream:
        example = parse_example(list(read_records(stream))[2].data)
    [thumb] = thumbnails([(example.image_id, "r", uri, "Bag", 0.3, example.label)], readable={uri})
    shown = np.asarray(Image.open(io.BytesIO(thumb.png)))
    assert shown.shape == (28 * THUMBNAIL_SCALE, 28 * THUMBNAIL_SCALE)
    np.testing.assert_array_equal(shown[::THUMBNAIL_SCALE, ::THUMBNAIL_SCALE], to_model_image(example.encoded))
    missing = storage.join(data, "missing.tfrecord")
    [gone] = thumbnails([("x", "r", missing, "Bag", 0.3, None)], readable={missing})
    assert gone.png is None and "file not found" in gone.note


def test_the_report_reads_no_source_but_the_shards_its_runs_scored(scored_output, tmp_path):
    """A row's source_uri is data: one naming a web host or another file is never fetched."""
    import http.server
    import threading

    requests = []

    class Recorder(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the handler's API)
            requests.append(self.path)
            self.send_error(404)

        def do_HEAD(self):  # noqa: N802
            requests.append(self.path)
            self.send_error(404)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        data, scores = scored_output
        copy = str(tmp_path / "scores")
        for uri in storage.list_prefix(scores):
            storage.copy(uri, os.path.join(copy, os.path.relpath(uri, scores)))
        for part in storage.glob(storage.join(copy, "predictions", "*", "*", "*.parquet")):
            table = pq.read_table(part)
            hostile = [f"http://127.0.0.1:{server.server_port}/shards/test.tfrecord"] * table.num_rows
            column = table.schema.get_field_index("source_uri")
            pq.write_table(table.set_column(column, table.schema.field(column), pa.array(hostile, pa.string())), part)
        result = report(scores=copy, out=str(tmp_path / "report"))
    finally:
        server.shutdown()
    assert requests == []
    assert result.summary["lowest_confidence"] and not any(row["decoded"] for row in result.summary["lowest_confidence"])


@pytest.mark.integration
def test_run_date_selects_that_day_with_its_errors(scored_output, tmp_path):
    _, scores = scored_output
    result = report(scores=scores, out=str(tmp_path), run_date="2026-11-27", lowest=3)
    assert [run["run_id"] for run in result.summary["runs"]] == [OLDER]
    assert result.summary["errors_by_type"] == {"decode_error": 1, "missing_feature": 1}
    assert result.summary["rows"] == 38 and len(result.summary["lowest_confidence"]) == 3


def test_unknown_or_unfinished_runs_are_input_errors(scored_output, tmp_path):
    _, scores = scored_output
    for kwargs in (
        {"run_id": "unfinished"},
        {"run_date": "2026-11-29"},
        {"run_date": "28.11.2026"},
        {"baseline_run": "nope"},
        {"run_id": LATEST, "run_date": "2026-11-28"},
    ):
        with pytest.raises(InputError):
            report(scores=scores, out=str(tmp_path), **kwargs)
    assert not os.path.exists(tmp_path / "report.html")


@pytest.mark.integration
def test_training_histogram_from_manifest_flag_or_absent(scored_output, tmp_path):
    """Shards without a manifest beside them (e.g. copied): no PSI unless --manifest names one."""
    data, _ = scored_output
    shards = []
    for name in ("test-00000-of-00002.tfrecord", "test-00001-of-00002.tfrecord"):
        shards.append(str(tmp_path / "loose" / name))
        storage.copy(storage.join(data, name), shards[-1])
    scores = str(tmp_path / "scores")
    write_run(scores, shards, RUNS[0])
    bare = report(scores=scores, out=str(tmp_path / "bare"), lowest=0)
    assert bare.summary["overall_psi"] is None and "--manifest" in bare.summary["training_source"]
    assert "no drift score" in storage.read_bytes(bare.report_uri).decode()
    flagged = report(scores=scores, out=str(tmp_path / "flagged"), manifest=storage.join(data, "manifest.json"))
    assert flagged.summary["overall_psi"] > 0 and flagged.summary["psi_band"] in ("stable", "moderate shift", "major shift")


@pytest.mark.slow  # a fresh process imports TensorFlow (Example parsing): ~10-30 s on a busy machine
def test_report_cli_prints_the_summary_table(scored_output, tmp_path):
    _, scores = scored_output
    out = str(tmp_path / "report")
    completed = run_cli("report", "--predictions", scores, "--out", out, "--run-id", LATEST, "--baseline-run", OLDER, timeout=300)
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert lines[0].startswith(f"report of {LATEST}")
    assert all(any(line.strip().startswith(name) for line in lines) for name in CLASS_NAMES)
    assert any("overall PSI" in line and "accuracy" in line for line in lines)
    assert any(f"vs baseline {OLDER}" in line for line in lines)
    assert f"report: {out}/report.html" in lines
    assert json.loads(lines[-1]) == {"report": f"{out}/report.html", "summary": f"{out}/summary.json"}
    assert os.path.getsize(f"{out}/report.html") > 50_000


@pytest.mark.integration
def test_report_reads_and_writes_gcs(scored_output, gcs_bucket):
    _, scores = scored_output
    remote = f"{gcs_bucket}/scores"
    for uri in storage.list_prefix(scores):
        storage.copy(uri, storage.join(remote, os.path.relpath(uri, scores)))
    result = report(scores=remote, out=f"{gcs_bucket}/report", run_id=OLDER, lowest=2)
    assert result.report_uri == f"{gcs_bucket}/report/report.html"
    assert b"<h1>Scoring report: nightly-2026-11-27</h1>" in storage.read_bytes(result.report_uri)
    assert json.loads(storage.read_bytes(result.summary_uri))["rows"] == 38


def test_a_run_where_every_record_failed_still_gets_a_report(scored_output, tmp_path):
    data, _ = scored_output
    shards = [storage.join(data, f"test-0000{i}-of-00002.tfrecord") for i in range(2)]
    failed = dataclasses.replace(
        RUNS[0], failures=tuple((shard, record, "decode_error") for shard in range(2) for record in range(20))
    )
    scores = str(tmp_path / "scores")
    write_run(scores, shards, failed)
    summary = report(scores=scores, out=str(tmp_path / "report")).summary
    assert summary["rows"] == 0 and summary["errors_by_type"] == {"decode_error": 40}
    assert summary["overall_psi"] is None and summary["accuracy"] is None and summary["lowest_confidence"] == []


@pytest.mark.integration
def test_trend_takes_the_current_run_of_each_date(week_of_runs, tmp_path):
    result = report(scores=week_of_runs, out=str(tmp_path), days=7, lowest=0, wrong=0)
    points = result.summary["trend"]["points"]
    assert [run["run_id"] for run in result.summary["runs"]] == ["rerun-2026-11-26"]  # the latest run
    assert [point["run_id"] for point in points] == [
        "daily-2026-11-20",
        "daily-2026-11-21",
        "daily-2026-11-22",
        "backfill-2026-11-23",
        "daily-2026-11-24",
        "daily-2026-11-25",
        "rerun-2026-11-26",
    ]
    for point in points:
        read, failed = sql(week_of_runs, f"SELECT read, failed FROM runs WHERE run_id = '{point['run_id']}'")[0]
        images, mean, low, accuracy = sql(
            week_of_runs,
            (
                "SELECT count(*), avg(confidence), avg((confidence < 0.5)::INT), avg((predicted_label = true_label)::INT) "
                f"FROM predictions WHERE run_id = '{point['run_id']}'"
            ),
        )[0]
        counts = dict(
            sql(week_of_runs, f"SELECT predicted_label, count(*) FROM predictions WHERE run_id = '{point['run_id']}' GROUP BY 1")
        )
        psi = psi_per_class([counts.get(i, 0) for i in range(10)], np.bincount(TRAIN_LABELS, minlength=10)).sum()
        assert (point["images"], point["labeled"]) == (images, images)
        assert point["error_rate"] == pytest.approx(failed / read)
        assert (point["mean_confidence"], point["low_confidence_share"], point["accuracy"], point["psi"]) == pytest.approx(
            (mean, low, accuracy, psi)
        )
    assert points[5]["error_rate"] == pytest.approx(15 / 40)  # the damaged shard's day stands out
    page = storage.read_bytes(result.report_uri).decode()
    assert page.count('alt="') >= 5 and "Trend over the last 7 run dates" in page


@pytest.mark.integration
def test_trend_window_and_a_single_day(week_of_runs, tmp_path):
    three = report(scores=week_of_runs, out=str(tmp_path / "three"), days=3, lowest=0, wrong=0).summary
    assert [point["run_date"] for point in three["trend"]["points"]] == ["2026-11-24", "2026-11-25", "2026-11-26"]
    older = report(scores=week_of_runs, out=str(tmp_path / "older"), run_date="2026-11-21", lowest=0, wrong=0)
    assert [point["run_date"] for point in older.summary["trend"]["points"]] == ["2026-11-20", "2026-11-21"]
    single = report(scores=week_of_runs, out=str(tmp_path / "one"), run_id="daily-2026-11-20", days=1)
    assert [point["run_id"] for point in single.summary["trend"]["points"]] == ["daily-2026-11-20"]
    assert single.summary["baseline"] is None and "No complete run before 2026-11-20" in single.summary["baseline_note"]
    with pytest.raises(InputError, match="--days must be 1 or more"):
        report(scores=week_of_runs, out=str(tmp_path / "none"), days=0)


@pytest.mark.integration
def test_baseline_is_the_previous_complete_run_unless_given(week_of_runs, tmp_path):
    automatic = report(scores=week_of_runs, out=str(tmp_path / "auto"), lowest=0, wrong=0).summary
    assert automatic["baseline"]["run_id"] == "daily-2026-11-25" and "automatically" in automatic["baseline_note"]
    backfilled = report(scores=week_of_runs, out=str(tmp_path / "b"), run_date="2026-11-24", lowest=0).summary
    assert backfilled["baseline"]["run_id"] == "backfill-2026-11-23"  # the backfill is that date's current run
    given = report(scores=week_of_runs, out=str(tmp_path / "given"), baseline_run="daily-2026-11-20").summary
    assert given["baseline"]["run_id"] == "daily-2026-11-20"
    assert report(scores=week_of_runs, out=str(tmp_path / "none"), baseline_run="none").summary["baseline"] is None


@pytest.mark.integration
def test_calibration_confusions_and_errors_by_shard_match_the_tables(week_of_runs, tmp_path):
    run_id = "daily-2026-11-25"  # the damaged shard's run
    summary = report(scores=week_of_runs, out=str(tmp_path), run_id=run_id, wrong=5).summary
    rows = sql(week_of_runs, f"SELECT confidence, (predicted_label = true_label)::INT FROM predictions WHERE run_id = '{run_id}'")
    confidence, correct = (np.array(column, dtype=np.float64) for column in zip(*rows))
    bins = reliability_bins(confidence, correct)
    assert summary["calibration"]["ece"] == pytest.approx(bins.ece) and bins.ece > 0
    assert summary["calibration"]["bins"]["images"] == bins.counts.tolist()

    confusion = np.zeros((10, 10), dtype=int)
    for true, predicted, count in sql(
        week_of_runs, f"SELECT true_label, predicted_label, count(*) FROM predictions WHERE run_id = '{run_id}' GROUP BY ALL"
    ):
        confusion[true, predicted] = count
    assert summary["confused_pairs"] == top_confused_pairs(confusion)
    assert sum(pair["images"] for pair in summary["confused_pairs"]) <= (confusion.sum() - np.trace(confusion))

    [shard] = summary["errors_by_shard"]
    assert shard["source_uri"].endswith("test-00001-of-00002.tfrecord")
    assert (shard["failed"], shard["by_type"], shard["scored"]) == (15, {"truncated_record": 15}, 5)

    expected = sql(
        week_of_runs,
        f"SELECT image_id FROM predictions WHERE run_id = '{run_id}' "
        "AND predicted_label <> true_label ORDER BY confidence DESC, image_id LIMIT 5",
    )
    wrong = summary["confidently_wrong"]
    assert [row["image_id"] for row in wrong] == [row[0] for row in expected] and len(wrong) == 5
    assert all(row["decoded"] and CLASS_NAMES[row["true_label"]] != row["predicted_class"] for row in wrong)


def test_top_confused_pairs_by_hand():
    confusion = np.diag([10] * 10)
    confusion[6, 0], confusion[0, 6], confusion[4, 2] = 5, 2, 5
    pairs = top_confused_pairs(confusion, limit=2)
    assert [(pair["true_label"], pair["predicted_label"], pair["images"]) for pair in pairs] == [(4, 2, 5), (6, 0, 5)]
    assert pairs[0]["rate"] == pytest.approx(5 / 15)


def test_the_latest_run_is_the_current_run_of_the_newest_date_by_finish_time(scored_output, tmp_path):
    """Two runs of the newest date with rows scored at the same time: the one that finished last
    is the report's run, as in predictions_current (its id sorts first: ids are not time)."""
    data, scores = scored_output
    shards = [storage.join(data, f"test-0000{i}-of-00002.tfrecord") for i in range(2)]
    copy = str(tmp_path / "scores")
    for uri in storage.list_prefix(scores):
        storage.copy(uri, storage.join(copy, os.path.relpath(uri, scores)))
    write_run(copy, shards, ScoredRun("zz-first-2026-11-28", "2026-11-28", "v2", seed=5))
    write_run(copy, shards, ScoredRun("aa-last-2026-11-28", "2026-11-28", "v2", seed=6))
    summary = report(scores=copy, out=str(tmp_path / "report"), lowest=0, wrong=0).summary
    assert [run["run_id"] for run in summary["runs"]] == ["aa-last-2026-11-28"]
    [(current,)] = (
        open_tables(scores=copy).sql("SELECT DISTINCT run_id FROM predictions_current WHERE run_date = '2026-11-28'").fetchall()
    )
    assert current == "aa-last-2026-11-28"
