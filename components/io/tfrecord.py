"""TFRecord framing, written and read without TensorFlow so that every damaged record is seen.

A record is: uint64 length, uint32 masked CRC32C of the length, the data, uint32 masked
CRC32C of the data (little endian). The reader checks both CRCs, and every byte of the
stream ends up in a record or in an error record: a data CRC mismatch spoils one record; a
damaged length field, garbage or a gap is skipped by scanning for the next valid header,
and the skipped byte range becomes one error record; a cut tail is a truncated record. So a
scoring job turns damage into error rows and goes on with the next intact record.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator
from typing import IO, NamedTuple

import google_crc32c

_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")
_HEADER = struct.Struct("<QI")  # length and its CRC
_HEADER_BYTES = _LENGTH.size + _CRC.size
_MASK_DELTA = 0xA282EAD8
# A length above this cannot be a real image record: the framing itself is damaged.
MAX_RECORD_BYTES = 64 * 1024 * 1024
# A valid length is below 2**32, so the high half of its uint64 is four zero bytes: the
# resynchronising scan jumps between those instead of testing the CRC at every offset.
_HIGH_LENGTH_BYTES = b"\x00\x00\x00\x00"
_HIGH_LENGTH_OFFSET = 4
_CHUNK_BYTES = 1024 * 1024
_ITERATION_BATCH = 512  # records framed at a time when iterated one by one

CORRUPT_RECORD = "corrupt_record"  # framed, but its data fails the CRC
TRUNCATED_RECORD = "truncated_record"  # the stream ends inside a record
UNREADABLE_RECORD = "unreadable_record"  # bytes that cannot be framed, or a record the manifest counts but the shard lacks


def _masked_crc(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame_record(data: bytes) -> bytes:
    """One record in TFRecord framing."""
    length = _LENGTH.pack(len(data))
    return b"".join((length, _CRC.pack(_masked_crc(length)), data, _CRC.pack(_masked_crc(data))))


class Record(NamedTuple):
    """A record read from a shard: its data, or why it could not be read.

    A named tuple: one is made per image, and a tuple is several times cheaper to make
    than a frozen dataclass."""

    index: int
    data: bytes | None = None
    error_type: str | None = None
    error_message: str | None = None


_new_tuple = tuple.__new__


class ShardReader:
    """Iterates over the records of a TFRecord stream, damaged ones as error records.

    Reads the stream once, in chunks, and hashes it on the way: after the iteration,
    `size` and `sha256` describe the whole stream. With `expected_records` (the manifest's
    count) the iteration ends with one `unreadable_record` per record the stream lacks, so
    that at least the expected number of records is yielded. An empty stream is one error
    record, unless no record is expected.
    """

    def __init__(self, stream: IO[bytes], *, expected_records: int | None = None) -> None:
        self._stream = stream
        self._expected = expected_records
        self._buffer = b""
        self._position = 0  # in the buffer, of the next byte to frame
        self._eof = False
        self._hash = hashlib.sha256()
        self._skipped: list[str] = []  # byte ranges that held no record, for the messages
        self._length_crcs: dict[int, int] = {}  # record length -> masked CRC of its length field
        self.size = 0

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the bytes read so far (of the whole stream after the iteration)."""
        return self._hash.hexdigest()

    def __iter__(self) -> Iterator[Record]:
        for batch in self.batches(_ITERATION_BATCH):
            yield from batch

    def batches(self, size: int) -> Iterator[list[Record]]:
        """The records in order, in lists of `size` (the last one shorter): the intact ones are
        framed straight into the list, without a generator step per record."""
        batch: list[Record] = []
        index = 0
        while self._available(1):
            index = self._frame_intact(index, batch, size)
            if len(batch) < size and self._available(1):  # damage, or a record across the buffer's end
                framed = self._framed_record()
                batch.append(self._take(index, *framed) if framed else self._skip_damage(index))
                index += 1
            if len(batch) >= size:
                yield batch
                batch = []
        for record in self._records_not_framed(index):
            batch.append(record)
            if len(batch) >= size:
                yield batch
                batch = []
        if batch:
            yield batch

    def _records_not_framed(self, index: int) -> Iterator[Record]:
        """After the last framed record (`index` is the next one's): an empty shard's error
        record, then one per record the manifest counts and the shard lacks."""
        if self.size == 0 and self._expected != 0:
            yield Record(index, error_type=UNREADABLE_RECORD, error_message="shard is empty (0 bytes)")
            index += 1
        for missing in range(index, self._expected or 0):
            reason = "; ".join(self._skipped) or f"the shard ends after {index} of them"
            yield Record(
                missing,
                error_type=UNREADABLE_RECORD,
                error_message=f"record {missing} of the {self._expected} in the manifest cannot be framed ({reason})",
            )

    def _frame_intact(self, index: int, batch: list[Record], size: int) -> int:
        """Appends the intact records from the current position to `batch`, until it holds `size`
        or the next record is damaged or not wholly buffered (left to the careful path): the
        common case, in one tight loop (the CRC masking inlined: a function call per record is
        a measurable share of its cost). Returns the index of the next record."""
        buffer, position, end = self._buffer, self._position, len(self._buffer)
        crc32c, unpack_header, unpack_crc = google_crc32c.value, _HEADER.unpack_from, _CRC.unpack_from
        append, room = batch.append, size - len(batch)
        # The length field's masked CRC is a function of the length: computed once per length
        # seen in the stream (records of similar images share few lengths), then a dict lookup.
        length_crcs = self._length_crcs
        while room > 0 and position + _HEADER_BYTES <= end:
            length, length_crc = unpack_header(buffer, position)
            data_start = position + _HEADER_BYTES
            data_end = data_start + length
            if data_end + _CRC.size > end:
                break
            expected_length_crc = length_crcs.get(length)
            if expected_length_crc is None:
                expected_length_crc = length_crcs[length] = _masked_crc(buffer[position : data_start - _CRC.size])
            if expected_length_crc != length_crc:
                break
            data = buffer[data_start:data_end]
            crc = crc32c(data)
            if (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF != unpack_crc(buffer, data_end)[0]:
                break
            position = data_end + _CRC.size
            append(_new_tuple(Record, (index, data, None, None)))  # Record(index, data) without its Python-level __new__
            index += 1
            room -= 1
        self._position = position
        return index

    def _framed_record(self) -> tuple[int, bool] | None:
        """(total bytes, data CRC holds) of the record at the current position, or None when
        no record is framed there. A record whose data fails its CRC counts as framed only
        when the next record (or the end of the stream) follows it: a wrong length is never
        trusted."""
        length = self._length_at(0)
        if length is None:
            return None
        total = _HEADER_BYTES + length + _CRC.size
        if not self._available(total):
            return None
        start = self._position + _HEADER_BYTES
        (data_crc,) = _CRC.unpack_from(self._buffer, start + length)
        if _masked_crc(self._buffer[start : start + length]) == data_crc:
            return total, True
        if not self._available(total + 1) or self._length_at(total) is not None:
            return total, False
        return None

    def _take(self, index: int, total: int, intact: bool) -> Record:
        start = self._position
        self._position += total
        if not intact:
            return Record(index, error_type=CORRUPT_RECORD, error_message=f"data of record {index} fails its CRC")
        return Record(index, data=self._buffer[start + _HEADER_BYTES : start + total - _CRC.size])

    def _skip_damage(self, index: int) -> Record:
        """Skips to the next offset where a record is framed, or to the end: one error record."""
        first = self._offset()
        short_tail = not self._available(_HEADER_BYTES)
        header_intact = self._length_at(0) is not None
        self._position += 1
        while True:
            found = self._buffer.find(_HIGH_LENGTH_BYTES, self._position + _HIGH_LENGTH_OFFSET)
            if found >= 0:
                self._position = found - _HIGH_LENGTH_OFFSET
                if self._framed_record():
                    break
                self._position += 1
            elif self._eof:
                self._position = len(self._buffer)
                break
            else:  # read on, keeping the bytes that may still begin a header
                self._position = max(self._position, len(self._buffer) - _HEADER_BYTES + _HIGH_LENGTH_OFFSET + 1)
                self._available(len(self._buffer) - self._position + 1)
        span = f"bytes {first}-{self._offset() - 1}"
        at_end = self._eof and self._position == len(self._buffer)
        if at_end and short_tail:
            return Record(
                index, error_type=TRUNCATED_RECORD, error_message=f"shard ends inside the header of record {index} ({span})"
            )
        if at_end and header_intact:
            return Record(index, error_type=TRUNCATED_RECORD, error_message=f"shard ends inside record {index} ({span})")
        self._skipped.append(f"{span} skipped")
        return Record(
            index, error_type=UNREADABLE_RECORD, error_message=f"record {index} cannot be framed: {span} hold no valid record"
        )

    def _length_at(self, relative: int) -> int | None:
        """The record length whose header starts `relative` bytes ahead, if its CRC holds and it is plausible."""
        if not self._available(relative + _HEADER_BYTES):
            return None
        start = self._position + relative
        (length,) = _LENGTH.unpack_from(self._buffer, start)
        (length_crc,) = _CRC.unpack_from(self._buffer, start + _LENGTH.size)
        if length > MAX_RECORD_BYTES or _masked_crc(self._buffer[start : start + _LENGTH.size]) != length_crc:
            return None
        return length

    def _offset(self) -> int:
        """Offset in the stream of the current position."""
        return self.size - len(self._buffer) + self._position

    def _available(self, count: int) -> bool:
        """True when `count` bytes from the current position are buffered (reading on as needed;
        the bytes before the position are dropped, which moves the position to 0)."""
        held = len(self._buffer) - self._position
        if held >= count:
            return True
        pieces = [self._buffer[self._position :]]
        while held < count and not self._eof:
            chunk = self._stream.read(max(_CHUNK_BYTES, count - held))
            if not chunk:
                self._eof = True
                break
            self._hash.update(chunk)
            self.size += len(chunk)
            pieces.append(chunk)
            held += len(chunk)
        self._buffer = b"".join(pieces)
        self._position = 0
        return held >= count


def read_records(stream: IO[bytes], *, expected_records: int | None = None) -> Iterator[Record]:
    """Every record of a TFRecord stream, damaged ones as error records (see ShardReader)."""
    return iter(ShardReader(stream, expected_records=expected_records))
