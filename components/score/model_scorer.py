"""The model side of scoring: a `.keras` file loaded and checked, and the TensorFlow functions that feed it.

Model contract (components.train.models, components.train.training_data): `model.keras` maps float32
images scaled to [0, 1] (decoded by the shard contract's `decode_png_images`, as in
training), shaped (28, 28), (28, 28, 1) or (784,), to 10 logits; a model whose last layer is
a softmax already returns probabilities and gets no second softmax.

The model is loaded once per process (the launcher's check and the local workers share it)
and its bytes are read once: the SHA-256 that metrics.json recorded is checked on the very
bytes that are deserialized.
"""

import hashlib
import os
import tempfile
import threading
import zipfile
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from components.constants import (
    FEATURE_FORMAT,
    FEATURE_IMAGE,
    FEATURE_IMAGE_ID,
    FEATURE_IMAGE_URI,
    FEATURE_LABEL,
    IMAGE_SIZE,
    NUM_CLASSES,
)
from components.contracts.registry import require_evaluated_model
from components.contracts.shard_contract import decode_png_images, tf_feature_spec, tf_has_model_png_header
from components.errors import InputError
from components.io import storage

_loaded_model: dict[str, object] = {}  # content digest of a .keras file -> its model
_scorer_of_model: dict[int, "ModelScorer"] = {}  # id of a loaded model -> its scorer
_LOADED_MODEL_LOCK = threading.Lock()


def load_model(keras_uri: str, *, expected_sha256: str | None = None):  # -> keras.Model
    """Loads a `.keras` file from any URI (copied to a local temporary file first).

    With `expected_sha256` (what the model's metrics.json evaluated), the bytes read are
    checked against it before they are deserialized: one read checks and loads the file.
    The launcher checks the model and the workers score with it: in one process (the local
    runner) the file is read and deserialized once; a later caller naming the same digest
    gets the same model without reading the file again. Only the last model loaded is kept.
    """
    with _LOADED_MODEL_LOCK:
        if expected_sha256 is not None and expected_sha256 in _loaded_model:
            return _loaded_model[expected_sha256]
    import keras

    with tempfile.TemporaryDirectory(prefix="fmnist-model-") as folder:
        local = os.path.join(folder, "model.keras")
        storage.download_file(keras_uri, local)
        with open(local, "rb") as file:
            digest = hashlib.file_digest(file, "sha256").hexdigest()
        if expected_sha256 is not None:
            require_evaluated_model(keras_uri, expected_sha256=expected_sha256, actual_sha256=digest)
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
    # The model's own outputs (a -inf logit would vanish in a softmax), through the scorer's
    # compiled function: an in-process worker then finds the model already traced.
    outputs = scorer_of(model).outputs(probe_images())
    if not np.isfinite(outputs).all():
        raise InputError(f"{keras_uri}: model output on a probe batch is not finite (NaN or infinity)")


