"""The compiled KFP specs: committed = fresh compile, and each task runs the smoke test's command line."""

import json
import os
import subprocess
import sys

import pytest

from jobs import kfp_outputs
from tests.cli_runs import EXAMPLE_DEPLOYMENT, run_cli
from tests.kfp_spec import IMAGE, REPO, SPECS, TRAIN_ARTIFACTS, container, executor_input, load_spec, render, tasks
from tests.test_container import smoke_commands, task_values

# The Dataflow job's own Beam options: optional inputs of the scoring pipeline and its score task.
BEAM_OPTIONS = {"network", "subnetwork", "max_num_workers", "machine_type", "labels", "job_name"}


@pytest.mark.integration
def test_committed_specs_equal_a_fresh_compile(tmp_path):
    done = run_cli("pipeline", "compile", "--output", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(tmp_path)) == sorted(os.listdir(SPECS)) == ["scoring.yaml", "training.yaml"]
    for name in os.listdir(tmp_path):
        with open(tmp_path / name) as fresh, open(os.path.join(SPECS, name)) as committed:
            assert fresh.read() == committed.read(), f"infra/kfp/{name} is stale: run `fmnist pipeline compile`"


@pytest.mark.parametrize(
    "pipeline, task, step", [("training", "prepare", "prepare"), ("training", "train", "train"), ("scoring", "score", "score")]
)
def test_each_task_runs_the_smoke_test_command_line(pipeline, task, step):
    values = task_values("/out", IMAGE, manifest_digest="d1")[task]
    assert render(container(pipeline, task)["args"], values) == smoke_commands("/out")[step]


@pytest.mark.parametrize(
    "pipeline, task",
    [
        ("training", "prepare"),
        ("training", "train"),
        ("scoring", "run-context"),
        ("scoring", "resolve-model"),
        ("scoring", "score"),
    ],
)
def test_the_adapter_accepts_each_task_command(pipeline, task):
    spec, values = container(pipeline, task), task_values("/out", IMAGE, manifest_digest="d1")[task]
    line = render(spec["command"], values) + render(spec["args"], values)
    own = line[3 : line.index("--")] if "--" in line else line[3:]  # after `python -m jobs.kfp_outputs`
    assert vars(kfp_outputs.build_parser().parse_args(own))["kind"] == task


@pytest.mark.parametrize("name", ["training", "scoring"])
def test_every_task_runs_the_pinned_image_through_the_adapter(name):
    spec = load_spec(name)
    executors = spec["deploymentSpec"]["executors"]
    for executor in executors.values():
        if "importer" in executor:  # KFP's own importer: no container of ours
            continue
        container = executor["container"]
        assert container["image"] == "{{$.inputs.parameters['pipelinechannel--image']}}"
        assert container["command"][:5] == ["python", "-m", "jobs.kfp_outputs", "--executor-input", "{{$}}"]
        # The digest is an input of every task: the task runs exactly the released code.
        assert "--image" in container["command"]
    for task in tasks(name).values():
        if task["componentRef"]["name"].startswith(("comp-importer", "comp-condition")):
            continue  # KFP's importer runs no container; a condition's tasks run the executors checked above
        image = task["inputs"]["parameters"]["image"]
        assert image in ({"componentInputParameter": "image"}, {"componentInputParameter": "pipelinechannel--image"})


def test_no_task_is_cached_because_the_pipeline_roots_artifacts_expire():
    # A cached prepare would hand train a path under the pipeline root that the pipelines bucket's
    # age rule deletes; KFP's cache key cannot know. Every task runs: `{}` is KFP's "off".
    training = tasks("training")
    assert training["prepare"]["cachingOptions"] == {}
    assert training["train"]["cachingOptions"] == {}
    assert training["train"]["inputs"]["parameters"]["manifest_digest"] == {
        "taskOutputParameter": {"outputParameterKey": "manifest_digest", "producerTask": "prepare"}
    }
    scoring = tasks("scoring")
    assert scoring["score"]["cachingOptions"] == {}
    assert scoring["run-context"]["cachingOptions"] == {}


