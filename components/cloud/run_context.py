"""A scheduled run's logical date and the names made from it (the scoring pipeline's first task).

    fmnist run-context --scheduled-time 2026-11-29T03:00:00Z --date-offset-days -1 \\
        --shards-template 'gs://b/incoming/{date}/*.tfrecord' --run-id-template 'scheduled-{date}'
    -> {"date": "2026-11-28", "shards": "gs://b/incoming/2026-11-28/*.tfrecord", "run_id": "scheduled-2026-11-28"}
"""

from __future__ import annotations

import dataclasses
import datetime
import string
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from components.contracts.parameters import flag_of, parameter
from components.contracts.schema import is_run_id
from components.errors import InputError


@dataclasses.dataclass(frozen=True)
class RunContextParameters:
    """`fmnist run-context`: the partition a scheduled (or backfill) run writes, and its names."""

    scheduled_time: str = parameter(help="the schedule's time of this run (RFC 3339), as KFP resolves it")
    shards_template: str = parameter(help="the shards glob, with {date}")
    run_date: str = parameter("", help="explicit YYYY-MM-DD for a backfill; empty: from the scheduled time")
    date_offset_days: int = parameter(0, help="days added to the scheduled time's date (-1: yesterday's data)")
    time_zone: str = parameter("UTC", help="the zone in which the scheduled time's date is taken")
    run_id_template: str = parameter("scheduled-{date}", help="the run id, with {date}")


def run_context(
    *,
    scheduled_time: str,
    shards_template: str,
    run_date: str = RunContextParameters.run_date,
    date_offset_days: int = RunContextParameters.date_offset_days,
    time_zone: str = RunContextParameters.time_zone,
    run_id_template: str = RunContextParameters.run_id_template,
) -> dict[str, str]:
    """The logical date (run_date, else the scheduled time's date in time_zone, plus the offset) and its names."""
    date = logical_date(scheduled_time=scheduled_time, run_date=run_date, date_offset_days=date_offset_days, time_zone=time_zone)
    return {
        "date": date,
        "shards": render_template("shards_template", shards_template, date),
        "run_id": render_template("run_id_template", run_id_template, date),
    }


SAMPLE_DATE = "2026-01-31"  # checks a template before any run renders it


def render_template(name: str, template: str, date: str) -> str:
    """`template` with `{date}` filled in. Any other field, or `{date}` with a conversion, format,
    attribute or index (`{date.x}`, `{date[0]}`: str.format would evaluate them), is the template's error."""
    try:
        fields = [parsed[1:] for parsed in string.Formatter().parse(template) if parsed[1] is not None]
        if any(field != ("date", "", None) for field in fields):
            raise ValueError(f"fields {sorted({'{' + field + '}' for field, _, _ in fields})}")
        rendered = template.format(date=date)
    except ValueError as error:
        raise InputError(f"{flag_of(name)} {template!r}: may only use {{date}} ({error})") from error
    if name == "run_id_template" and not is_run_id(rendered):
        raise InputError(
            f"{flag_of(name)} {template!r}: gives run id {rendered!r}; a run id has "
            "letters, digits, '.', '_' and '-' (at most 128, starting with a letter or digit)"
        )
    return rendered


def check_templates(**templates: str) -> None:
    """Refuses a shards or run id template before a run is submitted with it."""
    for name, template in templates.items():
        render_template(name, template, SAMPLE_DATE)


def logical_date(*, scheduled_time: str, run_date: str, date_offset_days: int, time_zone: str) -> str:
    """YYYY-MM-DD of the partition a run writes: explicit for backfills, else from the schedule."""
    if run_date:
        try:
            return datetime.date.fromisoformat(run_date).isoformat()
        except ValueError as error:
            raise InputError(f"{flag_of('run_date')} {run_date!r}: not a YYYY-MM-DD date") from error
    try:
        moment = datetime.datetime.fromisoformat(scheduled_time.replace("Z", "+00:00"))
        zone = datetime.UTC if time_zone == "UTC" else ZoneInfo(time_zone)
    except ValueError as error:
        raise InputError(
            f"{flag_of('scheduled_time')} {scheduled_time!r}: not an RFC 3339 time; the KFP backend did "
            "not resolve the schedule time placeholder, so pass run_date"
        ) from error
    except ZoneInfoNotFoundError as error:
        raise InputError(f"{flag_of('time_zone')} {time_zone!r}: unknown time zone") from error
    if moment.tzinfo is None:
        raise InputError(f"{flag_of('scheduled_time')} {scheduled_time!r}: has no UTC offset")
    return (moment.astimezone(zone).date() + datetime.timedelta(days=date_offset_days)).isoformat()
