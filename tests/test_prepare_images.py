"""`fmnist prepare-images`: ordinary pictures become unlabeled shards; bad files are listed, not fatal."""

import io
import json
import os
import subprocess
import sys

from PIL import Image

from components.contracts.shards import read_manifest, read_shard
from components.io import storage
from components.io.images import to_model_image
from components.prepare.product_images import prepare_images

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def save(picture: Image.Image, path, image_format: str) -> None:
    buffer = io.BytesIO()
    picture.save(buffer, format=image_format)
    path.write_bytes(buffer.getvalue())


def make_photos(folder) -> None:
    folder.mkdir()
    shirt = Image.new("RGB", (300, 200), "white")
    shirt.paste((200, 30, 30), (100, 20, 200, 180))
    save(shirt, folder / "red-shirt.jpg", "JPEG")
    save(Image.new("L", (28, 28), 90), folder / "gray-square.png", "PNG")
    save(Image.new("RGBA", (64, 128), (0, 0, 0, 0)), folder / "transparent.png", "PNG")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")


def test_pictures_become_shards_and_bad_files_are_rejected(tmp_path):
    make_photos(tmp_path / "photos")
    output = str(tmp_path / "shards")
    manifest = prepare_images(images=str(tmp_path / "photos" / "*"), output=output, workers=1)

    examples = [e for s in manifest.splits["unlabeled"].shards for e in read_shard(storage.join(output, s.name))]
    assert sorted(e.image_id for e in examples) == ["gray-square", "red-shirt", "transparent"]
    assert all(e.label is None and to_model_image(e.encoded).shape == (28, 28) for e in examples)
    rejects = [json.loads(line) for line in open(os.path.join(output, "rejects.jsonl"))]
    assert [r["uri"].rsplit("/", 1)[-1] for r in rejects] == ["broken.jpg"]
    assert rejects[0]["reason"].startswith("decode_error")
    assert read_manifest(output).source["rejected"] == 1


def test_a_folder_means_every_file_below_it(tmp_path):
    make_photos(tmp_path / "photos")
    manifest = prepare_images(images=str(tmp_path / "photos"), output=str(tmp_path / "out"), workers=2)
    assert manifest.splits["unlabeled"].num_records == 3


def test_pictures_from_a_bucket(tmp_path, gcs_bucket):
    make_photos(tmp_path / "photos")
    for name in os.listdir(tmp_path / "photos"):
        storage.upload_file(str(tmp_path / "photos" / name), f"{gcs_bucket}/photos/{name}")
    manifest = prepare_images(images=f"{gcs_bucket}/photos/*.png", output=f"{gcs_bucket}/shards", workers=1)
    assert manifest.splits["unlabeled"].num_records == 2


def test_empty_glob_fails_cleanly(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.cli",
            "prepare-images",
            "--images",
            str(tmp_path / "*.jpg"),
            "--output",
            str(tmp_path / "out"),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {tmp_path / '*.jpg'}: no file matches"
    assert not (tmp_path / "out").exists()
