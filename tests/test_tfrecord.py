"""TFRecord framing: what we write TensorFlow reads, and every kind of damage is reported."""
import io

import tensorflow as tf

from components.tfrecord import frame_record, read_records

PAYLOADS = [b"first", b"", b"x" * 1000]


def test_framing_is_readable_by_tensorflow(tmp_path):
    path = tmp_path / "shard.tfrecord"
    path.write_bytes(b"".join(frame_record(p) for p in PAYLOADS))
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(path))] == PAYLOADS


def test_reader_round_trip():
    records = list(read_records(io.BytesIO(b"".join(frame_record(p) for p in PAYLOADS))))
    assert [(r.index, r.data, r.error_type) for r in records] == [(i, p, None) for i, p in enumerate(PAYLOADS)]


def test_flipped_data_byte_spoils_only_that_record():
    framed = [bytearray(frame_record(p)) for p in PAYLOADS]
    framed[0][14] ^= 0xFF  # inside the data of record 0
    records = list(read_records(io.BytesIO(b"".join(framed))))
    assert [r.error_type for r in records] == ["corrupt_record", None, None]
    assert records[2].data == PAYLOADS[2]


def test_damaged_length_ends_the_shard_with_one_error():
    framed = [bytearray(frame_record(p)) for p in PAYLOADS]
    framed[1][0] ^= 0x01  # the length field of record 1
    records = list(read_records(io.BytesIO(b"".join(framed))))
    assert [(r.index, r.error_type) for r in records] == [(0, None), (1, "corrupt_record")]


def test_truncated_shard_reports_the_record_it_cut():
    data = b"".join(frame_record(p) for p in PAYLOADS)
    records = list(read_records(io.BytesIO(data[:-10])))
    assert [(r.index, r.error_type) for r in records] == [(0, None), (1, None), (2, "truncated_record")]
    assert "ends inside record 2" in records[-1].error_message
