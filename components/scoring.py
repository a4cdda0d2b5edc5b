"""The scoring pipeline: image shards -> staged Parquet parts of the prediction and error tables.

    ScoreShards: ListShards -> DistributeShards (Reshuffle) -> ScoreShard (one DoFn call per shard)

The unit of parallel work is a shard. Within a shard the work is in batches: records are
streamed with components.tfrecord (a damaged record or an unframeable byte range becomes
an error row, the next intact record is still read; with the shard's manifest entry, every
record it counts but the shard lacks is an error row too), parsed, decoded (a batch of
contract PNGs in one TensorFlow call; any other picture through components.images), scored
with one model call per batch, turned into one Arrow record batch and streamed into a Parquet
part. Memory is bounded by the batch and
one row group, whatever the size of the input.

Each shard's parts are staged under unique, deterministic names (a retried bundle replaces
its own parts) with a receipt written last; the launcher (components.score_run) publishes
them. The model is loaded once per worker process (apache_beam.utils.shared), and once per
process when the launcher runs in it (load_model).

Model contract (components.models, components.training_data): `model.keras` maps float32
images scaled to [0, 1] (decoded by training's own `decode_png_images`), shaped (28, 28),
(28, 28, 1) or (784,), to 10 logits; a model whose last layer is a softmax already returns
probabilities and gets no second softmax.
"""

import collections
import concurrent.futures
import dataclasses
import datetime
import hashlib
import logging
import os
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.utils import shared

from components import storage
from components.constants import FEATURE_FORMAT, FEATURE_IMAGE, FEATURE_IMAGE_ID, FEATURE_LABEL, IMAGE_SIZE, NUM_CLASSES
from components.contracts import ShardReceipt
from components.errors import InputError
from components.images import ImageError, to_model_image
from components.parquet_parts import PartWriter
from components.prediction_rows import (
    EXIF_CHUNK,
    MODEL_PNG_HEADER,
    NON_FINITE_SCORE,
    ParsedRecord,
    RecordError,
    error_batch,
    is_model_png,
    parse_record,
    parsed_example,
    prediction_batch,
)
from components.schema import ERROR_SCHEMA, ERRORS_TABLE, PREDICTION_SCHEMA, PREDICTIONS_TABLE, with_lineage
from components.shards import ShardExpectation
from components.tfrecord import Record, ShardReader
from components.training_data import decode_png_images

log = logging.getLogger(__name__)

COUNTER_NAMESPACE = "fmnist_score"
RECEIPTS_FOLDER = "receipts"
DEFAULT_BATCH_SIZE = 512
# Batches scored at once per shard. Two concurrent TensorFlow calls decode PNGs about twice
# as fast as one on two cores (measured: docs/benchmarks.md); more buys little and costs memory.
MODEL_THREADS = 2


# --- The model ----------------------------------------------------------------------------

_loaded_model: dict[str, object] = {}  # content digest of a .keras file -> its model
_LOADED_MODEL_LOCK = threading.Lock()


def load_model(keras_uri: str):  # -> keras.Model
    """Loads a `.keras` file from any URI (copied to a local temporary file first).

    The launcher checks the model and the workers score with it: in one process (the local
    runner) the file is deserialized once, the second caller gets the same model if the
    file's content is the same. Only the last model loaded is kept.
    """
    import keras

    with tempfile.TemporaryDirectory(prefix="fmnist-model-") as folder:
        local = os.path.join(folder, "model.keras")
        storage.download_file(keras_uri, local)
        with open(local, "rb") as file:
            digest = hashlib.file_digest(file, "sha256").hexdigest()
        with _LOADED_MODEL_LOCK:
            if digest not in _loaded_model:
                _loaded_model.clear()
                try:
                    _loaded_model[digest] = keras.saving.load_model(local, compile=False)
                except (ValueError, KeyError, TypeError, zipfile.BadZipFile) as error:
                    # Keras's own message names the temporary copy (and says "File not found" for a
                    # damaged zip): name the file the user gave instead.
                    raise InputError(f"{keras_uri}: damaged or not a Keras model file ({type(error).__name__})") from error
            return _loaded_model[digest]


