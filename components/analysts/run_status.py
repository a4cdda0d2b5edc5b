"""Did every night produce its tables? One line per run date, for a person or a monitoring probe.

    fmnist status --scores gs://b/scores                      # the 7 run dates up to yesterday (UTC)
    fmnist status --scores runs/local/scores --days 3 --as-of 2026-11-28 --json

It reads the run summaries as the views do (`read_run_summaries`), failure records included,
and gives each run date of the window one state:
- `ok`: its current run (the `ok` run that finished last, as `predictions_current` picks it) passed;
- `late`: ok, but that run finished more than --late-after-hours after the run date began (UTC);
- `failed`: runs were recorded, none ok: a failure record (status `failed`, nothing published)
  or a published run that failed its own check (`error_rate_exceeded`, `source_mismatch`);
- `broken`: no ok run, but a summary the readers skip (a part it names is missing or holds other
  counts, or the summary itself is damaged): the views leave that run out;
- `missing`: no summary at all: the night never ran, or died before its exit handler could say so.
The window is `stale` when the newest ok run's date is more than --stale-days before --as-of.
Every skipped summary is listed as a broken run with why, whatever its date.

Exit 0 when every date of the window has an ok run (late counts as ok), no run is broken and the
window is not stale; exit 3 otherwise (the probe's check failed), with one line naming them.
"""

from __future__ import annotations

import dataclasses
import datetime
import json

from components.analysts.tables import read_run_summaries, scores_root
from components.contracts.parameters import flag_of, parameter
from components.contracts.schema import parse_run_date
from components.contracts.summary import MAX_SUMMARY_BYTES, OK_STATUS, RunSummary
from components.errors import CheckFailed, InputError
from components.io import storage

OK, LATE, FAILED, BROKEN, MISSING = "ok", "late", "failed", "broken", "missing"


@dataclasses.dataclass(frozen=True)
class StatusParameters:
    """`fmnist status`: the state of each run date of a window, from the run summaries."""

    scores: str = scores_root(deprecated_aliases=())
    days: int = parameter(7, help="how many run dates the window holds, ending at --as-of")
    as_of: str | None = parameter(
        None, help="the window's last run date YYYY-MM-DD", default_help="yesterday (UTC), the daily schedule's date"
    )
    late_after_hours: float = parameter(
        30.0, help="an ok run that finished more than this many hours after its run date began (UTC) is late"
    )
    stale_days: int = parameter(
        2, help="the window is stale when its newest ok run's date is more than this many days before --as-of"
    )
    json: bool = parameter(False, help="print the status as one JSON object instead of lines")


@dataclasses.dataclass(frozen=True)
class DateStatus:
    """One run date: its state and its current run (the latest record when none is ok)."""

    run_date: str
    state: str
    run_id: str | None = None
    status: str | None = None
    read: int | None = None
    scored: int | None = None
    failed: int | None = None
    error_rate: float | None = None
    model_version: str | None = None
    finished_at: str | None = None
    failure: dict | None = None  # the failure record's task, exit code, last error line and pipeline job

    def line(self) -> str:
        """One line for a person: date, state, run, counts, error rate, model (or what failed)."""
        head = f"{self.run_date}  {self.state:<7}"
        if self.state == MISSING:
            return f"{head}  no run summary"
        if self.run_id is None:  # broken, with no other run
            return f"{head}  only summaries the readers skip (below)"
        run = f"{head}  {self.run_id}  status {self.status}"
        if self.failure is not None:
            exit_code = self.failure["exit_code"]
            return f"{run}  task {self.failure['task']} exit {'?' if exit_code is None else exit_code}: {self.failure['error']}"
        return (
            f"{run}  read {self.read} scored {self.scored} failed {self.failed}  "
            f"error rate {self.error_rate:.2%}  model {self.model_version}  finished {self.finished_at}"
        )


def run_status(
    *,
    scores: str,
    days: int = StatusParameters.days,
    as_of: str | None = StatusParameters.as_of,
    late_after_hours: float = StatusParameters.late_after_hours,
    stale_days: int = StatusParameters.stale_days,
    today: datetime.date | None = None,
) -> dict:
    """The state of every run date of the window; `ok` is True when each has an ok run and it is not stale."""
    if days < 1:
        raise InputError(f"{flag_of('days')} {days}: must be at least 1")
    if stale_days < 0 or late_after_hours <= 0:
        raise InputError(f"{flag_of('stale_days')} and {flag_of('late_after_hours')}: must not be negative")
    last = _as_of_date(as_of, today)
    window = [last - datetime.timedelta(days=offset) for offset in range(days - 1, -1, -1)]
    skipped: dict[str, str] = {}
    summaries = read_run_summaries(scores, skipped=skipped)
    broken = [{"summary": uri, "run_date": _claimed_run_date(uri), "why": why} for uri, why in sorted(skipped.items())]
    by_date: dict[str, list[RunSummary]] = {}
    for summary in summaries:
        by_date.setdefault(summary.run_date, []).append(summary)
    broken_dates = {entry["run_date"] for entry in broken}
    dates = [
        date_status(day.isoformat(), by_date.get(day.isoformat(), []), late_after_hours, broken=day.isoformat() in broken_dates)
        for day in window
    ]
    ok_dates = [parse_run_date(summary.run_date) for summary in summaries if summary.status == OK_STATUS]
    newest_ok = max((day for day in ok_dates if day <= last), default=None)
    stale = newest_ok is None or (last - newest_ok).days > stale_days
    return {
        "scores": scores,
        "as_of": last.isoformat(),
        "days": days,
        "ok": not stale and not broken and all(entry.state in (OK, LATE) for entry in dates),
        "stale": stale,
        "broken_runs": broken,
        "newest_ok_run_date": newest_ok.isoformat() if newest_ok else None,
        "dates": [dataclasses.asdict(entry) for entry in dates],
    }


