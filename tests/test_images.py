"""Any picture -> a 28x28 model image in Fashion-MNIST's style."""
import io

import numpy as np
import pytest
from PIL import Image

from components.images import ImageError, encode_png, to_model_image


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
