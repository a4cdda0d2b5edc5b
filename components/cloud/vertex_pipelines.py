"""Vertex AI Pipelines as a submit target: a PipelineJob for one run, a PipelineJobSchedule for a schedule.

Requests go through google-cloud-aiplatform's own request code. A dry run builds the same
requests and prints them instead of sending them: nothing is called, no credentials are needed.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
from typing import Any

from components.errors import InputError


def vertex_cron(cron: str, time_zone: str) -> str:
    """A schedule's KFP cron (`second minute hour day month weekday`) as Vertex AI's
    `TZ=<zone> minute hour day month weekday` (Vertex schedules run on whole minutes)."""
    second, *fields = cron.split()
    if second != "0":
        raise InputError(f"cron {cron!r}: Vertex AI schedules start on whole minutes (seconds must be 0)")
    fields = ["*" if field == "?" else field for field in fields]  # robfig's "no value" is unix cron's "*"
    return f"TZ={time_zone} {' '.join(fields)}"


class _Recorder:
    """Stands in for the aiplatform API client in a dry run: keeps each request, answers with it."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.requests: list[dict] = []

    def _keep(self, method: str, path: str, resource, name: str) -> Any:
        from google.protobuf import json_format

        # Serialized as the client's REST transport serializes a request body.
        body = json_format.MessageToDict(type(resource).pb(resource), use_integers_for_enums=True)
        self.requests.append({"method": method, "url": f"{self.endpoint}/v1/{path}", "body": body})
        resource.name = name  # the SDK logs the created resource's name
        return resource

    def create_pipeline_job(self, *, parent: str, pipeline_job, pipeline_job_id: str, timeout=None):
        return self._keep(
            "POST",
            f"{parent}/pipelineJobs?pipelineJobId={pipeline_job_id}",
            pipeline_job,
            f"{parent}/pipelineJobs/{pipeline_job_id}",
        )

    def create_schedule(self, *, parent: str, schedule, timeout=None):
        return self._keep("POST", f"{parent}/schedules", schedule, f"{parent}/schedules/dry-run")

    def resume_schedule(self, *, name: str, catch_up: bool):
        self.requests.append({"method": "POST", "url": f"{self.endpoint}/v1/{name}:resume", "body": {"catchUp": catch_up}})


def submit_to_vertex(
    *,
    name: str,
    spec: str,
    parameters: dict[str, Any],
    project: str,
    region: str,
    service_account: str | None,
    pipeline_root: str | None = None,
    network: str | None = None,
    labels: dict[str, str] | None = None,
    schedule=None,  # components.cloud.schedules.Schedule: a recurring run instead of one run
    dry_run: bool = False,
    api_endpoint: str | None = None,
    api_transport: str | None = None,
    credentials=None,
) -> dict:
    """Creates a PipelineJob (one run) or a PipelineJobSchedule replacing those of the same name."""
    aiplatform = _client(
        project, region, dry_run=dry_run, api_endpoint=api_endpoint, api_transport=api_transport, credentials=credentials
    )
    now = datetime.datetime.now(datetime.UTC)
    job = aiplatform.PipelineJob(
        display_name=name,
        template_path=spec,
        job_id=f"{name}-{now:%Y%m%d%H%M%S}",
        pipeline_root=pipeline_root,  # None: the spec's defaultPipelineRoot
        parameter_values=parameters,
        labels=labels or None,
        enable_caching=None,  # each task's own setting in the spec
    )
    recorder = _Recorder(api_endpoint or f"https://{region}-aiplatform.googleapis.com")
    if schedule is None:
        if dry_run:
            # What submit() sends, without its side trip (creating the pipeline root's bucket).
            if service_account:
                job._gca_resource.service_account = service_account
            if network:
                job._gca_resource.network = network
            recorder.create_pipeline_job(parent=job._parent, pipeline_job=job._gca_resource, pipeline_job_id=job.job_id)
            return {"dry_run": True, "requests": recorder.requests}
        job.submit(service_account=service_account, network=network)
        return {"pipeline_job": job.resource_name, "parameters": parameters, "spec": spec}

    cron = vertex_cron(schedule.cron, schedule.time_zone)
    # The schedule file is the truth: the schedules of its name are replaced, after the new one
    # exists, so that a refused create leaves the pipeline scheduled as before.
    same_name = [] if dry_run else aiplatform.PipelineJobSchedule.list(filter=f'display_name="{schedule.name}"')
    recurring = aiplatform.PipelineJobSchedule(pipeline_job=job, display_name=schedule.name)
    if dry_run:
        recurring.api_client = recorder
    with _quiet() if dry_run else contextlib.nullcontext():  # the SDK would log "created"
        recurring.create(
            cron=cron,
            start_time=schedule.start_time,
            max_concurrent_run_count=schedule.max_concurrency,
            # Vertex's catchUp is output only: missed runs are caught up when a paused schedule is
            # resumed (`fmnist pipeline resume --catch-up`). What the file's catchup asks of a new
            # schedule is that a run due while another still runs waits instead of being skipped.
            allow_queueing=schedule.catchup,
            service_account=service_account,
            network=network,
        )
    if dry_run:
        return {"dry_run": True, "replaces_schedules_named": schedule.name, "requests": recorder.requests}
    replaced = []
    for old in same_name:
        replaced.append(old.resource_name)
        old.delete()
    return {"schedule": recurring.resource_name, "replaced": replaced, "cron": cron, "spec": spec, "parameters": parameters}


