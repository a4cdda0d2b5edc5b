"""`fmnist pipeline submit`: schedules as data -> KFP runs and recurring runs.

No KFP cluster exists here: the real kfp.Client talks HTTP to `FakeKfpApi`, a stub of the KFP
REST API (v2beta1) on loopback that answers the few calls submit makes and records them.
"""

import json
import os
import shutil
import subprocess
import urllib.parse

import pytest
import yaml

from components.cloud.deployment import load_deployment
from components.cloud.schedules import load_schedule, run_parameters
from components.errors import InputError
from tests.cli_runs import EXAMPLE_DEPLOYMENT, SCORING_DAILY, SCORING_IMAGES, TRAINING_SPEC, params, pipeline_submit, run_cli
from tests.kfp_spec import IMAGE, REPO, WORKER
from tests.loopback_api import JsonHandler, RecordingServer, serving

SCHEDULES = os.path.join(REPO, "infra", "schedules")
# What the training spec requires beyond the deployment's names, and nothing more.
TRAINING_REQUIRED = params(image=IMAGE)
# The example deployment's names, as submit fills them in.
NAMES = load_deployment(os.path.join(REPO, EXAMPLE_DEPLOYMENT)).pipeline_parameters()


class FakeKfpApi(RecordingServer):
    """Answers the KFP v2beta1 calls of kfp.Client that submit uses; keeps every request."""

    def __init__(self, existing_recurring_runs: list[dict]):
        super().__init__(_Handler, existing_recurring_runs)

    def calls(self, method: str, path: str) -> list[dict]:
        return [body for m, p, body in self.requests if m == method and p == path]


class _Handler(JsonHandler):
    def _answer(self, method: str) -> None:
        url = urllib.parse.urlparse(self.path)
        body = self.read_json()
        self.server.requests.append((method, url.path, body))
        answers = {
            ("GET", "/apis/v2beta1/healthz"): {"multi_user": False},
            ("GET", "/apis/v2beta1/experiments"): {},  # no experiment of that name yet
            ("POST", "/apis/v2beta1/experiments"): {"experiment_id": "exp-1", "display_name": body.get("display_name")},
            ("GET", "/apis/v2beta1/recurringruns"): {"recurringRuns": self.server.existing},
            ("POST", "/apis/v2beta1/recurringruns"): {**body, "recurring_run_id": "rr-new"},
            ("POST", "/apis/v2beta1/runs"): {**body, "run_id": "run-1"},
        }
        if method == "DELETE" and url.path.startswith("/apis/v2beta1/recurringruns/"):
            answer = {}
        else:
            answer = answers[(method, url.path)]
        self.send_json(answer)

    def do_GET(self):  # noqa: N802 - http.server's naming
        self._answer("GET")

    def do_POST(self):  # noqa: N802
        self._answer("POST")

    def do_DELETE(self):  # noqa: N802
        self._answer("DELETE")


@pytest.fixture
def kfp_api():
    with serving(FakeKfpApi([{"recurring_run_id": "rr-old", "display_name": "fmnist-scoring-daily"}])) as server:
        yield server


def submit(kfp_api: FakeKfpApi, *args: str, home) -> subprocess.CompletedProcess:
    """`fmnist pipeline submit --host <the stub> ARGS`."""
    return pipeline_submit("--host", kfp_api.url, *args, home=home)