def check_model_fits(model, keras_uri: str) -> None:
    """InputError unless the model takes one 28x28 image per row and returns 10 finite class scores."""
    try:
        input_shape, output_shape = tuple(model.input_shape), tuple(model.output_shape)
    except (AttributeError, ValueError) as error:  # a subclassed model that was never built
        raise InputError(f"{keras_uri}: model has no defined input/output shape ({error})") from error
    image_dims = input_shape[1:]
    if None in image_dims or int(np.prod(image_dims)) != IMAGE_SIZE * IMAGE_SIZE:
        raise InputError(f"{keras_uri}: model input shape {input_shape} does not fit {IMAGE_SIZE}x{IMAGE_SIZE} images")
    if output_shape[1:] != (NUM_CLASSES,):
        raise InputError(f"{keras_uri}: model output shape {output_shape} is not {NUM_CLASSES} class scores")
    outputs = np.asarray(model(probe_images().reshape((-1, *image_dims)), training=False))
    if not np.isfinite(outputs).all():
        raise InputError(f"{keras_uri}: model output on a probe batch is not finite (NaN or infinity)")


def probe_images() -> np.ndarray:
    """A few model inputs spanning what scoring feeds a model: black, white, grey, noise."""
    noise = np.random.default_rng(0).random((4, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    plain = np.ones((3, IMAGE_SIZE, IMAGE_SIZE), np.float32) * np.float32([0.0, 0.5, 1.0])[:, None, None]
    return np.concatenate([plain, noise])


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
            outputs = model(tf.reshape(images, (-1, *input_dims)), training=False)
            return tf.nn.softmax(outputs) if softmax else outputs

        features = {
            # Required and single-valued: a record without them fails the vectorized parse,
            # and the batch is parsed again record by record (which names the problem).
            FEATURE_IMAGE_ID: tf.io.FixedLenFeature([], tf.string),
            FEATURE_IMAGE: tf.io.FixedLenFeature([], tf.string),
            FEATURE_FORMAT: tf.io.FixedLenFeature([], tf.string, default_value=""),
            FEATURE_LABEL: tf.io.RaggedFeature(tf.int64),  # absent for unlabeled data
        }

        def parse(serialized):
            example = tf.io.parse_example(serialized, features)
            label = example[FEATURE_LABEL]
            return (example[FEATURE_IMAGE_ID], example[FEATURE_IMAGE], example[FEATURE_FORMAT], label.values, label.row_splits)

        strings = tf.TensorSpec((None,), tf.string)
        self._parse = tf.function(parse, input_signature=[strings], autograph=False)
        # Training's own decoding (PNG -> [0, 1] floats), so scoring and training never disagree.
        self._decode = tf.function(decode_png_images, input_signature=[strings], autograph=False)
        self._probabilities = tf.function(
            probabilities, input_signature=[tf.TensorSpec((None, IMAGE_SIZE, IMAGE_SIZE), tf.float32)], autograph=False
        )
        self._invalid_argument = tf.errors.InvalidArgumentError
        model_png_header = tf.constant(MODEL_PNG_HEADER)

        def score_contract_batch(serialized):
            # Parse, check, decode and score in one call: the batch stays inside TensorFlow
            # (which runs it without the GIL) from the serialized records to the probabilities.
            image_ids, encoded, _, label_values, label_splits = parse(serialized)
            labels = tf.RaggedTensor.from_row_splits(label_values, label_splits)
            contract = tf.reduce_all(
                (tf.strings.length(image_ids) > 0)
                & (tf.strings.substr(encoded, 0, len(MODEL_PNG_HEADER)) == model_png_header)
                & (labels.row_lengths() <= 1)
            ) & tf.reduce_all((label_values >= 0) & (label_values < NUM_CLASSES))
            scores = tf.cond(
                contract, lambda: probabilities(decode_png_images(encoded)), lambda: tf.zeros((0, NUM_CLASSES), tf.float32)
            )
            contract = contract & tf.reduce_all(tf.math.is_finite(scores))
            # -1 where a record has no label (unlabeled data)
            first_labels = labels.to_tensor(default_value=-1, shape=[None, 1])[:, 0]
            return contract, image_ids, first_labels, scores

        self._score_contract_batch = tf.function(score_contract_batch, input_signature=[strings], autograph=False)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """(n, 10) float32 class probabilities of (n, 28, 28) model inputs in [0, 1]: one model call."""
        return self._probabilities(images).numpy()

    def decode_model_pngs(self, encoded: Sequence[bytes]) -> np.ndarray | None:
        """(n, 28, 28) model inputs in [0, 1] of contract PNGs, in one call; None if any fails to decode."""
        try:
            return self._decode(np.array(encoded, dtype=object)).numpy()
        except (self._invalid_argument, UnicodeDecodeError):  # see parse_examples
            return None  # the caller decodes one by one and reports the bad one(s)

    def parse_examples(self, serialized: Sequence[bytes]) -> list[tuple[bytes, bytes, bytes, list[int]]] | None:
        """(image_id, encoded, format, labels) of each Example, parsed in one call; None if any fails."""
        try:
            tensors = self._parse(np.array(serialized, dtype=object))
        except (self._invalid_argument, UnicodeDecodeError):
            # UnicodeDecodeError: TensorFlow fails to build its error message when it quotes the
            # bad record's non-UTF-8 bytes; it is the same parse failure.
            return None  # the caller parses one by one and reports the bad one(s)
        image_ids, encoded, formats, label_values, label_splits = (t.numpy() for t in tensors)
        values, splits = label_values.tolist(), label_splits.tolist()
        labels = [values[start:end] for start, end in zip(splits, splits[1:])]
        return list(zip(image_ids.tolist(), encoded.tolist(), formats.tolist(), labels))

    def score_contract_batch(self, serialized: Sequence[bytes]) -> tuple[list[str], list[int | None], np.ndarray] | None:
        """(image_ids, labels, (n, 10) probabilities) of a batch of shard Examples holding model
        PNGs with non-empty ids and at most one label in 0-9, scored finite, in one call; None
        if any record is not such an Example (the caller then takes the careful path, which
        finds and reports the bad ones)."""
        try:
            # A list converts to a string tensor faster than a numpy object array.
            contract, image_ids, labels, scores = self._score_contract_batch(list(serialized))
            if not contract:
                return None
            ids = [image_id.decode() for image_id in image_ids.numpy()]
        except (self._invalid_argument, UnicodeDecodeError):  # see parse_examples
            return None
        return ids, [None if label < 0 else label for label in labels.numpy().tolist()], scores.numpy()


# --- One shard ----------------------------------------------------------------------------


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
    """Staging location of one shard's part of a table."""
    return storage.join(staging, table, f"{part}.parquet")


def receipt_uri(staging: str, part: str) -> str:
    """Staging location of one shard's receipt (written after its parts)."""
    return storage.join(staging, RECEIPTS_FOLDER, f"{part}.json")


def part_name(shard_index: int) -> str:
    """Name of the parts made from shard number `shard_index` of the run's sorted inputs."""
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
    # on the whole record (TensorFlow's regex ops cannot search binary data).
    if all(record.data is not None and EXIF_CHUNK not in record.data for record in records):
        clean = scorer.score_contract_batch([record.data for record in records])
        if clean is not None:
            image_ids, labels, probabilities = clean
            return _table_batches(image_ids, labels, probabilities, [], source_uri=source_uri, target=target, scored_at=scored_at)
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
        [example.image_id for example in scored],
        [example.label for example in scored],
        probabilities[finite],
        sorted(errors + image_errors + score_errors, key=lambda error: error.record_index),
        source_uri=source_uri,
        target=target,
        scored_at=scored_at,
    )


def _table_batches(
    image_ids: Sequence[str],
    labels: Sequence[int | None],
    probabilities: np.ndarray,
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
    )
    return predictions, error_batch(errors, source_uri=source_uri, scored_at=scored_at)


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
    """Scores a stream of records in batches: yields (prediction rows, error rows) per batch, in order.

    The stages overlap: while model threads parse, decode and score earlier batches (mostly
    TensorFlow, which releases the GIL: two batches decode in parallel), this thread reads
    and frames the next one. At most MODEL_THREADS + 2 batches are in memory at once.
    """
    with concurrent.futures.ThreadPoolExecutor(MODEL_THREADS, thread_name_prefix="fmnist-model") as model_threads:
        in_flight: collections.deque[concurrent.futures.Future] = collections.deque()
        for batch in _record_batches(records, target.batch_size):
            in_flight.append(model_threads.submit(_score_batch, batch, scorer=scorer, source_uri=source_uri, target=target))
            if len(in_flight) > MODEL_THREADS:
                yield in_flight.popleft().result()
        while in_flight:
            yield in_flight.popleft().result()


def score_shard(
    shard_index: int,
    shard_uri: str,
    *,
    scorer: ModelScorer,
    target: ScoringTarget,
    expected: ShardExpectation | None = None,
) -> ShardReceipt:
    """Scores one shard into staged parts; writes and returns its receipt (the counts).

    With the manifest's `expected` count, every record the shard lacks is an error row, so
    that read = expected = scored + failed; the receipt carries the shard's SHA-256 beside
    the manifest's, for the launcher to compare.
    """
    started = time.monotonic()
    part = part_name(shard_index)
    source_uri = storage.absolute_uri(shard_uri)  # lineage that holds wherever the tables are read
    read = 0

    def counted(records: Iterable[Record]) -> Iterator[Record]:
        nonlocal read
        for record in records:
            read += 1
            yield record

    failed_by_type: dict[str, int] = {}
    with (
        storage.open_read(shard_uri) as stream,
        PartWriter(
            staged_part_uri(target.staging, PREDICTIONS_TABLE, part), target.part_schema(PREDICTION_SCHEMA)
        ) as predictions,
        PartWriter(staged_part_uri(target.staging, ERRORS_TABLE, part), target.part_schema(ERROR_SCHEMA)) as errors,
    ):
        reader = ShardReader(stream, expected_records=expected.num_records if expected else None)
        for prediction_rows, error_rows in score_records(counted(reader), scorer=scorer, source_uri=source_uri, target=target):
            predictions.write(prediction_rows)
            errors.write(error_rows)
            for error_type in error_rows.column("error_type").to_pylist():
                failed_by_type[error_type] = failed_by_type.get(error_type, 0) + 1
    receipt = ShardReceipt(
        shard_index=shard_index,
        source_uri=source_uri,
        read=read,
        scored=predictions.rows,
        failed=errors.rows,
        failed_by_type=failed_by_type,
        predictions=staged_part_uri(target.staging, PREDICTIONS_TABLE, part) if predictions.rows else None,
        errors=staged_part_uri(target.staging, ERRORS_TABLE, part) if errors.rows else None,
        expected=expected.num_records if expected else None,
        sha256=reader.sha256,
        expected_sha256=expected.sha256 if expected else None,
    )
    storage.write_bytes(receipt_uri(target.staging, part), receipt.to_json().encode())
    seconds = time.monotonic() - started
    log.info(
        "scored shard %s: %d records (%d scored, %d failed) in %.1f s, %.0f images/s",
        shard_uri,
        read,
        predictions.rows,
        errors.rows,
        seconds,
        read / seconds if seconds else 0.0,
    )
    return receipt


# --- The pipeline -------------------------------------------------------------------------


class ScoreShardFn(beam.DoFn):
    """(shard index, shard URI) -> the shard's receipt, parts staged; counts as Beam counters."""

    def __init__(
        self, *, keras_uri: str, target: ScoringTarget, expectations: Mapping[str, ShardExpectation] | None = None
    ) -> None:
        self._keras_uri = keras_uri
        self._target = target
        self._expectations = dict(expectations or {})
        self._shared_model = shared.Shared()
        self._scorer: ModelScorer | None = None

    def setup(self) -> None:
        # One model per worker process, however many threads run this DoFn.
        self._scorer = self._shared_model.acquire(lambda: ModelScorer(load_model(self._keras_uri)), tag=self._keras_uri)

    def process(self, element: tuple[int, str]) -> Iterator[ShardReceipt]:
        shard_index, shard_uri = element
        receipt = score_shard(
            shard_index, shard_uri, scorer=self._scorer, target=self._target, expected=self._expectations.get(shard_uri)
        )
        Metrics.counter(COUNTER_NAMESPACE, "shards").inc()
        for name in ("read", "scored", "failed"):
            Metrics.counter(COUNTER_NAMESPACE, f"records_{name}").inc(getattr(receipt, name))
        for error_type, count in receipt.failed_by_type.items():
            Metrics.counter(COUNTER_NAMESPACE, f"failed_{error_type}").inc(count)
        yield receipt


class ScoreShards(beam.PTransform):
    """Root transform: scores the given shards in parallel; a PCollection of their receipts.

    `expectations` (shard URI -> its manifest entry) makes each shard reconcile with its manifest.
    """

    def __init__(
        self,
        *,
        shard_uris: Sequence[str],
        keras_uri: str,
        target: ScoringTarget,
        expectations: Mapping[str, ShardExpectation] | None = None,
    ) -> None:
        super().__init__()
        self._shard_uris = list(shard_uris)
        self._keras_uri = keras_uri
        self._target = target
        self._expectations = dict(expectations or {})

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        return (
            pbegin
            # Create would reshuffle on its own; one (named) reshuffle is enough to spread the
            # shards over the workers, the second cost a stage of start-up.
            | "ListShards" >> beam.Create(list(enumerate(self._shard_uris)), reshuffle=False)
            | "DistributeShards" >> beam.Reshuffle()
            | "ScoreShard"
            >> beam.ParDo(ScoreShardFn(keras_uri=self._keras_uri, target=self._target, expectations=self._expectations))
        )


def build_pipeline(
    *,
    shard_uris: Sequence[str],
    keras_uri: str,
    target: ScoringTarget,
    options: PipelineOptions,
    expectations: Mapping[str, ShardExpectation] | None = None,
) -> beam.Pipeline:
    """The scoring pipeline over the given shards, built but not run."""
    pipeline = beam.Pipeline(options=options)
    _ = pipeline | "ScoreShards" >> ScoreShards(
        shard_uris=shard_uris, keras_uri=keras_uri, target=target, expectations=expectations
    )
    return pipeline
