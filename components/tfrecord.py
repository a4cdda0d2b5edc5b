"""TFRecord framing, written and read without TensorFlow so that every damaged record is seen.

A record is: uint64 length, uint32 masked CRC32C of the length, the data, uint32 masked
CRC32C of the data (little endian). The reader checks both CRCs and reports truncation,
so a scoring job can turn one bad record into one error row and go on with the next.
"""
from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterator
from typing import IO

import google_crc32c

_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")
_HEADER_BYTES = _LENGTH.size + _CRC.size
_MASK_DELTA = 0xA282EAD8
# A length above this cannot be a real image record: the framing itself is damaged.
MAX_RECORD_BYTES = 64 * 1024 * 1024


def _masked_crc(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame_record(data: bytes) -> bytes:
    """One record in TFRecord framing."""
    length = _LENGTH.pack(len(data))
    return b"".join(
        (length, _CRC.pack(_masked_crc(length)), data, _CRC.pack(_masked_crc(data)))
    )


@dataclasses.dataclass(frozen=True)
class Record:
    """A record read from a shard: its data, or why it could not be read."""

    index: int
    data: bytes | None = None
    error_type: str | None = None
    error_message: str | None = None


def read_records(stream: IO[bytes]) -> Iterator[Record]:
    """Yields every record of a TFRecord stream, damaged ones as error records.

    A data CRC mismatch spoils only that record. A damaged length field or a truncated
    tail leaves no way to find the next record boundary, so it ends the shard with one
    error record that says so.
    """
    index = 0
    while True:
        header = stream.read(_HEADER_BYTES)
        if not header:
            return
        if len(header) < _HEADER_BYTES:
            yield Record(index, error_type="truncated_record",
                         error_message=f"shard ends inside the header of record {index}")
            return
        length_bytes, (length_crc,) = header[: _LENGTH.size], _CRC.unpack(header[_LENGTH.size :])
        (length,) = _LENGTH.unpack(length_bytes)
        if _masked_crc(length_bytes) != length_crc or length > MAX_RECORD_BYTES:
            yield Record(index, error_type="corrupt_record",
                         error_message=f"length field of record {index} fails its CRC; "
                         "the rest of the shard cannot be framed")
            return
        body = stream.read(length + _CRC.size)
        if len(body) < length + _CRC.size:
            yield Record(index, error_type="truncated_record",
                         error_message=f"shard ends inside record {index} "
                         f"({len(body)} of {length + _CRC.size} bytes)")
            return
        data, (data_crc,) = body[:length], _CRC.unpack(body[length:])
        if _masked_crc(data) != data_crc:
            yield Record(index, error_type="corrupt_record",
                         error_message=f"data of record {index} fails its CRC")
        else:
            yield Record(index, data=data)
        index += 1
