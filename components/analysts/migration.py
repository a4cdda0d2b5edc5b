"""Rewrites scoring output of table contract v1 as contract v2, run by run, in place.

    fmnist migrate-tables --scores runs/local/scores

Contract v1 kept `run_id` as a file column (as well as a folder key), wrote pretty-printed
summaries without a part list, and relative `source_uri`s. For each v1 run this holds the
run id's lease (no `score` can write the run meanwhile), writes each part again without
`run_id`, with the run's lineage in its metadata and its `source_uri` made absolute (relative
paths are taken from the current folder, as `score` resolved them) under names of a new
publication, then swaps in a v2 summary naming the new parts with a compare-and-swap against
the v1 summary it read, then removes the v1 parts: the same lease, publication numbers and
fencing as `score` (components/score/run.py), so a reader sees the v1 run or the v2 one, whatever
stops it, and a rerun after an interruption migrates every run to exactly its rows.

A run is migrated only when its v1 parts in its summary's partition hold exactly the rows its
counts say; otherwise it is left as it was, with one warning saying why.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import secrets

import pyarrow as pa
import pyarrow.parquet as pq

from components.analysts.tables import scores_root
from components.contracts import run_index
from components.contracts.schema import (
    DICTIONARY_COLUMNS,
    ERROR_SCHEMA,
    ERRORS_TABLE,
    PREDICTION_SCHEMA,
    PREDICTIONS_TABLE,
    RUNS_FOLDER,
    V1_SCHEMA_VERSION,
    parse_run_date,
    part_file_name,
    partition_uri,
    run_summary_uri,
    with_lineage,
)
from components.contracts.summary import MAX_SUMMARY_BYTES, RunCounts, RunInputs, RunParts, RunSummary
from components.errors import InputError, RunConflict
from components.io import storage
from components.io.lease import hold_lease, lease_uri, publish_point
from components.io.parquet_parts import write_part
from components.score.run import next_publication, remove_unreachable_parts

log = logging.getLogger(__name__)

_SCHEMAS = {PREDICTIONS_TABLE: PREDICTION_SCHEMA, ERRORS_TABLE: ERROR_SCHEMA}


@dataclasses.dataclass(frozen=True)
class MigrateTablesParameters:
    """`fmnist migrate-tables`: a scoring output of table contract v1 -> v2, in place."""

    scores: str = scores_root(deprecated_aliases=())


class Unmapped(Exception):
    """A v1 run whose files do not match its summary: it is left as it was."""


def migrate_tables(*, scores: str) -> dict:
    """Migrates every v1 run below a scoring output root; returns the migrated run ids and the
    runs left as they were, with why."""
    migrated, unmapped = [], {}
    for uri in storage.glob(storage.join(scores, RUNS_FOLDER, "*.json")):
        try:
            document = json.loads(storage.read_bytes(uri, max_bytes=MAX_SUMMARY_BYTES))
        except (json.JSONDecodeError, UnicodeDecodeError, InputError):
            continue  # not a v1 summary either: the readers skip it with a warning
        if isinstance(document, dict) and document.get("schema_version") == V1_SCHEMA_VERSION:
            try:
                migrated.append(migrate_run(scores, document, uri))
            except Unmapped as why:
                log.warning("%s: left as it was: %s", uri, why)
                unmapped[storage.basename(uri)] = str(why)
    if not migrated and not unmapped:
        log.info("%s: no run of table contract v1", scores)
    return {"migrated_runs": migrated, "unmapped_runs": unmapped}


def migrate_run(scores: str, document: dict, summary_uri: str) -> str:
    """Rewrites one v1 run as v2 under its lease; returns its run id. Unmapped when its v1 parts
    do not hold the rows its summary counts; RunConflict when another attempt migrated it meanwhile."""
    try:
        run_id, run_date, counts = document["run_id"], document["run_date"], document["counts"]
        model_version = document["model_version"]
        expected = {PREDICTIONS_TABLE: int(counts["scored"]), ERRORS_TABLE: int(counts["failed"])}
    except (KeyError, TypeError, ValueError) as error:
        raise Unmapped(f"a v1 summary without valid {error}") from error
    if not isinstance(run_id, str) or summary_uri != run_summary_uri(scores, run_id):
        raise Unmapped(f"names run {run_id!r}")
    try:
        parse_run_date(run_date)
    except (TypeError, ValueError) as error:
        raise Unmapped(f"run date {run_date!r} is not a date in YYYY-MM-DD form") from error
    attempt = f"migrated-{secrets.token_hex(4)}"
    lineage = dict(run_id=run_id, run_date=run_date, model_version=model_version)
    with hold_lease(lease_uri(scores, run_id), owner=attempt) as lease:
        baseline = storage.read_snapshot(summary_uri, max_bytes=MAX_SUMMARY_BYTES)
        if V1_SCHEMA_VERSION.encode() not in (baseline.data or b""):
            raise RunConflict(f"{summary_uri}: migrated by another attempt meanwhile")
        old_parts = {table: _v1_parts(partition_uri(scores, table, run_date, run_id)) for table in _SCHEMAS}
        for table, rows_of_part in old_parts.items():
            rows = sum(rows_of_part.values())
            if rows != expected[table]:
                raise Unmapped(
                    f"its {table} parts below {partition_uri(scores, table, run_date, run_id)} hold {rows} rows, "
                    f"its summary counts {expected[table]}"
                )
        publication = next_publication(scores, run_id, None)
        parts: dict[str, list[str]] = {PREDICTIONS_TABLE: [], ERRORS_TABLE: []}
        for table, schema in _SCHEMAS.items():
            for index, old in enumerate(old_parts[table]):
                name = part_file_name(publication=publication, attempt=attempt, index=index)
                new = storage.join(storage.dirname(old), name)
                publish_point("part-move")
                write_part(new, _as_v2(old, with_lineage(schema, **lineage)), dictionary_columns=DICTIONARY_COLUMNS)
                parts[table].append(storage.absolute_uri(new))
        inputs = document.get("inputs") or {}
        summary = RunSummary(
            run_id=run_id,
            run_date=run_date,
            status=document.get("status", "ok"),
            model_version=model_version,
            model_uri=storage.absolute_uri(document.get("model_uri", "")),
            inputs=RunInputs(
                glob=storage.absolute_uri(inputs.get("glob", "")),
                shards=[storage.absolute_uri(shard) for shard in inputs.get("shards", [])],
            ),
            parts=RunParts(predictions=parts[PREDICTIONS_TABLE], errors=parts[ERRORS_TABLE]),
            counts=RunCounts(
                read=counts["read"],
                scored=counts["scored"],
                failed=counts["failed"],
                failed_by_type=counts.get("failed_by_type") or {},
            ),
            error_rate=document.get("error_rate", counts["failed"] / counts["read"] if counts["read"] else 0.0),
            max_error_rate=document.get("max_error_rate", 1.0),
            attempt=attempt,
            timings=document.get("timings") or {},
            runner=document.get("runner"),
            tool=document.get("tool") or {},
            beam_counters=document.get("beam_counters"),
            publication=publication,
        )
        run_index.add_run(scores, run_date, run_id)
        lease.confirm()
        publish_point("summary")
        try:
            storage.replace_if_unchanged(baseline, (summary.to_json() + "\n").encode())  # the swap, fenced
        except storage.StorageConflictError:
            for part in parts[PREDICTIONS_TABLE] + parts[ERRORS_TABLE]:
                storage.delete(storage.from_absolute_uri(part))
            raise RunConflict(f"{summary_uri}: replaced by another attempt while this one migrated it") from None
        publish_point("summary-written")
        # No reader reads v1 parts, so they need no grace period.
        remove_unreachable_parts(scores, run_id, summary, grace_s=0.0, replaced_at=0.0)
    log.info("run %s: migrated to table contract v2", run_id)
    return run_id


def _v1_parts(folder: str) -> dict[str, int]:
    """The parts a v1 writer left in a partition folder, with their row counts: Parquet files with
    the run_id column (not the v2 parts of an interrupted earlier migration); footers only."""
    parts = {}
    for uri in storage.glob(storage.join(folder, "*.parquet")):
        if storage.basename(uri).startswith((".", "_")):
            continue
        with storage.open_read(uri) as stream:
            footer = pq.ParquetFile(stream)
            if "run_id" in footer.schema_arrow.names:
                parts[uri] = footer.metadata.num_rows
    return parts


def _as_v2(uri: str, schema: pa.Schema) -> pa.Table:
    """A v1 part's rows without the run_id column, with absolute source URIs, in the v2 schema."""
    with storage.open_read(uri) as stream:
        table = pq.read_table(io.BytesIO(stream.read()))
    sources = [storage.absolute_uri(source) for source in table.column("source_uri").to_pylist()]
    table = table.set_column(table.schema.get_field_index("source_uri"), "source_uri", pa.array(sources, pa.string()))
    for field in schema:  # a nullable column added to the contract since: null in the old rows
        if field.name not in table.column_names and field.nullable:
            table = table.append_column(field.name, pa.nulls(table.num_rows, field.type))
    return table.select(schema.names).cast(schema)
