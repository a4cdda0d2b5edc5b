"""What a shard record holds, in one place: its features, the PNGs a model reads as they are, their decoding.

A shard record is a tf.train.Example with `image_id` (bytes, required), `image` (PNG bytes,
required), `format` (bytes, optional), `image/uri` (bytes, optional: where the picture came
from) and `label` (at most one int64 in 0-9; absent for unlabeled data). The writer and the
strict parser are components.contracts.shards; the readers with TensorFlow (scoring,
training) take their feature spec from `tf_feature_spec`, and every step decodes contract
PNGs with `decode_png_images`, so training, serving and scoring read the same pixels.

No TensorFlow at import: `prepare` and the pure row functions use this module too.
"""

from __future__ import annotations

import struct

from components.constants import FEATURE_FORMAT, FEATURE_IMAGE, FEATURE_IMAGE_ID, FEATURE_IMAGE_URI, FEATURE_LABEL, IMAGE_SIZE

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# IHDR chunk start of a 28x28, 8-bit grayscale PNG: length 13, type, width, height, depth, colour type 0.
_MODEL_PNG_IHDR = struct.pack(">I4sIIBB", 13, b"IHDR", IMAGE_SIZE, IMAGE_SIZE, 8, 0)
# The first bytes of every model PNG (signature and IHDR up to the colour type).
MODEL_PNG_HEADER = _PNG_SIGNATURE + _MODEL_PNG_IHDR
# An eXIf chunk could rotate the picture in images.to_model_image: such a PNG is no model PNG.
EXIF_CHUNK = b"eXIf"
# Parallel PNG decodes within one decode_png_images call.
_DECODE_PARALLELISM = 16


def is_model_png(encoded: bytes) -> bool:
    """True for a 28x28 8-bit grayscale PNG without eXIf: bytes that `images.to_model_image`
    takes as they are, so `decode_png_images` yields the same pixels (the fast, vectorized path)."""
    return has_model_png_header(encoded) and EXIF_CHUNK not in encoded


def has_model_png_header(encoded: bytes) -> bool:
    """The header half of `is_model_png` (a caller that checks eXIf on the whole record uses this)."""
    return encoded[: len(MODEL_PNG_HEADER)] == MODEL_PNG_HEADER


def tf_has_model_png_header(encoded):  # tf.Tensor[string, (n,)] -> tf.Tensor[bool, (n,)]
    """`has_model_png_header` of each element, inside TensorFlow (TensorFlow's regex ops cannot
    search binary data, so the eXIf half stays with the caller, in Python)."""
    import tensorflow as tf

    return tf.strings.substr(encoded, 0, len(MODEL_PNG_HEADER)) == tf.constant(MODEL_PNG_HEADER)


def tf_feature_spec(*, label_required: bool) -> dict:
    """The record's features for tf.io.parse_example.

    `image_id` and `image` are required and single-valued: a record without them fails a
    vectorized parse. With `label_required` (training data) the label is one int64; without,
    it is ragged: absent for unlabeled data, and a record with two values is parsed for the
    caller to refuse.
    """
    import tensorflow as tf

    spec = {
        FEATURE_IMAGE_ID: tf.io.FixedLenFeature([], tf.string),
        FEATURE_IMAGE: tf.io.FixedLenFeature([], tf.string),
        FEATURE_LABEL: tf.io.FixedLenFeature([], tf.int64) if label_required else tf.io.RaggedFeature(tf.int64),
    }
    if not label_required:
        spec[FEATURE_FORMAT] = tf.io.FixedLenFeature([], tf.string, default_value="")
        spec[FEATURE_IMAGE_URI] = tf.io.FixedLenFeature([], tf.string, default_value="")
    return spec


def decode_png_images(encoded):  # tf.Tensor[string, (n,)] -> tf.Tensor[float32, (n, 28, 28)]
    """PNGs of the shard contract as model inputs: 28x28 grayscale floats in [0, 1].

    The one decoding used for training, by the exported serving signature and by scoring,
    so they can never disagree. Any other size fails loudly.
    """
    import tensorflow as tf

    def decode(png):
        return tf.squeeze(tf.ensure_shape(tf.io.decode_png(png, channels=1), (IMAGE_SIZE, IMAGE_SIZE, 1)), axis=-1)

    pixels = tf.map_fn(
        decode,
        encoded,
        fn_output_signature=tf.TensorSpec((IMAGE_SIZE, IMAGE_SIZE), tf.uint8),
        parallel_iterations=_DECODE_PARALLELISM,
    )
    # Scaled once for the batch: each op inside the loop runs once per image (measured:
    # docs/benchmarks.md); the values are the same.
    return tf.cast(pixels, tf.float32) / 255.0