def test_the_score_task_consumes_the_runs_model_version_as_a_model_artifact():
    spec = load_spec("scoring")
    inputs = spec["components"]["comp-score"]["inputDefinitions"]["artifacts"]
    assert inputs["model"]["artifactType"]["schemaTitle"] == "system.Model"
    args = container("scoring", "score")["args"]
    assert args[args.index("--model") + 1] == "{{$.inputs.artifacts['model'].uri}}"
    scoring = tasks("scoring")
    assert scoring["score"]["inputs"]["artifacts"]["model"] == {
        "taskOutputArtifact": {"outputArtifactKey": "artifact", "producerTask": "importer"}
    }
    importer = spec["deploymentSpec"]["executors"]["exec-importer"]["importer"]
    assert importer["typeSchema"]["schemaTitle"] == "system.Model" and importer["artifactUri"] == {"runtimeParameter": "uri"}
    assert scoring["importer"]["inputs"]["parameters"]["uri"] == {
        "taskOutputParameter": {"outputParameterKey": "model_uri", "producerTask": "resolve-model"}
    }
    recorded = {json.dumps(value) for value in importer["metadata"].values()}
    assert len(recorded) == 4  # model_version, test_accuracy, test_ece, manifest_digest: each from resolve-model
    assert set(importer["metadata"]) == {"model_version", "test_accuracy", "test_ece", "manifest_digest"}
    # Resolved once per run, never from a cache: the run then uses exactly that version.
    assert scoring["resolve-model"]["cachingOptions"] == {}
    assert container("scoring", "resolve-model")["args"] == [
        "fmnist",
        "model",
        "resolve",
        "--model-root",
        "{{$.inputs.parameters['model_root']}}",
    ]


