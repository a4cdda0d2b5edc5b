"""`fmnist pipeline submit --target vertex`: PipelineJob and PipelineJobSchedule through google-cloud-aiplatform.

Vertex AI cannot run here: the real aiplatform client (REST transport, anonymous credentials)
talks to `FakeVertexApi`, a loopback stub of the few Vertex REST calls submit makes, which
records every request. The SDK's side trip of a single run (creating the pipeline root's
bucket, through Cloud Storage and Resource Manager) is patched out: it is no request to Vertex.
"""

from __future__ import annotations

import json
import os
import re
import urllib.parse
from unittest import mock

import pytest
from google.auth.credentials import AnonymousCredentials

from components.cloud.deployment import load_deployment
from components.cloud.schedules import kfp_cron, load_schedule, run_parameters
from components.cloud.vertex_pipelines import resume_on_vertex, submit_to_vertex, vertex_cron
from components.errors import InputError
from tests.cli_runs import EXAMPLE_DEPLOYMENT, SCORING_DAILY, SCORING_IMAGES, params, pipeline_submit, run_cli
from tests.kfp_spec import IMAGE, REPO, WORKER
from tests.loopback_api import JsonHandler, RecordingServer, serving

# The example deployment (a made-up project, acme-ml): every name a submission uses comes from it.
DEPLOYMENT = load_deployment(os.path.join(REPO, EXAMPLE_DEPLOYMENT))
RUNNER = DEPLOYMENT.pipeline_runner
PARENT = "/v1/projects/acme-ml/locations/europe-west4"


class FakeVertexApi(RecordingServer):
    """Answers PipelineService/ScheduleService REST calls: create echoes the body with a name."""

    def __init__(self, existing_schedules: list[dict]):
        super().__init__(_Handler, existing_schedules)


class _Handler(JsonHandler):
    def _answer(self) -> None:
        body = self.read_json()
        self.server.requests.append((self.command, self.path, body))
        path = urllib.parse.urlsplit(self.path).path
        if self.command == "POST" and path.endswith("/pipelineJobs"):
            job_id = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)["pipelineJobId"][0]
            answer = {**body, "name": f"{path[4:]}/{job_id}", "state": "PIPELINE_STATE_PENDING"}
        elif self.command == "POST" and path.endswith("/schedules"):
            answer = {**body, "name": f"{path[4:]}/123", "state": "ACTIVE"}
        elif self.command == "GET" and path.endswith("/schedules"):
            answer = {"schedules": self.server.existing}
        elif self.command == "POST" and path.endswith(":resume"):
            answer = {}
        elif self.command == "DELETE" and "/schedules/" in path:
            answer = {
                "name": f"{path[4:]}/operations/1",
                "done": True,
                "response": {"@type": "type.googleapis.com/google.protobuf.Empty"},
            }
        else:
            self.send_error(404)
            return
        self.send_json(answer)

    do_GET = do_POST = do_DELETE = _answer


@pytest.fixture
def vertex_api():
    old = {
        "name": "projects/acme-ml/locations/europe-west4/schedules/77",
        "displayName": "fmnist-scoring-daily",
        "cron": "TZ=UTC 0 2 * * *",
        "state": "ACTIVE",
    }
    with serving(FakeVertexApi(existing_schedules=[old])) as server:
        yield server


def scoring(schedule_path: str = SCORING_DAILY):
    plan = load_schedule(os.path.join(REPO, schedule_path))
    parameters = run_parameters(
        plan.spec,
        {
            **DEPLOYMENT.pipeline_parameters(),
            **plan.parameters,
            "time_zone": plan.time_zone,
            "image": IMAGE,
            "worker_image": WORKER,
        },
    )
    return plan, parameters


def submit(vertex_api, **overrides) -> dict:
    plan, parameters = scoring()
    arguments = {
        "name": plan.name,
        "spec": plan.spec,
        "parameters": parameters,
        "project": "acme-ml",
        "region": "europe-west4",
        "service_account": RUNNER,
        "pipeline_root": DEPLOYMENT.pipeline_root,
        "labels": {"team": "ml"},
        "api_endpoint": vertex_api.url,
        "api_transport": "rest",
        "credentials": AnonymousCredentials(),
        **overrides,
    }
    return submit_to_vertex(**arguments)


