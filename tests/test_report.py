"""`fmnist report`: the numbers against the tables, run selection, thumbnails, baseline, CLI."""
from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from components import storage
from components.constants import CLASS_NAMES
from components.errors import InputError
from components.images import to_model_image
from components.report import THUMBNAIL_SCALE, report, thumbnails
from components.report_metrics import classification_metrics, psi_band, psi_per_class
from components.shards import parse_example
from components.tables import open_tables
from components.tfrecord import read_records
from tests.scoring_fixture import RUNS, TRAIN_LABELS, write_run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LATEST, OLDER = RUNS[1].run_id, RUNS[0].run_id


@pytest.fixture(scope="module")
def latest_report(scored_output, tmp_path_factory):
    """The default report (latest run) compared with the older run."""
    _, scores = scored_output
    out = str(tmp_path_factory.mktemp("report"))
    return report(predictions=scores, out=out, baseline_run=OLDER), scores


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


def test_baseline_comparison_matches_a_join(latest_report):
    result, scores = latest_report
    baseline = result.summary["baseline"]
    common, agree = sql(scores, f"""
        SELECT count(*), sum((c.predicted_label = b.predicted_label)::INT)
        FROM predictions c JOIN predictions b USING (image_id)
        WHERE c.run_id = '{LATEST}' AND b.run_id = '{OLDER}'""")[0]
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
    assert len(re.findall(r'<div class="thumb"', page)) == 24
    assert len(re.findall(r'src="data:image/png;base64,', page)) == 24 + 4  # thumbnails + class mix, confidence, confusion, baseline flips
    assert 'src="http' not in page and "<script" not in page  # self-contained, nothing to fetch


def test_thumbnail_shows_the_image_of_the_record(scored_output):
    data, _ = scored_output
    uri = storage.join(data, "test-00001-of-00002.tfrecord")
    with storage.open_read(uri) as stream:
        example = parse_example(list(read_records(stream))[2].data)
    [thumb] = thumbnails([(example.image_id, "r", uri, "Bag", 0.3, example.label)])
    shown = np.asarray(Image.open(io.BytesIO(thumb.png)))
    assert shown.shape == (28 * THUMBNAIL_SCALE, 28 * THUMBNAIL_SCALE)
    np.testing.assert_array_equal(shown[::THUMBNAIL_SCALE, ::THUMBNAIL_SCALE], to_model_image(example.encoded))
    [gone] = thumbnails([("x", "r", storage.join(data, "missing.tfrecord"), "Bag", 0.3, None)])
    assert gone.png is None and "file not found" in gone.note


def test_run_date_selects_that_day_with_its_errors(scored_output, tmp_path):
    _, scores = scored_output
    result = report(predictions=scores, out=str(tmp_path), run_date="2026-11-27", lowest=3)
    assert [run["run_id"] for run in result.summary["runs"]] == [OLDER]
    assert result.summary["errors_by_type"] == {"decode_error": 1, "missing_feature": 1}
    assert result.summary["rows"] == 38 and len(result.summary["lowest_confidence"]) == 3


def test_unknown_or_unfinished_runs_are_input_errors(scored_output, tmp_path):
    _, scores = scored_output
    for kwargs in ({"run_id": "unfinished"}, {"run_date": "2026-11-29"}, {"run_date": "28.11.2026"},
                   {"baseline_run": "nope"}, {"run_id": LATEST, "run_date": "2026-11-28"}):
        with pytest.raises(InputError):
            report(predictions=scores, out=str(tmp_path), **kwargs)
    assert not os.path.exists(tmp_path / "report.html")


def test_training_histogram_from_manifest_flag_or_absent(scored_output, tmp_path):
    """Shards without a manifest beside them (e.g. copied): no PSI unless --manifest names one."""
    data, _ = scored_output
    shards = []
    for name in ("test-00000-of-00002.tfrecord", "test-00001-of-00002.tfrecord"):
        shards.append(str(tmp_path / "loose" / name))
        storage.copy(storage.join(data, name), shards[-1])
    scores = str(tmp_path / "scores")
    write_run(scores, shards, RUNS[0])
    bare = report(predictions=scores, out=str(tmp_path / "bare"), lowest=0)
    assert bare.summary["overall_psi"] is None and "--manifest" in bare.summary["training_source"]
    assert "no drift score" in storage.read_bytes(bare.report_uri).decode()
    flagged = report(predictions=scores, out=str(tmp_path / "flagged"), manifest=storage.join(data, "manifest.json"))
    assert flagged.summary["overall_psi"] > 0 and flagged.summary["psi_band"] in ("stable", "moderate shift", "major shift")


@pytest.mark.slow  # a fresh process imports TensorFlow (Example parsing): ~10-30 s on a busy machine
def test_report_cli_prints_the_summary_table(scored_output, tmp_path):
    _, scores = scored_output
    out = str(tmp_path / "report")
    completed = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "report", "--predictions", scores, "--out", out,
         "--run-id", LATEST, "--baseline-run", OLDER],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert lines[0].startswith(f"report of {LATEST}")
    assert all(any(line.strip().startswith(name) for line in lines) for name in CLASS_NAMES)
    assert any("overall PSI" in line and "accuracy" in line for line in lines)
    assert any(f"vs baseline {OLDER}" in line for line in lines)
    assert f"report: {out}/report.html" in lines
    assert json.loads(lines[-1]) == {"report": f"{out}/report.html", "summary": f"{out}/summary.json"}
    assert os.path.getsize(f"{out}/report.html") > 50_000


def test_report_reads_and_writes_gcs(scored_output, gcs_bucket):
    _, scores = scored_output
    remote = f"{gcs_bucket}/scores"
    for uri in storage.list_prefix(scores):
        storage.copy(uri, storage.join(remote, os.path.relpath(uri, scores)))
    result = report(predictions=remote, out=f"{gcs_bucket}/report", run_id=OLDER, lowest=2)
    assert result.report_uri == f"{gcs_bucket}/report/report.html"
    assert b"<h1>Scoring report: nightly-2026-11-27</h1>" in storage.read_bytes(result.report_uri)
    assert json.loads(storage.read_bytes(result.summary_uri))["rows"] == 38


def test_a_run_where_every_record_failed_still_gets_a_report(scored_output, tmp_path):
    data, _ = scored_output
    shards = [storage.join(data, f"test-0000{i}-of-00002.tfrecord") for i in range(2)]
    failed = dataclasses.replace(RUNS[0], failures=tuple((shard, record, "decode_error")
                                                         for shard in range(2) for record in range(20)))
    scores = str(tmp_path / "scores")
    write_run(scores, shards, failed)
    summary = report(predictions=scores, out=str(tmp_path / "report")).summary
    assert summary["rows"] == 0 and summary["errors_by_type"] == {"decode_error": 40}
    assert summary["overall_psi"] is None and summary["accuracy"] is None and summary["lowest_confidence"] == []
