"""Record -> row conversions of scoring: pure functions, no pipeline, no model."""

import datetime
import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from components.constants import NUM_CLASSES
from components.contracts.schema import DICTIONARY_COLUMNS, ERROR_SCHEMA, PREDICTION_SCHEMA
from components.contracts.shard_contract import is_model_png
from components.contracts.shards import serialize_example
from components.io.images import encode_png, to_model_image
from components.io.parquet_parts import PartWriter, part_rows, value_counts
from components.io.tfrecord import Record
from components.score.prediction_rows import ParsedRecord, RecordError, error_batch, parse_record, prediction_batch

SCORED_AT = datetime.datetime(2026, 11, 29, 12, 0, tzinfo=datetime.UTC)


def picture(size: tuple[int, int], mode: str, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, "white").save(buffer, format=fmt)
    return buffer.getvalue()


def example_without_image(image_id: str) -> bytes:
    from tensorflow.core.example import example_pb2

    example = example_pb2.Example()
    example.features.feature["image_id"].bytes_list.value.append(image_id.encode())
    return example.SerializeToString()


def breaking(image_id: str, change) -> bytes:
    """A shard Example of `image_id` changed by `change(feature map)`."""
    from tensorflow.core.example import example_pb2

    example = example_pb2.Example.FromString(serialize_example(image_id, b"png", 3))
    change(example.features.feature)
    return example.SerializeToString()


def _float_label(feature):
    feature["label"].Clear()
    feature["label"].float_list.value.append(3.0)


def test_parse_record_keeps_a_good_record():
    result = parse_record(Record(7, data=serialize_example("img-7", b"png-bytes", 3)))
    assert isinstance(result, ParsedRecord)
    assert (result.record_index, result.example.image_id, result.example.label) == (7, "img-7", 3)


@pytest.mark.parametrize(
    "record, error_type, image_id",
    [
        (Record(1, error_type="corrupt_record", error_message="data of record 1 fails its CRC"), "corrupt_record", None),
        (Record(2, data=b"\xff\xfe not a protobuf"), "invalid_example", None),
        (Record(3, data=example_without_image("img-3")), "missing_feature", None),
        (Record(4, data=serialize_example("img-4", b"png", 12)), "bad_label", "img-4"),
        (Record(5, data=serialize_example("", b"png", 1)), "missing_feature", None),
        (Record(6, data=serialize_example("img-6", b"", 1)), "missing_feature", None),
        (
            Record(7, data=breaking("img-7", lambda f: f["image/encoded"].bytes_list.value.append(b"png2"))),
            "invalid_example",
            None,
        ),
        (Record(8, data=breaking("img-8", lambda f: f["image_id"].bytes_list.value.append(b"other"))), "invalid_example", None),
        (Record(9, data=breaking("img-9", _float_label)), "bad_label", "img-9"),
        (Record(10, data=breaking("img-10", lambda f: f["label"].int64_list.value.append(4))), "bad_label", "img-10"),
    ],
    ids=[
        "framing",
        "not-example",
        "no-image",
        "label-12",
        "empty-id",
        "empty-image",
        "two-images",
        "two-ids",
        "float-label",
        "two-labels",
    ],
)
def test_parse_record_turns_each_bad_record_into_an_error(record, error_type, image_id):
    result = parse_record(record)
    assert isinstance(result, RecordError)
    assert (result.record_index, result.error_type, result.image_id) == (record.index, error_type, image_id)
    assert result.error_message


def test_is_model_png_accepts_exactly_what_to_model_image_takes_as_is():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (28, 28), dtype=np.uint8)
    contract_png = encode_png(image)
    assert is_model_png(contract_png)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(contract_png))), to_model_image(contract_png))
    for other in (
        picture((64, 64), "L", "PNG"),
        picture((28, 28), "RGB", "PNG"),
        picture((28, 28), "L", "JPEG"),
        b"not an image",
        b"",
    ):
        assert not is_model_png(other)


