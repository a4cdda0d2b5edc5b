"""Pipeline runs and schedules as data: a schedule file names a compiled spec, when to run it and with what.

    # infra/schedules/scoring-daily.yaml
    name: fmnist-scoring-daily
    spec: ../kfp/scoring.yaml        # relative to this file
    cron: "0 0 3 * * *"              # KFP cron: second minute hour day-of-month month day-of-week
    time_zone: UTC                   # the zone cron is meant in (Vertex: TZ= prefix; KFP: converted to the
                                     # cluster's zone or refused); also the pipeline's logical-date zone
    catchup: true                    # after downtime, run every missed interval (each its own logical date)
    max_concurrency: 1
    experiment: fmnist
    parameters: {model_root: gs://..., ...}

Parameters are checked against the spec's inputs (known names, types, required ones present) and
`image`-like parameters must be pinned by digest, before anything reaches the KFP API.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import logging
import os
import re
import sys
from collections.abc import Callable
from typing import Any

import yaml

from components.cloud.deployment import PUBLIC_IPS_FLAGS, Deployment, load_deployment
from components.cloud.run_context import check_templates, render_template
from components.errors import InputError

log = logging.getLogger(__name__)

# Tasks and Dataflow workers must run the same code a run was submitted with: digests only.
PINNED_PARAMETERS = ("image", "worker_image")
CHOICES = {"public_ips_flag": PUBLIC_IPS_FLAGS}
_SCHEDULE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# The fields of a schedule file and the type each must have (YAML gives any type).
_FIELD_TYPES = {
    "name": str,
    "description": str,
    "spec": str,
    "cron": str,
    "time_zone": str,
    "catchup": bool,
    "max_concurrency": int,
    "start_time": str,
    "experiment": str,
    "parameters": dict,
}
_TYPE_NAMES = {str: "string", bool: "boolean (true/false)", int: "whole number", dict: "mapping of NAME: VALUE"}
_TYPES = {"STRUCT": dict, "STRING": str, "NUMBER_INTEGER": int, "NUMBER_DOUBLE": float, "BOOLEAN": bool}


@dataclasses.dataclass(frozen=True)
class Schedule:
    """One recurring run: which compiled spec, when, with which parameters, and what after downtime."""

    name: str
    spec: str  # path of the compiled pipeline YAML
    cron: str
    time_zone: str
    catchup: bool
    max_concurrency: int
    experiment: str
    parameters: dict[str, Any]
    description: str = ""
    start_time: str | None = None


def load_schedule(path: str) -> Schedule:
    """Reads and checks a schedule file (unknown fields, cron shape, time zone, spec present)."""
    try:
        with open(path) as file:
            document = yaml.safe_load(file)
    except (OSError, yaml.YAMLError) as error:
        raise InputError(f"{path}: cannot read the schedule ({error})") from error
    if not isinstance(document, dict):
        raise InputError(f"{path}: a schedule is a mapping of fields")
    unknown, missing = set(document) - set(_FIELD_TYPES), {"name", "spec", "cron", "parameters"} - set(document)
    if unknown or missing:
        raise InputError(f"{path}: unknown fields {sorted(unknown)}, missing fields {sorted(missing)}")
    if document["parameters"] is None:
        document["parameters"] = {}
    for field, value in document.items():
        kind = _FIELD_TYPES[field]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise InputError(f"{path}: {field} {value!r} is not a {_TYPE_NAMES[kind]}")
    if not _SCHEDULE_NAME.fullmatch(document["name"]):
        # The name is matched in list filters (display_name="..."): no quotes or spaces in it.
        raise InputError(f"{path}: name {document['name']!r}: letters, digits, '.', '_' and '-' (at most 128)")
    if len(document["cron"].split()) != 6:
        raise InputError(f"{path}: cron {document['cron']!r} needs 6 fields (KFP's cron starts with seconds)")
    schedule = Schedule(
        name=document["name"],
        spec=os.path.normpath(os.path.join(os.path.dirname(path), document["spec"])),
        cron=document["cron"],
        time_zone=document.get("time_zone", "UTC"),
        catchup=document.get("catchup", False),
        max_concurrency=document.get("max_concurrency", 1),
        experiment=document.get("experiment", "Default"),
        parameters=dict(document["parameters"]),
        description=document.get("description", ""),
        start_time=document.get("start_time"),
    )
    _check_time_zone(path, schedule.time_zone)
    if not os.path.isfile(schedule.spec):
        raise InputError(f"{path}: compiled spec {schedule.spec} not found (run `fmnist pipeline compile`)")
    return schedule


def _check_time_zone(path: str, time_zone: str) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if time_zone == "UTC":
        return
    try:
        ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise InputError(f"{path}: unknown time zone {time_zone!r}") from error


def spec_inputs(spec: str) -> dict[str, dict]:
    """The pipeline's input parameters (name -> {parameterType, isOptional, defaultValue})."""
    with open(spec) as file:
        document = yaml.safe_load(file)
    return document["root"]["inputDefinitions"]["parameters"]