@pytest.mark.integration
def test_a_schedule_becomes_a_pipeline_job_schedule_with_the_time_zone_in_its_cron(vertex_api):
    plan, _ = scoring()
    tokyo = type(plan)(**{**plan.__dict__, "time_zone": "Asia/Tokyo"})
    result = submit(vertex_api, schedule=tokyo, network="projects/123/global/networks/fmnist")
    # The schedule file is the truth: the old schedule goes, once the new one exists.
    listed, created, deleted = vertex_api.requests
    assert listed[0] == "GET" and urllib.parse.parse_qs(urllib.parse.urlsplit(listed[1]).query)["filter"] == [
        'display_name="fmnist-scoring-daily"'
    ]
    assert (deleted[0], urllib.parse.urlsplit(deleted[1]).path) == ("DELETE", f"{PARENT}/schedules/77")
    method, path, body = created
    assert (method, urllib.parse.urlsplit(path).path) == ("POST", f"{PARENT}/schedules")
    assert body["cron"] == "TZ=Asia/Tokyo 0 3 * * *" and body["displayName"] == "fmnist-scoring-daily"
    assert body["maxConcurrentRunCount"] == "1" and body["startTime"] == "2026-12-01T00:00:00Z"
    assert body["allowQueueing"] is True  # catchup: true -> a run due while one runs waits, never skipped
    job = body["createPipelineJobRequest"]["pipelineJob"]
    assert job["serviceAccount"] == RUNNER and job["network"] == "projects/123/global/networks/fmnist"
    assert job["labels"] == {"team": "ml"}
    assert job["runtimeConfig"]["gcsOutputDirectory"] == "gs://acme-ml-pipelines/root"  # the deployment's root
    assert job["runtimeConfig"]["parameterValues"]["image"] == IMAGE
    assert job["pipelineSpec"]["pipelineInfo"]["name"] == "fmnist-scoring"
    assert result["schedule"].endswith("/schedules/123") and result["replaced"][0].endswith("/schedules/77")


@pytest.mark.integration
def test_one_run_becomes_a_pipeline_job_with_root_service_account_and_labels(vertex_api):
    with mock.patch(
        "google.cloud.aiplatform.pipeline_jobs.gcs_utils.create_gcs_bucket_for_pipeline_artifacts_if_it_does_not_exist"
    ):
        result = submit(vertex_api, pipeline_root="gs://acme-ml-pipelines/other")
    ((method, path, body),) = vertex_api.requests
    assert method == "POST" and path.startswith(f"{PARENT}/pipelineJobs?pipelineJobId=fmnist-scoring-daily-2")
    assert body["displayName"] == "fmnist-scoring-daily" and body["serviceAccount"] == RUNNER
    assert body["runtimeConfig"]["gcsOutputDirectory"] == "gs://acme-ml-pipelines/other"
    assert body["runtimeConfig"]["parameterValues"]["worker_image"] == WORKER
    assert body["labels"] == {"team": "ml"}
    assert result["pipeline_job"].startswith("projects/acme-ml/locations/europe-west4/pipelineJobs/")


@pytest.mark.integration
def test_the_dry_run_prints_exactly_the_requests_and_sends_nothing(vertex_api, tmp_path):
    plan, _ = scoring()
    submit(vertex_api, schedule=plan)
    (sent,) = [body for method, _, body in vertex_api.requests if method == "POST"]
    done = pipeline_submit(
        "--target", "vertex", "--dry-run", "--schedule", SCORING_DAILY, "--label", "team=ml", *SCORING_IMAGES, home=tmp_path
    )
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    ((request),) = printed["requests"]
    assert request["url"] == "https://europe-west4-aiplatform.googleapis.com" + PARENT + "/schedules"
    assert request["body"] == sent
    assert len(vertex_api.requests) == 3  # list, create, delete of the real submission only


