"""Container smoke test: the image runs the KFP tasks' command lines on its embedded data, as non-root.

    make container-test      # infra/container/build.sh, then this file with FMNIST_CONTAINER_TEST=1

No Docker engine or KFP cluster exists here: the image (built by buildah) runs through
`buildah run --isolation chroot` in one working container, with a host folder mounted at
/work/out. Each step runs the command line of its task in the compiled specs (infra/kfp/),
resolved for local paths the way a KFP launcher resolves it: the `jobs.kfp_outputs` adapter
around `fmnist prepare`, `fmnist train --epochs 1 --min-accuracy 0.5` (one epoch reaches ~0.8,
below the default gate of 0.85) and `fmnist score` (DirectRunner). tests/test_pipelines.py
checks that those fmnist command lines are the ones `smoke_commands` gives. In a plain `pytest`
run this file is skipped: building the image is the container-test target's job.
"""

import json
import os
import shutil
import subprocess
import time

import pytest

from components.cloud import pipelines
from jobs.kfp_outputs import numbers
from tests.kfp_spec import RESOLVED_MODEL, TRAIN_ARTIFACTS, executor_input, executor_output, render
from tests.kfp_spec import container as task_container

IMAGE = os.environ.get("FMNIST_IMAGE", "localhost/fmnist-jobs:dev")
BUILDAH = ["buildah", "--storage-driver", "vfs"]
OUT = "/work/out"  # inside the container; a host folder is mounted there
SCHEDULED_TIME, RUN_DATE, RUN_ID = "2026-11-29T03:00:00Z", "2026-11-29", "smoke"
# Beam's Dataflow options of the scoring task, with values the DirectRunner does not use.
LOCAL_BEAM = {
    "runner": "DirectRunner",
    "project": "local",
    "region": "local",
    "temp_location": "/tmp",
    "worker_image": "unused-by-the-direct-runner",
    "service_account": "none",
}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("FMNIST_CONTAINER_TEST") != "1", reason="builds and runs the image: `make container-test` runs it"
    ),
]


def smoke_commands(out: str) -> dict[str, list[str]]:
    """The fmnist command line of each task in this test (the compiled specs' args, resolved)."""
    shards, models = f"{out}/shards", f"{out}/models"
    return {
        "prepare": pipelines.prepare_command(output=shards),
        "train": pipelines.train_command(
            data=shards, model_root=models, flags=pipelines.optional_flags({"epochs": 1, "min_accuracy": 0.5})
        ),
        "score": pipelines.score_command(
            shards=f"{shards}/test-*.tfrecord",
            model=models,
            output=f"{out}/tables",
            run_id=RUN_ID,
            run_date=RUN_DATE,
            gcp_resources=f"{out}/score/gcp_resources",
            flags=pipelines.dataflow_flags(**LOCAL_BEAM),
        ),
    }


def task_values(out: str, image: str, manifest_digest: str = "") -> dict[str, dict[str, str]]:
    """Per task, the values KFP would put into its placeholders (inputs, artifact paths, `{{$}}`)."""
    return {
        "prepare": {
            "image": image,
            "dataset": f"{out}/shards",
            "$": executor_input(
                f"{out}/prepare", {"dataset": "system.Dataset"}, ("manifest_digest",), uris={"dataset": f"{out}/shards"}
            ),
        },
        "train": {
            "image": image,
            "dataset": f"{out}/shards",
            "model_root": f"{out}/models",
            "manifest_digest": manifest_digest,
            "epochs": "1",
            "min_accuracy": "0.5",
            "$": executor_input(f"{out}/train", TRAIN_ARTIFACTS),
        },
        "run-context": {
            "image": image,
            "scheduled_time": SCHEDULED_TIME,
            "run_date": "",
            "date_offset_days": "0",
            "time_zone": "UTC",
            "shards_template": f"{out}/shards/test-*.tfrecord",
            "run_id_template": RUN_ID,
            "$": executor_input(f"{out}/run-context", {}, ("date", "shards", "run_id")),
        },
        "resolve-model": {
            "image": image,
            "model_root": f"{out}/models",
            "$": executor_input(f"{out}/resolve-model", {}, RESOLVED_MODEL),
        },
        "score": {
            "image": image,
            "shards": f"{out}/shards/test-*.tfrecord",
            "model": f"{out}/models",  # the Model artifact's URI (a version folder in a run; a root scores LATEST)
            "output": f"{out}/tables",
            "run_id": RUN_ID,
            "run_date": RUN_DATE,
            **LOCAL_BEAM,
            "gcp_resources": f"{out}/score/gcp_resources",
            "public_ips_flag": pipelines.PUBLIC_IPS_FLAGS[0],
            "$": executor_input(
                f"{out}/score", {"predictions": "system.Dataset", "summary": "system.Metrics"}, ("gcp_resources",)
            ),
        },
    }


def task_command(pipeline: str, task: str, values: dict[str, str]) -> list[str]:
    """A task's full command line (adapter + fmnist step) from the compiled spec, resolved."""
    spec = task_container(pipeline, task)
    return render(spec["command"], values) + render(spec["args"], values)