def run_parameters(spec: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """Parameters checked against the spec and typed as it declares (`--param epochs=3` -> 3)."""
    inputs = spec_inputs(spec)
    unknown = sorted(set(parameters) - set(inputs))
    if unknown:
        raise InputError(f"{spec}: unknown parameters {unknown}; the pipeline takes {sorted(inputs)}")
    typed = {name: _typed(spec, name, value, _TYPES[inputs[name]["parameterType"]]) for name, value in parameters.items()}
    missing = sorted(
        name
        for name, definition in inputs.items()
        if name not in typed and not definition.get("isOptional") and "defaultValue" not in definition
    )
    if missing:
        raise InputError(f"{spec}: required parameters {missing} not given")
    for name, allowed in CHOICES.items():
        if name in typed and typed[name] not in allowed:
            raise InputError(f"parameter {name}={typed[name]}: one of {', '.join(allowed)}")
    for name in PINNED_PARAMETERS:
        if name in typed:
            require_pinned(f"parameter {name}", typed[name])
    return typed


def require_pinned(what: str, image: str) -> None:
    """KFP caches on the image reference: a tag can move, a digest cannot."""
    if "@sha256:" not in image:
        raise InputError(f"{what}={image}: not pinned by digest (REPOSITORY@sha256:...); KFP caches on this reference")


def _typed(spec: str, name: str, value: Any, kind: type) -> Any:
    if isinstance(value, str) and kind is not str:
        try:
            if kind is dict:
                value = json.loads(value)  # --param labels='{"team": "ml"}'
            else:
                value = {"true": True, "false": False}[value.lower()] if kind is bool else kind(value)
        except (KeyError, ValueError) as error:
            raise InputError(f"{spec}: parameter {name}={value!r} is not a {kind.__name__}") from error
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InputError(f"{spec}: parameter {name}={value!r} is not a {kind.__name__}")
    return value


def parse_assignments(assignments: list[str]) -> dict[str, str]:
    """`NAME=VALUE` command-line pairs as a dict."""
    pairs = {}
    for assignment in assignments:
        name, equals, value = assignment.partition("=")
        if not equals or not name:
            raise InputError(f"--param {assignment!r}: expected NAME=VALUE")
        pairs[name] = value
    return pairs


def submit(
    *,
    deployment: str | None = None,
    target: str = "kfp",
    host: str | None = None,
    schedule: str | None = None,
    spec: str | None = None,
    param: list[str] | None = None,
    once: bool = False,
    experiment: str | None = None,
    pipeline_root: str | None = None,
    cluster_time_zone: str = "UTC",
    project: str | None = None,
    region: str | None = None,
    service_account: str | None = None,
    network: str | None = None,
    label: list[str] | None = None,
    dry_run: bool = False,
    run_name: str | None = None,
) -> dict:
    """Creates a recurring run from a schedule file, or one run (`once`, or a bare `spec`), on KFP
    or Vertex AI Pipelines, in the project of `deployment` (terraform's outputs); `dry_run` returns
    the requests instead of sending them. `run_name` names one run (default: the schedule's name)."""
    if (schedule is None) == (spec is None):
        raise InputError("give either --schedule FILE (recurring run, or one run with --once) or --spec FILE (one run)")
    names = _deployment(deployment)
    overrides = parse_assignments(param or [])
    plan = load_schedule(schedule) if schedule else None
    spec_path = plan.spec if plan else spec
    if not os.path.isfile(spec_path):
        raise InputError(f"{spec_path}: compiled spec not found (run `fmnist pipeline compile`)")
    declared = spec_inputs(spec_path)
    given = {**(plan.parameters if plan else {}), **overrides}
    for name, value in given.items():  # a schedule or --param never points a run at another project
        names.check_names(f"parameter {name}", value)
        if name in ("project", "region"):
            names.check_same(f"parameter {name}", value, names.pipeline_parameters()[name])
    located = {name: value for name, value in names.pipeline_parameters().items() if name in declared}
    values = {**located, **given}
    if plan and "time_zone" in declared:
        values.setdefault("time_zone", plan.time_zone)
    parameters = run_parameters(spec_path, values)
    check_templates(**{name: parameters[name] for name in ("shards_template", "run_id_template") if name in parameters})
    pipeline_root = _pipeline_root(names, pipeline_root)
    name = run_name or (plan.name if plan else os.path.splitext(os.path.basename(spec_path))[0])
    recurring = plan if plan and not once else None
    if target == "vertex":
        from components.cloud.vertex_pipelines import submit_to_vertex

        names.check_same("--project", project, names.project)
        names.check_same("--region", region, names.region)
        names.check_names("--service-account", service_account)
        return submit_to_vertex(
            name=name,
            spec=spec_path,
            parameters=parameters,
            project=names.project,
            region=names.region,
            service_account=service_account or names.pipeline_runner,
            pipeline_root=pipeline_root,
            network=network,
            labels=parse_assignments(label or []),
            schedule=recurring,
            dry_run=dry_run,
        )
    _check_kfp_target(target, host, project=project, region=region, network=network, service_account=service_account, label=label)
    return _submit_to_kfp(
        host=host,
        plan=plan,
        name=name,
        spec=spec_path,
        parameters=parameters,
        recurring=recurring,
        experiment=experiment or (plan.experiment if plan else "Default"),
        pipeline_root=pipeline_root,
        cluster_time_zone=cluster_time_zone,
        dry_run=dry_run,
    )


# A backfill of more days than this is more likely a typo in a date than a plan.
MAX_BACKFILL_DAYS = 366


def backfill(
    *,
    schedule: str,
    from_date: str,
    to_date: str,
    param: list[str] | None = None,
    dry_run: bool = False,
    wait_for: Callable[[list[dict]], None] | None = None,
    **target: Any,
) -> dict:
    """One run of the schedule's pipeline per logical date from `from_date` to `to_date` (inclusive),
    each with run_date set, so it gets the schedule's run id of that date (a rerun of a date replaces
    it). At most the schedule's max_concurrency run at a time: the runs go in waves of that size,
    each wave waited for (`wait_for`, by target) before the next is submitted; a dry run returns
    every request at once. `target`: submit()'s deployment, target, host and Vertex flags."""
    plan = load_schedule(schedule)
    dates = backfill_dates(from_date, to_date)
    overrides = parse_assignments(param or [])
    if "run_date" in overrides:
        raise InputError("--param run_date: a backfill sets each run's date from --from and --to")
    template = str(overrides.get("run_id_template", plan.parameters.get("run_id_template", "")))
    wave_size = max(plan.max_concurrency, 1)
    submitted = []
    for first in range(0, len(dates), wave_size):
        wave = []
        for date in dates[first : first + wave_size]:
            result = submit(
                schedule=schedule,
                once=True,
                param=[*(param or []), f"run_date={date}"],
                dry_run=dry_run,
                run_name=f"{plan.name}-{date}",
                **target,
            )
            run_id = render_template("run_id_template", template, date) if template else None
            entry = {"run_date": date, "run_id": run_id, "wave": first // wave_size + 1, "submitted": result}
            log.info("%s %s (run id %s)", "would submit" if dry_run else "submitted", date, run_id)
            wave.append(entry)
        submitted += wave
        if not dry_run and first + wave_size < len(dates):
            (wait_for or _wait_for_target(target))(wave)
    return {"schedule": plan.name, "dry_run": dry_run, "max_concurrency": wave_size, "runs": submitted}


def backfill_dates(from_date: str, to_date: str) -> list[str]:
    """Every date from `from_date` to `to_date`, inclusive, as YYYY-MM-DD."""
    try:
        first, last = datetime.date.fromisoformat(from_date), datetime.date.fromisoformat(to_date)
    except ValueError as error:
        raise InputError(f"--from {from_date} --to {to_date}: dates in YYYY-MM-DD form ({error})") from error
    if last < first:
        raise InputError(f"--to {to_date} is before --from {from_date}")
    days = (last - first).days + 1
    if days > MAX_BACKFILL_DAYS:
        raise InputError(f"--from {from_date} --to {to_date}: {days} days, more than {MAX_BACKFILL_DAYS} in one backfill")
    return [(first + datetime.timedelta(days=offset)).isoformat() for offset in range(days)]


def _wait_for_target(target: dict) -> Callable[[list[dict]], None]:
    """How to wait for a wave of runs to end on the backfill's target."""
    if target.get("target") == "vertex":
        from components.cloud.vertex_pipelines import wait_for_pipeline_jobs

        return lambda wave: wait_for_pipeline_jobs([entry["submitted"]["pipeline_job"] for entry in wave])

    def wait_for_kfp_runs(wave: list[dict]) -> None:
        import kfp

        with contextlib.redirect_stdout(sys.stderr):  # kfp prints links on stdout
            client = kfp.Client(host=target.get("host"))
            for entry in wave:
                client.wait_for_run_completion(entry["submitted"]["run_id"], timeout=24 * 3600)

    return wait_for_kfp_runs


def resume(
    *,
    deployment: str | None = None,
    schedule: str,
    target: str = "kfp",
    host: str | None = None,
    catch_up: bool = False,
    experiment: str | None = None,
    dry_run: bool = False,
) -> dict:
    """Resumes a paused schedule. Vertex AI catches up the runs missed while paused only when asked
    (`catch_up`); KFP does as the recurring run's own catchup says, which the schedule file set."""
    names = _deployment(deployment)
    plan = load_schedule(schedule)
    if target == "vertex":
        from components.cloud.vertex_pipelines import resume_on_vertex

        return resume_on_vertex(name=plan.name, project=names.project, region=names.region, catch_up=catch_up, dry_run=dry_run)
    _check_kfp_target(target, host)
    if catch_up and not plan.catchup:
        raise InputError(f"--catch-up: {schedule} says catchup: false, which KFP applies on resume; change it and submit again")
    experiment = experiment or plan.experiment
    if dry_run:
        return {"dry_run": True, "host": host, "experiment": experiment, "call": "enable_recurring_run", "job_name": plan.name}

    import kfp

    with contextlib.redirect_stdout(sys.stderr):  # kfp prints links on stdout
        client = kfp.Client(host=host)
        experiment_id = client.get_experiment(experiment_name=experiment).experiment_id
        same_name = json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": plan.name}]})
        existing = client.list_recurring_runs(experiment_id=experiment_id, filter=same_name).recurring_runs or []
        if not existing:
            raise InputError(f"schedule {plan.name}: no recurring run of that name in experiment {experiment}")
        for recurring in existing:
            client.enable_recurring_run(recurring.recurring_run_id)
    return {"resumed": [recurring.recurring_run_id for recurring in existing], "catch_up": plan.catchup}


def _deployment(path: str | None) -> Deployment:
    if path is None:
        raise InputError(
            "--deployment FILE needed: the project's names, as `terraform output -json` of infra/terraform writes them"
        )
    return load_deployment(path)


def _pipeline_root(names: Deployment, pipeline_root: str | None) -> str:
    """The run's artifact root: the deployment's, or another gs:// location in its buckets."""
    if pipeline_root is None:
        return names.pipeline_root
    if not pipeline_root.startswith("gs://"):
        raise InputError(f"--pipeline-root {pipeline_root}: a gs:// location")
    names.check_names("--pipeline-root", pipeline_root)
    return pipeline_root


def _check_kfp_target(target: str, host: str | None, **vertex_flags) -> None:
    if target != "kfp":
        raise InputError(f"--target {target}: kfp or vertex")
    given = [f"--{flag.replace('_', '-')}" for flag, value in vertex_flags.items() if value]
    if given:
        raise InputError(f"{', '.join(given)}: only for --target vertex (KFP runs as its pods' account)")
    if not host:
        raise InputError("--target kfp needs --host (the KFP API endpoint)")


def _submit_to_kfp(
    *,
    host: str,
    plan: Schedule | None,
    name: str,
    spec: str,
    parameters: dict,
    recurring,
    experiment: str,
    pipeline_root: str | None,
    cluster_time_zone: str,
    dry_run: bool,
) -> dict:
    """A KFP run or recurring run (replacing the one of the same name); `dry_run`: the call, not made."""
    if recurring:
        cron = kfp_cron(recurring.cron, recurring.time_zone, cluster_time_zone)
        request = {
            "job_name": plan.name,
            "description": plan.description,
            "cron_expression": cron,
            "start_time": plan.start_time,
            "max_concurrency": plan.max_concurrency,
            "no_catchup": not plan.catchup,
            "params": parameters,
            "pipeline_package_path": plan.spec,
            "pipeline_root": pipeline_root,
        }
    else:
        run_name = f"{name} {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M:%S}"
        request = {"job_name": run_name, "pipeline_package_path": spec, "params": parameters, "pipeline_root": pipeline_root}
    if dry_run:
        call = "create_recurring_run" if recurring else "run_pipeline"
        return {"dry_run": True, "host": host, "experiment": experiment, "call": call, "arguments": request}

    import kfp

    # kfp prints links on stdout; this step's stdout carries only its JSON result.
    with contextlib.redirect_stdout(sys.stderr):
        client = kfp.Client(host=host)
        experiment_id = client.create_experiment(name=experiment).experiment_id
        if recurring:
            return _replace_recurring_run(client, plan, experiment_id, request)
        run = client.run_pipeline(experiment_id=experiment_id, **request)
    return {"run_id": run.run_id, "experiment_id": experiment_id, "spec": spec, "parameters": parameters}


def kfp_cron(cron: str, time_zone: str, cluster_time_zone: str) -> str:
    """The schedule's cron as KFP's scheduler must read it: KFP evaluates cron in one zone for the
    whole cluster (its install's cronScheduleTimezone). A fixed offset between the two zones is
    converted; daylight saving time in either cannot be expressed: refused in one line."""
    if time_zone == cluster_time_zone:
        return cron
    second, minute, hour, day, month, weekday = cron.split()
    offsets = {zone: _fixed_offset_minutes(zone) for zone in (time_zone, cluster_time_zone)}
    every_day = day in ("*", "?") and month in ("*", "?") and weekday in ("*", "?")
    if None in offsets.values() or not (minute.isdigit() and hour.isdigit()):
        raise InputError(
            f"time_zone {time_zone}: KFP runs cron {cron!r} in the cluster's zone {cluster_time_zone}, where it cannot "
            f"be expressed (daylight saving time or a range of hours); set the install's cronScheduleTimezone to "
            f"{time_zone} and pass --cluster-time-zone {time_zone}, or submit with --target vertex"
        )
    shifted = int(hour) * 60 + int(minute) + offsets[cluster_time_zone] - offsets[time_zone]
    days, shifted = divmod(shifted, 24 * 60)
    if days and not every_day:
        raise InputError(
            f"time_zone {time_zone}: cron {cron!r} falls on another day in {cluster_time_zone}, "
            f"which KFP's cron cannot express for day/month/weekday fields; use --target vertex"
        )
    return f"{second} {shifted % 60} {shifted // 60} {day} {month} {weekday}"


def _fixed_offset_minutes(zone: str) -> int | None:
    """The zone's UTC offset in minutes when it is the same all year (no daylight saving time), else None."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        tz = datetime.UTC if zone == "UTC" else ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise InputError(f"time zone {zone!r}: unknown (an IANA name such as Europe/Amsterdam)") from error
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    offsets = {(start + datetime.timedelta(days=day)).astimezone(tz).utcoffset() for day in range(0, 366, 7)}
    return int(offsets.pop().total_seconds() // 60) if len(offsets) == 1 else None


def _replace_recurring_run(client, plan: Schedule, experiment_id: str, request: dict) -> dict:
    """The schedule file is the truth: an existing recurring run of the same name is replaced. The new
    one is created first, so a refused create leaves the old one scheduled (KFP allows two of a name)."""
    same_name = json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": plan.name}]})
    existing = client.list_recurring_runs(experiment_id=experiment_id, filter=same_name).recurring_runs or []
    created = client.create_recurring_run(experiment_id=experiment_id, **request)
    for old in existing:
        client.delete_recurring_run(old.recurring_run_id)
    return {
        "recurring_run_id": created.recurring_run_id,
        "replaced": [old.recurring_run_id for old in existing],
        "experiment_id": experiment_id,
        "cron": request["cron_expression"],
        "time_zone": plan.time_zone,
        "catchup": plan.catchup,
        "spec": plan.spec,
        "parameters": request["params"],
    }
