"""Any picture -> a 28x28 model image in Fashion-MNIST's style."""

import io
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from components.io.images import ImageError, encode_png, to_model_image

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def encode(picture: Image.Image, image_format: str) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format=image_format)
    return buffer.getvalue()


def test_contract_image_passes_through_unchanged():
    image = np.random.default_rng(1).integers(0, 256, (28, 28), dtype=np.uint8)
    assert np.array_equal(to_model_image(encode_png(image)), image)


def test_png_encoding_is_deterministic():
    image = np.arange(784, dtype=np.uint16).reshape(28, 28).astype(np.uint8)
    assert encode_png(image) == encode_png(image.copy())


def test_product_photo_becomes_light_garment_on_black_centred():
    photo = Image.new("RGB", (120, 60), "white")  # wide, white backdrop
    photo.paste((20, 30, 160), (50, 10, 70, 50))  # a dark-blue, tall "garment": 20x40
    image = to_model_image(encode(photo, "JPEG"))
    assert image.shape == (28, 28) and image.dtype == np.uint8
    assert image[14, 14] > 150  # the garment is light after negation
    assert image[:, :5].max() < 20 and image[:, -5:].max() < 20  # black padding beside it
    rows, cols = np.nonzero(image > 100)
    assert abs((rows.min() + rows.max()) / 2 - 13.5) <= 1 and abs((cols.min() + cols.max()) / 2 - 13.5) <= 1


def test_transparent_background_counts_as_white():
    picture = Image.new("RGBA", (50, 50), (0, 0, 0, 0))
    picture.paste((10, 10, 10, 255), (10, 5, 40, 45))
    image = to_model_image(encode(picture, "PNG"))
    assert image[14, 14] > 200 and image[0, 0] < 20


@pytest.mark.parametrize("data", [b"", b"not an image at all", encode_png(np.zeros((28, 28), np.uint8))[:40]])
def test_undecodable_bytes_raise_decode_error(data):
    with pytest.raises(ImageError) as raised:
        to_model_image(data)
    assert raised.value.error_type == "decode_error"


def png(width: int, height: int, depth: int, colour_type: int, rows) -> bytes:
    """A PNG written chunk by chunk: `rows` yields each scanline's bytes (filter byte added),
    compressed as a stream, so a picture far larger than memory allows costs little here."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(b"\x00" + row) for row in rows) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_small_16_bit_png_is_still_a_model_input():
    values = np.zeros((40, 40), dtype=">u2")
    values[10:30, 15:25] = 60_000  # a light garment on black, in 16 bits
    image = to_model_image(png(40, 40, 16, 0, (row.tobytes() for row in values)))
    assert image.shape == (28, 28) and image.dtype == np.uint8
    assert image[14, 14] > 200 and image[0, 0] < 20


@pytest.mark.parametrize(
    "width, height, depth, colour_type",
    [
        (3000, 3000, 16, 6),  # 9 M pixels (under the pixel cap) of 8 bytes: 72 MB decoded
        (6000, 6000, 16, 0),  # 36 M pixels (under the pixel cap) of 2 bytes: 72 MB decoded
        (100_000, 100_000, 8, 0),  # 10 G pixels: refused by the pixel cap
    ],
)
def test_large_decoded_size_is_refused_from_the_header(width, height, depth, colour_type):
    from components.io.images import MAX_DECODED_BYTES, MAX_PIXELS

    channels = {0: 1, 6: 4}[colour_type]
    decoded = width * height * channels * depth // 8
    assert decoded > MAX_DECODED_BYTES or width * height > MAX_PIXELS
    header_only = png(width, height, depth, colour_type, [])  # no pixel data: decoding would fail otherwise
    with pytest.raises(ImageError) as raised:
        to_model_image(header_only)
    assert raised.value.error_type == "bad_shape" and "too large" in str(raised.value)


def test_16_bit_bomb_is_refused_without_inflating_it(tmp_path):
    """A real 72 MB (decoded) 16-bit RGBA PNG of 70 KB: refused, and the process's memory does not grow."""
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png(3000, 3000, 16, 6, (bytes(3000 * 8) for _ in range(3000))))
    assert bomb.stat().st_size < 200_000
    script = (
        "import resource, sys\n"
        "from components.io.images import ImageError, to_model_image\n"
        "data = open(sys.argv[1], 'rb').read()\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        "    to_model_image(data)\n"
        "except ImageError as error:\n"
        "    print(error.error_type, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script, str(bomb)], capture_output=True, text=True, cwd=REPO_ROOT, check=True
    )
    error_type, growth_kib = completed.stdout.split()
    assert error_type == "bad_shape" and int(growth_kib) < 16 * 1024
