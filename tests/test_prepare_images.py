"""`fmnist prepare-images`: ordinary pictures become unlabeled shards; bad files are listed, not fatal."""

import io
import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from components.contracts.shards import read_manifest, read_shard
from components.errors import InputError
from components.io import storage
from components.io.images import to_model_image
from components.prepare.product_images import prepare_images
from tests.test_score import fit_tiny_model, save_model

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


def make_nested_photos(folder) -> dict[str, str]:
    """Pictures in nested folders, two with the same file name: {path below folder: absolute URI}."""
    pictures = {}
    for relative, shade in (("shirts/red.png", 200), ("shirts/2026/red.png", 150), ("bags/red.png", 90), ("top.png", 30)):
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        save(Image.new("L", (40, 30), shade), path, "PNG")
        pictures[relative] = storage.absolute_uri(str(path))
    return pictures


@pytest.mark.integration
def test_nested_folders_prediction_rows_carry_each_files_full_uri(tmp_path):
    from components.analysts import read
    from components.score.run import score

    pictures = make_nested_photos(tmp_path / "photos")
    output = str(tmp_path / "shards")
    prepare_images(images=str(tmp_path / "photos" / "**" / "*.png"), output=output, workers=1)
    model_root = str(tmp_path / "models")
    save_model(fit_tiny_model(), model_root, "v1")
    scores = str(tmp_path / "scores")
    score(input=storage.join(output, "*.tfrecord"), model=model_root, output=scores, run_id="photos", run_date="2026-12-01")
    rows = read(scores, "predictions", columns=["image_id", "image_uri"]).to_pylist()
    # ids are paths below the glob's fixed folder: the same file name in two folders stays two images
    assert {row["image_id"]: row["image_uri"] for row in rows} == {
        os.path.splitext(relative)[0]: uri for relative, uri in pictures.items()
    }


def test_a_keys_file_names_each_picture_with_its_product_key(tmp_path):
    pictures = make_nested_photos(tmp_path / "photos")
    keys = tmp_path / "keys.csv"
    keys.write_text(
        "image,key\n"
        f"{tmp_path / 'photos' / 'shirts' / 'red.png'},SKU-1\n"  # as matched
        f"{pictures['bags/red.png']},=SKU-2\n"  # its absolute URI; any text is a key
        f"{pictures['top.png']},SKU-3\n"
    )
    output = str(tmp_path / "shards")
    manifest = prepare_images(images=str(tmp_path / "photos"), output=output, keys=str(keys), workers=1)
    examples = [e for s in manifest.splits["unlabeled"].shards for e in read_shard(storage.join(output, s.name))]
    assert {e.image_id: e.image_uri for e in examples} == {
        "SKU-1": pictures["shirts/red.png"],
        "=SKU-2": pictures["bags/red.png"],
        "SKU-3": pictures["top.png"],
    }
    rejects = [json.loads(line) for line in open(os.path.join(output, "rejects.jsonl"))]
    assert [(r["uri"], r["reason"].split(":")[0]) for r in rejects] == [
        (str(tmp_path / "photos" / "shirts/2026/red.png"), "no_key")
    ]


@pytest.mark.parametrize(
    "text, message",
    [("uri,sku\nx,1\n", "columns `image` and `key`"), ("image,key\nx,\n", "line 2"), ("image,key\nx,1\nx,2\n", "second key")],
)
def test_a_bad_keys_file_is_an_input_error_naming_it(tmp_path, text, message):
    make_photos(tmp_path / "photos")
    keys = tmp_path / "keys.csv"
    keys.write_text(text)
    with pytest.raises(InputError, match=message) as raised:
        prepare_images(images=str(tmp_path / "photos"), output=str(tmp_path / "out"), keys=str(keys), workers=1)
    assert str(keys) in str(raised.value) and not (tmp_path / "out").exists()
