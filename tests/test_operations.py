"""Operating the nightly runs: failure records (components/score/failure_record.py, `fmnist record-failure`),
the `runs` and `predictions_current` views with them, and `fmnist status` (components/analysts/run_status.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from components.analysts.run_status import run_status
from components.analysts.tables import open_tables
from components.contracts.schema import run_summary_uri
from components.contracts.summary import FAILED_STATUS, RunFailure, RunSummary
from components.io import storage
from components.score.failure_record import failure_note_uri, parse_final_status, record_failure
from tests.cli_runs import run_cli
from tests.kfp_spec import IMAGE, REPO, container, executor_input, load_spec, render
from tests.scoring_fixture import ScoredRun, write_dataset, write_run


def a_failure(task: str = "score", exit_code: int | None = 1) -> RunFailure:
    return RunFailure(
        task=task,
        exit_code=exit_code,
        error="error: OSError: [Errno 28] No space left on device",
        pipeline_job="projects/p/locations/europe-west4/pipelineJobs/fmnist-scoring-20261129",
        recorded_at="2026-11-29T03:20:00+00:00",
    )


@pytest.fixture
def test_shards(tmp_path) -> list[str]:
    data = str(tmp_path / "data")
    manifest = write_dataset(data)
    return [storage.join(data, shard.name) for shard in manifest.splits["test"].shards]


def scored(scores: str, shards: list[str], run_date: str, run_id: str | None = None) -> RunSummary:
    return write_run(scores, shards, ScoredRun(run_id or f"scheduled-{run_date}", run_date, "v1", seed=1))


def runs_rows(scores: str) -> dict[str, tuple]:
    connection = open_tables(scores=scores)
    try:
        rows = connection.sql("SELECT run_id, status, failed_task, exit_code, last_error, pipeline_job FROM runs").fetchall()
    finally:
        connection.close()
    return {row[0]: row[1:] for row in rows}


def current_run_ids(scores: str) -> set[str]:
    connection = open_tables(scores=scores)
    try:
        return {row[0] for row in connection.sql("SELECT DISTINCT run_id FROM predictions_current").fetchall()}
    finally:
        connection.close()


def test_a_failure_record_is_a_run_summary_with_no_parts_that_reads_back_equal():
    record = RunSummary.failure_record(run_id="scheduled-2026-11-28", run_date="2026-11-28", failure=a_failure())
    assert record.status == FAILED_STATUS and not record.published
    assert record.parts.predictions == record.parts.errors == [] and record.counts.read == 0
    text = record.to_json()
    assert "\n" not in text and RunSummary.from_json(text) == record
    assert RunSummary.from_json(text).failure.exit_code == 1


def test_the_record_takes_an_empty_slot_and_the_runs_view_shows_it_failed(tmp_path, test_shards):
    scores = str(tmp_path / "scores")
    scored(scores, test_shards, "2026-11-27")
    result = record_failure(scores=scores, run_id="scheduled-2026-11-28", run_date="2026-11-28", failure=a_failure())
    assert result["recorded"] is True
    rows = runs_rows(scores)
    assert rows["scheduled-2026-11-28"] == ("failed", "score", 1, a_failure().error, a_failure().pipeline_job)
    assert rows["scheduled-2026-11-27"][0] == "ok"
    assert current_run_ids(scores) == {"scheduled-2026-11-27"}
    assert not storage.glob(storage.join(scores, "predictions", "run_date=2026-11-28", "*"))  # nothing published


def test_a_published_summary_is_never_replaced_by_a_failure_record(tmp_path, test_shards):
    scores = str(tmp_path / "scores")
    published = scored(scores, test_shards, "2026-11-28")
    before = storage.read_bytes(run_summary_uri(scores, published.run_id))
    result = record_failure(scores=scores, run_id=published.run_id, run_date="2026-11-28", failure=a_failure())
    assert result["recorded"] is False and "published summary (status ok)" in result["reason"]
    assert storage.read_bytes(run_summary_uri(scores, published.run_id)) == before


def test_a_successful_rerun_replaces_the_record(tmp_path, test_shards):
    scores = str(tmp_path / "scores")
    record_failure(scores=scores, run_id="scheduled-2026-11-28", run_date="2026-11-28", failure=a_failure())
    assert runs_rows(scores)["scheduled-2026-11-28"][0] == "failed"
    scored(scores, test_shards, "2026-11-28")  # the rerun's summary swap
    assert runs_rows(scores)["scheduled-2026-11-28"] == ("ok", None, None, None, None)
    assert current_run_ids(scores) == {"scheduled-2026-11-28"}


def test_a_run_that_failed_its_error_rate_check_is_never_current(tmp_path, test_shards):
    scores = str(tmp_path / "scores")
    good = scored(scores, test_shards, "2026-11-28", run_id="first")
    bad = scored(scores, test_shards, "2026-11-28", run_id="second")  # finished later
    uri = run_summary_uri(scores, bad.run_id)
    document = json.loads(storage.read_bytes(uri))
    storage.write_bytes(uri, json.dumps({**document, "status": "error_rate_exceeded"}).encode())
    assert current_run_ids(scores) == {good.run_id}


def test_the_final_status_of_kfp_names_the_job_and_the_failed_task():
    status = parse_final_status(
        json.dumps(
            {
                "state": "FAILED",
                "pipelineJobResourceName": "projects/p/locations/l/pipelineJobs/j",
                "pipelineTaskName": "exit-handler-1",
                "error": {"code": 9, "message": "The DAG failed because some tasks failed. The failed tasks are: [score]."},
            }
        )
    )
    assert (status.state, status.pipeline_job, status.failed_task) == ("FAILED", "projects/p/locations/l/pipelineJobs/j", "score")


def test_record_failure_cli_derives_the_date_and_run_id_like_run_context_and_skips_success(tmp_path):
    scores = str(tmp_path / "scores")
    succeeded = run_cli("record-failure", "--scores", scores, "--final-status", '{"state": "SUCCEEDED"}')
    assert succeeded.returncode == 0, succeeded.stderr
    assert json.loads(succeeded.stdout.splitlines()[-1])["recorded"] is False
    failed = run_cli(
        "record-failure",
        "--scores",
        scores,
        "--scheduled-time",
        "2026-11-29T03:00:00Z",
        "--date-offset-days",
        "-1",
        "--task",
        "score",
        "--exit-code",
        "3",
        "--error",
        "failed: run scheduled-2026-11-28: 9 of 10 records failed",
        "--final-status",
        '{"state": "FAILED", "pipelineJobResourceName": "runs/abc", "error": {"message": "x"}}',
    )
    assert failed.returncode == 0, failed.stderr
    record = RunSummary.from_json(storage.read_bytes(run_summary_uri(scores, "scheduled-2026-11-28")))
    assert (record.run_date, record.status, record.failure.exit_code, record.failure.pipeline_job) == (
        "2026-11-28",
        "failed",
        3,
        "runs/abc",
    )
    bad = run_cli("record-failure", "--scores", scores, "--run-date", "2026-13-01", "--run-id", "x")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_status_names_a_missing_date_and_passes_once_it_is_scored(tmp_path, test_shards):
    scores = str(tmp_path / "scores")
    for day in ("2026-11-26", "2026-11-28"):
        scored(scores, test_shards, day)
    # The fixture's summaries finish now, long after their dates: a deadline of a century keeps them on time.
    window = ("--scores", scores, "--days", "3", "--as-of", "2026-11-28", "--late-after-hours", str(24 * 365 * 100))
    missing = run_cli("status", *window)
    assert missing.returncode == 3, missing.stderr
    assert "2026-11-27 missing" in missing.stderr
    states = [line.split()[:2] for line in missing.stdout.splitlines()[:3]]
    assert states == [["2026-11-26", "ok"], ["2026-11-27", "missing"], ["2026-11-28", "ok"]]
    scored(scores, test_shards, "2026-11-27")  # the backfill
    passed = run_cli("status", *window, "--json")
    assert passed.returncode == 0, passed.stderr
    status = json.loads(passed.stdout)
    assert status["ok"] is True and [entry["run_date"] for entry in status["dates"]] == ["2026-11-26", "2026-11-27", "2026-11-28"]
    assert {entry["run_id"] for entry in status["dates"]} == {f"scheduled-2026-11-2{day}" for day in (6, 7, 8)}


def test_status_states_failed_late_and_stale(tmp_path, test_shards):
    scores = str(tmp_path / "scores")
    scored(scores, test_shards, "2026-11-26")  # written now: years after its date, so late
    record_failure(scores=scores, run_id="scheduled-2026-11-27", run_date="2026-11-27", failure=a_failure(exit_code=3))
    status = run_status(scores=scores, days=3, as_of="2026-11-28", late_after_hours=30, stale_days=1)
    states = {entry["run_date"]: entry["state"] for entry in status["dates"]}
    assert states == {"2026-11-26": "late", "2026-11-27": "failed", "2026-11-28": "missing"}
    assert status["dates"][1]["failure"]["exit_code"] == 3
    assert status["stale"] is True and status["newest_ok_run_date"] == "2026-11-26" and status["ok"] is False
    on_time = run_status(scores=scores, days=1, as_of="2026-11-26", late_after_hours=24 * 365 * 100, stale_days=1)
    assert on_time["ok"] is True and on_time["dates"][0]["state"] == "ok"


def test_status_reports_a_run_with_a_missing_part_as_broken(tmp_path, test_shards):
    scores = str(tmp_path / "scores")
    century = 24 * 365 * 100
    for day in ("2026-11-27", "2026-11-28"):
        scored(scores, test_shards, day)
    assert run_status(scores=scores, days=2, as_of="2026-11-28", late_after_hours=century)["ok"] is True
    broken = RunSummary.from_json(storage.read_bytes(run_summary_uri(scores, "scheduled-2026-11-27")))
    storage.delete(storage.from_absolute_uri(broken.parts.predictions[0]))
    status = run_status(scores=scores, days=2, as_of="2026-11-28", late_after_hours=century)
    assert [entry["state"] for entry in status["dates"]] == ["broken", "ok"]
    [entry] = status["broken_runs"]
    assert entry["run_date"] == "2026-11-27" and "cannot be read" in entry["why"] and status["ok"] is False
    completed = run_cli("status", "--scores", scores, "--days", "2", "--as-of", "2026-11-28", "--late-after-hours", str(century))
    assert completed.returncode == 3 and "2026-11-27 broken" in completed.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("pipeline", ["training", "scoring"])
def test_both_compiled_pipelines_wrap_their_tasks_in_an_exit_handler(pipeline):
    spec = load_spec(pipeline)
    root = spec["root"]["dag"]["tasks"]
    (exit_task,) = [
        name for name, task in root.items() if task.get("triggerPolicy", {}).get("strategy") == "ALL_UPSTREAM_TASKS_COMPLETED"
    ]
    (group,) = root[exit_task]["dependentTasks"]
    assert root[exit_task]["inputs"]["parameters"]["status"] == {"taskFinalStatus": {"producerTask": group}}
    assert set(root) == {exit_task, group}  # every other task runs inside the handler's group
    command = container(pipeline, exit_task)
    assert command["command"][5:7] == ["record-failure", "--image"] and command["args"][:2] == ["fmnist", "record-failure"]
    containers = [executor["container"] for executor in spec["deploymentSpec"]["executors"].values() if "container" in executor]
    assert containers and all({"name": "FMNIST_LOG_FORMAT", "value": "json"} in task["env"] for task in containers)


def exit_handler_command(scores: str, status: dict, folder) -> list[str]:
    """The scoring pipeline's exit task as the KFP launcher runs it, for a run scheduled at
    2026-11-29 03:00 UTC (so run date 2026-11-28, run id scheduled-2026-11-28)."""
    spec = container("scoring", "record-failure")
    values = {
        "$": executor_input(str(folder), {}),
        "image": IMAGE,
        "output": scores,
        "scheduled_time": "2026-11-29T03:00:00Z",
        "run_date": "",
        "date_offset_days": "-1",
        "time_zone": "UTC",
        "run_id_template": "scheduled-{date}",
        "status": json.dumps(status),
    }
    command = render(spec["command"] + spec["args"], values)
    return [sys.executable if command[0] == "python" else command[0], *command[1:]]


@pytest.mark.integration
def test_the_exit_handler_records_a_failed_score_on_gcs_and_a_real_rerun_replaces_it(gcs_bucket, tmp_path):
    """A failed `fmnist score` (its model root has no published model), then the scoring pipeline's
    compiled exit task against the storage emulator, then a successful rerun of the date."""
    from tests.test_score import fit_tiny_model, planted_shards, save_model

    scores, models = f"{gcs_bucket}/scores", f"{gcs_bucket}/models"
    shards = tmp_path / "shards"
    shards.mkdir()
    planted_shards(str(shards))
    score = ("score", "--input", str(shards / "test-00002-*.tfrecord"), "--output", scores, "--model", models)
    score += ("--run-id", "scheduled-2026-11-28", "--run-date", "2026-11-28")
    # The score task as the compiled spec runs it: through the adapter, which leaves a note when the step fails.
    adapter = [sys.executable, "-m", "jobs.kfp_outputs", "--executor-input", executor_input(str(tmp_path), {})]
    adapter += ["score", "--image", IMAGE, "--failure-scores", scores, "--failure-run-id", "scheduled-2026-11-28", "--"]
    failed = subprocess.run(
        [*adapter, sys.executable, "-m", "jobs.cli", *score], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert failed.returncode == 2, failed.stderr
    assert "--failure-scores" in container("scoring", "score")["command"]
    status = {
        "state": "FAILED",
        "pipelineJobResourceName": "projects/p/locations/europe-west4/pipelineJobs/fmnist-scoring-20261129030000",
        "pipelineTaskName": "exit-handler-1",
        "error": {"code": 9, "message": "The DAG failed because some tasks failed. The failed tasks are: [score]."},
    }
    task_environment = {entry["name"]: entry["value"] for entry in container("scoring", "record-failure")["env"]}
    environment = {**os.environ, **task_environment, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    (tmp_path / "task").mkdir()
    handler = subprocess.run(
        exit_handler_command(scores, status, tmp_path / "task"),
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert handler.returncode == 0, handler.stderr
    assert all(json.loads(line)["severity"] for line in handler.stderr.splitlines())  # the task logs JSON
    statuses = ("query", "SELECT run_date, status, failed_task, exit_code FROM runs", "--scores", scores)
    shown = run_cli(*statuses).stdout
    assert "2026-11-28" in shown and "failed" in shown and "score" in shown
    record = RunSummary.from_json(storage.read_bytes(run_summary_uri(scores, "scheduled-2026-11-28")))
    assert record.failure.exit_code == 2 and record.failure.error == failed.stderr.strip().splitlines()[-1]
    assert record.failure.pipeline_job.endswith("fmnist-scoring-20261129030000")
    assert not storage.exists(failure_note_uri(scores, "scheduled-2026-11-28"))  # the note is used up
    save_model(fit_tiny_model(), models, "v1")
    rerun = run_cli(*score, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    statuses = ("query", "SELECT run_date, status FROM runs", "--scores", scores)
    shown = run_cli(*statuses).stdout
    assert "failed" not in shown and "ok" in shown and "2026-11-28" in shown
    succeeded = subprocess.run(
        exit_handler_command(scores, {"state": "SUCCEEDED"}, tmp_path / "task"),
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
    )
    assert succeeded.returncode == 0 and run_cli(*statuses).stdout == shown  # a run that succeeded records nothing


# --- Structured logs and progress (jobs/entrypoint.py) -------------------------------------


def json_lines(stderr: str) -> list[dict]:
    """Every stderr line as JSON (a line that is not JSON fails the test)."""
    return [json.loads(line) for line in stderr.splitlines() if line.strip()]


@pytest.mark.integration
def test_score_logs_one_json_object_per_stderr_line_with_labels_and_errors_as_error(tmp_path):
    import os

    from tests.test_score import fit_tiny_model, planted_shards, save_model

    shards = tmp_path / "shards"
    shards.mkdir()
    planted_shards(str(shards))
    models = str(tmp_path / "models")
    save_model(fit_tiny_model(), models, "v1")
    arguments = ("score", "--input", str(shards / "*.tfrecord"), "--output", str(tmp_path / "scores"), "--run-date", "2026-11-28")
    # The planted shards hold 6 bad records of 20: above the 1 % gate, so the run exits 3 after publishing.
    gated = run_cli(*arguments, "--model", models, "--run-id", "gated", "--log-format", "json", timeout=600)
    assert gated.returncode == 3, gated.stderr
    entries = json_lines(gated.stderr)
    assert entries and all({"severity", "message", "time"} <= set(entry) for entry in entries)
    labels = entries[-1]["logging.googleapis.com/labels"]
    assert labels == {"step": "score", "run_id": "gated", "run_date": "2026-11-28", "model_version": "v1"}
    assert entries[-1]["severity"] == "ERROR" and entries[-1]["message"].startswith("failed: run gated:")
    assert any(entry["message"].startswith("scored shard") and entry["severity"] == "INFO" for entry in entries)
    missing = run_cli(*arguments, "--model", str(tmp_path / "nowhere"), env={**os.environ, "FMNIST_LOG_FORMAT": "json"})
    assert missing.returncode == 2
    (entry,) = json_lines(missing.stderr)
    assert entry["severity"] == "ERROR" and entry["message"].startswith("error: ") and "nowhere" in entry["message"]


def test_progress_at_a_terminal_is_one_updating_line_and_other_records_keep_their_own():
    import io
    import logging

    from jobs.entrypoint import LOG_FORMAT, ProgressHandler

    stream = io.StringIO()
    handler = ProgressHandler(stream)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))

    def emit(message: str, progress: dict | None = None) -> None:
        record = logging.LogRecord("components.score", logging.INFO, __file__, 0, message, None, None)
        if progress is not None:
            record.progress = progress
        handler.emit(record)

    emit("run r: scoring 2 shards", {"unit": "shards", "done": 0, "total": 2, "items_total": 20})
    emit("scored shard a", {"unit": "shards", "items": 12})
    emit("a warning of its own")
    emit("scored shard b", {"unit": "shards", "items": 8})
    text = stream.getvalue()
    assert "scored shard" not in text and "a warning of its own\n" in text and "run r: scoring 2 shards\n" in text
    assert "shards 1/2 · images 12/20" in text
    final = text.rsplit("\r\x1b[K", 1)[-1]
    assert final.startswith("shards 2/2 · images 20/20 · ") and final.endswith(" s left\n")


# --- Backfill (components/cloud/schedules.py) ------------------------------------------------


def test_backfill_dry_run_on_vertex_is_one_run_request_per_logical_date():
    from tests.cli_runs import EXAMPLE_DEPLOYMENT, SCORING_DAILY, SCORING_IMAGES

    completed = run_cli(
        "pipeline",
        "backfill",
        "--deployment",
        EXAMPLE_DEPLOYMENT,
        "--target",
        "vertex",
        "--schedule",
        SCORING_DAILY,
        "--from",
        "2026-11-01",
        "--to",
        "2026-11-03",
        "--dry-run",
        *SCORING_IMAGES,
    )
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout.splitlines()[-1])
    runs = result["runs"]
    assert [run["run_date"] for run in runs] == ["2026-11-01", "2026-11-02", "2026-11-03"]
    assert [run["run_id"] for run in runs] == ["scheduled-2026-11-01", "scheduled-2026-11-02", "scheduled-2026-11-03"]
    requests = [request for run in runs for request in run["submitted"]["requests"]]
    assert len(requests) == 3 and all(request["url"].split("?")[0].endswith("/pipelineJobs") for request in requests)
    dates = [request["body"]["runtimeConfig"]["parameterValues"]["run_date"] for request in requests]
    assert dates == ["2026-11-01", "2026-11-02", "2026-11-03"]
    job_ids = {request["url"].split("pipelineJobId=")[1] for request in requests}
    assert len(job_ids) == 3  # one job per date, even when submitted within a second
    assert [run["wave"] for run in runs] == [1, 2, 3]  # the schedule's max_concurrency is 1


def test_backfill_submits_at_most_max_concurrency_runs_before_waiting(tmp_path, monkeypatch):
    """KFP and Vertex AI cannot run here: the submission is recorded instead of sent."""
    import yaml

    from components.cloud import schedules
    from tests.cli_runs import SCORING_DAILY

    with open(os.path.join(REPO, SCORING_DAILY)) as file:
        document = yaml.safe_load(file)
    document.update(max_concurrency=2, spec=os.path.join(REPO, "infra", "kfp", "scoring.yaml"))
    schedule = tmp_path / "backfill.yaml"
    schedule.write_text(yaml.safe_dump(document))
    events = []
    monkeypatch.setattr(schedules, "submit", lambda **kwargs: events.append(("submit", kwargs["param"][-1])) or {"run_id": "r"})
    result = schedules.backfill(
        schedule=str(schedule),
        from_date="2026-11-01",
        to_date="2026-11-05",
        wait_for=lambda wave: events.append(("wait", [entry["run_date"] for entry in wave])),
        target="kfp",
        host="http://127.0.0.1:1",
    )
    assert events == [
        ("submit", "run_date=2026-11-01"),
        ("submit", "run_date=2026-11-02"),
        ("wait", ["2026-11-01", "2026-11-02"]),
        ("submit", "run_date=2026-11-03"),
        ("submit", "run_date=2026-11-04"),
        ("wait", ["2026-11-03", "2026-11-04"]),
        ("submit", "run_date=2026-11-05"),
    ]
    assert [run["wave"] for run in result["runs"]] == [1, 1, 2, 2, 3]


@pytest.mark.parametrize(
    "dates, message", [(("2026-11-03", "2026-11-01"), "before"), (("2026-11-01", "2026-13-01"), "YYYY-MM-DD")]
)
def test_backfill_refuses_a_bad_range_in_one_line(dates, message):
    from tests.cli_runs import EXAMPLE_DEPLOYMENT, SCORING_DAILY

    completed = run_cli(
        "pipeline", "backfill", "--deployment", EXAMPLE_DEPLOYMENT, "--schedule", SCORING_DAILY,
        "--from", dates[0], "--to", dates[1], "--dry-run", "--host", "http://127.0.0.1:1",
    )  # fmt: skip
    assert completed.returncode == 2 and message in completed.stderr and len(completed.stderr.strip().splitlines()) == 1
