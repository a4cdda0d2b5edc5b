"""A scoring run: check the configuration, run the Beam pipeline, publish its tables, write the summary.

    <output>/_staging-<run_id>/...                             parts + receipts while the run works
    <output>/predictions/run_date=<date>/run_id=<id>/part-*.parquet
    <output>/errors/run_date=<date>/run_id=<id>/part-*.parquet
    <output>/runs/<run_id>.json                                 the run summary, written last

The run summary marks a run as complete: analysts' views show only runs that have one, so
a reader never sees a half-published run. Publishing a run id first removes that run id's
summary and partitions (of any run date), so a rerun replaces the run, never duplicates it.
Counts come from the staged files (runner-agnostic); the invariant read = scored + failed
is checked per shard and in total before anything is published.
"""
from __future__ import annotations

import datetime
import json
import logging
import re
import secrets
import time
from collections.abc import Sequence

from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions, TestOptions

from components import storage
from components.constants import tool_version
from components.errors import CheckFailed, InputError
from components.parquet_parts import part_rows, value_counts
from components.registry import resolve
from components.schema import ERRORS_TABLE, PREDICTIONS_TABLE, TABLE_SCHEMA_VERSION, partition_uri, run_summary_uri
from components.scoring import (
    COUNTER_NAMESPACE,
    DEFAULT_BATCH_SIZE,
    ScoringTarget,
    build_pipeline,
    check_model_fits,
    load_model,
    part_name,
    receipt_uri,
    source_mismatch,
)
from components.shards import shard_expectations

log = logging.getLogger(__name__)

STAGING_PREFIX = "_staging-"
DEFAULT_MAX_ERROR_RATE = 0.01
LOCAL_RUNNER = "FnApiRunner"
_RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
TABLES = (PREDICTIONS_TABLE, ERRORS_TABLE)


