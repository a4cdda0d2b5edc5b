"""Rewrites scoring output of table contract v1 as contract v2, run by run, in place.

    fmnist migrate-tables --scores runs/local/scores

Contract v1 kept `run_id` as a file column (as well as a folder key), wrote pretty-printed
summaries without a part list, and relative `source_uri`s. For each v1 run this holds the
run id's lease (no `score` can write the run meanwhile), writes each part again without
`run_id`, with the run's lineage in its metadata and its `source_uri` made absolute (relative
paths are taken from the current folder, as `score` resolved them), then swaps in a v2
summary naming the new parts in one write, then removes the v1 parts: the same publish
sequence as `score`, so a reader sees the v1 run or the v2 one, whatever stops it.
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
from components.contracts.schema import (
    ERROR_SCHEMA,
    ERRORS_TABLE,
    PREDICTION_SCHEMA,
    PREDICTIONS_TABLE,
    RUNS_FOLDER,
    V1_SCHEMA_VERSION,
    partition_uri,
    run_summary_uri,
    with_lineage,
)
from components.contracts.summary import RunCounts, RunInputs, RunParts, RunSummary
from components.errors import InputError
from components.io import storage
from components.io.lease import hold_lease, lease_uri
from components.score.run import remove_unnamed_parts

log = logging.getLogger(__name__)

_SCHEMAS = {PREDICTIONS_TABLE: PREDICTION_SCHEMA, ERRORS_TABLE: ERROR_SCHEMA}


@dataclasses.dataclass(frozen=True)
class MigrateTablesParameters:
    """`fmnist migrate-tables`: a scoring output of table contract v1 -> v2, in place."""

    scores: str = scores_root(deprecated_aliases=())


def migrate_tables(*, scores: str) -> dict:
    """Migrates every v1 run below a scoring output root; returns the migrated run ids."""
    migrated = []
    for uri in storage.glob(storage.join(scores, RUNS_FOLDER, "*.json")):
        try:
            document = json.loads(storage.read_bytes(uri))
        except json.JSONDecodeError:
            continue  # not a v1 summary either: the readers skip it with a warning
        if isinstance(document, dict) and document.get("schema_version") == V1_SCHEMA_VERSION:
            migrated.append(migrate_run(scores, document, uri))
    if not migrated:
        log.info("%s: no run of table contract v1", scores)
    return {"migrated_runs": migrated}


def migrate_run(scores: str, document: dict, summary_uri: str) -> str:
    """Rewrites one v1 run as v2 under its lease; returns its run id."""
    try:
        run_id, run_date, counts = document["run_id"], document["run_date"], document["counts"]
        model_version = document["model_version"]
    except KeyError as error:
        raise InputError(f"{summary_uri}: v1 summary without {error.args[0]!r}") from error
    if summary_uri != run_summary_uri(scores, run_id):
        raise InputError(f"{summary_uri}: names run {run_id!r}")
    attempt = f"migrated-{secrets.token_hex(4)}"
    lineage = dict(run_id=run_id, run_date=run_date, model_version=model_version)
    with hold_lease(lease_uri(scores, run_id), owner=attempt) as lease:
        parts: dict[str, list[str]] = {PREDICTIONS_TABLE: [], ERRORS_TABLE: []}
        for table, schema in _SCHEMAS.items():
            old_parts = [
                uri
                for uri in storage.glob(storage.join(partition_uri(scores, table, run_date, run_id), "*.parquet"))
                if not storage.basename(uri).startswith((".", "_"))
            ]
            for index, old in enumerate(old_parts):
                new = storage.join(storage.dirname(old), f"part-{attempt}-{index:05d}.parquet")
                _write(new, _as_v2(old, with_lineage(schema, **lineage)))
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
        )
        lease.confirm()
        storage.write_bytes(summary_uri, (summary.to_json() + "\n").encode())  # the swap
        remove_unnamed_parts(scores, summary)
    log.info("run %s: migrated to table contract v2", run_id)
    return run_id


def _as_v2(uri: str, schema: pa.Schema) -> pa.Table:
    """A v1 part's rows without the run_id column, with absolute source URIs, in the v2 schema."""
    with storage.open_read(uri) as stream:
        table = pq.read_table(io.BytesIO(stream.read()))
    sources = [storage.absolute_uri(source) for source in table.column("source_uri").to_pylist()]
    table = table.set_column(table.schema.get_field_index("source_uri"), "source_uri", pa.array(sources, pa.string()))
    return table.select(schema.names).cast(schema)


def _write(uri: str, table: pa.Table) -> None:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    storage.write_bytes(uri, buffer.getvalue())
