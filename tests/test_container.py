"""Container smoke test: the one image runs prepare -> train -> score on its embedded data, as non-root.

    make container-test      # infra/container/build.sh, then this file with FMNIST_CONTAINER_TEST=1

There is no Docker engine here: the image (built by buildah) runs through `buildah run
--isolation chroot` in one working container, with a host folder mounted at /work/out for
the outputs. The command lines are those the KFP tasks run (jobs.pipelines builds both;
tests/test_pipelines.py checks the compiled specs against `smoke_commands`). In a plain
`pytest` run this file is skipped: building the image is the container-test target's job.
"""
import json
import os
import shutil
import subprocess
import time

import pytest

from jobs import pipelines
from jobs.cli import STEPS
from jobs.kfp_outputs import numbers

IMAGE = os.environ.get("FMNIST_IMAGE", "localhost/fmnist-jobs:dev")
BUILDAH = ["buildah", "--storage-driver", "vfs"]
OUT = "/work/out"  # inside the container; a host folder is mounted there
RUN_ID, RUN_DATE = "smoke", "2026-11-29"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("FMNIST_CONTAINER_TEST") != "1",
                       reason="builds and runs the image: `make container-test` runs it"),
]


def smoke_commands(out: str) -> dict[str, list[str]]:
    """The smoke test's command lines (what each KFP task runs, with local folders and 1 epoch)."""
    shards, models = f"{out}/shards", f"{out}/models"
    return {
        "prepare": pipelines.prepare_command(output=shards),
        # One epoch reaches ~0.8 test accuracy: a lower gate lets it publish, so score has a model.
        "train": pipelines.train_command(data=shards, model_root=models,
                                         flags=pipelines.optional_flags({"epochs": 1, "min_accuracy": 0.5})),
        "score": pipelines.score_command(shards=f"{shards}/test-*.tfrecord", model=models, output=f"{out}/tables",
                                         run_id=RUN_ID, run_date=RUN_DATE, flags=["--runner", "DirectRunner"]),
    }


def cannot_run(reason: str) -> None:
    pytest.fail(f"container smoke test cannot run: {reason}", pytrace=False)


@pytest.fixture(scope="module")
def container(tmp_path_factory):
    """A working container of the image, with a host folder (writable by the image's user) at /work/out."""
    if os.geteuid() != 0:
        cannot_run("needs root (buildah's chroot isolation and vfs storage run as root here)")
    if shutil.which("buildah") is None:
        cannot_run("buildah is not installed (infra/container/build.sh installs it)")
    if subprocess.run([*BUILDAH, "inspect", "--type", "image", IMAGE], capture_output=True).returncode != 0:
        cannot_run(f"image {IMAGE} not found: build it first with infra/container/build.sh")
    host_out = tmp_path_factory.mktemp("container-out")
    os.chmod(host_out, 0o777)  # the image's user (uid 10001) writes here, not root
    name = f"fmnist-smoke-{os.getpid()}"
    subprocess.run([*BUILDAH, "from", "--name", name, "--volume", f"{host_out}:{OUT}", IMAGE],
                   check=True, capture_output=True)
    try:
        yield name, host_out
    finally:
        subprocess.run([*BUILDAH, "rm", name], capture_output=True)


def run_in(container, command: list[str]) -> subprocess.CompletedProcess:
    name, _ = container
    started = time.monotonic()
    done = subprocess.run([*BUILDAH, "run", "--isolation", "chroot", name, "--", *command],
                          capture_output=True, text=True)
    print(f"\n$ {' '.join(command)}\n  exit {done.returncode} after {time.monotonic() - started:.1f} s")
    assert done.returncode == 0, f"{command} failed:\n{done.stderr[-3000:]}"
    return done


def require_step(step: str) -> None:
    if step not in STEPS:
        pytest.skip(f"`fmnist {step}` is not in jobs/cli.py STEPS on this branch yet")


def test_image_runs_as_non_root_user(container):
    name, _ = container
    assert run_in(container, ["id", "-u"]).stdout.strip() != "0"
    config = json.loads(subprocess.run([*BUILDAH, "inspect", "--type", "image", IMAGE],
                                       check=True, capture_output=True, text=True).stdout)
    assert config["Docker"]["config"]["Entrypoint"] == ["fmnist"]
    assert config["Docker"]["config"]["User"] not in ("", "0", "root")


def test_prepare_writes_shards_of_the_embedded_data_set(container):
    _, host_out = container
    run_in(container, smoke_commands(OUT)["prepare"])
    manifest = json.loads((host_out / "shards" / "manifest.json").read_text())
    assert {split: entry["num_records"] for split, entry in manifest["splits"].items()} == {"train": 60000, "test": 10000}
    assert len(list((host_out / "shards").glob("*.tfrecord"))) == 16
    assert (host_out / "shards" / "manifest.json").stat().st_uid != 0  # written by the image's user


def test_train_publishes_a_gated_model(container):
    require_step("train")
    _, host_out = container
    run_in(container, smoke_commands(OUT)["train"])
    version = (host_out / "models" / "LATEST").read_text().strip()
    metrics = json.loads((host_out / "models" / version / "metrics.json").read_text())
    assert metrics["quality_gate"]["passed"] is True
    assert metrics["test_accuracy"] > 0.5


def test_score_writes_the_prediction_table(container):
    require_step("score")
    _, host_out = container
    run_in(container, smoke_commands(OUT)["score"])
    import pyarrow.parquet as pq

    summary = json.loads((host_out / "tables" / "runs" / f"{RUN_ID}.json").read_text())
    partition = host_out / "tables" / "predictions" / f"run_date={RUN_DATE}" / f"run_id={RUN_ID}"
    rows = sum(pq.read_metadata(path).num_rows for path in partition.glob("*.parquet"))
    counts = {path.rsplit(".", 1)[-1]: value for path, value in numbers(summary).items()}
    assert rows == counts["read"] == counts["scored"] == 10000  # the real test split: no bad records
