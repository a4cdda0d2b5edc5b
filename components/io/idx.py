"""Reading and validating the IDX files of the raw data set."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import struct
import zlib
from collections.abc import Iterator

import numpy as np

from components.constants import IMAGE_SIZE, NUM_CLASSES
from components.errors import InputError
from components.io import storage

_GZIP_MAGIC = b"\x1f\x8b"
_UBYTE = 0x08
# The largest IDX file accepted: 4x the real training images (47 MB). A header declaring more,
# or data (once inflated) running past what its header declares, is refused while streaming:
# a "gzip bomb" never fills the memory.
MAX_IDX_BYTES = 4 * (60_000 * IMAGE_SIZE * IMAGE_SIZE + 16)
_READ_CHUNK = 1 << 20
_GZIP_WBITS = 16 + zlib.MAX_WBITS  # zlib's window with gzip framing


@dataclasses.dataclass(frozen=True)
class IdxFile:
    """A decoded IDX file with where it came from and the SHA-256 of its decompressed bytes."""

    uri: str
    sha256: str
    array: np.ndarray


def locate(source: str, name: str) -> str:
    """The URI of `name` below `source`, compressed (`.gz`) or not."""
    for candidate in (storage.join(source, f"{name}.gz"), storage.join(source, name)):
        if storage.exists(candidate):
            return candidate
    raise InputError(f"{storage.join(source, name)}[.gz]: file not found")


def load_idx(uri: str, ndim: int) -> IdxFile:
    """Reads an IDX file (gzip or plain, told apart by content) and checks its header."""
    raw = read_idx_bytes(uri, ndim)
    return IdxFile(uri=uri, sha256=hashlib.sha256(raw).hexdigest(), array=parse_idx(raw, uri, ndim))


def read_idx_bytes(uri: str, ndim: int) -> bytes:
    """The (decompressed) bytes of an IDX file, streamed and never more than its header declares
    nor more than MAX_IDX_BYTES: a gzip bomb is refused once its header has been read, not
    after it has been inflated."""
    header_bytes = 4 + 4 * ndim
    limit = MAX_IDX_BYTES
    data = bytearray()
    for piece in _content(uri):
        if len(data) < header_bytes <= len(data) + len(piece):
            limit = declared_size((data + piece)[:header_bytes], uri, ndim)
        data += piece
        if len(data) > limit:
            raise InputError(f"{uri}: holds more than the {limit} bytes its header declares (decompressed)")
    return bytes(data)


def declared_size(header: bytes, uri: str, ndim: int) -> int:
    """The size in bytes of the IDX file this header describes; InputError beyond MAX_IDX_BYTES."""
    check_magic(header, uri, ndim)
    size = 4 + 4 * ndim + int(np.prod(struct.unpack(f">{ndim}I", header[4 : 4 + 4 * ndim]), dtype=np.int64))
    if size > MAX_IDX_BYTES:
        raise InputError(f"{uri}: header declares {size} bytes, more than the {MAX_IDX_BYTES} accepted for an IDX file")
    return size


def _content(uri: str) -> Iterator[bytes]:
    """The bytes of a file in pieces of at most _READ_CHUNK, gunzipped when it is gzip data."""
    with storage.open_read(uri) as stream:
        head = stream.read(len(_GZIP_MAGIC))
        chunks = itertools.chain([head], iter(lambda: stream.read(_READ_CHUNK), b""))
        if head != _GZIP_MAGIC:
            yield from chunks
            return
        inflater = zlib.decompressobj(wbits=_GZIP_WBITS)
        try:
            for pending in chunks:
                while True:  # bounded output per call: memory follows what the caller keeps
                    piece = inflater.decompress(pending, _READ_CHUNK)
                    yield piece
                    pending = inflater.unconsumed_tail
                    if inflater.eof and inflater.unused_data:  # the next of concatenated gzip members
                        pending, inflater = inflater.unused_data, zlib.decompressobj(wbits=_GZIP_WBITS)
                    if not pending and len(piece) < _READ_CHUNK:
                        break
        except zlib.error as error:
            raise InputError(f"{uri}: truncated or corrupt gzip data ({error})") from error
        if not inflater.eof:
            raise InputError(f"{uri}: truncated or corrupt gzip data (ends inside the compressed stream)")


def check_magic(raw: bytes, uri: str, ndim: int) -> None:
    """InputError unless the bytes start like an IDX file of unsigned bytes in `ndim` dimensions."""
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != _UBYTE or raw[3] != ndim:
        raise InputError(f"{uri}: wrong magic number {raw[:4].hex() or 'empty'}, expected 000008{ndim:02x}")


def parse_idx(raw: bytes, uri: str, ndim: int) -> np.ndarray:
    """Decodes IDX bytes holding unsigned bytes in `ndim` dimensions."""
    check_magic(raw, uri, ndim)
    header_bytes = 4 + 4 * ndim
    if len(raw) < header_bytes:
        raise InputError(f"{uri}: file ends inside the IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:header_bytes])
    expected = header_bytes + int(np.prod(dims))
    if len(raw) != expected:
        raise InputError(f"{uri}: holds {len(raw)} bytes, header {dims} implies {expected}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header_bytes).reshape(dims)


def load_split(source: str, images_name: str, labels_name: str) -> tuple[IdxFile, IdxFile]:
    """Loads one split's images and labels and checks that they belong together."""
    images = load_idx(locate(source, images_name), ndim=3)
    labels = load_idx(locate(source, labels_name), ndim=1)
    if images.array.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise InputError(f"{images.uri}: images are {images.array.shape[1:]}, expected 28x28")
    if images.array.shape[0] != labels.array.shape[0]:
        raise InputError(f"{labels.uri}: {labels.array.shape[0]} labels for {images.array.shape[0]} images in {images.uri}")
    if images.array.shape[0] == 0:
        raise InputError(f"{images.uri}: holds no images")
    if labels.array.size and int(labels.array.max()) >= NUM_CLASSES:
        bad = int(np.argmax(labels.array >= NUM_CLASSES))
        raise InputError(f"{labels.uri}: label {labels.array[bad]} at index {bad} is outside 0-9")
    return images, labels
