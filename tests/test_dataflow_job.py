"""The scoring task and its Dataflow job: options from the pipeline, `gcp_resources`, cancel on SIGTERM.

Dataflow cannot run here. The options are checked on the DataflowRunner's own `--dry_run`
translation (the job request it would send); the wait/cancel logic runs against a stand-in
for a launched job's result (it records `cancel()`), stopped by a real SIGTERM; the KFP
adapter's hand-over of SIGTERM to the step runs with real processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from components.errors import Terminated
from components.score.dataflow_job import gcp_resources_document, run_and_wait
from tests.kfp_spec import REPO, container, executor_input, render

IMAGE = "europe-west4-docker.pkg.dev/p/fmnist/jobs@sha256:" + "a" * 64
WORKER = "europe-west4-docker.pkg.dev/p/fmnist/worker@sha256:" + "b" * 64


def score_task_beam_args(values: dict) -> list[str]:
    """The Beam options on the score task's command line of the compiled spec, resolved for `values`."""
    line = render(container("scoring", "score")["args"], values)
    return line[line.index("--runner") :]


def dry_run_request(args: list[str]):
    """The Dataflow job request Beam builds from `args` (its `--dry_run` stops before staging and
    sending; the worker environment is added from the same options at submission, done here)."""
    from apache_beam.runners.dataflow.internal import apiclient

    pipeline = beam.Pipeline(options=PipelineOptions([*args, "--dry_run", "True"]))
    _ = pipeline | "Create" >> beam.Create([1]) | "Double" >> beam.Map(lambda x: 2 * x)
    job = pipeline.run().job
    environment = apiclient.Environment(
        packages=[],
        options=job.options,
        proto_pipeline=job.proto_pipeline,
        environment_version=apiclient._FNAPI_ENVIRONMENT_MAJOR_VERSION,
        proto_pipeline_staged_url="gs://unused/pipeline.pb",
    )
    return job.proto, environment.proto


def score_values(**optional) -> dict:
    return {
        "image": IMAGE,
        "shards": "gs://d/incoming/*.tfrecord",
        "model_root": "gs://m/models",
        "model": "gs://m/models/20261128T030000Z-0123abcd",  # the version the run resolved LATEST to
        "output": "gs://t",
        "run_id": "r",
        "run_date": "2026-11-29",
        "runner": "DataflowRunner",
        "project": "fmnist-test",
        "region": "europe-west4",
        "temp_location": "gs://p/dataflow/temp",
        "worker_image": WORKER,
        "service_account": "fmnist-dataflow-worker@fmnist-test.iam.gserviceaccount.com",
        "public_ips_flag": "--no_use_public_ips",
        "gcp_resources": "/tmp/gcp_resources",
        **optional,
    }


def test_the_pipelines_dataflow_parameters_reach_the_dataflow_job_request(gcs_bucket):
    values = score_values(
        network="fmnist-vpc",
        subnetwork="regions/europe-west4/subnetworks/fmnist",
        max_num_workers="8",
        machine_type="n2-standard-4",
        labels=json.dumps({"team": "ml", "pipeline": "fmnist-scoring"}),
        job_name="fmnist-2026-11-29",
        temp_location=f"{gcs_bucket}/dataflow/temp",
    )
    job, environment = dry_run_request(score_task_beam_args(values))
    pool = environment.worker_pools[0]
    assert (pool.network, pool.subnetwork) == ("fmnist-vpc", "regions/europe-west4/subnetworks/fmnist")
    assert pool.ip_configuration.name == "WORKER_IP_PRIVATE"
    assert (pool.autoscaling_settings.max_num_workers, pool.machine_type) == (8, "n2-standard-4")
    assert dict(job.labels) == {"team": "ml", "pipeline": "fmnist-scoring"}
    assert job.name == "fmnist-2026-11-29"
    assert environment.service_account_email == values["service_account"]


