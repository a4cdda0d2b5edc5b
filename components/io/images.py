"""Image conversions shared by every step: PNG encoding and "any picture -> model input".

Fashion-MNIST pictures are 28x28 grayscale, the garment light on a black background,
centred, filling the frame. Ordinary product pictures are mostly dark garments on a white
background, in colour and any size. `to_model_image` maps the second onto the first, the
way the data set itself was made: grayscale, negate a light background, trim to the
object, fit the longer side to 28 pixels keeping the aspect ratio, pad centred with black.
"""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from components.constants import IMAGE_SIZE

# Pictures above this many pixels, or whose pixels take more than this many bytes once
# decompressed (16 bits and four channels per pixel multiply the size), are refused from
# their header, before anything is inflated: decompression bombs stay small.
MAX_PIXELS = 50_000_000
MAX_DECODED_BYTES = 64 * 1024 * 1024
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # by IHDR colour type: grey, RGB, palette, grey+alpha, RGBA
# A pixel is "object" (for trimming) when it differs this much from the background.
_OBJECT_THRESHOLD = 16
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


class ImageError(ValueError):
    """A picture that cannot become a model input; error_type says which kind of failure."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


def encode_png(image: np.ndarray) -> bytes:
    """Lossless, deterministic PNG of a 2-D uint8 grayscale image."""
    buffer = io.BytesIO()
    Image.fromarray(image, mode="L").save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def to_model_image(encoded: bytes) -> np.ndarray:
    """Decodes PNG/JPEG bytes into a 28x28 uint8 image in Fashion-MNIST's style.

    A picture that already is 28x28 grayscale is taken as it is (it follows the contract).
    Raises ImageError(decode_error | bad_shape) for bytes that are no usable picture.
    """
    try:
        picture = Image.open(io.BytesIO(encoded))
        width, height = picture.size
        if width < 1 or height < 1:
            raise ImageError("bad_shape", f"image is {width}x{height} pixels")
        if width * height > MAX_PIXELS:
            raise ImageError("bad_shape", f"image too large: {width}x{height} pixels, above the limit of {MAX_PIXELS:,}")
        if (size := decoded_bytes(encoded, picture)) > MAX_DECODED_BYTES:
            raise ImageError(
                "bad_shape",
                f"image too large: {width}x{height} pixels of {size // (width * height)} bytes, "
                f"{size:,} bytes decoded, above the limit of {MAX_DECODED_BYTES:,}",
            )
        picture = ImageOps.exif_transpose(picture)
        gray = _to_grayscale(picture)
    except ImageError:
        raise
    except Image.DecompressionBombError as error:  # PIL's own pixel cap, from the header
        raise ImageError("bad_shape", f"image too large: {error}") from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        # PIL reports undecodable data through these types; keep its reason for the table.
        raise ImageError("decode_error", f"cannot decode image: {error}") from error
    if gray.shape == (IMAGE_SIZE, IMAGE_SIZE) and picture.mode == "L":
        return gray
    return _fit_to_frame(gray)


def decoded_bytes(encoded: bytes, picture: Image.Image) -> int:
    """Bytes the picture's pixels take once decompressed, from its header: for a PNG its own
    bit depth and channels (PIL reports a 16-bit RGB PNG as 8-bit mode RGB), else PIL's mode."""
    width, height = picture.size
    if encoded.startswith(_PNG_SIGNATURE) and encoded[12:16] == b"IHDR":
        _, _, depth, colour_type = struct.unpack(">IIBB", encoded[16:26])
        return width * height * _PNG_CHANNELS.get(colour_type, 4) * max(depth, 8) // 8
    bits = {"1": 8, "I;16": 16, "I;16B": 16, "I;16L": 16, "I": 32, "F": 32}.get(picture.mode, 8)
    return width * height * len(picture.getbands()) * bits // 8


def _to_grayscale(picture: Image.Image) -> np.ndarray:
    if picture.mode in ("RGBA", "LA", "PA") or (picture.mode == "P" and "transparency" in picture.info):
        # Transparent backgrounds become white, like a product photo's backdrop.
        background = Image.new("RGBA", picture.size, (255, 255, 255, 255))
        picture = Image.alpha_composite(background, picture.convert("RGBA"))
    if picture.mode == "L":
        return np.asarray(picture, dtype=np.uint8)
    if picture.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.array(picture, dtype=np.float32)  # a copy, half the memory of float64; 8 bits come out
        low = values.min()
        span = max(float(values.max() - low), 1e-9)
        values -= low
        values *= np.float32(255.0 / span)
        return values.astype(np.uint8)
    return np.asarray(picture.convert("L"), dtype=np.uint8)


def _border_level(gray: np.ndarray) -> int:
    border = np.concatenate([gray[0, :], gray[-1, :], gray[:, 0], gray[:, -1]])
    return int(np.median(border))


def _fit_to_frame(gray: np.ndarray) -> np.ndarray:
    if _border_level(gray) > 127:  # light backdrop: negate, garments become light
        gray = 255 - gray
    background = _border_level(gray)
    rows, cols = np.nonzero(np.abs(gray.astype(np.int16) - background) > _OBJECT_THRESHOLD)
    if rows.size:  # trim to the object; an empty picture stays whole
        gray = gray[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    height, width = gray.shape
    scale = IMAGE_SIZE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = Image.fromarray(gray, mode="L").resize(size, Image.Resampling.LANCZOS)
    frame = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)
    frame.paste(resized, ((IMAGE_SIZE - size[0]) // 2, (IMAGE_SIZE - size[1]) // 2))
    return np.asarray(frame, dtype=np.uint8)
