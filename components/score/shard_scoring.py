"""A group of shards scored: records in batches -> staged Parquet parts of the prediction and error tables, and a receipt.

Records are streamed with components.io.tfrecord (a damaged record or an unframeable byte range
becomes an error row, the next intact record is still read; with the shard's manifest entry,
every record it counts but the shard lacks is an error row too), parsed, decoded (a batch of
contract PNGs in one TensorFlow call; any other picture through components.io.images), scored
with one model call per batch, turned into one Arrow record batch and streamed into a
Parquet part. Memory is bounded by the batch and one row group, whatever the size of the input.

A group of consecutive shards is the unit of work: its shards' rows go, in shard order, into
one part per table, staged under a deterministic name (a retried group replaces its own
parts) with the group's receipt written last; the launcher (components.score.run) publishes them.
"""

import collections
import concurrent.futures
import dataclasses
import datetime
import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa

from components.constants import NUM_CLASSES, PROGRESS_LOG_FIELD
from components.contracts.schema import (
    DICTIONARY_COLUMNS,
    ERROR_SCHEMA,
    ERRORS_TABLE,
    PREDICTION_SCHEMA,
    PREDICTIONS_TABLE,
    with_lineage,
)
from components.contracts.shard_contract import EXIF_CHUNK, is_model_png
from components.contracts.shards import ShardExpectation
from components.contracts.summary import GroupReceipt, ShardReceipt, summed_counts
from components.io import storage
from components.io.images import ImageError, to_model_image
from components.io.parquet_parts import PartWriter
from components.io.tfrecord import Record, ShardReader
from components.score.model_scorer import ModelScorer
from components.score.prediction_rows import (
    NON_FINITE_SCORE,
    ParsedRecord,
    RecordError,
    error_batch,
    parse_record,
    parsed_example,
    prediction_batch,
)

log = logging.getLogger(__name__)

RECEIPTS_FOLDER = "receipts"
DEFAULT_BATCH_SIZE = 512
# Batches scored at once per shard. Two concurrent TensorFlow calls decode PNGs about twice
# as fast as one on two cores (measured: docs/benchmarks.md); more buys little and costs memory.
MODEL_THREADS = 2


@dataclasses.dataclass(frozen=True)
class ScoringTarget:
    """Where and under which names a run's shards are scored."""

    staging: str
    run_id: str
    run_date: str
    model_version: str
    batch_size: int = DEFAULT_BATCH_SIZE

    def part_schema(self, schema: pa.Schema) -> pa.Schema:
        """A table schema with this run's lineage in the part's key-value metadata."""
        return with_lineage(schema, run_id=self.run_id, run_date=self.run_date, model_version=self.model_version)


def staged_part_uri(staging: str, table: str, part: str) -> str:
    """Staging location of one group's part of a table."""
    return storage.join(staging, table, f"{part}.parquet")


def receipt_uri(staging: str, part: str) -> str:
    """Staging location of one group's receipt (written after its parts)."""
    return storage.join(staging, RECEIPTS_FOLDER, f"{part}.json")


def part_name(shard_index: int) -> str:
    """Name of the parts of the group whose first shard is number `shard_index` of the run's sorted inputs."""
    return f"part-{shard_index:05d}"


def _parse_batch(scorer: ModelScorer, records: Sequence[Record]) -> tuple[list[ParsedRecord], list[RecordError]]:
    """Parses a batch in one call; a batch holding a record that is no shard Example is parsed
    again record by record, so that record becomes an error row and the others are kept."""
    intact = [record for record in records if record.data is not None]
    columns = scorer.parse_examples([record.data for record in intact]) if intact else []
    if columns is None:
        results = [parse_record(record) for record in intact]
    else:
        results = [parsed_example(record.index, *features) for record, features in zip(intact, columns)]
    parsed = [result for result in results if isinstance(result, ParsedRecord)]
    errors = [result for result in results if isinstance(result, RecordError)]
    errors += [parse_record(record) for record in records if record.data is None]  # framing errors
    return parsed, errors


