"""The data set manifest and metrics.json as types (components/contracts/manifest.py, model_metrics.py):
the manifest's bytes and digest are the ones the format always had, a damaged file is one error naming it."""

from __future__ import annotations

import hashlib
import json

import pytest

from components.constants import MANIFEST_NAME
from components.contracts.manifest import Manifest, ShardEntry, SplitEntry
from components.contracts.model_metrics import ModelMetrics
from components.contracts.shards import manifest_digest, read_manifest
from components.contracts.summary import ContractError
from components.errors import InputError
from components.prepare.dataset import prepare, publish_manifest

# A manifest as the format has always been written (json.dumps(document, indent=2)), created_at aside.
WRITTEN = """{
  "schema_version": "fmnist-shards/1",
  "tool": {
    "name": "fmnist-jobs",
    "version": "0.1.0"
  },
  "created_at": "2026-12-01T06:00:00+00:00",
  "image": {
    "height": 28,
    "width": 28,
    "channels": 1,
    "format": "png"
  },
  "class_names": [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot"
  ],
  "source": {
    "uri": "/raw",
    "files": {
      "t10k-labels-idx1-ubyte.gz": {
        "uri": "/raw/t10k-labels-idx1-ubyte.gz",
        "sha256": "ab",
        "published": false
      }
    }
  },
  "splits": {
    "test": {
      "num_records": 3,
      "class_histogram": [
        1,
        2,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0
      ],
      "shards": [
        {
          "name": "test-00000-of-00001.tfrecord",
          "num_records": 3,
          "sha256": "cd",
          "bytes": 120
        }
      ]
    },
    "unlabeled": {
      "num_records": 1,
      "class_histogram": null,
      "shards": []
    }
  }
}"""


def _old_digest(document: dict) -> str:
    """The digest as it was computed on the manifest's plain JSON document."""
    stable = {key: value for key, value in document.items() if key != "created_at"}
    return hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()


def test_a_manifest_is_written_as_the_format_always_was():
    manifest = Manifest(
        tool={"name": "fmnist-jobs", "version": "0.1.0"},
        created_at="2026-12-01T06:00:00+00:00",
        source={
            "uri": "/raw",
            "files": {"t10k-labels-idx1-ubyte.gz": {"uri": "/raw/t10k-labels-idx1-ubyte.gz", "sha256": "ab", "published": False}},
        },
        splits={
            "test": SplitEntry(
                num_records=3,
                class_histogram=[1, 2, 0, 0, 0, 0, 0, 0, 0, 0],
                shards=[ShardEntry(name="test-00000-of-00001.tfrecord", num_records=3, sha256="cd", bytes=120)],
            ),
            "unlabeled": SplitEntry(num_records=1, class_histogram=None, shards=[]),
        },
    )
    assert manifest.to_bytes().decode() == WRITTEN
    assert Manifest.from_json(WRITTEN) == manifest
    assert manifest_digest(manifest) == _old_digest(json.loads(WRITTEN))


def test_a_prepared_manifest_reads_back_to_the_same_bytes_and_digest(tiny_idx, tmp_path):
    output = str(tmp_path / "shards")
    manifest = prepare(source=tiny_idx, output=output, shards_per_split=2, allow_unknown_source=True, workers=1)
    written = (tmp_path / "shards" / MANIFEST_NAME).read_bytes()

    assert read_manifest(output) == manifest
    assert manifest.to_bytes() == written
    assert manifest_digest(manifest) == _old_digest(json.loads(written))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda doc: doc["splits"]["test"]["shards"][0].pop("num_records"), "'num_records' is missing"),
        (lambda doc: doc["splits"]["test"].update(shards="test-00000"), "'shards' is str, expected list"),
        (lambda doc: doc.pop("splits"), "'splits' is missing"),
    ],
)
def test_a_damaged_manifest_is_one_input_error_naming_the_file(tmp_path, damage, message):
    document = json.loads(WRITTEN)
    damage(document)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(document))
    with pytest.raises(InputError, match=f"^{tmp_path / MANIFEST_NAME}: manifest does not follow fmnist-shards/1 .*{message}"):
        read_manifest(str(tmp_path))


def test_a_manifest_is_published_once(tmp_path):
    manifest = Manifest.from_json(WRITTEN)
    publish_manifest(str(tmp_path), manifest)
    assert (tmp_path / MANIFEST_NAME).read_text() == WRITTEN


def test_metrics_read_the_fields_readers_use_and_ignore_the_rest():
    document = {
        "model_version": "20261201T060000Z-0a1b2c3d",
        "test_accuracy": 0.9,
        "test_loss": 0.3,
        "test_ece": 0.01,
        "per_class": {"Bag": {"precision": 1.0, "recall": 0.5, "f1": 0.66, "support": 2}},
        "confusion_matrix": [[1, 0], [1, 1]],
        "quality_gate": {"passed": True, "min_accuracy": 0.85, "reason": "test accuracy 0.9000 >= minimum 0.85"},
        "parameters": {"model": "mlp", "epochs": 2},
        "data": {"uri": "/d", "manifest_digest": "ab", "train_records": 5, "validation_records": 1, "test_records": 2},
        "history": [{"epoch": 1}],
        "model_sha256": "cd",
    }
    metrics = ModelMetrics.from_json(json.dumps(document))
    assert metrics.quality_gate.passed is True and metrics.model_sha256 == "cd"
    assert metrics.data is not None and metrics.data.manifest_digest == "ab" and metrics.parameters["model"] == "mlp"
    assert ModelMetrics.from_json('{"quality_gate": {"passed": false}}').model_sha256 is None


@pytest.mark.parametrize("text", ["{", "[]", '{"test_accuracy": 0.9}', '{"quality_gate": {"passed": "yes"}}'])
def test_metrics_without_a_gate_are_refused(text):
    with pytest.raises(ContractError):
        ModelMetrics.from_json(text)
