"""One row per image: a run's staged parts with every repeated `image_id` turned into an error row.

The shards are scored in parallel, each on its own, so a repeat across shards is only seen
once all are staged. This step reads the `image_id` column of every staged prediction part
in input order (shard index, then row order, which is record order), keeps the first
occurrence and moves each later one to the error table as `duplicate_image_id`, with its
record index found in the shard. Only parts that hold a repeat are rewritten.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import io
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from components.contracts.schema import DICTIONARY_COLUMNS, ERROR_SCHEMA
from components.contracts.summary import ShardReceipt, summed_counts
from components.io import storage
from components.io.parquet_parts import write_part
from components.io.tfrecord import read_records
from components.score.prediction_rows import ParsedRecord, RecordError, error_batch, parse_record

DUPLICATE_IMAGE_ID = "duplicate_image_id"


def drop_repeated_images(receipts: Sequence[ShardReceipt], *, errors_part_of: dict[int, str]) -> list[ShardReceipt]:
    """The receipts after moving every repeated image's row to the error table (parts rewritten).

    `receipts` are in input order; `errors_part_of[shard_index]` is where a shard's error part
    is staged when it has none yet.
    """
    image_ids = {r.shard_index: _read_table(r.predictions, ["image_id"]).column("image_id") for r in receipts if r.predictions}
    every_id = pa.chunked_array([chunk for column in image_ids.values() for chunk in column.chunks], pa.string())
    if len(pc.unique(every_id)) == len(every_id):  # the usual run: no id twice, found without a Python object per id
        return list(receipts)
    first_shard: dict[str, int] = {}
    result = []
    for receipt in receipts:
        if receipt.predictions is None:
            result.append(receipt)
            continue
        repeated = []
        for row, image_id in enumerate(image_ids[receipt.shard_index].to_pylist()):
            if image_id in first_shard:
                repeated.append(row)
            else:
                first_shard[image_id] = receipt.shard_index
        if not repeated:
            result.append(receipt)
            continue
        result.append(_move_to_errors(receipt, repeated, first_shard, errors_part_of[receipt.shard_index]))
    return result


def _move_to_errors(receipt: ShardReceipt, rows: list[int], first_shard: dict[str, int], new_errors_uri: str) -> ShardReceipt:
    predictions = _read_table(receipt.predictions)
    errors = _read_table(receipt.errors) if receipt.errors else None
    repeated_ids = predictions.column("image_id").take(rows).to_pylist()
    failed_indices = set(errors.column("record_index").to_pylist()) if errors is not None else set()
    indices = _record_indices(receipt.source_uri, set(repeated_ids), skip=failed_indices)
    scored_at = datetime.datetime.now(datetime.UTC)
    seen: collections.Counter[str] = collections.Counter()
    record_errors = []
    kept_rows = set(range(predictions.num_rows)) - set(rows)
    # Rows of one id in this part are in record order: the n-th row of an id is the n-th scored
    # record with that id; the rows kept (a first occurrence) come before the repeats here.
    kept_ids = predictions.column("image_id").take(pa.array(sorted(kept_rows), pa.int64())).to_pylist()
    kept_before = collections.Counter(kept_ids)
    for image_id in repeated_ids:
        position = kept_before[image_id] + seen[image_id]
        seen[image_id] += 1
        first = first_shard[image_id]
        where = "earlier in this shard" if first == receipt.shard_index else f"in input shard {first}"
        record_errors.append(
            RecordError(
                indices[image_id][position],
                DUPLICATE_IMAGE_ID,
                f"image_id {image_id!r} was already scored {where}",
                image_id=image_id,
            )
        )
    new_errors = pa.Table.from_batches([error_batch(record_errors, source_uri=receipt.source_uri, scored_at=scored_at)])
    combined = pa.concat_tables(
        [errors.cast(ERROR_SCHEMA) if errors is not None else ERROR_SCHEMA.empty_table(), new_errors.cast(ERROR_SCHEMA)]
    )
    # The part's lineage (run, date, model) is the same whichever part it is read from.
    lineage = (errors if errors is not None else predictions).schema.metadata
    combined = combined.sort_by("record_index").replace_schema_metadata(lineage)
    kept = predictions.filter(pa.array([row in kept_rows for row in range(predictions.num_rows)]))
    errors_uri = receipt.errors or new_errors_uri
    write_part(errors_uri, combined, dictionary_columns=DICTIONARY_COLUMNS)
    if kept.num_rows:
        write_part(receipt.predictions, kept, dictionary_columns=DICTIONARY_COLUMNS)
    else:
        storage.delete(receipt.predictions)  # an empty part is no part
    by_type = summed_counts(receipt.failed_by_type, {DUPLICATE_IMAGE_ID: len(rows)})
    return dataclasses.replace(
        receipt,
        scored=kept.num_rows,
        failed=combined.num_rows,
        failed_by_type=by_type,
        predictions=receipt.predictions if kept.num_rows else None,
        errors=errors_uri,
    )


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
