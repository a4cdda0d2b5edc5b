"""Record a run that ended without publishing (a pipeline's exit handler): a `failed` summary in runs/.

    fmnist record-failure --scores gs://b/scores --run-date 2026-11-28 --task score --exit-code 1 \\
        --error "error: OSError: [Errno 28] No space left on device"
    fmnist record-failure --scores gs://b/scores --scheduled-time 2026-11-29T03:00:00Z --date-offset-days -1 \\
        --final-status '{"state": "FAILED", "pipelineJobResourceName": "...", "error": {"message": "..."}}'

The run's date and id come as `fmnist run-context` makes them (--scheduled-time, --date-offset-days,
--time-zone, --run-id-template) unless --run-date and --run-id are given. A final status of
SUCCEEDED records nothing. Exit 0 whether or not a record was written (the JSON result says which).
"""

import argparse
import logging
import sys

from components.cloud.run_context import logical_date, render_template
from components.contracts.summary import RunFailure
from components.io import storage
from components.score.failure_record import (
    UNKNOWN_TASK,
    FinalStatus,
    RecordFailureParameters,
    failure_note_uri,
    parse_final_status,
    read_failure_note,
    record_failure,
    utc_now_iso,
)
from jobs.entrypoint import main_of, new_parser

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    return new_parser("fmnist record-failure", __doc__.splitlines()[0], RecordFailureParameters)


def record_run_failure(*, scores: str | None = None, **given) -> dict:
    """Resolves the run's date and id and what failed, then writes the failure record (without
    `scores`: logs the failure as one ERROR line, for a pipeline that has no run summaries)."""
    values = {
        name: given.get(name, getattr(RecordFailureParameters, name))
        for name in RecordFailureParameters.__dataclass_fields__
        if name != "scores"
    }
    status = parse_final_status(values["final_status"]) if values["final_status"] else None
    if status is not None and status.state == "SUCCEEDED":
        return {"recorded": False, "reason": "the pipeline succeeded"}
    if scores is None:
        failure = _failure(values, status)
        log.error("pipeline job %s failed in %s: %s", failure.pipeline_job, failure.task, failure.error)
        return {"recorded": False, "reason": "no --scores: logged only", "failure": failure.to_dict()}
    run_date = logical_date(
        scheduled_time=values["scheduled_time"],
        run_date=values["run_date"],
        date_offset_days=values["date_offset_days"],
        time_zone=values["time_zone"],
    )
    run_id = values["run_id"] or render_template("run_id_template", values["run_id_template"], run_date)
    # The failed task's own note (its exit code and last error line) fills what the flags leave open.
    note = read_failure_note(scores, run_id)
    for name in ("task", "exit_code", "error"):
        if values[name] is None and note.get(name) is not None:
            values[name] = note[name]
    result = record_failure(scores=scores, run_id=run_id, run_date=run_date, failure=_failure(values, status))
    if note:
        storage.delete(failure_note_uri(scores, run_id))
    return result


def _failure(values: dict, status: FinalStatus | None) -> RunFailure:
    """What failed: the flags, else what KFP's final status says."""
    return RunFailure(
        task=values["task"] or (status.failed_task if status else "") or UNKNOWN_TASK,
        exit_code=values["exit_code"],
        error=values["error"]
        or (status.error or f"the pipeline ended {status.state}" if status else "(no error line was given)"),
        pipeline_job=values["pipeline_job"] or (status.pipeline_job if status else ""),
        recorded_at=utc_now_iso(),
    )


main = main_of(build_parser, record_run_failure)

if __name__ == "__main__":
    sys.exit(main())