def resume_on_vertex(
    *,
    name: str,
    project: str,
    region: str,
    catch_up: bool,
    dry_run: bool = False,
    api_endpoint: str | None = None,
    api_transport: str | None = None,
    credentials=None,
) -> dict:
    """Resumes the paused schedules named `name`; `catch_up`: Vertex starts the runs missed while paused."""
    aiplatform = _client(
        project, region, dry_run=dry_run, api_endpoint=api_endpoint, api_transport=api_transport, credentials=credentials
    )
    if dry_run:
        recorder = _Recorder(api_endpoint or f"https://{region}-aiplatform.googleapis.com")
        parent = f"projects/{project}/locations/{region}"
        recorder.resume_schedule(name=f"{parent}/schedules/<each schedule named {name}>", catch_up=catch_up)
        return {"dry_run": True, "requests": recorder.requests}
    schedules = aiplatform.PipelineJobSchedule.list(filter=f'display_name="{name}"')
    if not schedules:
        raise InputError(f"schedule {name}: none of that name in {project}/{region} (submit it first)")
    for schedule in schedules:
        # PipelineJobSchedule.resume(catch_up=...) does not pass catch_up on: the API client does.
        schedule.api_client.resume_schedule(name=schedule.resource_name, catch_up=catch_up)
    return {"resumed": [schedule.resource_name for schedule in schedules], "catch_up": catch_up}


def wait_for_pipeline_jobs(resource_names: list[str]) -> None:
    """Blocks until each pipeline job has ended (whatever its state: a backfill's next wave may go)."""
    from google.cloud import aiplatform

    for resource_name in resource_names:
        job = aiplatform.PipelineJob.get(resource_name=resource_name)
        with contextlib.suppress(RuntimeError):  # wait() raises when the job failed: it has ended all the same
            job.wait()


def _client(project: str, region: str, *, dry_run: bool, api_endpoint, api_transport, credentials):
    """google.cloud.aiplatform set to the project and region (anonymous for a dry run: nothing is sent)."""
    from google.cloud import aiplatform

    if dry_run:
        from google.auth.credentials import AnonymousCredentials

        credentials = AnonymousCredentials()
    aiplatform.init(
        project=project, location=region, credentials=credentials, api_endpoint=api_endpoint, api_transport=api_transport
    )
    return aiplatform


@contextlib.contextmanager
def _quiet():
    logging.disable(logging.INFO)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)
