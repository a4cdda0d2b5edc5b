"""Permissions proven, not assumed: the pipelines' tasks run with exactly the bucket rights iam.tf grants.

The compiled specs' task command lines (resolved as the container smoke test resolves them)
run as real processes against the GCS emulator, through tests/iam_proxy.py, which answers 403
to every request the task's service account could not make on Cloud Storage. Which account a
task runs as, and what that account holds on each bucket, is read from infra/terraform with
python-hcl2: the KFP pods' Workload Identity binding (the account Vertex runs are submitted
with is the same one), and the bucket grants. Role -> permission facts are Cloud Storage's
predefined roles (https://cloud.google.com/storage/docs/access-control/iam-roles).

The scoring task runs on the DirectRunner here (Dataflow cannot run on this machine), so the
workers' reads and writes come from the task itself and are held to the task's account.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import uuid

import hcl2
import pytest

from components.constants import DEFAULT_SOURCE
from tests.cli_runs import run_cli
from tests.iam_proxy import PermissionProxy
from tests.kfp_spec import REPO, RESOLVED_MODEL, TRAIN_ARTIFACTS, container, executor_input, render

TERRAFORM = os.path.join(REPO, "infra", "terraform")
IMAGE = "europe-west4-docker.pkg.dev/p/fmnist/jobs@sha256:" + "a" * 64
RUN_DATE = "2026-11-29"
_READ = {"storage.objects.get", "storage.objects.list"}
_OBJECTS = _READ | {"storage.objects.create", "storage.objects.delete", "storage.objects.update", "storage.objects.restore"}
ROLE_PERMISSIONS = {
    "roles/storage.objectViewer": _READ,
    "roles/storage.objectCreator": {"storage.objects.create"},
    "roles/storage.objectUser": _OBJECTS,
    "roles/storage.objectAdmin": _OBJECTS | {"storage.objects.getIamPolicy", "storage.objects.setIamPolicy"},
    "roles/storage.legacyBucketReader": {"storage.buckets.get", "storage.objects.list"},
    "roles/storage.admin": _OBJECTS
    | {
        "storage.buckets.get",
        "storage.buckets.update",
        "storage.buckets.delete",
        "storage.buckets.getIamPolicy",
        "storage.buckets.setIamPolicy",
    },
}


def unquote(value: str) -> str:
    return value.strip('"')


def load_terraform() -> dict[str, list]:
    blocks: dict[str, list] = {}
    for path in sorted(glob.glob(os.path.join(TERRAFORM, "*.tf"))):
        with open(path) as file:
            for kind, entries in hcl2.load(file).items():
                blocks.setdefault(kind, []).extend(entries)
    return blocks


def named(blocks: dict, kind: str) -> dict[str, dict]:
    return {
        unquote(name): body
        for entry in blocks["resource"]
        for typ, items in entry.items()
        if unquote(typ) == kind
        for name, body in items.items()
    }


def account_of(expression: str, local_values: dict) -> str:
    """`${local.runner}` or `${google_service_account.X.email|name}` -> "X" (a member of another kind as is)."""
    local = re.fullmatch(r"\$\{local\.(\w+)\}", expression)
    if local:
        expression = unquote(local_values[local.group(1)])
    account = re.search(r"google_service_account\.(\w+)\.(?:email|name)", expression)
    return account.group(1) if account else expression


def bucket_permissions(blocks: dict, project: str) -> dict[str, dict[str, set[str]]]:
    """Service account (or member) -> bucket name -> the storage permissions it holds there."""
    local_values = {key: value for entry in blocks["locals"] for key, value in entry.items()}
    bucket_names = {
        key: unquote(body["name"]).replace("${var.project_id}", project)
        for key, body in named(blocks, "google_storage_bucket").items()
    }
    held: dict[str, dict[str, set[str]]] = {}
    for bucket, roles in local_values["bucket_grants"].items():
        for role, members in roles.items():
            for member in members:
                account = account_of(member, local_values)
                held.setdefault(account, {}).setdefault(bucket_names[bucket], set()).update(ROLE_PERMISSIONS[unquote(role)])
    for bucket, roles in local_values.get("analyst_bucket_roles", {}).items():
        for role in roles:
            held.setdefault("analysts", {}).setdefault(bucket_names[bucket], set()).update(ROLE_PERMISSIONS[unquote(role)])
    return held


def task_account(blocks: dict) -> str:
    """The account KFP task pods act as (Workload Identity); Vertex runs are submitted with the same one."""
    binding = named(blocks, "google_service_account_iam_member")["kfp_workload_identity"]
    assert unquote(binding["role"]) == "roles/iam.workloadIdentityUser"
    return account_of(binding["service_account_id"], {})


def run_task(pipeline: str, task: str, values: dict, proxy: PermissionProxy) -> subprocess.CompletedProcess:
    """One task's command line from the compiled spec, as its own process, seeing GCS through `proxy`."""
    spec = container(pipeline, task)
    line = render(spec["command"], values) + render(spec["args"], values)
    # The image's `fmnist` console script, as this checkout's module (the venv's script may import another).
    line = [item for arg in line for item in ([sys.executable, "-m", "jobs.cli"] if arg == "fmnist" else [arg])]
    line[0] = sys.executable
    env = {**os.environ, "STORAGE_EMULATOR_HOST": f"http://{proxy.address}", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(["nice", "-n", "10", *line], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture
def cloud_project(gcs_emulator, monkeypatch):
    """A fresh project's four buckets on the emulator, named as terraform names them."""
    from components.io import storage

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://{gcs_emulator}")
    storage._gcs_client.cache_clear()
    project = f"p{uuid.uuid4().hex[:10]}"
    blocks = load_terraform()
    for body in named(blocks, "google_storage_bucket").values():
        storage._gcs_client().create_bucket(unquote(body["name"]).replace("${var.project_id}", project))
    yield project, blocks
    storage._gcs_client.cache_clear()


def test_the_permission_map_reads_iam_tf():
    blocks = load_terraform()
    held = bucket_permissions(blocks, "p")
    assert task_account(blocks) == "pipeline_runner"
    # Nobody may change a bucket or its policy (reading its metadata is all), and the worker
    # writes nothing but tables and scratch.
    assert {
        permission
        for buckets in held.values()
        for permissions in buckets.values()
        for permission in permissions
        if permission.startswith("storage.buckets.")
    } == {"storage.buckets.get"}
    assert {bucket for bucket, permissions in held["dataflow_worker"].items() if "storage.objects.create" in permissions} == {
        "p-tables",
        "p-pipelines",
    }
    # Analysts read the tables and nothing else.
    assert held["analysts"] == {"p-tables": _READ | {"storage.buckets.get"}}


def test_the_proxy_refuses_what_the_account_lacks(gcs_emulator, cloud_project, monkeypatch):
    from components.io import storage

    project, _ = cloud_project
    tables, models = f"gs://{project}-tables", f"gs://{project}-models"
    storage.write_bytes(f"{tables}/runs/a.json", b"{}")
    with PermissionProxy(gcs_emulator, {f"{project}-tables": set(_READ)}) as proxy:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://{proxy.address}")
        storage._gcs_client.cache_clear()
        assert storage.list_prefix(f"{tables}/runs") == [f"{tables}/runs/a.json"]
        assert storage.read_bytes(f"{tables}/runs/a.json") == b"{}"
        with pytest.raises(Exception, match="403"):
            storage.write_bytes(f"{tables}/runs/b.json", b"{}")
        with pytest.raises(Exception, match="403"):
            storage.read_bytes(f"{models}/models/LATEST")
    assert proxy.denied == [
        f"POST /upload/storage/v1/b/{project}-tables/o: needs storage.objects.create on {project}-tables",
        f"GET /download/storage/v1/b/{project}-models/o/models%2FLATEST: needs storage.objects.get on {project}-models",
    ]
    assert proxy.used == {(f"{project}-tables", "storage.objects.list"), (f"{project}-tables", "storage.objects.get")}


@pytest.mark.slow
def test_the_pipelines_tasks_need_no_permission_beyond_iam_tf(cloud_project, gcs_emulator, tmp_path):
    from components.io import storage

    project, blocks = cloud_project
    account = task_account(blocks)
    allowed = bucket_permissions(blocks, project)[account]
    data, models, tables = (f"gs://{project}-{name}" for name in ("data", "models", "tables"))
    # The upstream producers (not under test) put the raw data set and the day's shards in place.
    for path in glob.glob(os.path.join(DEFAULT_SOURCE, "*.gz")):
        storage.upload_file(path, f"{data}/raw/{os.path.basename(path)}")
    out = str(tmp_path)
    steps = [
        (
            "training",
            "prepare",
            {
                "image": IMAGE,
                "dataset": f"{out}/shards",
                "source": f"{data}/raw",
                "shards_per_split": "2",
                "$": executor_input(
                    f"{out}/prepare", {"dataset": "system.Dataset"}, ("manifest_digest",), uris={"dataset": f"{out}/shards"}
                ),
            },
        ),
        (
            "training",
            "train",
            {
                "image": IMAGE,
                "dataset": f"{out}/shards",
                "model_root": f"{models}/models",
                "epochs": "1",
                "min_accuracy": "0.5",
                "$": executor_input(f"{out}/train", TRAIN_ARTIFACTS),
            },
        ),
        (
            "scoring",
            "resolve-model",
            {"image": IMAGE, "model_root": f"{models}/models", "$": executor_input(f"{out}/resolve", {}, RESOLVED_MODEL)},
        ),
        (
            "scoring",
            "score",
            {
                "image": IMAGE,
                "shards": f"{data}/incoming/{RUN_DATE}/*.tfrecord",
                "output": tables,
                "run_id": f"scheduled-{RUN_DATE}",
                "run_date": RUN_DATE,
                "runner": "DirectRunner",
                "project": project,
                "region": "local",
                "temp_location": f"gs://{project}-pipelines/dataflow/temp",
                "worker_image": "unused",
                "service_account": "unused",
                "public_ips_flag": "--no_use_public_ips",
                "gcp_resources": f"{out}/score/gcp_resources",
                "$": executor_input(
                    f"{out}/score", {"predictions": "system.Dataset", "summary": "system.Metrics"}, ("gcp_resources",)
                ),
            },
        ),
    ]
    with PermissionProxy(gcs_emulator, allowed) as proxy:
        for pipeline, task, values in steps:
            if task == "train":
                values["manifest_digest"] = open(f"{out}/prepare/parameters/manifest_digest").read()
            if task == "score":  # the day's shards arrive in the data bucket
                values["model"] = open(f"{out}/resolve/parameters/model_uri").read()  # the importer's artifact URI
                for path in sorted(glob.glob(f"{out}/shards/test-*.tfrecord"))[:1]:
                    storage.upload_file(path, f"{data}/incoming/{RUN_DATE}/{os.path.basename(path)}")
                # The check can fail: with read-only rights on the tables (the grant this test
                # replaced) the task is refused at its first write and publishes nothing.
                with PermissionProxy(
                    gcs_emulator, {**allowed, f"{project}-tables": ROLE_PERMISSIONS["roles/storage.objectViewer"]}
                ) as read_only:
                    refused = run_task(pipeline, task, values, read_only)
                assert refused.returncode == 2 and "403" in refused.stderr
                assert read_only.denied and all(
                    f"storage.objects.create on {project}-tables" in denial for denial in read_only.denied
                )
                assert storage.list_prefix(tables) == []
            done = run_task(pipeline, task, values, proxy)
            assert proxy.denied == [], f"{task} as {account}: {proxy.denied}\n{done.stderr[-2000:]}"
            assert done.returncode == 0, f"{task}: exit {done.returncode}\n{done.stderr[-3000:]}"
    assert storage.exists(f"{tables}/runs/scheduled-{RUN_DATE}.json")
    # The check saw the writes it is about: models published, tables written and replaced.
    assert {
        (f"{project}-models", "storage.objects.create"),
        (f"{project}-tables", "storage.objects.create"),
        (f"{project}-tables", "storage.objects.delete"),
        (f"{project}-data", "storage.objects.get"),
    } <= proxy.used

    # An analyst reads the tables with the same map's grants (and could write nothing there).
    analysts = bucket_permissions(blocks, project)["analysts"]
    with PermissionProxy(gcs_emulator, analysts) as proxy:
        env = {**os.environ, "STORAGE_EMULATOR_HOST": f"http://{proxy.address}"}
        count = ["query", "SELECT count(*) AS n FROM predictions", "--predictions", tables, "--out", f"{out}/n.parquet"]
        query = run_cli(*count, env=env, timeout=300)
    assert proxy.denied == [] and query.returncode == 0, f"{proxy.denied}\n{query.stderr[-2000:]}"
    import pyarrow.parquet as pq

    summary = json.loads(storage.read_bytes(f"{tables}/runs/scheduled-{RUN_DATE}.json"))
    assert pq.read_table(f"{out}/n.parquet").column("n").to_pylist() == [summary["counts"]["scored"]] != [0]
    shutil.rmtree(out)
