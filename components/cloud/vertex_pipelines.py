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
    """Creates a PipelineJob (one run) or a PipelineJobSchedule replacing the one of the same name."""
    from google.cloud import aiplatform

    if dry_run:
        from google.auth.credentials import AnonymousCredentials

        credentials = AnonymousCredentials()  # nothing is sent
    aiplatform.init(
        project=project, location=region, credentials=credentials, api_endpoint=api_endpoint, api_transport=api_transport
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
    replaced = []
    if not dry_run:  # the schedule file is the truth: the schedule of the same name is replaced
        same_name = aiplatform.PipelineJobSchedule.list(filter=f'display_name="{schedule.name}"')
        for old in same_name:
            replaced.append(old.resource_name)
            old.delete()
    recurring = aiplatform.PipelineJobSchedule(pipeline_job=job, display_name=schedule.name)
    if dry_run:
        recurring.api_client = recorder
    with _quiet() if dry_run else contextlib.nullcontext():  # the SDK would log "created"
        recurring.create(
            cron=cron,
            start_time=schedule.start_time,
            max_concurrent_run_count=schedule.max_concurrency,
            service_account=service_account,
            network=network,
        )
    # Vertex sets catch-up only when a paused schedule is resumed; a new one starts from now.
    if dry_run:
        return {"dry_run": True, "replaces_schedules_named": schedule.name, "requests": recorder.requests}
    return {"schedule": recurring.resource_name, "replaced": replaced, "cron": cron, "spec": spec, "parameters": parameters}


@contextlib.contextmanager
def _quiet():
    logging.disable(logging.INFO)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)
