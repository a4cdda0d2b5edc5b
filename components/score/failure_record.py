"""The failure record of a run that ended without publishing: what a pipeline's exit handler writes.

    fmnist record-failure --scores gs://b/scores --run-id scheduled-2026-11-28 --run-date 2026-11-28 \\
        --task score --exit-code 1 --error "error: OSError: [Errno 28] No space left on device" \\
        --pipeline-job projects/p/locations/europe-west4/pipelineJobs/fmnist-scoring-20261129030000

The record is a run summary of status `failed` (components/contracts/summary.py,
`RunSummary.failure_record`) at `runs/<run_id>.json`, so the `runs` view and `fmnist status`
show the night that failed instead of a date with no data. It is written under the run id's
lease (the one `fmnist score` holds while it writes), so it never races a live attempt's
summary swap, and it never touches a part file:
- no summary, or a failure record, at the run id: the record is written (the newer failure wins);
- a published summary at the run id (an earlier attempt's, or this attempt's own that failed
  its error-rate check after publishing): it is kept; the data it names is still what the
  date serves, and its status already says whether it passed;
- a live attempt holds the run id: nothing is written; that attempt's own summary (or its own
  failure record) will say how the run ended.
A later successful `fmnist score` of the run id replaces the record with its summary.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import re

from components.contracts import run_index
from components.contracts.parameters import flag_of, parameter
from components.contracts.schema import run_summary_uri
from components.contracts.summary import MAX_SUMMARY_BYTES, ContractError, RunFailure, RunSummary
from components.errors import InputError, RunConflict
from components.io import storage
from components.io.lease import hold_lease, lease_uri
from components.io.storage import StorageConflictError
from components.score.run import check_run_names, new_run_id

log = logging.getLogger(__name__)

UNKNOWN_TASK = "unknown"
# Where a failed pipeline task leaves its exit code and last error line for the exit handler (which
# can take no other task's output): one small JSON object per run id, never read as a table.
FAILURE_NOTES_FOLDER = "_failures"
# A failure record is a few hundred bytes written once: a short lease keeps a killed writer from
# blocking the next scoring attempt of the run id for long.
RECORD_LEASE_TTL_S = 15.0
# The KFP backends name the failed tasks in the pipeline's error message; a task of ours is the
# first of them when one is named.
_FAILED_TASKS_RE = re.compile(r"failed tasks? (?:are|is)[:\s]*\[?([A-Za-z0-9_.\- ,']+)")


@dataclasses.dataclass(frozen=True)
class RecordFailureParameters:
    """`fmnist record-failure`: record a run that ended without publishing (a pipeline's exit handler)."""

    scores: str | None = parameter(
        None,
        help="the scoring output root (the --output of `fmnist score`)",
        default_help="none: the failure is logged only (a pipeline without run summaries)",
        location=True,
    )
    run_id: str = parameter("", help="the run id; empty: --run-id-template with the run's date")
    run_date: str = parameter("", help="the run's date YYYY-MM-DD; empty: from --scheduled-time")
    scheduled_time: str = parameter("", help="the schedule's time of the run (RFC 3339), as for `fmnist run-context`")
    date_offset_days: int = parameter(0, help="days added to the scheduled time's date, as for `fmnist run-context`")
    time_zone: str = parameter("UTC", help="the zone of the scheduled time's date, as for `fmnist run-context`")
    run_id_template: str = parameter("scheduled-{date}", help="the run id, with {date}, as for `fmnist run-context`")
    task: str | None = parameter(None, help="the task that failed", default_help="named by --final-status, else unknown")
    exit_code: int | None = parameter(None, help="its exit code, when known")
    error: str | None = parameter(None, help="its last error line", default_help="the message of --final-status")
    pipeline_job: str | None = parameter(None, help="the pipeline job's name", default_help="named by --final-status")
    final_status: str = parameter(
        "", help="the pipeline's final status as KFP hands it to an exit handler (JSON); SUCCEEDED records nothing"
    )


@dataclasses.dataclass(frozen=True)
class FinalStatus:
    """What KFP's PipelineTaskFinalStatus tells an exit handler (Vertex AI and open-source KFP)."""

    state: str
    pipeline_job: str
    error: str
    failed_task: str


def parse_final_status(text: str) -> FinalStatus:
    """KFP's PipelineTaskFinalStatus JSON (`state`, `pipelineJobResourceName`, `error.message`)."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"{flag_of('final_status')}: not JSON ({error})") from error
    if not isinstance(document, dict) or not isinstance(document.get("state"), str):
        raise InputError(f"{flag_of('final_status')}: expected an object with a state, found {text[:200]!r}")
    error = document.get("error") or {}
    message = str(error.get("message") or "") if isinstance(error, dict) else ""
    named = _FAILED_TASKS_RE.search(message)
    return FinalStatus(
        state=document["state"],
        # KFP renamed the field; its own executor reads both spellings.
        pipeline_job=str(document.get("pipelineJobResourceName") or document.get("pipeline_job_resource_name") or ""),
        error=message,
        failed_task=named.group(1).split(",")[0].strip(" '") if named else "",
    )


def failure_note_uri(scores: str, run_id: str) -> str:
    """The note a failed task of run `run_id` leaves below the scoring output root."""
    return storage.join(scores, FAILURE_NOTES_FOLDER, f"{run_id}.json")


def write_failure_note(scores: str, run_id: str, *, task: str, exit_code: int, error: str) -> None:
    """What a failed task knows and its exit handler does not: its name, exit code and last error line."""
    note = {"task": task, "exit_code": exit_code, "error": error}
    storage.write_bytes(failure_note_uri(scores, run_id), json.dumps(note).encode())


def read_failure_note(scores: str, run_id: str) -> dict:
    """The note of run `run_id` ({} when no task left one, or it is not a note)."""
    uri = failure_note_uri(scores, run_id)
    if not storage.exists(uri):
        return {}
    try:
        note = json.loads(storage.read_bytes(uri))
    except (json.JSONDecodeError, UnicodeDecodeError):
        log.warning("%s: not a failure note, ignored", uri)
        return {}
    return note if isinstance(note, dict) else {}


def record_failure(*, scores: str, run_id: str, run_date: str, failure: RunFailure) -> dict:
    """Writes the failure record of run `run_id` unless a published summary or a live attempt holds it.

    Returns {"recorded": bool, "summary": uri, "reason": ...}.
    """
    check_run_names(run_id=run_id, run_date=run_date)
    uri = run_summary_uri(scores, run_id)
    record = RunSummary.failure_record(run_id=run_id, run_date=run_date, failure=failure)
    try:
        with hold_lease(lease_uri(scores, run_id), owner=new_run_id(), ttl_s=RECORD_LEASE_TTL_S) as lease:
            seen = storage.read_snapshot(uri, max_bytes=MAX_SUMMARY_BYTES)
            reason, in_place = _reason_to_keep(seen, run_id)
            if reason is not None:
                log.warning("%s: %s; the failure of %s is not recorded there", uri, reason, failure.task)
                return {"recorded": False, "summary": uri, "reason": reason}
            # The record claims no publication of its own: the next attempt numbers its parts
            # above those of every earlier attempt as it would without it.
            record = dataclasses.replace(record, publication=in_place.publication if in_place else 0)
            run_index.add_run(scores, run_date, run_id)
            lease.confirm()
            storage.replace_if_unchanged(seen, (record.to_json() + "\n").encode())  # fenced like score's swap
    except (RunConflict, StorageConflictError) as conflict:
        reason = f"another attempt holds or has just written run {run_id}; its own summary says how the run ended ({conflict})"
        log.warning("%s: %s", uri, reason)
        return {"recorded": False, "summary": uri, "reason": reason}
    log.error("run %s of %s failed in %s (exit %s): %s", run_id, run_date, failure.task, failure.exit_code, failure.error)
    return {"recorded": True, "summary": uri, "status": record.status, "failure": failure.to_dict()}


def _reason_to_keep(seen: storage.Snapshot, run_id: str) -> tuple[str | None, RunSummary | None]:
    """Why the file at the run's summary must stay (a published run's summary, or one this version
    cannot read: never replaced blindly), and the failure record in place, if that is what it is."""
    if seen.data is None:
        return None, None
    try:
        summary = RunSummary.from_json(seen.data)
    except ContractError as error:
        return f"run {run_id} has a summary this version cannot read ({error}): kept", None
    if summary.published:
        return f"run {run_id} has a published summary (status {summary.status}): kept, it names the date's data", summary
    return None, summary


def utc_now_iso() -> str:
    """Now, UTC, ISO 8601: a failure record's recorded_at."""
    return datetime.datetime.now(datetime.UTC).isoformat()