def new_run_id(now: datetime.datetime | None = None) -> str:
    """A fresh run id: UTC time (sortable) plus randomness (unique)."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def staging_uri(output: str, run_id: str) -> str:
    """Where a run stages its parts before publishing them."""
    return storage.join(output, f"{STAGING_PREFIX}{run_id}")  # one folder: removed whole after publishing


def score(
    *,
    input: str,
    model: str,
    output: str,
    run_id: str | None = None,
    run_date: str | None = None,
    max_error_rate: float = DEFAULT_MAX_ERROR_RATE,
    batch_size: int = DEFAULT_BATCH_SIZE,
    beam_args: Sequence[str] = (),
) -> dict:
    """Scores every shard matching `input` with the model at `model` into tables below `output`.

    `model` is a model version folder or a model root (then its published LATEST).
    `beam_args` are standard Beam pipeline options (--runner, --direct_num_workers, ...).
    Returns the run summary. Configuration errors raise InputError before anything is
    written; a failed share above `max_error_rate` raises CheckFailed after publishing.
    """
    started = time.monotonic()
    started_at = _utc_now()
    run_id = run_id or new_run_id(started_at)
    run_date = run_date or started_at.date().isoformat()
    _check_arguments(run_id=run_id, run_date=run_date, max_error_rate=max_error_rate, batch_size=batch_size)
    shard_uris = storage.glob(input)
    if not shard_uris:
        raise InputError(f"{input}: no file matches the input glob")
    model_ref = resolve(model)
    check_model_fits(load_model(model_ref.keras_uri), model_ref.keras_uri)
    options = pipeline_options(beam_args)
    dry_run = bool(options.view_as(TestOptions).dry_run)
    staging = staging_uri(output, run_id)
    target = ScoringTarget(staging=staging, run_id=run_id, model_version=model_ref.version, batch_size=batch_size)
    pipeline = build_pipeline(shard_uris=shard_uris, keras_uri=model_ref.keras_uri, target=target, options=options,
                              expectations=shard_expectations(shard_uris))
    if dry_run:
        return translate_only(pipeline, options)

    storage.ensure_writable(output)
    storage.delete_prefix(staging)  # leftovers of an interrupted attempt at this run id
    result = pipeline.run()
    state = result.wait_until_finish()
    if state != "DONE":
        raise RuntimeError(f"scoring pipeline ended in state {state}")
    pipeline_seconds = time.monotonic() - started

    counts, parts, mismatches = staged_counts(staging, shard_uris)
    publish_started = time.monotonic()
    summary_uri = run_summary_uri(output, run_id)
    storage.delete(summary_uri)  # unpublish first: the old run disappears as a whole
    published = {table: publish_parts(output, table, run_date, run_id, parts[table]) for table in TABLES}
    error_rate = counts["failed"] / counts["read"] if counts["read"] else 0.0
    summary = {
        "schema_version": TABLE_SCHEMA_VERSION,
        "run_id": run_id,
        "run_date": run_date,
        "status": "source_mismatch" if mismatches else "ok" if error_rate <= max_error_rate else "error_rate_exceeded",
        "model_version": model_ref.version,
        "model_uri": model_ref.uri,
        "inputs": {"glob": input, "shards": shard_uris},
        "outputs": published,
        "counts": counts,
        "error_rate": error_rate,
        "max_error_rate": max_error_rate,
        "beam_counters": _committed_counters(result),
        "runner": options.view_as(StandardOptions).runner,
        "tool": {"name": "fmnist-jobs", "version": tool_version()},
        "timings": {
            "started_at": started_at.isoformat(),
            "finished_at": _utc_now().isoformat(),
            "pipeline_seconds": round(pipeline_seconds, 3),
            "publish_seconds": round(time.monotonic() - publish_started, 3),
            "total_seconds": round(time.monotonic() - started, 3),
        },
    }
    storage.write_bytes(summary_uri, json.dumps(summary, indent=2).encode(), if_absent=True)
    storage.delete_prefix(staging)
    log.info("run %s: read %d, scored %d, failed %d -> %s", run_id, counts["read"], counts["scored"],
             counts["failed"], summary_uri)
    if mismatches:
        raise CheckFailed(f"run {run_id}: shards differ from their manifest: {'; '.join(mismatches)}")
    if summary["status"] != "ok":
        raise CheckFailed(
            f"run {run_id}: {counts['failed']} of {counts['read']} records failed ({error_rate:.2%} > "
            f"--max-error-rate {max_error_rate:.2%}); see {published[ERRORS_TABLE]['uri']}"
        )
    return summary


def pipeline_options(beam_args: Sequence[str]) -> PipelineOptions:
    """The Beam options given; without --runner, the local engine scoring shards on all cores
    (unless the worker options are given too)."""
    options = PipelineOptions(list(beam_args))
    if options.view_as(StandardOptions).runner:
        return options
    # Beam 2.77's DirectRunner (the default, also when named) first tries to download the
    # Prism runner binary, which fails offline after about a second, then runs the pipeline
    # on the FnApiRunner. Name that local engine directly: same execution, no attempt.
    # It honours --direct_num_workers and --direct_running_mode like the DirectRunner.
    options.view_as(StandardOptions).runner = LOCAL_RUNNER
    if not any(arg.startswith(("--direct_num_workers", "--direct_running_mode")) for arg in beam_args):
        # One worker thread per core, each scoring its own shards (TensorFlow does the work,
        # outside the GIL); worker processes would each pay seconds of imports and a model load.
        direct = options.view_as(DirectOptions)
        direct.direct_num_workers, direct.direct_running_mode = 0, "multi_threading"  # 0: all cores
    return options


def translate_only(pipeline, options: PipelineOptions) -> dict:
    """Builds and translates the job graph for Dataflow without submitting or writing anything."""
    runner = (options.view_as(StandardOptions).runner or "").lower()
    if runner not in ("dataflow", "dataflowrunner"):
        raise InputError(f"--dry_run: only the DataflowRunner translates without running (runner {runner or 'DirectRunner'})")
    from apache_beam.portability.api import beam_runner_api_pb2

    result = pipeline.run()
    components = result.job.proto_pipeline.components
    steps = {t.unique_name: t.environment_id for t in components.transforms.values() if t.unique_name.count("/") == 1}
    images = set()
    for environment_id in steps.values():
        if environment_id:
            payload = beam_runner_api_pb2.DockerPayload.FromString(components.environments[environment_id].payload)
            images.add(payload.container_image)
    return {"dry_run": True, "job_name": result.job.proto.name, "steps": sorted(steps), "worker_images": sorted(images)}


def staged_counts(staging: str, shard_uris: Sequence[str]) -> tuple[dict, dict[str, list[str]], list[str]]:
    """Counts of a finished pipeline, from its receipts and the row counts of the staged parts.

    Every shard must have a receipt whose parts hold exactly the rows it claims, and for
    every shard read = scored + failed. Returns the totals (with the manifests' expected
    count, None when no shard has one), the staged parts per table and the shards that
    contradict their manifest.
    """
    counts = {"read": 0, "scored": 0, "failed": 0, "failed_by_type": {}, "expected": None}
    mismatches: list[str] = []
    parts: dict[str, list[str]] = {table: [] for table in TABLES}
    for index, shard_uri in enumerate(shard_uris):
        uri = receipt_uri(staging, part_name(index))
        if not storage.exists(uri):
            raise RuntimeError(f"{shard_uri}: the pipeline finished but left no receipt {uri}")
        receipt = json.loads(storage.read_bytes(uri))
        rows = {table: part_rows(receipt[table]) if receipt[table] else 0 for table in TABLES}
        by_type = value_counts(receipt[ERRORS_TABLE], "error_type") if receipt[ERRORS_TABLE] else {}
        if rows[PREDICTIONS_TABLE] != receipt["scored"] or rows[ERRORS_TABLE] != receipt["failed"]:
            raise RuntimeError(f"{shard_uri}: staged parts hold {rows}, the receipt claims {receipt}")
        if receipt["read"] != rows[PREDICTIONS_TABLE] + rows[ERRORS_TABLE]:
            raise AssertionError(f"{shard_uri}: read {receipt['read']} != scored + failed {rows}")
        counts["read"] += receipt["read"]
        if receipt["expected"] is not None:
            counts["expected"] = (counts["expected"] or 0) + receipt["expected"]
        if mismatch := source_mismatch(receipt):
            mismatches.append(mismatch)
        counts["scored"] += rows[PREDICTIONS_TABLE]
        counts["failed"] += rows[ERRORS_TABLE]
        for error_type, count in by_type.items():
            counts["failed_by_type"][error_type] = counts["failed_by_type"].get(error_type, 0) + count
        for table in TABLES:
            if receipt[table]:
                parts[table].append(receipt[table])
    assert counts["read"] == counts["scored"] + counts["failed"], counts
    return counts, parts, mismatches


def publish_parts(output: str, table: str, run_date: str, run_id: str, staged: Sequence[str]) -> dict:
    """Replaces this run id's partition of a table (any run date) with the staged parts."""
    old_files = storage.glob(storage.join(output, table, "run_date=*", f"run_id={run_id}", "*"))
    for old_partition in sorted({old_file.rsplit("/", 1)[0] for old_file in old_files}):
        storage.delete_prefix(old_partition)
    target = partition_uri(output, table, run_date, run_id)
    for uri in staged:
        storage.move(uri, storage.join(target, storage.basename(uri)))
    return {"uri": target, "parts": len(staged)}


def _committed_counters(result) -> dict[str, int] | None:
    """The pipeline's Beam counters, where the runner reports them (None otherwise)."""
    try:
        query = result.metrics().query()
    except NotImplementedError:  # e.g. a runner without metrics support
        return None
    return {
        counter.key.metric.name: counter.committed
        for counter in query["counters"]
        if counter.key.metric.namespace == COUNTER_NAMESPACE
    }


def _check_arguments(*, run_id: str, run_date: str, max_error_rate: float, batch_size: int) -> None:
    if not _RUN_ID_RE.match(run_id):
        raise InputError(f"--run-id {run_id!r}: use letters, digits, '.', '_' and '-' (at most 128)")
    try:
        if datetime.date.fromisoformat(run_date).isoformat() != run_date:
            raise ValueError(run_date)
    except ValueError as error:
        raise InputError(f"--run-date {run_date!r}: not a date in YYYY-MM-DD form") from error
    if not 0.0 <= max_error_rate <= 1.0:
        raise InputError(f"--max-error-rate {max_error_rate}: must be between 0 and 1")
    if batch_size < 1:
        raise InputError(f"--batch-size {batch_size}: must be at least 1")


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)