def scorer_of(model) -> "ModelScorer":
    """The scorer of a loaded model, one per process: the launcher's check and an in-process
    worker share its traced TensorFlow functions (tracing the model costs more than scoring
    a small shard). Only the last model's scorer is kept."""
    with _LOADED_MODEL_LOCK:
        scorer = _scorer_of_model.get(id(model))
        if scorer is None or scorer.model is not model:
            _scorer_of_model.clear()
            scorer = _scorer_of_model[id(model)] = ModelScorer(model)
        return scorer


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

        images_spec = tf.TensorSpec((None, IMAGE_SIZE, IMAGE_SIZE), tf.float32)
        # The model traced once: every function below calls this one.
        self._outputs = tf.function(
            lambda images: model(tf.reshape(images, (-1, *input_dims)), training=False),
            input_signature=[images_spec],
            autograph=False,
        )

        def probabilities(images):
            outputs = self._outputs(images)
            return tf.nn.softmax(outputs) if softmax else outputs

        # A record without an id or image fails the vectorized parse, and the batch is
        # parsed again record by record (which names the problem).
        features = tf_feature_spec(label_required=False)

        def parse(serialized):
            example = tf.io.parse_example(serialized, features)
            label = example[FEATURE_LABEL]
            return (
                example[FEATURE_IMAGE_ID],
                example[FEATURE_IMAGE],
                example[FEATURE_FORMAT],
                label.values,
                label.row_splits,
                example[FEATURE_IMAGE_URI],
            )

        strings = tf.TensorSpec((None,), tf.string)
        self._parse = tf.function(parse, input_signature=[strings], autograph=False)
        # Training's own decoding (PNG -> [0, 1] floats), so scoring and training never disagree.
        self._decode = tf.function(decode_png_images, input_signature=[strings], autograph=False)
        self._probabilities = tf.function(probabilities, input_signature=[images_spec], autograph=False)
        self._invalid_argument = tf.errors.InvalidArgumentError

        def score_contract_batch(serialized):
            # Parse, check, decode and score in one call: the batch stays inside TensorFlow
            # (which runs it without the GIL) from the serialized records to the probabilities.
            # Labels stay as values and row splits: plain ops trace several times faster than
            # ragged ones, and tracing is most of a small run's cost.
            image_ids, encoded, _, label_values, label_splits, image_uris = parse(serialized)
            label_starts, label_counts = label_splits[:-1], label_splits[1:] - label_splits[:-1]
            contract = tf.reduce_all(
                (tf.strings.length(image_ids) > 0) & tf_has_model_png_header(encoded) & (label_counts <= 1)
            ) & tf.reduce_all((label_values >= 0) & (label_values < NUM_CLASSES))
            scores = tf.cond(
                contract,
                lambda: probabilities(decode_png_images(encoded)),
                lambda: tf.zeros((0, NUM_CLASSES), tf.float32),
            )
            contract = contract & tf.reduce_all(tf.math.is_finite(scores))
            # -1 where a record has no label (unlabeled data): its start points past the values.
            with_missing = tf.concat([label_values, tf.constant([-1], label_values.dtype)], axis=0)
            first_labels = tf.gather(
                with_missing, tf.where(label_counts > 0, label_starts, tf.size(label_values, label_splits.dtype))
            )
            return contract, image_ids, first_labels, scores, image_uris, tf.strings.length(image_uris) > 0

        self._score_contract_batch = tf.function(score_contract_batch, input_signature=[strings], autograph=False)

    def outputs(self, images: np.ndarray) -> np.ndarray:
        """(n, 10) float32 model outputs (logits, or probabilities for a softmax model) of (n, 28, 28) inputs."""
        return self._outputs(images).numpy()

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """(n, 10) float32 class probabilities of (n, 28, 28) model inputs in [0, 1]: one model call."""
        return self._probabilities(images).numpy()

    def decode_model_pngs(self, encoded: Sequence[bytes]) -> np.ndarray | None:
        """(n, 28, 28) model inputs in [0, 1] of contract PNGs, in one call; None if any fails to decode."""
        try:
            return self._decode(np.array(encoded, dtype=object)).numpy()
        except (self._invalid_argument, UnicodeDecodeError):  # see parse_examples
            return None  # the caller decodes one by one and reports the bad one(s)

    def parse_examples(self, serialized: Sequence[bytes]) -> list[tuple[bytes, bytes, bytes, list[int], bytes]] | None:
        """(image_id, encoded, format, labels, image_uri) of each Example, parsed in one call; None if any fails."""
        try:
            tensors = self._parse(np.array(serialized, dtype=object))
        except (self._invalid_argument, UnicodeDecodeError):
            # UnicodeDecodeError: TensorFlow fails to build its error message when it quotes the
            # bad record's non-UTF-8 bytes; it is the same parse failure.
            return None  # the caller parses one by one and reports the bad one(s)
        image_ids, encoded, formats, label_values, label_splits, image_uris = (t.numpy() for t in tensors)
        values, splits = label_values.tolist(), label_splits.tolist()
        labels = [values[start:end] for start, end in zip(splits, splits[1:])]
        return list(zip(image_ids.tolist(), encoded.tolist(), formats.tolist(), labels, image_uris.tolist()))

    def score_contract_batch(self, serialized: Sequence[bytes]) -> tuple[pa.Array, np.ndarray, np.ndarray, pa.Array] | None:
        """(image_ids, labels (-1: none), (n, 10) probabilities, image_uris (null: none)) of a batch
        of shard Examples holding model PNGs with non-empty UTF-8 ids and at most one label in
        0-9, scored finite, in one call; None if any record is not such an Example (the caller
        then takes the careful path, which finds and reports the bad ones). The columns come
        out as arrays, never a Python object per record."""
        try:
            # A list converts to a string tensor faster than a numpy object array.
            contract, image_ids, labels, scores, image_uris, has_uri = self._score_contract_batch(list(serialized))
            if not contract:
                return None
            # The casts check UTF-8: an id that is not fails the batch like any other bad record.
            ids = pa.array(image_ids.numpy(), pa.binary()).cast(pa.string())
            uris = pa.array(image_uris.numpy(), pa.binary(), mask=~has_uri.numpy()).cast(pa.string())
        except (self._invalid_argument, UnicodeDecodeError, pa.ArrowInvalid):  # see parse_examples
            return None
        return ids, labels.numpy(), scores.numpy(), uris
