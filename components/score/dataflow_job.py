"""Launch a Beam pipeline, say where its Dataflow job is, wait for it, and cancel it when the task is stopped.

Like Google's own Dataflow components (google-cloud-pipeline-components), the task writes a
`gcp_resources` document as soon as the job exists:

    {"resources": [{"resourceType": "DataflowJob",
                    "resourceUri": "https://dataflow.googleapis.com/v1b3/projects/P/locations/R/jobs/ID"}]}

Vertex AI Pipelines links the job from the run's page and cancels it with the run. On any
orchestrator, SIGTERM to the task (a cancelled run, a deleted pod) reaches the waiting main
thread as `Terminated` (the job runner's handler): the job is cancelled, then the task exits.
A runner that finishes inside `run()` (the local engines) launches no cloud job: the document
then lists no resources.
"""

from __future__ import annotations

import json
import logging

from apache_beam.options.pipeline_options import GoogleCloudOptions

from components.errors import Terminated
from components.io import storage

log = logging.getLogger(__name__)

DATAFLOW_API = "https://dataflow.googleapis.com/v1b3"


def gcp_resources_document(result, options) -> dict:
    """The `gcp_resources` of a launched pipeline: its Dataflow job, or nothing for a local runner."""
    from apache_beam.runners.dataflow.dataflow_runner import DataflowPipelineResult

    if not isinstance(result, DataflowPipelineResult):
        return {"resources": []}
    cloud = options.view_as(GoogleCloudOptions)
    uri = f"{DATAFLOW_API}/projects/{cloud.project}/locations/{cloud.region}/jobs/{result.job_id()}"
    return {"resources": [{"resourceType": "DataflowJob", "resourceUri": uri}]}


def run_and_wait(pipeline, options, *, gcp_resources: str | None = None):
    """Runs the pipeline and waits for it; returns (result, final state).

    `gcp_resources`: where to write the job's document (a KFP output parameter file), written
    before the wait. SIGTERM (Terminated) or Ctrl-C during the wait cancels the job first.
    """
    result = pipeline.run()
    if gcp_resources:
        storage.write_bytes(gcp_resources, json.dumps(gcp_resources_document(result, options)).encode())
    try:
        state = result.wait_until_finish()
    except (Terminated, KeyboardInterrupt):
        # The pipeline outlives this process unless told otherwise: a stopped task must not
        # leave workers scoring (and billing) for a run nobody waits for.
        log.warning("stopped while waiting: cancelling the pipeline's job")
        result.cancel()
        raise
    return result, state