@pytest.mark.integration
def test_schedule_replaces_the_recurring_run_of_the_same_name(kfp_api, tmp_path):
    done = submit(kfp_api, "--schedule", SCORING_DAILY, *SCORING_IMAGES, home=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["recurring_run_id"] == "rr-new" and result["replaced"] == ["rr-old"]
    # The new recurring run exists before the old one goes: a refused create leaves the old one.
    changes = [(m, p) for m, p, _ in kfp_api.requests if p.startswith("/apis/v2beta1/recurringruns") and m != "GET"]
    assert changes == [("POST", "/apis/v2beta1/recurringruns"), ("DELETE", "/apis/v2beta1/recurringruns/rr-old")]
    (created,) = kfp_api.calls("POST", "/apis/v2beta1/recurringruns")
    schedule = yaml.safe_load(open(os.path.join(SCHEDULES, "scoring-daily.yaml")))
    assert created["display_name"] == "fmnist-scoring-daily"
    assert created["trigger"]["cron_schedule"]["cron"] == schedule["cron"] == "0 0 3 * * *"
    assert created["no_catchup"] is False and created["max_concurrency"] == 1
    parameters = created["runtime_config"]["parameters"]
    assert parameters["image"] == IMAGE and parameters["date_offset_days"] == -1
    assert parameters["time_zone"] == "UTC"  # the schedule's zone reaches the run-context task
    # Every location is the deployment's, none is the schedule file's.
    for name in ("project", "region", "output", "model_root", "shards_template", "temp_location", "service_account"):
        assert parameters[name] == NAMES[name], name
    assert parameters["output"] == "gs://acme-ml-tables" and parameters["public_ips_flag"] == "--no_use_public_ips"
    assert created["runtime_config"]["pipeline_root"] == "gs://acme-ml-pipelines/root"
    assert created["pipeline_spec"]["pipelineInfo"]["name"] == "fmnist-scoring"


@pytest.mark.integration
def test_once_creates_a_single_run_for_a_backfill_date(kfp_api, tmp_path):
    done = submit(kfp_api, "--schedule", SCORING_DAILY, "--once", *SCORING_IMAGES, *params(run_date="2026-11-01"), home=tmp_path)
    assert done.returncode == 0, done.stderr
    (run,) = kfp_api.calls("POST", "/apis/v2beta1/runs")
    assert run["runtime_config"]["parameters"]["run_date"] == "2026-11-01"
    assert kfp_api.calls("POST", "/apis/v2beta1/recurringruns") == []


@pytest.mark.integration
def test_a_spec_without_schedule_runs_once_with_typed_parameters(kfp_api, tmp_path):
    done = submit(
        kfp_api,
        "--spec",
        TRAINING_SPEC,
        *params(image=IMAGE, model_root="gs://acme-ml-models/trial", epochs=3, min_accuracy=0.9),
        home=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    (run,) = kfp_api.calls("POST", "/apis/v2beta1/runs")
    assert run["runtime_config"]["parameters"] == {
        "image": IMAGE,
        "model_root": "gs://acme-ml-models/trial",  # --param wins, within the deployment's buckets
        "epochs": 3,
        "min_accuracy": 0.9,
    }


@pytest.mark.parametrize(
    "param, message",
    [
        ("image=europe-west4-docker.pkg.dev/acme-ml/fmnist/jobs:latest", "not pinned by digest"),
        ("epochs=many", "is not a int"),
        ("colour=blue", "unknown parameters ['colour']"),
    ],
)
def test_bad_parameters_are_refused_before_any_request(kfp_api, tmp_path, param, message):
    done = submit(kfp_api, "--spec", TRAINING_SPEC, *TRAINING_REQUIRED, "--param", param, home=tmp_path)
    assert done.returncode == 2
    assert message in done.stderr and done.stderr.count("\n") == 1
    assert kfp_api.requests == []


def test_a_missing_required_parameter_is_named():
    spec = os.path.join(REPO, "infra", "kfp", "training.yaml")
    with pytest.raises(InputError, match=r"required parameters \['model_root'\]"):
        run_parameters(spec, {"image": IMAGE})


def test_committed_schedules_load_and_match_their_specs():
    for name in os.listdir(SCHEDULES):
        schedule = load_schedule(os.path.join(SCHEDULES, name))
        assert len(schedule.cron.split()) == 6 and schedule.max_concurrency == 1
        # The file holds no project's names: they come from the deployment; with them and the
        # release's image digests, every required input is given and all are known to the spec.
        assert not {"project", "region", "service_account"} & set(schedule.parameters)
        assert "gs://" not in json.dumps(schedule.parameters)
        images = {"image": IMAGE, "worker_image": WORKER} if "scoring" in name else {"image": IMAGE}
        declared = yaml.safe_load(open(schedule.spec))["root"]["inputDefinitions"]["parameters"]
        names = {key: value for key, value in NAMES.items() if key in declared}
        assert run_parameters(schedule.spec, {**names, **schedule.parameters, **images})


def test_a_schedule_naming_no_compiled_spec_is_refused(tmp_path):
    shutil.copy(os.path.join(SCHEDULES, "training-weekly.yaml"), tmp_path / "weekly.yaml")
    with pytest.raises(InputError, match="compiled spec .* not found"):
        load_schedule(str(tmp_path / "weekly.yaml"))


@pytest.mark.integration
def test_pipeline_root_reaches_the_kfp_run_and_a_dry_run_sends_nothing(kfp_api, tmp_path):
    args = ["--schedule", SCORING_DAILY, "--once", *SCORING_IMAGES, "--pipeline-root", "gs://acme-ml-pipelines/other"]
    dry = submit(kfp_api, *args, "--dry-run", home=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert kfp_api.requests == []
    planned = json.loads(dry.stdout)
    assert planned["call"] == "run_pipeline" and planned["arguments"]["pipeline_root"] == "gs://acme-ml-pipelines/other"
    done = submit(kfp_api, *args, home=tmp_path)
    assert done.returncode == 0, done.stderr
    (run,) = kfp_api.calls("POST", "/apis/v2beta1/runs")
    assert run["runtime_config"]["pipeline_root"] == "gs://acme-ml-pipelines/other"
    assert run["runtime_config"]["parameters"] == planned["arguments"]["params"]


def test_a_beam_flag_parameter_takes_only_beams_flags():
    spec = os.path.join(REPO, "infra", "kfp", "scoring.yaml")
    schedule = load_schedule(os.path.join(SCHEDULES, "scoring-daily.yaml"))
    values = {**NAMES, **schedule.parameters, "image": IMAGE, "worker_image": WORKER}
    assert run_parameters(spec, {**values, "public_ips_flag": "--use_public_ips"})["public_ips_flag"] == "--use_public_ips"
    with pytest.raises(InputError, match="public_ips_flag=--public_ips: one of --no_use_public_ips, --use_public_ips"):
        run_parameters(spec, {**values, "public_ips_flag": "--public_ips"})
    assert run_parameters(spec, {**values, "labels": '{"team": "ml"}'})["labels"] == {"team": "ml"}


def test_vertex_flags_are_refused_for_kfp_in_one_line(kfp_api, tmp_path):
    done = submit(
        kfp_api,
        "--spec",
        TRAINING_SPEC,
        *TRAINING_REQUIRED,
        "--network",
        "projects/1/global/networks/n",
        home=tmp_path,
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--network: only for --target vertex" in done.stderr
    assert kfp_api.requests == []


@pytest.mark.parametrize(
    "args, message",
    [
        (params(output="gs://fmnist-prod-tables"), "bucket fmnist-prod-tables is not one of deployment acme-ml's buckets"),
        (params(project="fmnist-prod"), "parameter project=fmnist-prod: contradicts deployment acme-ml"),
        (params(region="us-central1"), "parameter region=us-central1: contradicts deployment acme-ml"),
        (params(service_account="w@fmnist-prod.iam.gserviceaccount.com"), "names project fmnist-prod, not deployment acme-ml"),
        (params(image="europe-west4-docker.pkg.dev/fmnist-prod/fmnist/jobs@sha256:" + "c" * 64), "names project fmnist-prod"),
        (params(labels='{"source": "gs://fmnist-prod-data"}'), "bucket fmnist-prod-data is not one of"),
        (["--pipeline-root", "gs://fmnist-prod-pipelines/root"], "--pipeline-root=gs://fmnist-prod-pipelines/root: bucket"),
    ],
)
def test_a_parameter_or_flag_naming_another_project_is_refused_in_one_line(kfp_api, tmp_path, args, message):
    done = submit(kfp_api, "--schedule", SCORING_DAILY, *SCORING_IMAGES, *args, "--dry-run", home=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert message in done.stderr and done.stderr.count("\n") == 1
    assert kfp_api.requests == []


def test_submit_without_a_deployment_is_refused_in_one_line(tmp_path):
    done = pipeline_submit("--host", "http://127.0.0.1:9", "--schedule", SCORING_DAILY, home=tmp_path, deployment=None)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--deployment FILE needed" in done.stderr


@pytest.mark.parametrize(
    "change, message",
    [
        ({"parameters": ["model_root", "gs://x"]}, "parameters ['model_root', 'gs://x'] is not a mapping"),
        ({"name": ["a", "b"]}, "name ['a', 'b'] is not a string"),
        ({"name": 'daily" OR display_name="x'}, "letters, digits"),
        ({"catchup": "yes"}, "catchup 'yes' is not a boolean"),
        ({"max_concurrency": "one"}, "max_concurrency 'one' is not a whole number"),
    ],
)
def test_a_schedule_field_of_the_wrong_type_is_refused_in_one_line(tmp_path, change, message):
    document = yaml.safe_load(open(os.path.join(SCHEDULES, "scoring-daily.yaml")))
    document.update(change, spec=os.path.join(REPO, "infra", "kfp", "scoring.yaml"))
    schedule = tmp_path / "bad.yaml"
    schedule.write_text(yaml.safe_dump(document))
    done = pipeline_submit("--host", "http://127.0.0.1:9", "--schedule", str(schedule), *SCORING_IMAGES, home=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert message in done.stderr


@pytest.mark.parametrize(
    "template, message",
    [
        ("run_id_template=run\n{date}", "gives run id 'run\\n2026-01-31'"),
        ("run_id_template=run/{date}", "a run id has letters, digits"),
        ("run_id_template=.{date}", "starting with a letter or digit"),
        ("run_id_template={date.__class__}", "may only use {date}"),
        ("shards_template=gs://acme-ml-data/{__class__}/*", "fields ['{__class__}']"),
        ("shards_template=gs://acme-ml-data/{x.y}/*", "fields ['{x.y}']"),
        ("shards_template=gs://acme-ml-data/{x[0]}/*", "fields ['{x[0]}']"),
    ],
)
def test_a_template_that_could_make_a_bad_name_is_refused_before_any_request(kfp_api, tmp_path, template, message):
    done = submit(kfp_api, "--schedule", SCORING_DAILY, *SCORING_IMAGES, "--param", template, home=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert message in done.stderr
    assert kfp_api.requests == []


@pytest.mark.integration
def test_resume_on_kfp_enables_the_recurring_run_and_catch_up_follows_the_file(kfp_api, tmp_path):
    weekly = os.path.join("infra", "schedules", "training-weekly.yaml")  # catchup: false
    refused = pipeline_submit("--host", kfp_api.url, "--schedule", weekly, "--catch-up", home=tmp_path, action="resume")
    assert refused.returncode == 2 and "catchup: false" in refused.stderr and refused.stderr.count("\n") == 1
    planned = pipeline_submit("--host", kfp_api.url, "--schedule", SCORING_DAILY, "--dry-run", home=tmp_path, action="resume")
    assert json.loads(planned.stdout)["call"] == "enable_recurring_run" and kfp_api.requests == []


@pytest.mark.parametrize("template", ["gs://b/{__class__}/*", "gs://b/{date.__class__}/*", "gs://b/{x[0]}/*"])
def test_the_run_context_step_refuses_a_template_with_other_fields_in_one_line(template):
    done = run_cli("run-context", "--scheduled-time", "2026-11-29T03:00:00Z", "--shards-template", template)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "may only use {date}" in done.stderr
