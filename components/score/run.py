"""A scoring run: lease the run id, run the Beam pipeline, check and publish its tables, swap the summary.

    <output>/_leases/<run_id>.json                               one live attempt per run id
    <output>/_staging/<run_id>/<attempt>/...                      parts + receipts while the attempt works
    <output>/predictions/run_date=<date>/run_id=<id>/part-p<n>-<attempt>-NNNNN.parquet
    <output>/errors/run_date=<date>/run_id=<id>/part-p<n>-<attempt>-NNNNN.parquet
    <output>/runs/<run_id>.json                                   the run summary: one JSON line, names the parts
    <output>/_run_index/<YYYY-MM>/<date>/<run_id>                 the run's marker in the run index

A run is what its summary says: readers read only the parts a summary names. Publishing is
ordered so that a reader sees the previous run or the new one, never a mix and never
nothing, whatever stops the attempt (kill -9, ENOSPC, a lost lease, a freeze of any length):
  0. at the start, the attempt puts the run's marker in the run index (components/contracts/
     run_index.py), reads the summary in place (its baseline) and takes the next publication
     number n; its parts carry n in their names;
  1. the parts (one per table for each group of consecutive shards the pipeline scored) move
     from staging into the partitions under those names (consecutive parts below
     PART_MIN_BYTES merged into parts of up to PART_TARGET_BYTES first);
  2. the summary is replaced in one compare-and-swap against the baseline (a generation
     precondition on GCS, compare and replace under an flock locally): an attempt that lost
     the run to another, even one frozen for minutes before this write, changes nothing, withdraws
     its own parts and exits with a RunConflict naming the attempt that published;
  3. files of the run id's partitions that no summary can name any more are removed: those of
     publication n that the summary does not name (attempts that lost), and those of earlier
     publications once the summary that replaced them is older than the grace period (readers
     that read the previous summary can still read its parts). Files of later publications
     belong to attempts still in flight and are never touched, so a remover frozen at any
     point cannot destroy what a later attempt publishes.
An attempt that dies before 2 leaves the previous run intact; the next attempt of the run
id takes over the expired lease and cleans up. Counts come from the staged files (runner-
agnostic); receipts are checked against the shards they claim and the parts they name.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import math
import os
import secrets
import time
from collections.abc import Sequence

from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions, TestOptions, WorkerOptions

from components.constants import PROGRESS_LOG_FIELD, tool_version
from components.contracts import run_index
from components.contracts.parameters import flag_of
from components.contracts.registry import resolve
from components.contracts.schema import (
    DICTIONARY_COLUMNS,
    ERRORS_TABLE,
    PART_MIN_BYTES,
    PART_TARGET_BYTES,
    PREDICTIONS_TABLE,
    is_run_id,
    parse_run_date,
    part_file_name,
    part_publication,
    partition_uri,
    run_summary_uri,
)
from components.contracts.shards import shard_expectations
from components.contracts.summary import (
    MAX_SUMMARY_BYTES,
    ContractError,
    GroupReceipt,
    RunCounts,
    RunInputs,
    RunParts,
    RunSummary,
    summed_counts,
)
from components.errors import CheckFailed, InputError, RunConflict
from components.io import storage
from components.io.lease import DEFAULT_TTL_S, Lease, check_ttl, hold_lease, lease_uri, publish_point
from components.io.parquet_parts import merge_parts, part_rows, value_counts
from components.score.dataflow_job import run_and_wait
from components.score.model_scorer import check_model_fits, load_model
from components.score.pipeline import COUNTER_NAMESPACE, build_pipeline
from components.score.shard_scoring import DEFAULT_BATCH_SIZE, ScoringTarget, part_name, receipt_uri, staged_part_uri
from components.score.unique_images import drop_repeated_images

log = logging.getLogger(__name__)

STAGING_FOLDER = "_staging"
DEFAULT_MAX_ERROR_RATE = 0.01
# How long the parts a rerun replaced stay readable: a reader that read the previous summary
# (a report, a query, a BigQuery job) has this long to read the parts it names.
DEFAULT_REPLACED_PARTS_GRACE_S = 3600.0
LOCAL_RUNNER = "FnApiRunner"
# The most shard bytes one group (the unit of work) scores: about 700,000 28x28 images, whose
# parts hold about 35 MB; a larger input is spread over more groups, so over more workers.
GROUP_MAX_BYTES = 256 * 1024 * 1024
TABLES = (PREDICTIONS_TABLE, ERRORS_TABLE)


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
    replaced_parts_grace_s: float = DEFAULT_REPLACED_PARTS_GRACE_S,
    beam_args: Sequence[str] = (),
    gcp_resources: str | None = None,
) -> dict:
    """Scores every shard matching `input` with the model at `model` into tables below `output`.

    `model` is a model version folder or a model root (then its published LATEST).
    `beam_args` are standard Beam pipeline options (--runner, --direct_num_workers, ...).
    `gcp_resources`: file for the launched Dataflow job's `gcp_resources` (KFP output).
    Returns the run summary. Configuration errors raise InputError before anything is
    written; another live attempt at the run id raises RunConflict before anything is
    written, and so does losing the run to another attempt (nothing of this attempt stays
    published); a failed share above `max_error_rate` raises CheckFailed after publishing.
    """
    started = time.monotonic()
    started_at = _utc_now()
    run_id = run_id or new_run_id(started_at)
    run_date = run_date or started_at.date().isoformat()
    _check_arguments(
        run_id=run_id,
        run_date=run_date,
        max_error_rate=max_error_rate,
        batch_size=batch_size,
        lease_ttl_s=lease_ttl_s,
        replaced_parts_grace_s=replaced_parts_grace_s,
    )
    shard_sizes = input_shards(input)
    shard_uris = list(shard_sizes)
    model_ref = resolve(model, check_file=False)  # load_model checks the hash on the bytes it loads
    check_model_fits(load_model(model_ref.keras_uri, expected_sha256=model_ref.sha256), model_ref.keras_uri)
    options = pipeline_options(beam_args, shard_count=len(shard_uris))
    groups = shard_groups(list(shard_sizes.values()), workers=parallel_workers(options), max_bytes=GROUP_MAX_BYTES)
    attempt = new_run_id(started_at)
    staging = staging_uri(output, run_id, attempt)
    target = ScoringTarget(
        staging=staging, run_id=run_id, run_date=run_date, model_version=model_ref.version, batch_size=batch_size
    )
    expectations = shard_expectations(shard_uris)
    pipeline = build_pipeline(
        shard_uris=shard_uris,
        keras_uri=model_ref.keras_uri,
        target=target,
        options=options,
        groups=groups,
        expectations=expectations,
        model_sha256=model_ref.sha256,
    )
    if options.view_as(TestOptions).dry_run:
        return translate_only(pipeline, options)
    _log_start(run_id, run_date, model_ref.version, shard_uris, expectations)

    storage.ensure_writable(output)
    with hold_lease(lease_uri(output, run_id), owner=attempt, ttl_s=lease_ttl_s) as lease:
        publish_point("leased")
        run_index.add_run(output, run_date, run_id)  # before any summary of the run can exist
        baseline = storage.read_snapshot(run_summary_uri(output, run_id), max_bytes=MAX_SUMMARY_BYTES)
        in_place = _parsed_summary(baseline)
        if in_place:  # without one, only the swap decides what stays (a v1 run's parts, say)
            remove_unreachable_parts(output, run_id, in_place, grace_s=replaced_parts_grace_s, point="stale-removal")
        publication = next_publication(output, run_id, in_place)
        for other in _dead_attempts(output, run_id, attempt):  # we hold the lease: nobody else writes there
            storage.delete_prefix(other)
        try:
            result, state = run_and_wait(pipeline, options, gcp_resources=gcp_resources)
            if state != "DONE":
                raise RuntimeError(f"scoring pipeline ended in state {state}")
            pipeline_seconds = time.monotonic() - started
            receipts = checked_receipts(staging, shard_uris, groups)
            receipts = drop_repeated_images(
                receipts,
                errors_part_of={
                    r.group_index: staged_part_uri(staging, ERRORS_TABLE, part_name(r.group_index)) for r in receipts
                },
            )
            counts = run_counts(receipts)
            error_rate = counts.failed / counts.read if counts.read else 0.0
            mismatches = [mismatch for receipt in receipts for shard in receipt.shards if (mismatch := shard.source_mismatch())]
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
                publication=publication,
            )
            summary = publish(
                output,
                summary,
                receipts,
                lease=lease,
                baseline=baseline,
                replaced_parts_grace_s=replaced_parts_grace_s,
                started=started,
                started_at=started_at,
                pipeline_seconds=pipeline_seconds,
                publish_started=publish_started,
            )
        except Exception as error:
            # Whatever failed (a staged file removed by the attempt that took over, a receipt
            # missing), an attempt that lost its lease says so instead.
            if isinstance(error, RunConflict) or (lost := _lost_lease(lease)) is None:
                raise
            raise lost from error
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


def _log_start(run_id: str, run_date: str, model_version: str, shard_uris: Sequence[str], expectations: dict) -> None:
    """The run's first line: its labels for structured logs, and the totals of its progress line."""
    images = (
        sum(expectation.num_records for expectation in expectations.values()) if len(expectations) == len(shard_uris) else None
    )
    log.info(
        "run %s of %s: scoring %d shards%s with model %s",
        run_id,
        run_date,
        len(shard_uris),
        f" ({images:,} images)" if images is not None else "",
        model_version,
        extra={
            "run_id": run_id,
            "run_date": run_date,
            "model_version": model_version,
            PROGRESS_LOG_FIELD: {"unit": "shards", "done": 0, "total": len(shard_uris), "items_total": images},
        },
    )