def test_prediction_batch_has_the_table_schema_and_values():
    probabilities = np.array([[0.1] * 10, np.eye(10)[9] * 0.91 + 0.01], dtype=np.float32)
    probabilities[0, 2] = 0.19
    batch = prediction_batch(
        image_ids=pa.array(["a", "b"]),
        source_uri="gs://b/s.tfrecord",
        probabilities=probabilities,
        true_labels=np.array([2, -1]),
        model_version="v1",
        scored_at=SCORED_AT,
    )
    assert batch.schema.equals(PREDICTION_SCHEMA, check_metadata=True)
    rows = batch.to_pylist()
    assert [(r["predicted_label"], r["predicted_class"], r["true_label"]) for r in rows] == [
        (2, "Pullover", 2),
        (9, "Ankle boot", None),
    ]
    assert rows[1]["confidence"] == pytest.approx(0.92)
    assert rows[0]["probabilities"] == pytest.approx(probabilities[0].tolist())
    assert {r["scored_at"] for r in rows} == {SCORED_AT}
    assert {(r["source_uri"], r["model_version"]) for r in rows} == {("gs://b/s.tfrecord", "v1")}


def test_prediction_batch_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="for 2 images"):
        prediction_batch(
            image_ids=pa.array(["a", "b"]),
            source_uri="s",
            probabilities=np.zeros((3, 10)),
            true_labels=np.array([1, 2]),
            model_version="v",
            scored_at=SCORED_AT,
        )


def test_error_batch_has_the_table_schema():
    batch = error_batch(
        [
            RecordError(4, "decode_error", "cannot decode image", image_id="x"),
            RecordError(9, "truncated_record", "shard ends inside record 9"),
        ],
        source_uri="s.tfrecord",
        scored_at=SCORED_AT,
    )
    assert batch.schema.equals(ERROR_SCHEMA, check_metadata=True)
    assert [(r["record_index"], r["error_type"], r["image_id"]) for r in batch.to_pylist()] == [
        (4, "decode_error", "x"),
        (9, "truncated_record", None),
    ]


def test_part_writer_streams_row_groups_and_stores_one_file(tmp_path):
    uri = str(tmp_path / "table" / "part-00000.parquet")
    rows = [RecordError(i, "decode_error", f"bad {i}") for i in range(25)]
    with PartWriter(uri, ERROR_SCHEMA, dictionary_columns=DICTIONARY_COLUMNS, row_group_rows=10) as writer:
        for start in range(0, 25, 5):
            writer.write(error_batch(rows[start : start + 5], source_uri="s", scored_at=SCORED_AT))
    metadata = pq.read_metadata(uri)
    assert (metadata.num_rows, metadata.num_row_groups) == (25, 3)
    assert pq.read_schema(uri).equals(ERROR_SCHEMA, check_metadata=True)
    assert part_rows(uri) == 25 and value_counts(uri, "error_type") == {"decode_error": 25}
    assert [p.name for p in (tmp_path / "table").iterdir()] == ["part-00000.parquet"]


def test_parts_dictionary_encode_only_the_repeating_columns(tmp_path):
    uri = str(tmp_path / "part-00000.parquet")
    probabilities = np.random.default_rng(0).dirichlet(np.ones(NUM_CLASSES), 40).astype(np.float32)
    batch = prediction_batch(
        image_ids=pa.array([f"img-{i}" for i in range(40)]),
        source_uri="gs://b/s",
        probabilities=probabilities,
        true_labels=np.arange(40) % NUM_CLASSES,
        model_version="v1",
        scored_at=SCORED_AT,
    )
    with PartWriter(uri, PREDICTION_SCHEMA, dictionary_columns=DICTIONARY_COLUMNS) as writer:
        writer.write(batch)
    row_group = pq.read_metadata(uri).row_group(0)
    encoded = {
        row_group.column(i).path_in_schema.split(".")[0]
        for i in range(row_group.num_columns)
        if row_group.column(i).has_dictionary_page
    }
    assert encoded == set(DICTIONARY_COLUMNS) & set(PREDICTION_SCHEMA.names)
    assert "image_id" not in encoded and "probabilities" not in encoded
    assert pq.read_table(uri).equals(pa.Table.from_batches([batch]))


def test_part_writer_stores_nothing_without_rows_or_on_error(tmp_path):
    with PartWriter(str(tmp_path / "empty.parquet"), ERROR_SCHEMA, dictionary_columns=DICTIONARY_COLUMNS) as writer:
        writer.write(pa.RecordBatch.from_pylist([], schema=ERROR_SCHEMA))
    with pytest.raises(RuntimeError):
        with PartWriter(
            str(tmp_path / "failed.parquet"), ERROR_SCHEMA, dictionary_columns=DICTIONARY_COLUMNS, row_group_rows=1
        ) as writer:
            writer.write(error_batch([RecordError(0, "x", "y")], source_uri="s", scored_at=SCORED_AT))
            raise RuntimeError("the shard failed half way")
    assert list(tmp_path.iterdir()) == []
