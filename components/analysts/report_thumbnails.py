"""The report's image galleries: the listed images decoded from their source shards, enlarged."""

from __future__ import annotations

import numpy as np

from components.analysts.report_data import Thumbnail
from components.contracts.shards import parse_example
from components.errors import InputError
from components.io import storage
from components.io.images import ImageError, encode_png, to_model_image
from components.io.tfrecord import read_records

THUMBNAIL_SCALE = 3


def thumbnails(rows: list[tuple], *, readable: set[str]) -> list[Thumbnail]:
    """Decodes the listed images from their source shards (each shard read once, up to its last hit).

    Only shards in `readable` (those the runs' summaries say they scored) are opened: a row's
    source_uri is data, and a row naming any other location is shown without a picture."""
    wanted: dict[str, dict[str, tuple]] = {}
    for row in rows:
        wanted.setdefault(row[2], {})[row[0]] = row
    found: dict[tuple[str, str], tuple[bytes | None, str]] = {}
    for uri, rows_of_shard in wanted.items():
        missing = dict(rows_of_shard)
        if uri not in readable:
            for image_id in missing:
                found[(uri, image_id)] = (None, f"{uri} is not a shard the run scored: not read")
            continue
        try:
            with storage.open_read(storage.from_absolute_uri(uri)) as stream:
                for record in read_records(stream):
                    if record.data is None:
                        continue  # a damaged record was an error row, not a prediction
                    try:
                        example = parse_example(record.data)
                    except (KeyError, ValueError):
                        continue  # likewise: such a record is in the error table
                    if missing.pop(example.image_id, None) is not None:
                        found[(uri, example.image_id)] = _thumbnail_png(example.encoded)
                    if not missing:
                        break
        except InputError as error:  # the shard is gone (retention): show the row without a picture
            for image_id in missing:
                found[(uri, image_id)] = (None, str(error))
            continue
        for image_id in missing:
            found[(uri, image_id)] = (None, f"{image_id} not found in {uri}")
    result = []
    for image_id, run_id, uri, predicted_class, confidence, true_label in rows:
        png, note = found[(uri, image_id)]
        result.append(Thumbnail(image_id, run_id, uri, predicted_class, float(confidence), true_label, png, note))
    return result


def _thumbnail_png(encoded: bytes) -> tuple[bytes | None, str]:
    """The 28x28 image the model saw, enlarged with square pixels."""
    try:
        image = to_model_image(encoded)
    except ImageError as error:
        return None, f"cannot decode: {error}"
    return encode_png(np.kron(image, np.ones((THUMBNAIL_SCALE, THUMBNAIL_SCALE), dtype=np.uint8))), ""
