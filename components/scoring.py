"""The scoring pipeline: image shards -> staged Parquet parts of the prediction and error tables.

    ScoreShards: ListShards -> DistributeShards (Reshuffle) -> ScoreShard (one DoFn call per shard)

The unit of parallel work is a shard. Within a shard the work is in batches: records are
streamed with components.tfrecord (a damaged record becomes an error row, the next one is
still read), parsed, decoded (a batch of contract PNGs in one TensorFlow call; any other
picture through components.images), scored with one model call per batch, turned into one
Arrow record batch and streamed into a Parquet part. Memory is bounded by the batch and
one row group, whatever the size of the input.

Each shard's parts are staged under unique, deterministic names (a retried bundle replaces
its own parts) with a receipt written last; the launcher (components.score_run) publishes
them. The model is loaded once per worker process (apache_beam.utils.shared).

Model contract (from training): `model.keras` maps float32 images scaled to [0, 1], shaped
(28, 28), (28, 28, 1) or (784,), to 10 logits; a model whose last layer is a softmax
already returns probabilities and gets no second softmax.
"""
import concurrent.futures
import dataclasses
import datetime
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.utils import shared

from components import storage
from components.constants import IMAGE_SIZE, NUM_CLASSES
from components.errors import InputError
from components.images import ImageError, to_model_image
from components.parquet_parts import PartWriter
from components.prediction_rows import (
    ParsedRecord,
    RecordError,
    error_batch,
    is_model_png,
    parse_record,
    prediction_batch,
)
from components.schema import ERROR_SCHEMA, ERRORS_TABLE, PREDICTION_SCHEMA, PREDICTIONS_TABLE
from components.tfrecord import Record, read_records

COUNTER_NAMESPACE = "fmnist_score"
RECEIPTS_FOLDER = "receipts"
DEFAULT_BATCH_SIZE = 1024


# --- The model ----------------------------------------------------------------------------


def load_model(keras_uri: str):  # -> keras.Model
    """Loads a `.keras` file from any URI (copied to a local temporary file first)."""
    import keras

    with tempfile.TemporaryDirectory(prefix="fmnist-model-") as folder:
        local = os.path.join(folder, "model.keras")
        storage.download_file(keras_uri, local)
        return keras.saving.load_model(local, compile=False)


def check_model_fits(model, keras_uri: str) -> None:
    """InputError unless the model takes one 28x28 image per row and returns 10 class scores."""
    try:
        input_shape, output_shape = tuple(model.input_shape), tuple(model.output_shape)
    except (AttributeError, ValueError) as error:  # a subclassed model that was never built
        raise InputError(f"{keras_uri}: model has no defined input/output shape ({error})") from error
    image_dims = input_shape[1:]
    if None in image_dims or int(np.prod(image_dims)) != IMAGE_SIZE * IMAGE_SIZE:
        raise InputError(f"{keras_uri}: model input shape {input_shape} does not fit {IMAGE_SIZE}x{IMAGE_SIZE} images")
    if output_shape[1:] != (NUM_CLASSES,):
        raise InputError(f"{keras_uri}: model output shape {output_shape} is not {NUM_CLASSES} class scores")


def _returns_probabilities(model) -> bool:
    import keras

    last = model.layers[-1]
    return isinstance(last, keras.layers.Softmax) or getattr(last, "activation", None) is keras.activations.softmax


class ModelScorer:
    """A model plus the compiled batch functions that feed it (one per worker process)."""

    def __init__(self, model) -> None:
        import tensorflow as tf

        self.model = model
        input_dims = tuple(model.input_shape[1:])
        softmax = not _returns_probabilities(model)

        def probabilities(images):
            x = tf.reshape(tf.cast(images, tf.float32) / 255.0, (-1, *input_dims))
            outputs = model(x, training=False)
            return tf.nn.softmax(outputs) if softmax else outputs

        def decode(encoded):
            return tf.map_fn(
                lambda png: tf.io.decode_png(png, channels=1)[:, :, 0], encoded,
                fn_output_signature=tf.TensorSpec((IMAGE_SIZE, IMAGE_SIZE), tf.uint8),
            )

        image_batch = tf.TensorSpec((None, IMAGE_SIZE, IMAGE_SIZE), tf.uint8)
        self._probabilities = tf.function(probabilities, input_signature=[image_batch])
        self._decode = tf.function(decode, input_signature=[tf.TensorSpec((None,), tf.string)])
        self._decode_error = tf.errors.InvalidArgumentError

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """(n, 10) float32 class probabilities of (n, 28, 28) uint8 images: one model call."""
        return self._probabilities(images).numpy()

    def decode_model_pngs(self, encoded: Sequence[bytes]) -> np.ndarray | None:
        """(n, 28, 28) uint8 pixels of contract PNGs in one call; None if any fails to decode."""
        try:
            return self._decode(np.array(encoded, dtype=object)).numpy()
        except self._decode_error:
            return None  # the caller decodes one by one and reports the bad one(s)