@pytest.mark.parametrize(
    "cron, zone, expected",
    [
        ("0 0 3 * * *", "UTC", "TZ=UTC 0 3 * * *"),
        ("0 0 4 * * 1", "Europe/Amsterdam", "TZ=Europe/Amsterdam 0 4 * * 1"),
        ("0 30 9 ? * 2-6", "America/New_York", "TZ=America/New_York 30 9 * * 2-6"),
    ],
)
def test_vertex_cron_carries_the_zone(cron, zone, expected):
    assert vertex_cron(cron, zone) == expected


def test_vertex_refuses_seconds_it_cannot_schedule():
    with pytest.raises(InputError, match="whole minutes"):
        vertex_cron("30 0 3 * * *", "UTC")


@pytest.mark.parametrize(
    "cron, zone, cluster, expected",
    [
        ("0 0 3 * * *", "UTC", "UTC", "0 0 3 * * *"),
        ("0 0 3 * * *", "Asia/Kolkata", "UTC", "0 30 21 * * *"),  # +05:30 all year: the evening before in UTC
        ("0 0 3 * * *", "Asia/Tokyo", "Asia/Kolkata", "0 30 23 * * *"),
        ("0 0 4 * * 1", "Asia/Tokyo", "Asia/Tokyo", "0 0 4 * * 1"),
    ],
)
def test_kfp_cron_is_converted_to_the_clusters_zone(cron, zone, cluster, expected):
    assert kfp_cron(cron, zone, cluster) == expected


@pytest.mark.parametrize(
    "cron, zone, message",
    [
        ("0 0 3 * * *", "America/New_York", "daylight saving time"),
        ("0 0 4 * * 1", "Asia/Tokyo", "falls on another day"),  # Monday 04:00 Tokyo is Sunday 19:00 UTC
    ],
)
def test_kfp_cron_that_cannot_be_expressed_is_refused(cron, zone, message):
    with pytest.raises(InputError, match=message):
        kfp_cron(cron, zone, "UTC")


