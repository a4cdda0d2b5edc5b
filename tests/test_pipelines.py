"""The compiled KFP specs: committed = fresh compile, and each task runs the smoke test's command line."""
import os
import subprocess
import sys

import pytest

from jobs import kfp_outputs
from tests.kfp_spec import REPO, SPECS, container, load_spec, render
from tests.test_container import smoke_commands, task_values

IMAGE = "europe-west4-docker.pkg.dev/p/fmnist/jobs@sha256:" + "a" * 64


def test_committed_specs_equal_a_fresh_compile(tmp_path):
    done = subprocess.run([sys.executable, "-m", "jobs.cli", "pipeline", "compile", "--output", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(tmp_path)) == sorted(os.listdir(SPECS)) == ["scoring.yaml", "training.yaml"]
    for name in os.listdir(tmp_path):
        with open(tmp_path / name) as fresh, open(os.path.join(SPECS, name)) as committed:
            assert fresh.read() == committed.read(), f"infra/kfp/{name} is stale: run `fmnist pipeline compile`"


@pytest.mark.parametrize("pipeline, task, step", [
    ("training", "prepare", "prepare"), ("training", "train", "train"), ("scoring", "score", "score")])
def test_each_task_runs_the_smoke_test_command_line(pipeline, task, step):
    values = task_values("/out", IMAGE, manifest_digest="d1")[task]
    assert render(container(pipeline, task)["args"], values) == smoke_commands("/out")[step]


@pytest.mark.parametrize("pipeline, task", [
    ("training", "prepare"), ("training", "train"), ("scoring", "run-context"), ("scoring", "score")])
def test_the_adapter_accepts_each_task_command(pipeline, task):
    spec, values = container(pipeline, task), task_values("/out", IMAGE, manifest_digest="d1")[task]
    line = render(spec["command"], values) + render(spec["args"], values)
    own = line[3:line.index("--")] if "--" in line else line[3:]  # after `python -m jobs.kfp_outputs`
    assert vars(kfp_outputs.build_parser().parse_args(own))["kind"] == task


@pytest.mark.parametrize("name", ["training", "scoring"])
def test_every_task_runs_the_pinned_image_through_the_adapter(name):
    spec = load_spec(name)
    executors = spec["deploymentSpec"]["executors"]
    for executor in executors.values():
        container = executor["container"]
        assert container["image"] == "{{$.inputs.parameters['pipelinechannel--image']}}"
        assert container["command"][:5] == ["python", "-m", "jobs.kfp_outputs", "--executor-input", "{{$}}"]
        # The digest is an input of every task, so it is part of KFP's cache key.
        assert "--image" in container["command"]
    for task in spec["root"]["dag"]["tasks"].values():
        assert task["inputs"]["parameters"]["image"] == {"componentInputParameter": "image"}


def test_caching_is_keyed_on_content_and_off_where_outputs_live_outside_kfp():
    training = load_spec("training")["root"]["dag"]["tasks"]
    assert training["prepare"]["cachingOptions"] == {"enableCache": True}
    assert training["train"]["cachingOptions"] == {"enableCache": True}
    assert training["train"]["inputs"]["parameters"]["manifest_digest"] == {
        "taskOutputParameter": {"outputParameterKey": "manifest_digest", "producerTask": "prepare"}}
    scoring = load_spec("scoring")["root"]["dag"]["tasks"]
    assert scoring["score"]["cachingOptions"] == {}
    assert scoring["run-context"]["cachingOptions"] == {}


def test_the_scheduled_date_flows_into_run_date():
    tasks = load_spec("scoring")["root"]["dag"]["tasks"]
    context = tasks["run-context"]["inputs"]["parameters"]
    assert context["scheduled_time"] == {"runtimeValue": {"constant": "{{$.pipeline_job_schedule_time_utc}}"}}
    score = tasks["score"]["inputs"]["parameters"]
    for name, output in (("run_date", "date"), ("run_id", "run_id"), ("shards", "shards")):
        assert score[name] == {"taskOutputParameter": {"outputParameterKey": output, "producerTask": "run-context"}}


def test_training_outputs_are_typed_artifacts():
    outputs = load_spec("training")["components"]["comp-train"]["outputDefinitions"]["artifacts"]
    assert {name: spec["artifactType"]["schemaTitle"] for name, spec in outputs.items()} == {
        "model": "system.Model", "metrics": "system.Metrics",
        "confusion_matrix": "system.ClassificationMetrics", "model_card": "system.Markdown"}
    prepare = load_spec("training")["components"]["comp-prepare"]["outputDefinitions"]["artifacts"]
    assert prepare["dataset"]["artifactType"]["schemaTitle"] == "system.Dataset"
