"""TFRecord framing: what we write TensorFlow reads, and every kind of damage is reported."""

import hashlib
import io

import numpy as np
import pytest
import tensorflow as tf

from components.io import tfrecord
from components.io.tfrecord import ShardReader, frame_record, read_records

PAYLOADS = [b"first", b"", b"x" * 1000, b"abc" * 50, b"last"]
FRAMED = [frame_record(p) for p in PAYLOADS]
DATA = b"".join(FRAMED)


def outcome(data: bytes, **kwargs) -> list[tuple[int, bytes | None, str | None]]:
    return [(r.index, r.data, r.error_type) for r in read_records(io.BytesIO(data), **kwargs)]


def test_framing_is_readable_by_tensorflow(tmp_path):
    path = tmp_path / "shard.tfrecord"
    path.write_bytes(DATA)
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(path))] == PAYLOADS


def test_reader_round_trip_and_hashes_what_it_read():
    reader = ShardReader(io.BytesIO(DATA))
    assert [(r.index, r.data, r.error_type) for r in reader] == [(i, p, None) for i, p in enumerate(PAYLOADS)]
    assert (reader.size, reader.sha256) == (len(DATA), hashlib.sha256(DATA).hexdigest())


def test_flipped_data_byte_spoils_only_that_record():
    framed = [bytearray(f) for f in FRAMED]
    framed[0][14] ^= 0xFF  # inside the data of record 0
    assert [e for _, _, e in outcome(b"".join(framed))] == ["corrupt_record", None, None, None, None]


def test_damaged_length_header_is_skipped_up_to_the_next_record():
    framed = [bytearray(f) for f in FRAMED]
    framed[1][0] ^= 0x01  # the length field of record 1
    records = list(read_records(io.BytesIO(b"".join(framed))))
    assert [(r.index, r.data, r.error_type) for r in records] == [
        (0, PAYLOADS[0], None),
        (1, None, "unreadable_record"),
        *[(i, PAYLOADS[i], None) for i in (2, 3, 4)],
    ]
    start = len(FRAMED[0])
    assert f"bytes {start}-{start + len(FRAMED[1]) - 1}" in records[1].error_message


def test_garbage_in_the_middle_is_one_error_and_the_rest_is_read():
    middle = len(FRAMED[0]) + len(FRAMED[1]) + 100  # inside record 2
    garbage = bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8))
    assert outcome(DATA[:middle] + garbage + DATA[middle:]) == [
        (0, PAYLOADS[0], None),
        (1, PAYLOADS[1], None),
        (2, None, "unreadable_record"),
        (3, PAYLOADS[3], None),
        (4, PAYLOADS[4], None),
    ]


def test_truncated_shard_reports_the_record_it_cut():
    records = list(read_records(io.BytesIO(DATA[:-3])))
    assert [(r.index, r.error_type) for r in records] == [(0, None), (1, None), (2, None), (3, None), (4, "truncated_record")]
    assert "ends inside record 4" in records[-1].error_message


def test_cut_inside_a_header_is_a_truncated_record():
    assert outcome(DATA[: len(FRAMED[0]) + 5]) == [(0, PAYLOADS[0], None), (1, None, "truncated_record")]


def test_zero_length_shard_is_an_error_record_unless_nothing_is_expected():
    assert outcome(b"") == [(0, None, "unreadable_record")]
    assert outcome(b"", expected_records=0) == []


@pytest.mark.parametrize("cut", [0, 3, len(FRAMED[0]) + 20, len(DATA) - 1])
def test_expected_count_turns_every_missing_record_into_an_error(cut):
    records = list(read_records(io.BytesIO(DATA[:cut]), expected_records=len(PAYLOADS)))
    assert [r.index for r in records] == list(range(len(PAYLOADS)))
    intact = [r for r in records if r.data is not None]
    assert [r.data for r in intact] == PAYLOADS[: len(intact)]
    assert all(r.error_type in ("truncated_record", "unreadable_record") and r.error_message for r in records[len(intact) :])


def test_expected_count_after_a_skipped_range_names_the_range():
    framed = [bytearray(f) for f in FRAMED]
    framed[2][3] ^= 0x10  # length of record 2; records 2 and 3 then lost with it
    damaged = b"".join(framed[:2]) + bytes(framed[2])[:40] + bytes(framed[4])
    records = list(read_records(io.BytesIO(damaged), expected_records=5))
    assert [(r.index, r.error_type) for r in records] == [
        (0, None),
        (1, None),
        (2, "unreadable_record"),
        (3, None),
        (4, "unreadable_record"),
    ]
    assert records[3].data == PAYLOADS[4]
    assert "skipped" in records[4].error_message and "manifest" in records[4].error_message


def test_chunk_boundaries_change_nothing(monkeypatch):
    """Random damage read with 1 MiB chunks and with 7-byte chunks: the same records."""
    rng = np.random.default_rng(1)
    many = [frame_record(bytes(rng.integers(0, 256, int(rng.integers(0, 300)), dtype=np.uint8))) for _ in range(60)]
    for _ in range(20):
        data = bytearray(b"".join(many))
        for position in rng.integers(0, len(data), 3):
            data[position] ^= int(rng.integers(1, 256))
        cut = bytes(data[: int(rng.integers(len(data) // 2, len(data) + 1))])
        whole = outcome(cut)
        monkeypatch.setattr(tfrecord, "_CHUNK_BYTES", 7)
        assert outcome(cut) == whole
        monkeypatch.undo()
        # Each flip loses at most its record and the one after; the cut at most one more.
        whole_records = sum(1 for end in np.cumsum([len(f) for f in many]) if end <= len(cut))
        assert sum(data is not None for _, data, _ in whole) >= whole_records - 3 * 2


@pytest.mark.parametrize("size", [1, 2, 3, 7, 512])
def test_batches_hold_the_records_in_order_size_by_size(size):
    """Damaged, intact and missing records: batches of any size are the iteration, cut in lists."""
    rng = np.random.default_rng(2)
    many = [frame_record(bytes(rng.integers(0, 256, int(rng.integers(0, 300)), dtype=np.uint8))) for _ in range(40)]
    data = bytearray(b"".join(many))
    for position in rng.integers(0, len(data), 4):
        data[position] ^= int(rng.integers(1, 256))
    stream = bytes(data[: len(data) - 50])  # a cut tail too
    expected = len(many) + 3  # and records the manifest counts that the shard lacks

    batches = list(ShardReader(io.BytesIO(stream), expected_records=expected).batches(size))

    flat = [(r.index, r.data, r.error_type) for batch in batches for r in batch]
    assert flat == outcome(stream, expected_records=expected)
    assert [r[0] for r in flat] == list(range(len(flat))) and len(flat) >= expected
    assert all(len(batch) == size for batch in batches[:-1]) and 0 < len(batches[-1]) <= size