def _model_images(scorer: ModelScorer, parsed: Sequence[ParsedRecord]) -> tuple[dict[int, np.ndarray], list[RecordError]]:
    """28x28 model inputs in [0, 1] by position in `parsed`: contract PNGs decoded in one call,
    any other picture (JPEG, colour, any size) and any PNG of a batch that failed one by one."""
    contract = [position for position, record in enumerate(parsed) if is_model_png(record.example.encoded)]
    decoded = scorer.decode_model_pngs([parsed[position].example.encoded for position in contract]) if contract else None
    pixels: dict[int, np.ndarray] = dict(zip(contract, decoded)) if decoded is not None else {}
    errors: list[RecordError] = []
    for position, record in enumerate(parsed):
        if position not in pixels:
            try:
                pixels[position] = to_model_image(record.example.encoded).astype(np.float32) / np.float32(255.0)
            except ImageError as error:
                errors.append(RecordError(record.record_index, error.error_type, str(error), image_id=record.example.image_id))
    return pixels, errors


def _score_batch(
    records: Sequence[Record], *, scorer: ModelScorer, source_uri: str, target: ScoringTarget
) -> tuple[pa.RecordBatch, pa.RecordBatch]:
    """One batch of records -> (prediction rows, error rows), with one model call.

    The common case, a batch of intact contract records, is scored in one TensorFlow call;
    any other batch takes the careful path, which gives its clean records the same rows.
    """
    scored_at = datetime.datetime.now(datetime.UTC)
    # The one-call path checks is_model_png's header in TensorFlow; its eXIf test is done here,
    # on the whole records (TensorFlow's regex ops cannot search binary data), in one search
    # of the batch's bytes: a match spanning two records only sends the batch the careful way.
    data = [record.data for record in records]
    if None not in data and EXIF_CHUNK not in b"".join(data):
        clean = scorer.score_contract_batch(data)
        if clean is not None:
            image_ids, labels, probabilities, image_uris = clean
            return _table_batches(
                image_ids, labels, probabilities, image_uris, [], source_uri=source_uri, target=target, scored_at=scored_at
            )
    return _score_batch_carefully(records, scorer=scorer, source_uri=source_uri, target=target, scored_at=scored_at)


def _score_batch_carefully(
    records: Sequence[Record],
    *,
    scorer: ModelScorer,
    source_uri: str,
    target: ScoringTarget,
    scored_at: datetime.datetime,
) -> tuple[pa.RecordBatch, pa.RecordBatch]:
    """Parses, checks and decodes each kind of record its own way: one error row per bad record."""
    parsed, errors = _parse_batch(scorer, records)
    pixels, image_errors = _model_images(scorer, parsed)
    positions = sorted(pixels)
    probabilities = (
        scorer.probabilities(np.stack([pixels[p] for p in positions])) if positions else np.zeros((0, NUM_CLASSES), np.float32)
    )
    finite = np.isfinite(probabilities).all(axis=1)
    score_errors = [
        RecordError(
            parsed[position].record_index,
            NON_FINITE_SCORE,
            f"model output {np.array2string(row, precision=3)} is not finite",
            image_id=parsed[position].example.image_id,
        )
        for position, row, ok in zip(positions, probabilities, finite)
        if not ok
    ]
    scored = [parsed[position].example for position, ok in zip(positions, finite) if ok]
    return _table_batches(
        pa.array([example.image_id for example in scored], pa.string()),
        np.array([-1 if example.label is None else example.label for example in scored], np.int32),
        probabilities[finite],
        pa.array([example.image_uri for example in scored], pa.string()),
        sorted(errors + image_errors + score_errors, key=lambda error: error.record_index),
        source_uri=source_uri,
        target=target,
        scored_at=scored_at,
    )


def _table_batches(
    image_ids: pa.Array,
    labels: np.ndarray,
    probabilities: np.ndarray,
    image_uris: pa.Array,
    errors: Sequence[RecordError],
    *,
    source_uri: str,
    target: ScoringTarget,
    scored_at: datetime.datetime,
) -> tuple[pa.RecordBatch, pa.RecordBatch]:
    """The scored images and the failed records as rows of the prediction and error tables."""
    predictions = prediction_batch(
        image_ids=image_ids,
        source_uri=source_uri,
        probabilities=probabilities,
        true_labels=labels,
        model_version=target.model_version,
        scored_at=scored_at,
        image_uris=image_uris,
    )
    return predictions, error_batch(errors, source_uri=source_uri, scored_at=scored_at)


