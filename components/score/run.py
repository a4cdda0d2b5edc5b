"""A scoring run: lease the run id, run the Beam pipeline, check and publish its tables, swap the summary.

    <output>/_leases/<run_id>.json                               one live attempt per run id
    <output>/_staging/<run_id>/<attempt>/...                      parts + receipts while the attempt works
    <output>/predictions/run_date=<date>/run_id=<id>/part-<attempt>-NNNNN.parquet
    <output>/errors/run_date=<date>/run_id=<id>/part-<attempt>-NNNNN.parquet
    <output>/runs/<run_id>.json                                   the run summary: one JSON line, names the parts

A run is what its summary says: readers read only the parts a summary names. Publishing is
ordered so that a reader sees the previous run or the new one, never a mix and never
nothing, whatever stops the attempt (kill -9, ENOSPC, a lost lease):
  1. the parts move from staging into the partitions under names of their own (the attempt id);
  2. the summary is replaced in one write (the swap), after confirming the lease is still ours;
  3. every file in the run id's partitions that the new summary does not name is removed
     (the previous run's parts, leftovers of dead attempts).
An attempt that dies before 2 leaves the previous run intact; the next attempt of the run
id takes over the expired lease and cleans up. Counts come from the staged files (runner-
agnostic); receipts are checked against the shards they claim and the parts they name.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import re
import secrets
import signal
import time
from collections.abc import Sequence

from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions, TestOptions

from components.constants import tool_version
from components.contracts.parameters import flag_of
from components.contracts.registry import resolve
from components.contracts.schema import ERRORS_TABLE, PREDICTIONS_TABLE, parse_run_date, partition_uri, run_summary_uri
from components.contracts.shards import shard_expectations
from components.contracts.summary import ContractError, RunCounts, RunInputs, RunParts, RunSummary, ShardReceipt, summed_counts
from components.errors import CheckFailed, InputError
from components.io import storage
from components.io.lease import DEFAULT_TTL_S, Lease, hold_lease, lease_uri
from components.io.parquet_parts import part_rows, value_counts
from components.score.dataflow_job import run_and_wait
from components.score.model_scorer import check_model_fits, load_model
from components.score.pipeline import COUNTER_NAMESPACE, build_pipeline
from components.score.shard_scoring import DEFAULT_BATCH_SIZE, ScoringTarget, part_name, receipt_uri, staged_part_uri
from components.score.unique_images import drop_repeated_images

log = logging.getLogger(__name__)

STAGING_FOLDER = "_staging"
DEFAULT_MAX_ERROR_RATE = 0.01
LOCAL_RUNNER = "FnApiRunner"
_RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
TABLES = (PREDICTIONS_TABLE, ERRORS_TABLE)
# Names a point of the publish sequence at which the process kills itself (tests only: they
# prove that a kill -9 between any two steps leaves a readable, complete run).
KILL_POINT_VARIABLE = "FMNIST_KILL_AT"


def new_run_id(now: datetime.datetime | None = None) -> str:
    """A fresh run id (also an attempt id): UTC time (sortable) plus randomness (unique)."""
    now = now or datetime.datetime.now(datetime.UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def staging_uri(output: str, run_id: str, attempt: str | None = None) -> str:
    """Where the attempts of a run stage their parts (one folder per attempt, removed whole)."""
    run_staging = storage.join(output, STAGING_FOLDER, run_id)
    return storage.join(run_staging, attempt) if attempt else run_staging


def score(
    *,
    input: str,
    model: str,
    output: str,
    run_id: str | None = None,
    run_date: str | None = None,
    max_error_rate: float = DEFAULT_MAX_ERROR_RATE,
    batch_size: int = DEFAULT_BATCH_SIZE,
    lease_ttl_s: float = DEFAULT_TTL_S,
    beam_args: Sequence[str] = (),
    gcp_resources: str | None = None,
) -> dict:
    """Scores every shard matching `input` with the model at `model` into tables below `output`.

    `model` is a model version folder or a model root (then its published LATEST).
    `beam_args` are standard Beam pipeline options (--runner, --direct_num_workers, ...).
    `gcp_resources`: file for the launched Dataflow job's `gcp_resources` (KFP output).
    Returns the run summary. Configuration errors raise InputError before anything is
    written; another live attempt at the run id raises RunConflict before anything is
    written; a failed share above `max_error_rate` raises CheckFailed after publishing.
    """
    started = time.monotonic()
    started_at = _utc_now()
    run_id = run_id or new_run_id(started_at)
    run_date = run_date or started_at.date().isoformat()
    _check_arguments(
        run_id=run_id, run_date=run_date, max_error_rate=max_error_rate, batch_size=batch_size, lease_ttl_s=lease_ttl_s
    )
    shard_uris = input_shards(input)
    model_ref = resolve(model, check_file=False)  # load_model checks the hash on the bytes it loads
    check_model_fits(load_model(model_ref.keras_uri, expected_sha256=model_ref.sha256), model_ref.keras_uri)
    options = pipeline_options(beam_args, shard_count=len(shard_uris))
    attempt = new_run_id(started_at)
    staging = staging_uri(output, run_id, attempt)
    target = ScoringTarget(
        staging=staging, run_id=run_id, run_date=run_date, model_version=model_ref.version, batch_size=batch_size
    )
    pipeline = build_pipeline(
        shard_uris=shard_uris,
        keras_uri=model_ref.keras_uri,
        target=target,
        options=options,
        expectations=shard_expectations(shard_uris),
        model_sha256=model_ref.sha256,
    )
    if options.view_as(TestOptions).dry_run:
        return translate_only(pipeline, options)

    storage.ensure_writable(output)
    with hold_lease(lease_uri(output, run_id), owner=attempt, ttl_s=lease_ttl_s) as lease:
        _kill_point("leased")
        for other in _dead_attempts(output, run_id, attempt):  # we hold the lease: nobody else writes there
            storage.delete_prefix(other)
        try:
            result, state = run_and_wait(pipeline, options, gcp_resources=gcp_resources)
            if state != "DONE":
                raise RuntimeError(f"scoring pipeline ended in state {state}")
            pipeline_seconds = time.monotonic() - started
            receipts = checked_receipts(staging, shard_uris)
            receipts = drop_repeated_images(
                receipts,
                errors_part_of={
                    r.shard_index: staged_part_uri(staging, ERRORS_TABLE, part_name(r.shard_index)) for r in receipts
                },
            )
            counts = run_counts(receipts)
            error_rate = counts.failed / counts.read if counts.read else 0.0
            mismatches = [mismatch for receipt in receipts if (mismatch := receipt.source_mismatch())]
            publish_started = time.monotonic()
            summary = RunSummary(
                run_id=run_id,
                run_date=run_date,
                status=("source_mismatch" if mismatches else "ok" if error_rate <= max_error_rate else "error_rate_exceeded"),
                model_version=model_ref.version,
                model_uri=storage.absolute_uri(model_ref.uri),
                inputs=RunInputs(glob=storage.absolute_uri(input), shards=[storage.absolute_uri(u) for u in shard_uris]),
                parts=RunParts(predictions=[], errors=[]),
                counts=counts,
                error_rate=error_rate,
                max_error_rate=max_error_rate,
                attempt=attempt,
                beam_counters=_committed_counters(result),
                runner=options.view_as(StandardOptions).runner,
                tool={"name": "fmnist-jobs", "version": tool_version()},
                timings={},
            )
            summary = publish(
                output,
                summary,
                receipts,
                lease=lease,
                started=started,
                started_at=started_at,
                pipeline_seconds=pipeline_seconds,
                publish_started=publish_started,
            )
        finally:
            storage.delete_prefix(staging)
    log.info(
        "run %s: read %d, scored %d, failed %d -> %s",
        run_id,
        counts.read,
        counts.scored,
        counts.failed,
        run_summary_uri(output, run_id),
    )
    if mismatches:  # rows published for inspection, but the run must not pass as good
        raise CheckFailed(f"run {run_id}: shards differ from their manifest: {'; '.join(mismatches)}")
    if summary.status != "ok":
        raise CheckFailed(
            f"run {run_id}: {counts.failed} of {counts.read} records failed ({error_rate:.2%} > "
            f"{flag_of('max_error_rate')} {max_error_rate:.2%}); see {partition_uri(output, ERRORS_TABLE, run_date, run_id)}"
        )
    return summary.to_dict()


def input_shards(pattern: str) -> list[str]:
    """The sorted shards of the input glob; the same file twice (a link and its target) is refused,
    since it would score every image twice under two names."""
    shard_uris = storage.glob(pattern)
    if not shard_uris:
        raise InputError(f"{pattern}: no file matches the input glob")
    seen: dict[str, str] = {}
    for uri in shard_uris:
        identity = uri if storage.is_remote(uri) else os.path.realpath(uri)
        if identity in seen:
            raise InputError(f"{pattern}: {uri} and {seen[identity]} are the same file; give each shard once")
        seen[identity] = uri
    return shard_uris


def publish(
    output: str,
    summary: RunSummary,
    receipts: Sequence[ShardReceipt],
    *,
    lease: Lease,
    started: float,
    started_at: datetime.datetime,
    pipeline_seconds: float,
    publish_started: float,
) -> RunSummary:
    """Publishes the checked parts, swaps the summary in one write, then removes what it no longer names."""
    parts: dict[str, list[str]] = {table: [] for table in TABLES}
    for receipt in receipts:
        for table in TABLES:
            staged = receipt.part(table)
            if staged:
                lease.check()  # a lease the heartbeat lost stops us before we touch the partitions again
                name = f"part-{summary.attempt}-{receipt.shard_index:05d}.parquet"
                published = storage.join(partition_uri(output, table, summary.run_date, summary.run_id), name)
                storage.move(staged, published)
                parts[table].append(storage.absolute_uri(published))
                _kill_point("part-published")
    _kill_point("parts-published")
    finished_at = _utc_now()
    summary = dataclasses.replace(
        summary,
        parts=RunParts(predictions=parts[PREDICTIONS_TABLE], errors=parts[ERRORS_TABLE]),
        timings={
            "started_at": started_at.isoformat(),
            "finished_at": finished_at.isoformat(),
            "pipeline_seconds": round(pipeline_seconds, 3),
            "publish_seconds": round(time.monotonic() - publish_started, 3),
            "total_seconds": round(time.monotonic() - started, 3),
        },
    )
    lease.confirm()  # renewed and still ours right before the swap
    storage.write_bytes(run_summary_uri(output, summary.run_id), (summary.to_json() + "\n").encode())  # the swap
    _kill_point("summary-written")
    remove_unnamed_parts(output, summary)
    _kill_point("cleaned")
    return summary


def remove_unnamed_parts(output: str, summary: RunSummary) -> None:
    """Removes every file of the run id's partitions (any run date) that the summary does not name.

    A part is known by its name in the run's own partition, as the readers find it (so an
    output root copied elsewhere keeps its parts)."""
    for table in TABLES:
        keep = {
            storage.join(partition_uri(output, table, summary.run_date, summary.run_id), storage.basename(part))
            for part in summary.parts.of(table)
        }
        for uri in storage.glob(storage.join(output, table, "run_date=*", f"run_id={summary.run_id}", "*")):
            if uri not in keep:
                storage.delete(uri)


def _dead_attempts(output: str, run_id: str, attempt: str) -> list[str]:
    """Staging folders of earlier attempts at the run id (their holders died or lost the lease)."""
    prefix = staging_uri(output, run_id)
    folders = {storage.join(prefix, uri[len(prefix) :].strip("/").split("/", 1)[0]) for uri in storage.list_prefix(prefix)}
    return sorted(folder for folder in folders if storage.basename(folder) != attempt)


def _kill_point(name: str) -> None:
    if os.environ.get(KILL_POINT_VARIABLE) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def pipeline_options(beam_args: Sequence[str], *, shard_count: int | None = None) -> PipelineOptions:
    """The Beam options given; without --runner, the local engine scoring shards on all cores
    (unless the worker options are given too), or in-process for a single shard."""
    options = PipelineOptions(list(beam_args))
    if options.view_as(StandardOptions).runner:
        return options
    # Beam 2.77's DirectRunner (the default, also when named) first tries to download the
    # Prism runner binary, which fails offline after about a second, then runs the pipeline
    # on the FnApiRunner. Name that local engine directly: same execution, no attempt.
    # It honours --direct_num_workers and --direct_running_mode like the DirectRunner.
    options.view_as(StandardOptions).runner = LOCAL_RUNNER
    if not any(arg.startswith(("--direct_num_workers", "--direct_running_mode")) for arg in beam_args):
        direct = options.view_as(DirectOptions)
        if shard_count == 1:
            # One shard is one worker's work: the in-process worker skips the local gRPC
            # server and harness threads that the threaded mode starts and stops (measured:
            # docs/benchmarks.md, the fixed cost of scoring).
            direct.direct_num_workers, direct.direct_running_mode = 1, "in_memory"
        else:
            # One worker thread per core, each scoring its own shards (TensorFlow does the work,
            # outside the GIL); worker processes would each pay seconds of imports and a model load.
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


def checked_receipts(staging: str, shard_uris: Sequence[str]) -> list[ShardReceipt]:
    """The receipts of a finished pipeline, each checked against the shard it claims and the parts it names.

    Every shard must have a receipt for its own index and URI, whose staged parts belong to
    this run and hold exactly the rows it claims, and read = scored + failed.
    """
    receipts = []
    for index, shard_uri in enumerate(shard_uris):
        uri = receipt_uri(staging, part_name(index))
        if not storage.exists(uri):
            raise RuntimeError(f"{shard_uri}: the pipeline finished but left no receipt {uri}")
        try:
            receipt = ShardReceipt.from_json(storage.read_bytes(uri))
        except ContractError as error:
            raise RuntimeError(f"{uri}: {error}") from error
        if (receipt.shard_index, receipt.source_uri) != (index, storage.absolute_uri(shard_uri)):
            raise RuntimeError(
                f"{uri}: receipt of shard {receipt.shard_index} {receipt.source_uri}, "
                f"expected shard {index} {storage.absolute_uri(shard_uri)}"
            )
        rows = {}
        for table in TABLES:
            part = receipt.part(table)
            if part and part != staged_part_uri(staging, table, part_name(index)):
                raise RuntimeError(f"{uri}: names {part}, which is not this shard's staged {table} part")
            rows[table] = part_rows(part) if part else 0
        if (rows[PREDICTIONS_TABLE], rows[ERRORS_TABLE]) != (receipt.scored, receipt.failed):
            raise RuntimeError(f"{shard_uri}: staged parts hold {rows}, the receipt claims {receipt.to_json()}")
        if receipt.read != receipt.scored + receipt.failed:
            raise RuntimeError(f"{shard_uri}: read {receipt.read} != scored + failed {rows}")
        if receipt.errors and value_counts(receipt.errors, "error_type") != receipt.failed_by_type:
            raise RuntimeError(f"{shard_uri}: error rows by type differ from the receipt's {receipt.failed_by_type}")
        receipts.append(receipt)
    return receipts


def run_counts(receipts: Sequence[ShardReceipt]) -> RunCounts:
    """The run's counts: the sum of its shards' (read = scored + failed holds for each)."""
    by_type = summed_counts(*(receipt.failed_by_type for receipt in receipts))
    expected = [receipt.expected for receipt in receipts]
    return RunCounts(
        read=sum(receipt.read for receipt in receipts),
        scored=sum(receipt.scored for receipt in receipts),
        failed=sum(receipt.failed for receipt in receipts),
        failed_by_type=dict(sorted(by_type.items())),
        expected=None if None in expected else sum(expected),
    )


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


def _check_arguments(*, run_id: str, run_date: str, max_error_rate: float, batch_size: int, lease_ttl_s: float) -> None:
    if not _RUN_ID_RE.match(run_id):
        raise InputError(f"{flag_of('run_id')} {run_id!r}: use letters, digits, '.', '_' and '-' (at most 128)")
    try:
        parse_run_date(run_date)
    except ValueError as error:
        raise InputError(f"{flag_of('run_date')} {run_date!r}: not a date in YYYY-MM-DD form") from error
    if not 0.0 <= max_error_rate <= 1.0:
        raise InputError(f"{flag_of('max_error_rate')} {max_error_rate}: must be between 0 and 1")
    if batch_size < 1:
        raise InputError(f"{flag_of('batch_size')} {batch_size}: must be at least 1")
    if not lease_ttl_s > 0:
        raise InputError(f"{flag_of('lease_ttl_s')} {lease_ttl_s}: must be a positive number of seconds")


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