def input_shards(pattern: str) -> dict[str, int]:
    """The sorted shards of the input glob with their sizes; the same file twice (a link and its
    target) is refused, since it would score every image twice under two names."""
    shard_uris = storage.glob_sizes(pattern)
    if not shard_uris:
        raise InputError(f"{pattern}: no file matches the input glob")
    seen: dict[str, str] = {}
    for uri in shard_uris:
        identity = uri if storage.is_remote(uri) else os.path.realpath(uri)
        if identity in seen:
            raise InputError(f"{pattern}: {uri} and {seen[identity]} are the same file; give each shard once")
        seen[identity] = uri
    return shard_uris


def shard_groups(sizes: Sequence[int], *, workers: int, max_bytes: int) -> list[list[int]]:
    """The shards (their sizes in bytes, in input order) cut into the pipeline's units of work:
    groups of consecutive shards of about equal bytes, as few as keep each within `max_bytes`
    and a multiple of `workers` (every worker scores as many), never more than the shards.

    A group costs its worker one set of part writers and one receipt, and the launcher one
    part to merge, whatever the number of its shards (measured: docs/benchmarks.md).
    """
    weights = [size + 1 for size in sizes]  # an empty shard still has its error row to write
    total = sum(weights)
    count = min(len(weights), workers * math.ceil(total / (max_bytes * workers)))
    groups: dict[int, list[int]] = {}
    before = 0
    for index, weight in enumerate(weights):
        # A shard goes to the group its middle byte falls in: groups stay in order, about equal.
        groups.setdefault(min(count - 1, (2 * before + weight) * count // (2 * total)), []).append(index)
        before += weight
    return list(groups.values())


def parallel_workers(options: PipelineOptions) -> int:
    """How many groups the runner scores at once, as far as its options tell (1 when they do not)."""
    runner = (options.view_as(StandardOptions).runner or "").lower()
    if runner in ("fnapirunner", "directrunner", "direct"):
        direct = options.view_as(DirectOptions)
        if direct.direct_running_mode == "in_memory":
            return 1
        return direct.direct_num_workers or os.cpu_count() or 1
    worker_options = options.view_as(WorkerOptions)
    return worker_options.max_num_workers or worker_options.num_workers or 1


def publish(
    output: str,
    summary: RunSummary,
    receipts: Sequence[GroupReceipt],
    *,
    lease: Lease,
    baseline: storage.Snapshot,
    replaced_parts_grace_s: float,
    started: float,
    started_at: datetime.datetime,
    pipeline_seconds: float,
    publish_started: float,
) -> RunSummary:
    """Publishes the checked parts, swaps the summary if it is still the baseline, then removes
    what no summary can name any more. RunConflict, with this attempt's parts withdrawn, when
    another attempt published the run since this one started."""
    parts: dict[str, list[str]] = {table: [] for table in TABLES}
    for table in TABLES:
        staged = [(receipt.group_index, uri) for receipt in receipts if (uri := receipt.part(table))]
        sizes = [storage.size(uri) for _, uri in staged]
        for group in part_groups(sizes, target_bytes=PART_TARGET_BYTES, min_bytes=PART_MIN_BYTES):
            first_index, first_uri = staged[group[0]]
            source = first_uri
            if len(group) > 1:  # small groups' parts become one part of about the target size
                source = storage.join(storage.dirname(first_uri), f"merged-{first_index:05d}.parquet")
                merge_parts([staged[member][1] for member in group], source, dictionary_columns=DICTIONARY_COLUMNS)
            lease.check()  # a lease the heartbeat lost stops us before we touch the partitions again
            name = part_file_name(publication=summary.publication, attempt=summary.attempt, index=first_index)
            published = storage.join(partition_uri(output, table, summary.run_date, summary.run_id), name)
            publish_point("part-move")
            storage.move(source, published)
            parts[table].append(storage.absolute_uri(published))
            publish_point("part-published")
    publish_point("parts-published")
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
    publish_point("summary")
    try:
        storage.replace_if_unchanged(baseline, (summary.to_json() + "\n").encode())  # the swap, fenced
    except storage.StorageConflictError:
        for part in parts[PREDICTIONS_TABLE] + parts[ERRORS_TABLE]:  # named by no summary: ours to withdraw
            storage.delete(storage.from_absolute_uri(part))
        raise _lost_run(output, summary) from None
    publish_point("summary-written")
    remove_unreachable_parts(output, summary.run_id, summary, grace_s=replaced_parts_grace_s, replaced_at=time.time())
    publish_point("cleaned")
    return summary


def part_groups(sizes: Sequence[int], *, target_bytes: int, min_bytes: int) -> list[list[int]]:
    """The staged parts (their sizes, in input order) grouped into published parts: a part of
    at least `min_bytes` alone, as it is; runs of consecutive smaller ones merged into parts of
    at most `target_bytes`."""
    groups: list[list[int]] = []
    total = 0
    merging = False  # the last group is one of small parts
    for index, size in enumerate(sizes):
        if merging and size < min_bytes and total + size <= target_bytes:
            groups[-1].append(index)
            total += size
        else:
            groups.append([index])
            total, merging = size, size < min_bytes
    return groups


def next_publication(output: str, run_id: str, in_place: RunSummary | None) -> int:
    """The publication number of a new attempt: above the summary in place and above every part
    file of the run id (so no file of another attempt can pass for one of this attempt's round)."""
    found = [part_publication(storage.basename(uri)) for uri in _run_files(output, run_id)]
    return max([in_place.publication if in_place else 0, *found]) + 1


def remove_unreachable_parts(
    output: str,
    run_id: str,
    in_place: RunSummary | None,
    *,
    grace_s: float,
    replaced_at: float | None = None,
    point: str = "removal",
) -> None:
    """Removes the files of the run id's partitions (any run date) that no summary can name again.

    Every later summary is swapped in over `in_place` and names only parts of a later
    publication, so a file of `in_place`'s publication or earlier that it does not name is
    garbage for good: removing it is safe even for a remover frozen since it read `in_place`.
    Files of the same publication (attempts that lost the swap) go at once; earlier ones (the
    runs `in_place` replaced) once `in_place` has been in place for `grace_s` (`replaced_at`:
    when it was swapped in; by default the summary's modification time). Files of later
    publications belong to attempts in flight and stay. A part is known by its name in the
    run's own partition, as the readers find it (so an output root copied elsewhere keeps its parts).
    """
    publication = in_place.publication if in_place else 0
    named = set()
    if in_place:
        for table in TABLES:
            folder = partition_uri(output, table, in_place.run_date, in_place.run_id)
            named |= {storage.join(folder, storage.basename(part)) for part in in_place.parts.of(table)}
    unnamed = {uri: part_publication(storage.basename(uri)) for uri in _run_files(output, run_id) if uri not in named}
    if any(file_publication < publication for file_publication in unnamed.values()):
        replaced_at = replaced_at or storage.modified_at(run_summary_uri(output, run_id))
        in_grace = time.time() - replaced_at < grace_s
    else:
        in_grace = False
    for uri, file_publication in unnamed.items():
        if file_publication == publication or (file_publication < publication and not in_grace):
            publish_point(point)
            storage.delete(uri)


def _run_files(output: str, run_id: str) -> list[str]:
    """Every file in the run id's partitions of both tables, on any run date."""
    return [uri for table in TABLES for uri in storage.glob(storage.join(output, table, "run_date=*", f"run_id={run_id}", "*"))]


def _parsed_summary(snapshot: storage.Snapshot) -> RunSummary | None:
    """The summary a snapshot holds; None when there is none or it is not a valid summary (an
    attempt replaces it)."""
    if snapshot.data is None:
        return None
    try:
        summary = RunSummary.from_json(snapshot.data)
        summary.check()
    except ContractError as error:
        log.warning("%s: the summary in place is not valid (%s); this attempt replaces it", snapshot.uri, error)
        return None
    return summary


def _lost_run(output: str, summary: RunSummary) -> RunConflict:
    """The RunConflict of an attempt whose swap found another attempt's summary in place."""
    winner = _parsed_summary(storage.read_snapshot(run_summary_uri(output, summary.run_id), max_bytes=MAX_SUMMARY_BYTES))
    by = f"attempt {winner.attempt}" if winner else "another attempt"
    return RunConflict(
        f"run {summary.run_id}: published by {by} while this attempt ({summary.attempt}) ran; "
        "this attempt's parts are withdrawn, the published run stands"
    )


def _lost_lease(lease: Lease) -> RunConflict | None:
    """The RunConflict saying who took the lease, when this attempt lost it; None while it is ours."""
    try:
        lease.confirm()
    except RunConflict as lost:
        return lost
    except Exception:  # storage unreachable: the original error says more
        return None
    return None


def _dead_attempts(output: str, run_id: str, attempt: str) -> list[str]:
    """Staging folders of earlier attempts at the run id (their holders died or lost the lease)."""
    prefix = staging_uri(output, run_id)
    folders = {storage.join(prefix, uri[len(prefix) :].strip("/").split("/", 1)[0]) for uri in storage.list_prefix(prefix)}
    return sorted(folder for folder in folders if storage.basename(folder) != attempt)


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


def checked_receipts(staging: str, shard_uris: Sequence[str], groups: Sequence[Sequence[int]]) -> list[GroupReceipt]:
    """The receipts of a finished pipeline, each checked against the shards it claims and the parts it names.

    Every group must have a receipt naming its own shards (index and URI) in order, whose
    staged parts belong to this group and hold exactly the rows its shards claim, and each
    shard must have read = scored + failed.
    """
    receipts = []
    for group in groups:
        first_uri = shard_uris[group[0]]
        uri = receipt_uri(staging, part_name(group[0]))
        if not storage.exists(uri):
            raise RuntimeError(f"{first_uri}: the pipeline finished but left no receipt {uri}")
        try:
            receipt = GroupReceipt.from_json(storage.read_bytes(uri))
        except ContractError as error:
            raise RuntimeError(f"{uri}: {error}") from error
        claimed = [(shard.shard_index, shard.source_uri) for shard in receipt.shards]
        expected = [(index, storage.absolute_uri(shard_uris[index])) for index in group]
        if receipt.group_index != group[0] or claimed != expected:
            raise RuntimeError(f"{uri}: receipt of shards {claimed}, expected shards {expected}")
        for shard in receipt.shards:
            if shard.read != shard.scored + shard.failed:
                raise RuntimeError(f"{shard.source_uri}: read {shard.read} != scored {shard.scored} + failed {shard.failed}")
        claims = {
            PREDICTIONS_TABLE: sum(shard.scored for shard in receipt.shards),
            ERRORS_TABLE: sum(shard.failed for shard in receipt.shards),
        }
        rows = {}
        for table in TABLES:
            part = receipt.part(table)
            if part and part != staged_part_uri(staging, table, part_name(group[0])):
                raise RuntimeError(f"{uri}: names {part}, which is not this group's staged {table} part")
            rows[table] = part_rows(part) if part else 0
        if rows != claims:
            raise RuntimeError(f"{first_uri}: staged parts hold {rows}, the receipt claims {claims}")
        if receipt.errors and value_counts(receipt.errors, "error_type") != receipt.failed_by_type:
            raise RuntimeError(f"{uri}: error rows by type differ from the receipt's {receipt.failed_by_type}")
        receipts.append(receipt)
    return receipts


def run_counts(receipts: Sequence[GroupReceipt]) -> RunCounts:
    """The run's counts: the sum of its shards' (read = scored + failed holds for each)."""
    shards = [shard for receipt in receipts for shard in receipt.shards]
    by_type = summed_counts(*(receipt.failed_by_type for receipt in receipts))
    expected = [shard.expected for shard in shards]
    return RunCounts(
        read=sum(shard.read for shard in shards),
        scored=sum(shard.scored for shard in shards),
        failed=sum(shard.failed for shard in shards),
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


def check_run_names(*, run_id: str, run_date: str) -> None:
    """InputError unless the run id is a safe file name and the date a YYYY-MM-DD date."""
    if not is_run_id(run_id):
        raise InputError(f"{flag_of('run_id')} {run_id!r}: use letters, digits, '.', '_' and '-' (at most 128)")
    try:
        parse_run_date(run_date)
    except ValueError as error:
        raise InputError(f"{flag_of('run_date')} {run_date!r}: not a date in YYYY-MM-DD form") from error


def _check_arguments(
    *, run_id: str, run_date: str, max_error_rate: float, batch_size: int, lease_ttl_s: float, replaced_parts_grace_s: float
) -> None:
    check_run_names(run_id=run_id, run_date=run_date)
    if not 0.0 <= max_error_rate <= 1.0:
        raise InputError(f"{flag_of('max_error_rate')} {max_error_rate}: must be between 0 and 1")
    if batch_size < 1:
        raise InputError(f"{flag_of('batch_size')} {batch_size}: must be at least 1")
    check_ttl(lease_ttl_s, flag_of("lease_ttl_s"))
    if not 0 <= replaced_parts_grace_s <= 7 * 86400:
        raise InputError(f"{flag_of('replaced_parts_grace_s')} {replaced_parts_grace_s}: must be between 0 s and 7 days")


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
