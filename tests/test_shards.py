"""The shard record encoding equals TensorFlow's and parses back."""

import pytest
import tensorflow as tf

from components.contracts.shards import ShardExample, parse_example, serialize_example


@pytest.mark.parametrize("label", [None, 0, 9, 127, 128, 300, 2**40, -1])
@pytest.mark.parametrize("png", [b"", b"\x89PNG" * 50, bytes(range(256)) * 3])
@pytest.mark.parametrize("image_uri", [None, "gs://bucket/photos/shirts/red shirt.jpg"])
def test_encoding_equals_tensorflows_deterministic_serialization(label, png, image_uri):
    example = tf.train.Example()
    feature = example.features.feature
    feature["image_id"].bytes_list.value.append(b"train-00042")
    feature["image/encoded"].bytes_list.value.append(png)
    feature["image/format"].bytes_list.value.append(b"png")
    if label is not None:
        feature["label"].int64_list.value.append(label)
    if image_uri is not None:
        feature["image/uri"].bytes_list.value.append(image_uri.encode())
    assert serialize_example("train-00042", png, label, image_uri=image_uri) == example.SerializeToString(deterministic=True)


def test_parse_round_trip_and_missing_feature():
    assert parse_example(serialize_example("a", b"img", 3)) == ShardExample("a", b"img", "png", 3)
    assert parse_example(serialize_example("a", b"img", None, image_uri="file:///p/a.jpg")).image_uri == "file:///p/a.jpg"
    example = tf.train.Example()
    example.features.feature["image_id"].bytes_list.value.append(b"a")
    with pytest.raises(KeyError, match="image/encoded"):
        parse_example(example.SerializeToString())
    with pytest.raises(ValueError, match="not a tf.train.Example"):
        parse_example(b"\xff\xff\xff")