def test_the_training_pipeline_registers_the_published_version_when_asked(tmp_path):
    spec = load_spec("training")
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert parameters["register_in_vertex"] == {"defaultValue": False, "isOptional": True, "parameterType": "BOOLEAN"}
    [condition] = [task for task in tasks("training").values() if task["componentRef"]["name"].startswith("comp-condition")]
    assert "register_in_vertex" in condition["triggerPolicy"]["condition"]
    register = spec["components"][condition["componentRef"]["name"]]["dag"]["tasks"]["register-model"]
    assert register["inputs"]["parameters"]["model_version"] == {
        "componentInputParameter": "pipelinechannel--train-model_version"
    }

    # Its command line, resolved and run through the adapter with --dry-run, prints the uploadModel request.
    from tests.test_registry import make_version

    model_root = str(tmp_path / "models")
    version = make_version(model_root, "20261201T100000Z-0000000a")
    values = {"image": IMAGE, "model_root": model_root, "model_version": version, "project": "p", "region": "europe-west4",
              "$": executor_input(str(tmp_path / "task"), {})}  # fmt: skip
    spec_container = container("training", "register-model")
    line = render(spec_container["command"], values) + render(spec_container["args"], values) + ["--dry-run"]
    line = [item for arg in line for item in ([sys.executable, "-m", "jobs.cli"] if arg == "fmnist" else [arg])]
    line[0] = sys.executable
    done = subprocess.run(line, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    request = json.loads(done.stdout.strip().splitlines()[-1])["request"]
    assert request["model"]["artifactUri"] == f"{model_root}/{version}/saved_model"
    assert request["parentModel"] == "projects/p/locations/europe-west4/models/fmnist-classifier"


def test_the_scheduled_date_flows_into_run_date():
    scoring = tasks("scoring")
    context = scoring["run-context"]["inputs"]["parameters"]
    assert context["scheduled_time"] == {"runtimeValue": {"constant": "{{$.pipeline_job_schedule_time_utc}}"}}
    score = scoring["score"]["inputs"]["parameters"]
    for name, output in (("run_date", "date"), ("run_id", "run_id"), ("shards", "shards")):
        assert score[name] == {"taskOutputParameter": {"outputParameterKey": output, "producerTask": "run-context"}}


def test_training_outputs_are_typed_artifacts():
    outputs = load_spec("training")["components"]["comp-train"]["outputDefinitions"]["artifacts"]
    assert {name: spec["artifactType"]["schemaTitle"] for name, spec in outputs.items()} == TRAIN_ARTIFACTS
    prepare = load_spec("training")["components"]["comp-prepare"]["outputDefinitions"]["artifacts"]
    assert prepare["dataset"]["artifactType"]["schemaTitle"] == "system.Dataset"


@pytest.mark.parametrize("name", ["training", "scoring"])
def test_committed_specs_name_no_project_and_a_deployment_gives_its_root(name, tmp_path):
    # The committed specs are every project's: the run's root comes from the deployment at submit.
    assert "defaultPipelineRoot" not in load_spec(name)
    done = run_cli("pipeline", "compile", "--output", str(tmp_path), "--deployment", EXAMPLE_DEPLOYMENT)
    assert done.returncode == 0, done.stderr
    import yaml

    from tests.test_infra import terraform_output_value

    root = yaml.safe_load((tmp_path / f"{name}.yaml").read_text())["defaultPipelineRoot"]
    assert root == "gs://acme-ml-pipelines/root" == terraform_output_value("pipeline_root", project_id="acme-ml")


@pytest.mark.integration
def test_compile_takes_another_pipeline_root_and_refuses_a_local_one(tmp_path):
    done = run_cli("pipeline", "compile", "--output", str(tmp_path), "--pipeline-root", "gs://other-pipelines/root")
    assert done.returncode == 0, done.stderr
    import yaml

    assert yaml.safe_load((tmp_path / "scoring.yaml").read_text())["defaultPipelineRoot"] == "gs://other-pipelines/root"
    refused = run_cli("pipeline", "compile", "--output", str(tmp_path / "x"), "--pipeline-root", "/tmp/root")
    assert refused.returncode == 2 and "--pipeline-root /tmp/root" in refused.stderr
    assert not (tmp_path / "x").exists()
    foreign = run_cli(
        "pipeline",
        "compile",
        "--output",
        str(tmp_path / "y"),
        "--deployment",
        EXAMPLE_DEPLOYMENT,
        "--pipeline-root",
        "gs://other-pipelines/root",
    )
    assert foreign.returncode == 2 and foreign.stderr.count("\n") == 1 and "not one of deployment acme-ml" in foreign.stderr


def test_every_task_requests_and_is_limited_to_its_cpu_and_memory():
    for name in ("training", "scoring"):
        for executor in load_spec(name)["deploymentSpec"]["executors"].values():
            if "importer" in executor:
                continue
            resources = executor["container"]["resources"]
            assert resources["cpuRequest"] == resources["cpuLimit"] > 0
            assert resources["memoryRequest"] == resources["memoryLimit"] > 0


def test_the_score_task_writes_gcp_resources_and_takes_dataflows_options():
    spec = load_spec("scoring")
    outputs = spec["components"]["comp-score"]["outputDefinitions"]["parameters"]
    assert outputs["gcp_resources"]["parameterType"] == "STRING"
    args = container("scoring", "score")["args"]
    flag = args.index("--gcp-resources")
    assert args[flag + 1] == "{{$.outputs.parameters['gcp_resources'].output_file}}"
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    for name in BEAM_OPTIONS:
        assert inputs[name]["isOptional"] is True, name
    assert inputs["public_ips_flag"]["defaultValue"] == "--no_use_public_ips"
    assert inputs["labels"]["parameterType"] == "STRUCT"


@pytest.mark.parametrize(
    "pipeline, task, parameters",
    [
        ("training", "prepare", "components.prepare.dataset:PrepareParameters"),
        ("training", "train", "components.train.training:TrainParameters"),
        ("scoring", "score", "components.score.parameters:ScoreParameters"),
    ],
)
def test_a_tasks_optional_inputs_are_its_steps_tuning_parameters(pipeline, task, parameters):
    import importlib

    from components.contracts.parameters import flag_of, tuning_parameters

    module, name = parameters.split(":")
    tuning = tuning_parameters(getattr(importlib.import_module(module), name))
    spec = load_spec(pipeline)
    inputs = spec["components"][f"comp-{task}"]["inputDefinitions"]["parameters"]
    optional = {name for name, definition in inputs.items() if definition.get("isOptional")}
    assert optional - BEAM_OPTIONS == {parameter.name for parameter in tuning}
    pipeline_inputs = spec["root"]["inputDefinitions"]["parameters"]
    kinds = {str: "STRING", int: "NUMBER_INTEGER", float: "NUMBER_DOUBLE"}
    for parameter in tuning:
        assert pipeline_inputs[parameter.name]["parameterType"] == kinds[parameter.kind]
        # the flag the step's parser generates for the field, only when a run sets it
        assert any(flag_of(parameter.name) in arg and "IfPresent" in arg for arg in container(pipeline, task)["args"])