def test_kfp_schedule_in_another_zone_is_refused_in_one_line_before_any_request(tmp_path):
    schedule = tmp_path / "nightly.yaml"
    text = open(os.path.join(REPO, "infra", "schedules", "scoring-daily.yaml")).read()
    schedule.write_text(
        text.replace("time_zone: UTC", "time_zone: America/New_York").replace(
            "spec: ../kfp/scoring.yaml", f"spec: {REPO}/infra/kfp/scoring.yaml"
        )
    )
    done = pipeline_submit("--host", "http://127.0.0.1:9", "--schedule", str(schedule), *SCORING_IMAGES, home=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "America/New_York" in done.stderr and "cronScheduleTimezone" in done.stderr


@pytest.mark.integration
def test_runs_act_as_terraforms_pipeline_runner_of_the_deployment_and_name_only_its_project(tmp_path):
    import hcl2

    with open(os.path.join(REPO, "infra", "terraform", "iam.tf")) as file:
        accounts = {
            name: body
            for entry in hcl2.load(file)["resource"]
            for typ, items in entry.items()
            if typ.strip('"') == "google_service_account"
            for name, body in items.items()
        }
    account_id = accounts['"pipeline_runner"']["account_id"].strip('"')
    assert RUNNER == f"{account_id}@acme-ml.iam.gserviceaccount.com"
    done = pipeline_submit("--target", "vertex", "--dry-run", "--schedule", SCORING_DAILY, *SCORING_IMAGES, home=tmp_path)
    assert done.returncode == 0, done.stderr
    ((request),) = json.loads(done.stdout)["requests"]
    assert request["url"] == "https://europe-west4-aiplatform.googleapis.com" + PARENT + "/schedules"
    assert request["body"]["allowQueueing"] is True
    job = request["body"]["createPipelineJobRequest"]["pipelineJob"]
    assert job["serviceAccount"] == RUNNER
    assert job["runtimeConfig"]["gcsOutputDirectory"] == "gs://acme-ml-pipelines/root"
    # Every project, bucket and account the request names is the deployment's.
    text = json.dumps(request)
    assert "fmnist-prod" not in text
    assert set(re.findall(r"gs://([a-z0-9._-]+)", text)) <= set(DEPLOYMENT.buckets.values())
    assert set(re.findall(r"projects/([a-z0-9-]+)", text)) == {"acme-ml"}
    assert set(re.findall(r"@([a-z0-9-]+)\.iam", text)) == {"acme-ml"}


def test_a_contradicting_parameter_is_refused_in_one_line(tmp_path):
    done = pipeline_submit(
        "--target",
        "vertex",
        "--dry-run",
        "--schedule",
        SCORING_DAILY,
        *SCORING_IMAGES,
        *params(output="gs://fmnist-prod-tables"),
        home=tmp_path,
    )
    assert done.returncode == 2 and done.stdout == "" and done.stderr.count("\n") == 1
    assert "output=gs://fmnist-prod-tables" in done.stderr
    for flag, value in (("--project", "fmnist-prod"), ("--region", "us-central1")):
        refused = pipeline_submit(
            "--target", "vertex", "--dry-run", "--schedule", SCORING_DAILY, *SCORING_IMAGES, flag, value, home=tmp_path
        )
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "contradicts deployment acme-ml" in refused.stderr


def test_a_schedule_without_catchup_does_not_queue(tmp_path):
    weekly = os.path.join("infra", "schedules", "training-weekly.yaml")
    done = pipeline_submit("--target", "vertex", "--dry-run", "--schedule", weekly, *params(image=IMAGE), home=tmp_path)
    assert done.returncode == 0, done.stderr
    ((request),) = json.loads(done.stdout)["requests"]
    assert request["body"].get("allowQueueing", False) is False  # proto3 leaves a false bool out


@pytest.mark.integration
def test_resume_with_catch_up_asks_vertex_for_the_missed_runs(vertex_api, tmp_path):
    result = resume_on_vertex(
        name="fmnist-scoring-daily",
        project="acme-ml",
        region="europe-west4",
        catch_up=True,
        api_endpoint=vertex_api.url,
        api_transport="rest",
        credentials=AnonymousCredentials(),
    )
    listed, resumed = vertex_api.requests
    assert listed[0] == "GET"
    assert (resumed[0], urllib.parse.urlsplit(resumed[1]).path) == ("POST", f"{PARENT}/schedules/77:resume")
    assert resumed[2] == {"catchUp": True}  # PipelineJobSchedule.resume() would drop it
    assert result["resumed"] == ["projects/acme-ml/locations/europe-west4/schedules/77"]
    planned = pipeline_submit(
        "--target", "vertex", "--schedule", SCORING_DAILY, "--catch-up", "--dry-run", home=tmp_path, action="resume"
    )
    assert planned.returncode == 0, planned.stderr
    ((request),) = json.loads(planned.stdout)["requests"]
    assert request["url"].endswith(":resume") and request["body"] == {"catchUp": True} and PARENT in request["url"]


def test_another_projects_deployment_gives_requests_naming_only_that_project(tmp_path):
    # Nothing but the deployment file names a project: the same schedule for a second one.
    with open(os.path.join(REPO, EXAMPLE_DEPLOYMENT)) as file:
        (tmp_path / "beta.json").write_text(file.read().replace("acme-ml", "beta-ml").replace("europe-west4", "us-central1"))
    images = [value.replace("acme-ml", "beta-ml").replace("europe-west4", "us-central1") for value in SCORING_IMAGES]
    done = pipeline_submit(
        "--target", "vertex", "--dry-run", "--schedule", SCORING_DAILY, *images,
        home=tmp_path, deployment=str(tmp_path / "beta.json"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "acme-ml" not in done.stdout and "europe-west4" not in done.stdout
    ((request),) = json.loads(done.stdout)["requests"]
    assert request["url"] == "https://us-central1-aiplatform.googleapis.com/v1/projects/beta-ml/locations/us-central1/schedules"
    values = request["body"]["createPipelineJobRequest"]["pipelineJob"]["runtimeConfig"]["parameterValues"]
    assert values["project"] == "beta-ml" and values["output"] == "gs://beta-ml-tables"


MODEL_PARENT = "/v1/projects/fmnist-prod/locations/europe-west4"


class FakeModelRegistryApi(RecordingServer):
    """Answers ModelService's getModel (404 until the first upload) and uploadModel (a finished operation)."""

    def __init__(self):
        super().__init__(_ModelHandler, [])


class _ModelHandler(JsonHandler):
    def _answer(self) -> None:
        body = self.read_json()
        self.server.requests.append((self.command, self.path, body))
        path = urllib.parse.urlsplit(self.path).path
        if self.command == "GET" and "/models/" in path:
            if not self.server.existing:
                self.send_error(404)
                return
            answer = self.server.existing[0]
        elif self.command == "POST" and path.endswith("/models:upload"):
            name = body.get("parentModel") or f"{path[4 : -len(':upload')]}/{body['modelId']}"
            self.server.existing.append({"name": name, "displayName": body["model"]["displayName"]})
            answer = {
                "name": f"{name}/operations/{len(self.server.existing)}",
                "done": True,
                "response": {
                    "@type": "type.googleapis.com/google.cloud.aiplatform.v1.UploadModelResponse",
                    "model": name,
                    "modelVersionId": str(len(self.server.existing)),
                },
            }
        else:
            self.send_error(404)
            return
        self.send_json(answer)

    do_GET = do_POST = _answer


@pytest.mark.integration
def test_a_model_version_becomes_a_version_of_one_registry_model(tmp_path, gcs_bucket):
    from components.cloud.vertex_models import register_model
    from components.contracts import registry
    from tests.test_registry import make_version

    local_root, model_root = f"{tmp_path}/models", f"{gcs_bucket}/models"  # the registry on the storage emulator
    for root in (local_root, model_root):
        first, second = make_version(root, "20261201T100000Z-0000000a"), make_version(root, "20261202T100000Z-0000000b")
        registry.publish(root, second, command="train", reason="fixture")
    with serving(FakeModelRegistryApi()) as api:
        common = dict(target="vertex", project="fmnist-prod", region="europe-west4")
        client = dict(api_endpoint=api.url, api_transport="rest", credentials=AnonymousCredentials())
        with pytest.raises(InputError, match="gs:// only"):  # Vertex cannot read a local folder
            register_model(**common, model_root=local_root, **client)
        created = register_model(**common, model_root=model_root, version=first, **client)
        versioned = register_model(**common, model_root=model_root, **client)  # LATEST's version

    calls = [(method, urllib.parse.urlsplit(path).path) for method, path, _ in api.requests]
    assert calls == [("GET", f"{MODEL_PARENT}/models/fmnist-classifier"), ("POST", f"{MODEL_PARENT}/models:upload")] * 2
    _, create, _, upload = [body for _, _, body in api.requests]
    assert create["modelId"] == "fmnist-classifier" and "parentModel" not in create
    assert upload["parentModel"] == "projects/fmnist-prod/locations/europe-west4/models/fmnist-classifier"
    model = upload["model"]
    assert model["artifactUri"] == f"{model_root}/{second}/saved_model"
    assert model["containerSpec"]["imageUri"] == "europe-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-21:latest"
    assert model["versionAliases"] == ["champion", "default"] and "versionAliases" not in create["model"]
    assert model["labels"]["fmnist_version_hash"] == "0000000b"
    assert model["labels"]["fmnist_model_version"] == second.lower()
    assert created["model_version_id"] == "1" and versioned["model_version_id"] == "2"
    assert versioned["vertex_model"] == "projects/fmnist-prod/locations/europe-west4/models/fmnist-classifier"


def test_register_dry_run_prints_the_upload_request_and_refuses_a_failed_version(tmp_path):
    from tests.test_registry import make_version

    model_root = f"{tmp_path}/models"
    good = make_version(model_root, "20261201T100000Z-0000000a")
    failed = make_version(model_root, "20261202T100000Z-0000000b", gate=False)
    args = ["model", "register", "--target", "vertex", "--model-root", model_root, "--project", "p", "--region", "us-central1"]

    result = run_cli(*args, good, "--dry-run")

    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["url"] == "https://us-central1-aiplatform.googleapis.com/v1/projects/p/locations/us-central1/models:upload"
    assert printed["request"]["model"]["artifactUri"] == f"{model_root}/{good}/saved_model"
    assert printed["request"]["model"]["containerSpec"]["imageUri"].startswith(
        "us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-"
    )
    refused = run_cli(*args, failed, "--dry-run")
    assert refused.returncode == 2 and "failed its quality gate" in refused.stderr