def date_status(run_date: str, summaries: list[RunSummary], late_after_hours: float, *, broken: bool = False) -> DateStatus:
    """The state of one run date from its summaries (failure records included); `broken`: a
    summary of that date was skipped by the readers."""
    if not summaries:
        return DateStatus(run_date=run_date, state=BROKEN if broken else MISSING)
    ok_runs = [summary for summary in summaries if summary.status == OK_STATUS]
    current = _latest(ok_runs or summaries)
    finished = _finished_at(current)
    state = BROKEN if broken else FAILED
    if ok_runs:
        deadline = datetime.datetime.fromisoformat(run_date).replace(tzinfo=datetime.UTC) + datetime.timedelta(
            hours=late_after_hours
        )
        state = LATE if finished is not None and finished > deadline else OK
    return DateStatus(
        run_date=run_date,
        state=state,
        run_id=current.run_id,
        status=current.status,
        read=current.counts.read,
        scored=current.counts.scored,
        failed=current.counts.failed,
        error_rate=current.error_rate,
        model_version=current.model_version,
        finished_at=finished.isoformat() if finished else None,
        failure=current.failure.to_dict() if current.failure else None,
    )


def format_status(status: dict) -> str:
    """The status as lines: one per run date, then the verdict."""
    lines = [DateStatus(**entry).line() for entry in status["dates"]]
    lines += [f"broken run: {entry['summary']}: {entry['why']}" for entry in status["broken_runs"]]
    verdict = "ok" if status["ok"] else "NOT OK"
    stale = f"; stale: newest ok run {status['newest_ok_run_date'] or 'none'}" if status["stale"] else ""
    lines.append(f"{verdict}: {status['days']} run dates up to {status['as_of']} in {status['scores']}{stale}")
    return "\n".join(lines)


def problems(status: dict) -> str:
    """One line naming every date that is not ok, for the exit-3 message."""
    bad = [f"{entry['run_date']} {entry['state']}" for entry in status["dates"] if entry["state"] not in (OK, LATE)]
    bad += [f"broken run {entry['summary']}" for entry in status["broken_runs"]]
    if status["stale"]:
        bad.append(f"stale (newest ok run: {status['newest_ok_run_date'] or 'none'})")
    return ", ".join(bad)


def check_status(status: dict) -> None:
    """CheckFailed (exit 3) naming the dates without an ok run, when there are any."""
    if not status["ok"]:
        raise CheckFailed(f"{status['scores']}: {problems(status)}")


def _claimed_run_date(summary_uri: str) -> str | None:
    """The run date a skipped summary claims, when it still says one; None when it does not."""
    try:
        run_date = json.loads(storage.read_bytes(summary_uri, max_bytes=MAX_SUMMARY_BYTES)).get("run_date")
        return parse_run_date(run_date).isoformat()
    except (InputError, ValueError, TypeError, AttributeError):  # unreadable, not JSON, not a date
        return None


def _latest(summaries: list[RunSummary]) -> RunSummary:
    """The record that finished last (then the greatest run id): CURRENT_RUN_WINDOW's order."""
    epoch = datetime.datetime.min.replace(tzinfo=datetime.UTC)
    return max(summaries, key=lambda summary: (_finished_at(summary) or epoch, summary.run_id))


def _finished_at(summary: RunSummary) -> datetime.datetime | None:
    value = summary.timings.get("finished_at")
    try:
        moment = datetime.datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None
    return moment.replace(tzinfo=datetime.UTC) if moment is not None and moment.tzinfo is None else moment


def _as_of_date(as_of: str | None, today: datetime.date | None) -> datetime.date:
    if not as_of:
        return (today or datetime.datetime.now(datetime.UTC).date()) - datetime.timedelta(days=1)
    try:
        return parse_run_date(as_of)
    except ValueError as error:
        raise InputError(f"{flag_of('as_of')} {as_of!r}: not a date in YYYY-MM-DD form") from error
