"""Pure conversions of batch scoring: shard records -> model inputs or error rows; model
outputs -> Arrow record batches of the prediction and error tables (components/contracts/schema.py).

No I/O, no TensorFlow: everything here is a function of its arguments, tested on its own.
Work is per batch where it can be (one Arrow batch per model call); only the checks that
must look at each record (framing, Example parse, image header) are per record.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from components.constants import CLASS_NAMES, FEATURE_IMAGE, FEATURE_IMAGE_ID, NUM_CLASSES
from components.contracts.schema import ERROR_SCHEMA, PREDICTION_SCHEMA
from components.contracts.shards import BadLabel, ShardExample, parse_example, single_label
from components.io.tfrecord import CORRUPT_RECORD, Record

# Error types beyond those of the TFRecord reader (corrupt_record, truncated_record,
# unreadable_record) and of components.io.images (decode_error, bad_shape).
INVALID_EXAMPLE = "invalid_example"  # framing is intact, the bytes are no tf.train.Example of the contract
MISSING_FEATURE = "missing_feature"  # no image_id or image, or an empty one
BAD_LABEL = "bad_label"  # a label that is not one int64 in 0-9: the record breaks the shard contract
NON_FINITE_SCORE = "non_finite_score"  # the model gave the image a NaN or infinite probability

_CLASS_NAMES = np.array(CLASS_NAMES, dtype=object)
_PROBABILITIES_TYPE = PREDICTION_SCHEMA.field("probabilities").type


@dataclasses.dataclass(frozen=True)
class RecordError:
    """Why one record of a shard produced no prediction."""

    record_index: int
    error_type: str
    error_message: str
    image_id: str | None = None


@dataclasses.dataclass(frozen=True)
class ParsedRecord:
    """A record that parsed into a shard Example, with its position in the shard."""

    record_index: int
    example: ShardExample


def parse_record(record: Record) -> ParsedRecord | RecordError:
    """A framed record as a shard Example, or the error row's reason why it is none."""
    if record.data is None:
        return RecordError(record.index, record.error_type or CORRUPT_RECORD, record.error_message or "unreadable record")
    try:
        example = parse_example(record.data)
    except KeyError as error:
        return _missing_feature(record.index, error.args[0])
    except BadLabel as error:
        return RecordError(record.index, BAD_LABEL, str(error), image_id=error.image_id)
    except ValueError as error:  # no Example, a feature with two values, or an image_id that is not UTF-8
        return RecordError(record.index, INVALID_EXAMPLE, str(error))
    return _checked(record.index, example)


def parsed_example(
    record_index: int, image_id: bytes, encoded: bytes, image_format: bytes, labels: Sequence[int], image_uri: bytes = b""
) -> ParsedRecord | RecordError:
    """The features of one record parsed together with others (vectorized), checked like `parse_record`."""
    for key, value in ((FEATURE_IMAGE_ID, image_id), (FEATURE_IMAGE, encoded)):
        if not value:
            return _missing_feature(record_index, key)
    try:
        decoded_id = image_id.decode()
        example = ShardExample(
            decoded_id, encoded, image_format.decode(), single_label(labels, decoded_id), image_uri.decode() or None
        )
    except UnicodeDecodeError as error:
        return RecordError(record_index, INVALID_EXAMPLE, f"not a tf.train.Example of the shard contract: {error}")
    except BadLabel as error:
        return RecordError(record_index, BAD_LABEL, str(error), image_id=error.image_id)
    return _checked(record_index, example)


def _missing_feature(record_index: int, key: str) -> RecordError:
    return RecordError(record_index, MISSING_FEATURE, f"feature {key!r} is missing or empty")


def is_valid_label(label: int | None) -> bool:
    """A class 0-9, or no label (unlabeled data)."""
    return label is None or 0 <= label < NUM_CLASSES


def _checked(record_index: int, example: ShardExample) -> ParsedRecord | RecordError:
    if not is_valid_label(example.label):
        return RecordError(
            record_index, BAD_LABEL, f"label {example.label} is not a class 0-{NUM_CLASSES - 1}", image_id=example.image_id
        )
    return ParsedRecord(record_index, example)


def prediction_batch(
    *,
    image_ids: pa.Array,
    source_uri: str,
    probabilities: np.ndarray,
    true_labels: np.ndarray,
    model_version: str,
    scored_at: datetime.datetime,
    image_uris: pa.Array | None = None,
) -> pa.RecordBatch:
    """Rows of the prediction table for one model call: `image_ids` and `image_uris` are string
    arrays (a null URI: none), `probabilities` is (n, 10) softmax, `true_labels` class indices
    (-1: none)."""
    count = len(image_ids)
    probabilities = np.ascontiguousarray(probabilities, dtype=np.float32)
    if probabilities.shape != (count, NUM_CLASSES) or len(true_labels) != count:
        raise ValueError(f"probabilities of shape {probabilities.shape} and {len(true_labels)} labels for {count} images")
    predicted = probabilities.argmax(axis=1).astype(np.int32)
    labels = np.asarray(true_labels, dtype=np.int32)
    offsets = pa.array(np.arange(0, (count + 1) * NUM_CLASSES, NUM_CLASSES, dtype=np.int32))
    columns = {
        "image_id": image_ids,
        "image_uri": image_uris if image_uris is not None else pa.nulls(count, pa.string()),
        "source_uri": _repeat(source_uri, pa.string(), count),
        "predicted_label": pa.array(predicted),
        "predicted_class": pa.array(_CLASS_NAMES[predicted], pa.string()),
        "confidence": pa.array(probabilities[np.arange(count), predicted]),
        "probabilities": pa.ListArray.from_arrays(offsets, pa.array(probabilities.ravel()), type=_PROBABILITIES_TYPE),
        "true_label": pa.array(labels, mask=labels < 0),
        "model_version": _repeat(model_version, pa.string(), count),
        "scored_at": _repeat(scored_at, PREDICTION_SCHEMA.field("scored_at").type, count),
    }
    return pa.RecordBatch.from_arrays([columns[name] for name in PREDICTION_SCHEMA.names], schema=PREDICTION_SCHEMA)


def error_batch(errors: Sequence[RecordError], *, source_uri: str, scored_at: datetime.datetime) -> pa.RecordBatch:
    """Rows of the error table for records of one shard."""
    return pa.RecordBatch.from_pylist(
        [
            {
                "source_uri": source_uri,
                "record_index": error.record_index,
                "image_id": error.image_id,
                "error_type": error.error_type,
                "error_message": error.error_message,
                "scored_at": scored_at,
            }
            for error in errors
        ],
        schema=ERROR_SCHEMA,
    )


def _repeat(value, dtype: pa.DataType, count: int) -> pa.Array:
    return pa.repeat(pa.scalar(value, dtype), count)