# --- One shard ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ScoringTarget:
    """Where and under which names a run's shards are scored."""

    staging: str
    run_id: str
    model_version: str
    batch_size: int = DEFAULT_BATCH_SIZE


def staged_part_uri(staging: str, table: str, part: str) -> str:
    """Staging location of one shard's part of a table."""
    return storage.join(staging, table, f"{part}.parquet")


def receipt_uri(staging: str, part: str) -> str:
    """Staging location of one shard's receipt (written after its parts)."""
    return storage.join(staging, RECEIPTS_FOLDER, f"{part}.json")


def part_name(shard_index: int) -> str:
    """Name of the parts made from shard number `shard_index` of the run's sorted inputs."""
    return f"part-{shard_index:05d}"


@dataclasses.dataclass
class _Batch:
    """One batch on its way through scoring (owned by one thread at a time)."""

    scored_at: datetime.datetime
    parsed: list[ParsedRecord]
    errors: list[RecordError]
    pixels: dict[int, np.ndarray]  # position in `parsed` -> 28x28 model image
    contract_pngs: list[int]  # positions whose PNGs are decoded together


def _prepare_batch(records: Sequence[Record]) -> _Batch:
    """Parses a batch and converts the pictures that need components.images (Python, per record)."""
    batch = _Batch(datetime.datetime.now(datetime.timezone.utc), [], [], {}, [])
    for record in records:
        result = parse_record(record)
        if isinstance(result, RecordError):
            batch.errors.append(result)
            continue
        position = len(batch.parsed)
        batch.parsed.append(result)
        if is_model_png(result.example.encoded):
            batch.contract_pngs.append(position)
        else:  # JPEG, colour, any size: converted the way prepare-images does
            _convert_one(batch, position)
    return batch


def _convert_one(batch: _Batch, position: int) -> None:
    record = batch.parsed[position]
    try:
        batch.pixels[position] = to_model_image(record.example.encoded)
    except ImageError as error:
        batch.errors.append(RecordError(record.record_index, error.error_type, str(error), image_id=record.example.image_id))


def _infer_batch(scorer: ModelScorer, batch: _Batch) -> tuple[list[int], np.ndarray]:
    """Decodes the batch's contract PNGs in one call and scores every image in one model call."""
    if batch.contract_pngs:
        decoded = scorer.decode_model_pngs([batch.parsed[p].example.encoded for p in batch.contract_pngs])
        if decoded is None:  # some PNG is damaged: find it (and keep the others) one by one
            for position in batch.contract_pngs:
                _convert_one(batch, position)
        else:
            batch.pixels.update(zip(batch.contract_pngs, decoded))
    positions = sorted(batch.pixels)
    if not positions:
        return positions, np.zeros((0, NUM_CLASSES), np.float32)
    return positions, scorer.probabilities(np.stack([batch.pixels[p] for p in positions]))


def _batch_tables(
    batch: _Batch, positions: list[int], probabilities: np.ndarray, *, source_uri: str, target: ScoringTarget
) -> tuple[pa.RecordBatch, pa.RecordBatch]:
    scored = [batch.parsed[position].example for position in positions]
    predictions = prediction_batch(
        image_ids=[example.image_id for example in scored],
        source_uri=source_uri,
        probabilities=probabilities,
        true_labels=[example.label for example in scored],
        model_version=target.model_version,
        run_id=target.run_id,
        scored_at=batch.scored_at,
    )
    errors = sorted(batch.errors, key=lambda error: error.record_index)
    return predictions, error_batch(errors, source_uri=source_uri, run_id=target.run_id, scored_at=batch.scored_at)


def _record_batches(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    batch: list[Record] = []
    for record in records:
        batch.append(record)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def score_records(
    records: Iterable[Record], *, scorer: ModelScorer, source_uri: str, target: ScoringTarget
) -> Iterator[tuple[pa.RecordBatch, pa.RecordBatch]]:
    """Scores a stream of records in batches: yields (prediction rows, error rows) per batch.

    Two stages overlap: while a model thread decodes and scores batch k (TensorFlow, which
    releases the GIL), this thread reads and parses batch k+1. At most two batches are in
    memory at once.
    """
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="fmnist-model") as model_thread:
        in_flight: tuple[_Batch, concurrent.futures.Future] | None = None
        for records_batch in _record_batches(records, target.batch_size):
            batch = _prepare_batch(records_batch)
            future = model_thread.submit(_infer_batch, scorer, batch)
            if in_flight is not None:
                yield _batch_tables(in_flight[0], *in_flight[1].result(), source_uri=source_uri, target=target)
            in_flight = (batch, future)
        if in_flight is not None:
            yield _batch_tables(in_flight[0], *in_flight[1].result(), source_uri=source_uri, target=target)