def score_batches(
    batches: Iterable[list[Record]],
    *,
    scorer: ModelScorer,
    source_uri: str,
    target: ScoringTarget,
    model_threads: concurrent.futures.Executor,
) -> Iterator[tuple[pa.RecordBatch, pa.RecordBatch]]:
    """Scores a stream of record batches: yields (prediction rows, error rows) per batch, in order.

    The stages overlap: while the `model_threads` (MODEL_THREADS of them) parse, decode and
    score earlier batches (mostly TensorFlow, which releases the GIL: two batches decode in
    parallel), this thread reads and frames the next one. At most MODEL_THREADS + 2 batches
    are in memory at once.
    """
    in_flight: collections.deque[concurrent.futures.Future] = collections.deque()
    for batch in batches:
        in_flight.append(model_threads.submit(_score_batch, batch, scorer=scorer, source_uri=source_uri, target=target))
        if len(in_flight) > MODEL_THREADS:
            yield in_flight.popleft().result()
    while in_flight:
        yield in_flight.popleft().result()


def score_group(
    shards: Sequence[tuple[int, str]],
    *,
    scorer: ModelScorer,
    target: ScoringTarget,
    expectations: Mapping[str, ShardExpectation] | None = None,
) -> GroupReceipt:
    """Scores a group of consecutive shards (index, URI) into one staged part per table; writes
    and returns its receipt.

    The group is the unit of work: its parts, writers and model threads are set up once for
    all its shards, so that small shards cost no more per image than large ones.
    """
    part = part_name(shards[0][0])
    expectations = expectations or {}
    with (
        PartWriter(
            staged_part_uri(target.staging, PREDICTIONS_TABLE, part),
            target.part_schema(PREDICTION_SCHEMA),
            dictionary_columns=DICTIONARY_COLUMNS,
        ) as predictions,
        PartWriter(
            staged_part_uri(target.staging, ERRORS_TABLE, part),
            target.part_schema(ERROR_SCHEMA),
            dictionary_columns=DICTIONARY_COLUMNS,
        ) as errors,
        concurrent.futures.ThreadPoolExecutor(MODEL_THREADS, thread_name_prefix="fmnist-model") as model_threads,
    ):
        shard_receipts = [
            score_shard(
                index,
                uri,
                scorer=scorer,
                target=target,
                predictions=predictions,
                errors=errors,
                model_threads=model_threads,
                expected=expectations.get(uri),
            )
            for index, uri in shards
        ]
    receipt = GroupReceipt(
        group_index=shards[0][0],
        shards=shard_receipts,
        predictions=predictions.uri if predictions.rows else None,
        errors=errors.uri if errors.rows else None,
    )
    storage.write_bytes(receipt_uri(target.staging, part), receipt.to_json().encode())
    return receipt


def score_shard(
    shard_index: int,
    shard_uri: str,
    *,
    scorer: ModelScorer,
    target: ScoringTarget,
    predictions: PartWriter,
    errors: PartWriter,
    model_threads: concurrent.futures.Executor,
    expected: ShardExpectation | None = None,
) -> ShardReceipt:
    """Scores one shard: its rows are appended to the group's part writers; returns its counts.

    With the manifest's `expected` count, every record the shard lacks is an error row, so
    that read = expected = scored + failed; the receipt carries the shard's SHA-256 beside
    the manifest's, for the launcher to compare.
    """
    started = time.monotonic()
    source_uri = storage.absolute_uri(shard_uri)  # lineage that holds wherever the tables are read
    read = scored = failed = 0

    def counted(batches: Iterable[list[Record]]) -> Iterator[list[Record]]:
        nonlocal read
        for batch in batches:
            read += len(batch)
            yield batch

    failed_by_type: dict[str, int] = {}
    with storage.open_read(shard_uri) as stream:
        reader = ShardReader(stream, expected_records=expected.num_records if expected else None)
        batches = counted(reader.batches(target.batch_size))
        for prediction_rows, error_rows in score_batches(
            batches, scorer=scorer, source_uri=source_uri, target=target, model_threads=model_threads
        ):
            predictions.write(prediction_rows)
            errors.write(error_rows)
            scored += prediction_rows.num_rows
            failed += error_rows.num_rows
            failed_by_type = summed_counts(failed_by_type, collections.Counter(error_rows.column("error_type").to_pylist()))
    seconds = time.monotonic() - started
    log.info(
        "scored shard %s: %d records (%d scored, %d failed) in %.1f s, %.0f images/s",
        shard_uri,
        read,
        scored,
        failed,
        seconds,
        read / seconds if seconds else 0.0,
        extra={PROGRESS_LOG_FIELD: {"unit": "shards", "items": read}},
    )
    return ShardReceipt(
        shard_index=shard_index,
        source_uri=source_uri,
        read=read,
        scored=scored,
        failed=failed,
        failed_by_type=failed_by_type,
        expected=expected.num_records if expected else None,
        sha256=reader.sha256,
        expected_sha256=expected.sha256 if expected else None,
    )
