"""The KFP task adapter: runs the step unchanged, then publishes its outputs as typed KFP artifacts.

The executor input is the JSON a KFP launcher passes as `{{$}}`, made here with local artifact
URIs (a real launcher uses gs:// or minio:// ones, mounted at /gcs/ or /minio/).
"""

import json
import os
import subprocess
import sys

import pytest

from components.constants import CLASS_NAMES
from components.contracts import registry
from components.contracts.shards import manifest_digest, read_manifest
from jobs import kfp_outputs
from tests.cli_runs import jobs_command, prepare_args
from tests.kfp_spec import IMAGE, REPO, TRAIN_ARTIFACTS, executor_input, executor_output


def adapt(spec: str, kind: str, *own: str, step: list[str], image: str = IMAGE) -> int:
    """`python -m jobs.kfp_outputs` (in this process) for a task of `kind` running `step`."""
    return kfp_outputs.main(["--executor-input", spec, kind, "--image", image, *own, "--", *step])


def printing(result: dict) -> list[str]:
    """A step command line that only prints `result` as its JSON result (the last line on stdout)."""
    return [sys.executable, "-c", "import sys; print('a log line'); print(sys.argv[1])", json.dumps(result)]


@pytest.mark.integration
def test_prepare_task_publishes_the_dataset_and_its_manifest_digest(tmp_path, tiny_idx):
    task = tmp_path / "task"
    spec = executor_input(str(task), {"dataset": "system.Dataset"}, ("manifest_digest",))
    dataset = str(task / "dataset")
    adapter = [sys.executable, "-m", "jobs.kfp_outputs", "--executor-input", spec, "prepare", "--image", IMAGE, "--"]
    step = jobs_command(*prepare_args(tiny_idx, dataset, "--shards-per-split", "1"))
    done = subprocess.run([*adapter, *step], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    digest = manifest_digest(read_manifest(dataset))
    assert (task / "parameters" / "manifest_digest").read_text() == digest
    metadata = executor_output(task)["dataset"]["metadata"]
    assert metadata == {"manifest_digest": digest, "schema_version": "fmnist-shards/1", "train_records": 20, "test_records": 10}


@pytest.fixture
def model_root(tmp_path):
    """A registry with one published version, as `fmnist train` leaves it."""
    root = tmp_path / "models"
    version = root / "v1"
    version.mkdir(parents=True)
    (version / "model.keras").write_bytes(b"keras archive")
    (version / "model_card.md").write_text("# Model card: v1\n")
    confusion = [[100 if row == column else 0 for column in range(10)] for row in range(10)]
    (version / "metrics.json").write_text(
        json.dumps(
            {
                "model_version": "v1",
                "test_accuracy": 0.88,
                "test_loss": 0.34,
                "confusion_matrix": confusion,
                "per_class": {name: {"precision": 0.9, "recall": 0.9, "f1": 0.9, "support": 100} for name in CLASS_NAMES},
                "data": {"manifest_digest": "d1"},
                "quality_gate": {"passed": True, "min_accuracy": 0.85, "reason": "ok"},
                "model_sha256": registry.model_sha256(b"keras archive"),
            }
        )
    )
    (root / "LATEST").write_text("v1\n")
    return root


def test_train_task_publishes_model_metrics_confusion_matrix_and_card(tmp_path, model_root):
    task = tmp_path / "task"
    published = printing({"model_version": "v1", "uri": str(model_root / "v1")})
    status = adapt(executor_input(str(task), TRAIN_ARTIFACTS), "train", "--manifest-digest", "d1", step=published)
    assert status == 0
    outputs = executor_output(task)
    assert outputs["model"]["metadata"]["model_version"] == "v1"
    assert sorted(os.listdir(task / "model")) == ["metrics.json", "model.keras", "model_card.md"]
    assert outputs["metrics"]["metadata"]["test_accuracy"] == 0.88
    matrix = outputs["confusion_matrix"]["metadata"]["confusionMatrix"]
    assert [spec["displayName"] for spec in matrix["annotationSpecs"]] == list(CLASS_NAMES)
    assert matrix["rows"][3]["row"][3] == 100
    assert (task / "model_card").read_text() == "# Model card: v1\n"


def test_train_task_refuses_a_published_model_of_other_data(tmp_path, model_root, capsys):
    task = tmp_path / "task"
    published = printing({"model_version": "v1", "uri": str(model_root / "v1")})
    status = adapt(executor_input(str(task), TRAIN_ARTIFACTS), "train", "--manifest-digest", "other", step=published)
    assert status == 3
    assert "was not trained on this run's data set" in capsys.readouterr().err
    assert not (task / "executor_output.json").exists()


def test_a_failing_step_passes_its_exit_code_through_and_publishes_nothing(tmp_path):
    task = tmp_path / "task"
    failing = [sys.executable, "-c", "raise SystemExit(3)"]
    status = adapt(executor_input(str(task), TRAIN_ARTIFACTS), "train", "--manifest-digest", "d1", step=failing)
    assert status == 3
    assert not (task / "executor_output.json").exists()


def test_an_image_without_digest_is_refused_before_the_step_runs(tmp_path, capsys):
    marker = tmp_path / "ran"
    status = adapt(
        executor_input(str(tmp_path), {}),
        "train",
        "--manifest-digest",
        "d1",
        step=[sys.executable, "-c", f"open({str(marker)!r}, 'w')"],
        image="europe-west4-docker.pkg.dev/p/fmnist/jobs:latest",
    )
    assert status == 2 and not marker.exists()
    assert "not pinned by digest" in capsys.readouterr().err


def test_score_task_publishes_the_run_summary_its_result_names(tmp_path, capfd):
    tables = tmp_path / "tables"
    (tables / "runs").mkdir(parents=True)
    summary = {"run_id": "scheduled-2026-11-28", "counts": {"read": 10, "scored": 9, "failed": 1}, "model_version": "v1"}
    (tables / "runs" / "scheduled-2026-11-28.json").write_text(json.dumps(summary))
    partition = tables / "predictions" / "run_date=2026-11-28" / "run_id=scheduled-2026-11-28"
    located = {"summary": str(tables / "runs" / "scheduled-2026-11-28.json"), "predictions": str(partition), "errors": "e"}
    task = tmp_path / "task"
    spec = executor_input(str(task), {"predictions": "system.Dataset", "summary": "system.Metrics"})
    status = adapt(spec, "score", step=printing({**summary, "tables": located}))
    assert status == 0
    outputs = executor_output(task)
    assert outputs["summary"]["metadata"] == {"counts.read": 10, "counts.scored": 9, "counts.failed": 1}
    assert outputs["predictions"]["metadata"]["predictions_uri"] == str(partition)
    assert outputs["predictions"]["metadata"]["model_version"] == "v1"  # lineage of the tables artifact
    assert json.loads((task / "predictions").read_text()) == summary
    assert capfd.readouterr().out.startswith("a log line\n")  # the step's output reaches the task log


def test_a_step_without_a_json_result_fails_the_task(tmp_path, capsys):
    task = tmp_path / "task"
    spec = executor_input(str(task), {"predictions": "system.Dataset", "summary": "system.Metrics"})
    status = adapt(spec, "score", step=[sys.executable, "-c", "pass"])
    assert status == 1
    assert "not its JSON result" in capsys.readouterr().err
    assert not (task / "executor_output.json").exists()


def run_context(tmp_path, *, scheduled_time: str, run_date: str = "", offset: int = -1, zone: str = "UTC"):
    spec = executor_input(str(tmp_path), {}, ("date", "shards", "run_id"))
    status = adapt(
        spec,
        "run-context",
        step=jobs_command(
            "run-context",
            "--scheduled-time",
            scheduled_time,
            "--run-date",
            run_date,
            "--date-offset-days",
            str(offset),
            "--time-zone",
            zone,
            "--shards-template",
            "gs://b/incoming/{date}/*.tfrecord",
            "--run-id-template",
            "scheduled-{date}",
        ),
    )
    names = ("date", "shards", "run_id")
    return status, {name: (tmp_path / "parameters" / name).read_text() for name in names if status == 0}


def test_run_context_takes_the_logical_date_from_the_schedule(tmp_path):
    status, names = run_context(tmp_path, scheduled_time="2026-11-29T03:00:00Z")
    assert status == 0
    assert names == {"date": "2026-11-28", "shards": "gs://b/incoming/2026-11-28/*.tfrecord", "run_id": "scheduled-2026-11-28"}


def test_run_context_prefers_an_explicit_backfill_date(tmp_path):
    status, names = run_context(tmp_path, scheduled_time="2026-11-29T03:00:00Z", run_date="2026-10-01")
    assert status == 0 and names["date"] == "2026-10-01" and names["run_id"] == "scheduled-2026-10-01"


def test_run_context_dates_in_the_schedules_time_zone(tmp_path):
    status, names = run_context(tmp_path, scheduled_time="2026-11-28T23:30:00Z", offset=0, zone="Europe/Berlin")
    assert status == 0 and names["date"] == "2026-11-29"


def test_run_context_says_so_when_the_backend_left_the_placeholder(tmp_path, capfd):
    status, _ = run_context(tmp_path, scheduled_time="{{$.pipeline_job_schedule_time_utc}}")
    assert status == 2
    assert "pass run_date" in capfd.readouterr().err