def score_shard(shard_index: int, shard_uri: str, *, scorer: ModelScorer, target: ScoringTarget) -> dict:
    """Scores one shard into staged parts; writes and returns its receipt (the counts)."""
    part = part_name(shard_index)
    read = 0

    def counted(records: Iterable[Record]) -> Iterator[Record]:
        nonlocal read
        for record in records:
            read += 1
            yield record

    failed_by_type: dict[str, int] = {}
    with (
        storage.open_read(shard_uri) as stream,
        PartWriter(staged_part_uri(target.staging, PREDICTIONS_TABLE, part), PREDICTION_SCHEMA) as predictions,
        PartWriter(staged_part_uri(target.staging, ERRORS_TABLE, part), ERROR_SCHEMA) as errors,
    ):
        for prediction_rows, error_rows in score_records(
            counted(read_records(stream)), scorer=scorer, source_uri=shard_uri, target=target
        ):
            predictions.write(prediction_rows)
            errors.write(error_rows)
            for error_type in error_rows.column("error_type").to_pylist():
                failed_by_type[error_type] = failed_by_type.get(error_type, 0) + 1
    receipt = {
        "shard_index": shard_index,
        "source_uri": shard_uri,
        "read": read,
        "scored": predictions.rows,
        "failed": errors.rows,
        "failed_by_type": failed_by_type,
        PREDICTIONS_TABLE: staged_part_uri(target.staging, PREDICTIONS_TABLE, part) if predictions.rows else None,
        ERRORS_TABLE: staged_part_uri(target.staging, ERRORS_TABLE, part) if errors.rows else None,
    }
    storage.write_bytes(receipt_uri(target.staging, part), json.dumps(receipt).encode())
    return receipt


# --- The pipeline -------------------------------------------------------------------------


class ScoreShardFn(beam.DoFn):
    """(shard index, shard URI) -> the shard's receipt, parts staged; counts as Beam counters."""

    def __init__(self, *, keras_uri: str, target: ScoringTarget) -> None:
        self._keras_uri = keras_uri
        self._target = target
        self._shared_model = shared.Shared()
        self._scorer: ModelScorer | None = None

    def setup(self) -> None:
        # One model per worker process, however many threads run this DoFn.
        self._scorer = self._shared_model.acquire(lambda: ModelScorer(load_model(self._keras_uri)), tag=self._keras_uri)

    def process(self, element: tuple[int, str]) -> Iterator[dict]:
        shard_index, shard_uri = element
        receipt = score_shard(shard_index, shard_uri, scorer=self._scorer, target=self._target)
        Metrics.counter(COUNTER_NAMESPACE, "shards").inc()
        for name in ("read", "scored", "failed"):
            Metrics.counter(COUNTER_NAMESPACE, f"records_{name}").inc(receipt[name])
        for error_type, count in receipt["failed_by_type"].items():
            Metrics.counter(COUNTER_NAMESPACE, f"failed_{error_type}").inc(count)
        yield receipt


class ScoreShards(beam.PTransform):
    """Root transform: scores the given shards in parallel; a PCollection of their receipts."""

    def __init__(self, *, shard_uris: Sequence[str], keras_uri: str, target: ScoringTarget) -> None:
        super().__init__()
        self._shard_uris = list(shard_uris)
        self._keras_uri = keras_uri
        self._target = target

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        return (
            pbegin
            | "ListShards" >> beam.Create(list(enumerate(self._shard_uris)))
            # Create emits one bundle; reshuffling spreads the shards over the workers.
            | "DistributeShards" >> beam.Reshuffle()
            | "ScoreShard" >> beam.ParDo(ScoreShardFn(keras_uri=self._keras_uri, target=self._target))
        )


def build_pipeline(
    *, shard_uris: Sequence[str], keras_uri: str, target: ScoringTarget, options: PipelineOptions
) -> beam.Pipeline:
    """The scoring pipeline over the given shards, built but not run."""
    pipeline = beam.Pipeline(options=options)
    _ = pipeline | "ScoreShards" >> ScoreShards(shard_uris=shard_uris, keras_uri=keras_uri, target=target)
    return pipeline