def test_without_the_optional_parameters_dataflow_chooses_and_workers_stay_private(gcs_bucket):
    args = score_task_beam_args(score_values(temp_location=f"{gcs_bucket}/dataflow/temp"))
    assert not {"--network", "--subnetwork", "--max_num_workers", "--machine_type", "--labels", "--job_name"} & set(args)
    job, environment = dry_run_request(args)
    assert environment.worker_pools[0].ip_configuration.name == "WORKER_IP_PRIVATE"
    assert environment.worker_pools[0].network == "" and environment.worker_pools[0].autoscaling_settings.max_num_workers == 0
    assert job.name.startswith("beamapp-")  # Beam's generated name


class LaunchedJob:
    """Stands in for DataflowPipelineResult (no Dataflow here): waits until cancelled, records it."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()
        self.waiting = threading.Event()

    def wait_until_finish(self) -> str:
        self.waiting.set()
        while not self.cancelled.is_set():
            time.sleep(0.05)  # like Beam's wait: the main thread sleeps in steps, signals land here
        return "CANCELLED"

    def cancel(self) -> None:
        self.cancelled.set()


class Launched:
    def __init__(self, result) -> None:
        self.result = result

    def run(self):
        return self.result


def test_sigterm_during_the_wait_cancels_the_launched_job_and_still_stops(tmp_path):
    job = LaunchedJob()

    def raise_terminated(signum, frame):  # what the job runner installs for SIGTERM
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        threading.Thread(target=lambda: job.waiting.wait(10) and os.kill(os.getpid(), signal.SIGTERM)).start()
        with pytest.raises(Terminated):
            run_and_wait(Launched(job), PipelineOptions([]), gcp_resources=str(tmp_path / "out" / "gcp_resources"))
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert job.cancelled.is_set()
    # Written before the wait (the local stand-in is no Dataflow job: nothing to link).
    assert json.loads((tmp_path / "out" / "gcp_resources").read_text()) == {"resources": []}


def test_gcp_resources_names_the_dataflow_job_as_google_cloud_pipeline_components_do():
    from apache_beam.runners.dataflow.dataflow_runner import DataflowPipelineResult

    class Job:
        id = "2026-11-29_03_00_00-123"

    result = DataflowPipelineResult(Job(), runner=None, options=None)
    options = PipelineOptions(["--project", "fmnist-prod", "--region", "europe-west4"])
    assert gcp_resources_document(result, options) == {
        "resources": [
            {
                "resourceType": "DataflowJob",
                "resourceUri": "https://dataflow.googleapis.com/v1b3/projects/fmnist-prod/locations/europe-west4/"
                "jobs/2026-11-29_03_00_00-123",
            }
        ]
    }


def test_a_local_run_writes_an_empty_gcp_resources(tmp_path):
    pipeline = beam.Pipeline(options=PipelineOptions(["--runner", "FnApiRunner"]))
    _ = pipeline | beam.Create([1, 2])
    path = tmp_path / "gcp_resources"
    _, state = run_and_wait(pipeline, pipeline.options, gcp_resources=str(path))
    assert state == "DONE" and json.loads(path.read_text()) == {"resources": []}


STEP = """
import signal, sys, time
def stop(signum, frame):
    open(sys.argv[1], "w").write("cancelled the job")
    sys.exit(143)
signal.signal(signal.SIGTERM, stop)
open(sys.argv[1], "w").write("waiting")
while True:
    time.sleep(0.05)
"""


@pytest.mark.integration
@pytest.mark.parametrize("trial", range(3))
def test_the_kfp_adapter_passes_sigterm_on_to_the_step(tmp_path, trial):
    marker = tmp_path / "step"
    adapter = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jobs.kfp_outputs",
            "--executor-input",
            executor_input(str(tmp_path), {"predictions": "system.Dataset", "summary": "system.Metrics"}),
            "score",
            "--image",
            IMAGE,
            "--",
            sys.executable,
            "-c",
            STEP,
            str(marker),
        ],
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not (marker.exists() and marker.read_text() == "waiting"):
        assert adapter.poll() is None and time.monotonic() < deadline, adapter.stderr.read()
        time.sleep(0.05)
    adapter.send_signal(signal.SIGTERM)
    assert adapter.wait(timeout=30) == 143
    assert marker.read_text() == "cancelled the job"
