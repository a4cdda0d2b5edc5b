"""One row per image: a run's staged parts with every repeated `image_id` turned into an error row.

The groups of shards are scored in parallel, each on its own, so a repeat across groups is
only seen once all are staged. This step reads the `image_id` column of every staged
prediction part in input order (group, then row order: shard order, then record order),
keeps the first occurrence and moves each later one to the error table as
`duplicate_image_id`, with its record index found in its shard. Only parts that hold a
repeat are rewritten.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import io
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from components.contracts.schema import DICTIONARY_COLUMNS, ERROR_SCHEMA
from components.contracts.summary import GroupReceipt, ShardReceipt, summed_counts
from components.io import storage
from components.io.parquet_parts import write_part
from components.io.tfrecord import read_records
from components.score.prediction_rows import ParsedRecord, RecordError, error_batch, parse_record

DUPLICATE_IMAGE_ID = "duplicate_image_id"


def drop_repeated_images(receipts: Sequence[GroupReceipt], *, errors_part_of: dict[int, str]) -> list[GroupReceipt]:
    """The receipts after moving every repeated image's row to the error table (parts rewritten).

    `receipts` are in input order; `errors_part_of[group_index]` is where a group's error part
    is staged when it has none yet.
    """
    image_ids = {r.group_index: _read_table(r.predictions, ["image_id"]).column("image_id") for r in receipts if r.predictions}
    every_id = pa.chunked_array([chunk for column in image_ids.values() for chunk in column.chunks], pa.string())
    if len(pc.unique(every_id)) == len(every_id):  # the usual run: no id twice, found without a Python object per id
        return list(receipts)
    first_shard: dict[str, int] = {}
    result = []
    for receipt in receipts:
        if receipt.predictions is None:
            result.append(receipt)
            continue
        ids = image_ids[receipt.group_index].to_pylist()
        repeated: dict[int, list[int]] = {}  # shard position in the group -> its rows (in the part) that repeat an id
        start = 0
        for position, shard in enumerate(receipt.shards):
            for row in range(start, start + shard.scored):
                if ids[row] in first_shard:
                    repeated.setdefault(position, []).append(row)
                else:
                    first_shard[ids[row]] = shard.shard_index
            start += shard.scored
        if not repeated:
            result.append(receipt)
            continue
        result.append(_move_to_errors(receipt, repeated, first_shard, receipt.errors or errors_part_of[receipt.group_index]))
    return result


def _move_to_errors(
    receipt: GroupReceipt, repeated: dict[int, list[int]], first_shard: dict[str, int], errors_uri: str
) -> GroupReceipt:
    """The group with the `repeated` rows (by shard position) moved to its error part, both parts rewritten."""
    predictions = _read_table(receipt.predictions)
    errors = _read_table(receipt.errors) if receipt.errors else ERROR_SCHEMA.empty_table()
    scored_at = datetime.datetime.now(datetime.UTC)
    new_errors = []
    shards = list(receipt.shards)
    prediction_start = error_start = 0
    for position, shard in enumerate(receipt.shards):
        shard_predictions = predictions.slice(prediction_start, shard.scored)
        shard_errors = errors.slice(error_start, shard.failed)
        prediction_start += shard.scored
        error_start += shard.failed
        if position not in repeated:
            continue
        rows = [row - (prediction_start - shard.scored) for row in repeated[position]]
        record_errors = _repeat_errors(shard, shard_predictions, shard_errors, rows, first_shard)
        new_errors.append(pa.Table.from_batches([error_batch(record_errors, source_uri=shard.source_uri, scored_at=scored_at)]))
        shards[position] = dataclasses.replace(
            shard,
            scored=shard.scored - len(rows),
            failed=shard.failed + len(rows),
            failed_by_type=summed_counts(shard.failed_by_type, {DUPLICATE_IMAGE_ID: len(rows)}),
        )
    # Error rows stay in shard order, then record order: a shard's rows are where its counts say.
    combined = pa.concat_tables([errors.cast(ERROR_SCHEMA), *(table.cast(ERROR_SCHEMA) for table in new_errors)])
    shard_position = {shard.source_uri: position for position, shard in enumerate(receipt.shards)}
    positions = np.array([shard_position[uri] for uri in combined.column("source_uri").to_pylist()])
    order = np.lexsort((combined.column("record_index").to_numpy(), positions))
    # The part's lineage (run, date, model) is the same whichever part it is read from.
    lineage = (errors if receipt.errors else predictions).schema.metadata
    combined = combined.take(pa.array(order)).replace_schema_metadata(lineage)
    moved = {row for rows in repeated.values() for row in rows}
    kept = predictions.filter(pa.array([row not in moved for row in range(predictions.num_rows)]))
    write_part(errors_uri, combined, dictionary_columns=DICTIONARY_COLUMNS)
    if kept.num_rows:
        write_part(receipt.predictions, kept, dictionary_columns=DICTIONARY_COLUMNS)
    else:
        storage.delete(receipt.predictions)  # an empty part is no part
    return dataclasses.replace(
        receipt, shards=shards, predictions=receipt.predictions if kept.num_rows else None, errors=errors_uri
    )


def _repeat_errors(
    shard: ShardReceipt, predictions: pa.Table, errors: pa.Table, rows: list[int], first_shard: dict[str, int]
) -> list[RecordError]:
    """The error rows of one shard's repeated rows (`rows` of its `predictions`), with their record indices."""
    repeated_ids = predictions.column("image_id").take(rows).to_pylist()
    indices = _record_indices(shard.source_uri, set(repeated_ids), skip=set(errors.column("record_index").to_pylist()))
    seen: collections.Counter[str] = collections.Counter()
    # Rows of one id in this shard are in record order: the n-th row of an id is the n-th scored
    # record with that id; the rows kept (a first occurrence) come before the repeats here.
    kept_rows = sorted(set(range(predictions.num_rows)) - set(rows))
    kept_before = collections.Counter(predictions.column("image_id").take(pa.array(kept_rows, pa.int64())).to_pylist())
    record_errors = []
    for image_id in repeated_ids:
        position = kept_before[image_id] + seen[image_id]
        seen[image_id] += 1
        first = first_shard[image_id]
        where = "earlier in this shard" if first == shard.shard_index else f"in input shard {first}"
        record_errors.append(
            RecordError(
                indices[image_id][position],
                DUPLICATE_IMAGE_ID,
                f"image_id {image_id!r} was already scored {where}",
                image_id=image_id,
            )
        )
    return record_errors


def _record_indices(source_uri: str, image_ids: set[str], *, skip: set[int]) -> dict[str, list[int]]:
    """Record indices of the scored records with the given ids, in shard order."""
    indices: dict[str, list[int]] = collections.defaultdict(list)
    with storage.open_read(storage.from_absolute_uri(source_uri)) as stream:
        for record in read_records(stream):
            if record.index in skip:
                continue
            parsed = parse_record(record)
            if isinstance(parsed, ParsedRecord) and parsed.example.image_id in image_ids:
                indices[parsed.example.image_id].append(record.index)
    return indices


def _read_table(uri: str, columns: list[str] | None = None) -> pa.Table:
    # ParquetFile, not pq.read_table: one file needs no dataset layer (whose import alone costs
    # a scoring run tens of milliseconds).
    with storage.open_read(uri) as stream:
        return pq.ParquetFile(io.BytesIO(stream.read())).read(columns=columns)
