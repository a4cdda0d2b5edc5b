"""Reading and validating the IDX files of the raw data set."""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import struct
import zlib

import numpy as np

from components import storage
from components.constants import IMAGE_SIZE, NUM_CLASSES
from components.errors import InputError

_GZIP_MAGIC = b"\x1f\x8b"
_UBYTE = 0x08


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
    raw = storage.read_bytes(uri)
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as error:
            raise InputError(f"{uri}: truncated or corrupt gzip data ({error})") from error
    return IdxFile(uri=uri, sha256=hashlib.sha256(raw).hexdigest(), array=parse_idx(raw, uri, ndim))


def parse_idx(raw: bytes, uri: str, ndim: int) -> np.ndarray:
    """Decodes IDX bytes holding unsigned bytes in `ndim` dimensions."""
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != _UBYTE or raw[3] != ndim:
        raise InputError(
            f"{uri}: wrong magic number {raw[:4].hex() or 'empty'}, expected 000008{ndim:02x}"
        )
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
        raise InputError(
            f"{labels.uri}: {labels.array.shape[0]} labels for {images.array.shape[0]} images in {images.uri}"
        )
    if images.array.shape[0] == 0:
        raise InputError(f"{images.uri}: holds no images")
    if labels.array.size and int(labels.array.max()) >= NUM_CLASSES:
        bad = int(np.argmax(labels.array >= NUM_CLASSES))
        raise InputError(f"{labels.uri}: label {labels.array[bad]} at index {bad} is outside 0-9")
    return images, labels