def cannot_run(reason: str) -> None:
    pytest.fail(f"container smoke test cannot run: {reason}", pytrace=False)


@pytest.fixture(scope="module")
def container(tmp_path_factory):
    """(working container, host folder at /work/out, the image pinned by digest)."""
    if os.geteuid() != 0:
        cannot_run("needs root (buildah's chroot isolation and vfs storage run as root here)")
    if shutil.which("buildah") is None:
        cannot_run("buildah is not installed (infra/container/build.sh installs it)")
    inspect = subprocess.run([*BUILDAH, "inspect", "--type", "image", IMAGE], capture_output=True, text=True)
    if inspect.returncode != 0:
        cannot_run(f"image {IMAGE} not found: build it first with infra/container/build.sh")
    digest = json.loads(inspect.stdout)["FromImageDigest"]
    host_out = tmp_path_factory.mktemp("container-out")
    os.chmod(host_out, 0o777)  # the image's user (uid 10001) writes here, not root
    name = f"fmnist-smoke-{os.getpid()}"
    subprocess.run([*BUILDAH, "from", "--name", name, "--volume", f"{host_out}:{OUT}", IMAGE], check=True, capture_output=True)
    try:
        yield name, host_out, f"{IMAGE.rsplit(':', 1)[0]}@{digest}"
    finally:
        subprocess.run([*BUILDAH, "rm", name], capture_output=True)


def run_in(container, command: list[str]) -> subprocess.CompletedProcess:
    name = container[0]
    started = time.monotonic()
    done = subprocess.run([*BUILDAH, "run", "--isolation", "chroot", name, "--", *command], capture_output=True, text=True)
    shown = [arg if len(arg) < 80 else arg[:40] + "..." for arg in command]
    print(f"\n$ {' '.join(shown)}\n  exit {done.returncode} after {time.monotonic() - started:.1f} s")
    assert done.returncode == 0, f"{command} failed:\n{done.stderr[-3000:]}"
    return done


def test_image_runs_as_non_root_user(container):
    assert run_in(container, ["id", "-u"]).stdout.strip() != "0"
    config = json.loads(
        subprocess.run([*BUILDAH, "inspect", "--type", "image", IMAGE], check=True, capture_output=True, text=True).stdout
    )
    assert config["Docker"]["config"]["Entrypoint"] == ["fmnist"]
    assert config["Docker"]["config"]["User"] not in ("", "0", "root")


def test_prepare_task_writes_shards_of_the_embedded_data_set(container):
    _, host_out, image = container
    run_in(container, task_command("training", "prepare", task_values(OUT, image)["prepare"]))
    manifest = json.loads((host_out / "shards" / "manifest.json").read_text())
    assert {split: entry["num_records"] for split, entry in manifest["splits"].items()} == {"train": 60000, "test": 10000}
    assert len(list((host_out / "shards").glob("*.tfrecord"))) == 16
    assert (host_out / "shards" / "manifest.json").stat().st_uid != 0  # written by the image's user
    digest = (host_out / "prepare" / "parameters" / "manifest_digest").read_text()
    assert executor_output(host_out / "prepare")["dataset"]["metadata"]["manifest_digest"] == digest


def test_train_task_publishes_a_gated_model_as_kfp_artifacts(container):
    _, host_out, image = container
    digest = (host_out / "prepare" / "parameters" / "manifest_digest").read_text()
    run_in(container, task_command("training", "train", task_values(OUT, image, digest)["train"]))
    version = (host_out / "models" / "LATEST").read_text().strip()
    metrics = json.loads((host_out / "models" / version / "metrics.json").read_text())
    assert metrics["quality_gate"]["passed"] is True and metrics["test_accuracy"] > 0.5
    outputs = executor_output(host_out / "train")
    assert outputs["model"]["metadata"]["model_version"] == version
    assert outputs["metrics"]["metadata"]["test_accuracy"] == metrics["test_accuracy"]
    assert len(outputs["confusion_matrix"]["metadata"]["confusionMatrix"]["rows"]) == 10
    assert (host_out / "train" / "model_card").read_text().startswith(f"# Model card: {version}")


def test_score_tasks_write_the_prediction_table_of_the_scheduled_date(container):
    _, host_out, image = container
    run_in(container, task_command("scoring", "run-context", task_values(OUT, image)["run-context"]))
    context = {name: (host_out / "run-context" / "parameters" / name).read_text() for name in ("date", "run_id")}
    assert context == {"date": RUN_DATE, "run_id": RUN_ID}
    run_in(container, task_command("scoring", "score", task_values(OUT, image)["score"]))
    import pyarrow.parquet as pq

    summary = json.loads((host_out / "tables" / "runs" / f"{RUN_ID}.json").read_text())
    partition = host_out / "tables" / "predictions" / f"run_date={RUN_DATE}" / f"run_id={RUN_ID}"
    rows = sum(pq.read_metadata(path).num_rows for path in partition.glob("*.parquet"))
    counts = {path.rsplit(".", 1)[-1]: value for path, value in numbers(summary).items()}
    assert rows == counts["read"] == counts["scored"] == 10000  # the real test split: no bad records
    assert executor_output(host_out / "score")["summary"]["metadata"]
