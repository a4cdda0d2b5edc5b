"""The compiled KFP specs: committed = fresh compile, and each task runs the smoke test's command line."""
import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from jobs import pipelines
from tests.test_container import RUN_DATE, RUN_ID, smoke_commands

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPECS = os.path.join(REPO, "infra", "kfp")
PLACEHOLDER = re.compile(r"\{\{\$\.(inputs|outputs)\.(parameters|artifacts)\['([a-z_]+)'\](\.path)?\}\}")


def load(name: str) -> dict:
    with open(os.path.join(SPECS, f"{name}.yaml")) as file:
        return yaml.safe_load(file)


def render(args: list[str], values: dict[str, str]) -> list[str]:
    """A container's args as the KFP launcher resolves them, for the inputs/outputs in `values`."""
    rendered = []
    for arg in args:
        if arg.startswith('{"IfPresent"'):
            branch = json.loads(arg)["IfPresent"]
            rendered += render(branch["Then"] if branch["InputName"] in values else branch.get("Else", []), values)
        else:
            rendered.append(PLACEHOLDER.sub(lambda match: values[match.group(3)], arg))
    return rendered


def test_committed_specs_equal_a_fresh_compile(tmp_path):
    done = subprocess.run([sys.executable, "-m", "jobs.cli", "pipeline", "compile", "--output", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(tmp_path)) == sorted(os.listdir(SPECS)) == ["scoring.yaml", "training.yaml"]
    for name in os.listdir(tmp_path):
        with open(tmp_path / name) as fresh, open(os.path.join(SPECS, name)) as committed:
            assert fresh.read() == committed.read(), f"infra/kfp/{name} is stale: run `fmnist pipeline compile`"


def test_training_tasks_run_the_smoke_test_command_lines():
    executors = load("training")["deploymentSpec"]["executors"]
    smoke = smoke_commands("/out")
    prepare = executors["exec-prepare"]["container"]
    assert render(prepare["args"], {"dataset": "/out/shards"}) == smoke["prepare"]
    train = executors["exec-train"]["container"]
    values = {"dataset": "/out/shards", "model_root": "/out/models", "epochs": "1", "min_accuracy": "0.5"}
    assert render(train["args"], values) == smoke["train"]


def test_scoring_task_runs_the_smoke_test_command_line_plus_dataflow_options():
    score = load("scoring")["deploymentSpec"]["executors"]["exec-score"]["container"]
    values = {"shards": "/out/shards/test-*.tfrecord", "model_root": "/out/models", "output": "/out/tables",
              "run_id": RUN_ID, "run_date": RUN_DATE, "runner": "DirectRunner", "project": "p", "region": "r",
              "temp_location": "gs://t", "worker_image": "w@sha256:1", "service_account": "s"}
    rendered = render(score["args"], values)
    smoke = smoke_commands("/out")["score"]
    assert rendered[: len(smoke) - 2] == smoke[:-2]  # the smoke test's only extra flags: --runner DirectRunner
    assert rendered[len(smoke) - 2:] == pipelines.dataflow_flags(
        runner="DirectRunner", project="p", region="r", temp_location="gs://t", worker_image="w@sha256:1",
        service_account="s")


@pytest.mark.parametrize("name", ["training", "scoring"])
def test_every_task_runs_the_pinned_image_through_the_adapter(name):
    spec = load(name)
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
    training = load("training")["root"]["dag"]["tasks"]
    assert training["prepare"]["cachingOptions"] == {"enableCache": True}
    assert training["train"]["cachingOptions"] == {"enableCache": True}
    assert training["train"]["inputs"]["parameters"]["manifest_digest"] == {
        "taskOutputParameter": {"outputParameterKey": "manifest_digest", "producerTask": "prepare"}}
    scoring = load("scoring")["root"]["dag"]["tasks"]
    assert scoring["score"]["cachingOptions"] == {}
    assert scoring["run-context"]["cachingOptions"] == {}


def test_the_scheduled_date_flows_into_run_date():
    tasks = load("scoring")["root"]["dag"]["tasks"]
    context = tasks["run-context"]["inputs"]["parameters"]
    assert context["scheduled_time"] == {"runtimeValue": {"constant": "{{$.pipeline_job_schedule_time_utc}}"}}
    score = tasks["score"]["inputs"]["parameters"]
    for name, output in (("run_date", "date"), ("run_id", "run_id"), ("shards", "shards")):
        assert score[name] == {"taskOutputParameter": {"outputParameterKey": output, "producerTask": "run-context"}}


def test_training_outputs_are_typed_artifacts():
    outputs = load("training")["components"]["comp-train"]["outputDefinitions"]["artifacts"]
    assert {name: spec["artifactType"]["schemaTitle"] for name, spec in outputs.items()} == {
        "model": "system.Model", "metrics": "system.Metrics",
        "confusion_matrix": "system.ClassificationMetrics", "model_card": "system.Markdown"}
    prepare = load("training")["components"]["comp-prepare"]["outputDefinitions"]["artifacts"]
    assert prepare["dataset"]["artifactType"]["schemaTitle"] == "system.Dataset"
