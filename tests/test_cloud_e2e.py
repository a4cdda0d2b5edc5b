"""End to end on Cloud Storage: raw IDX (local) -> prepare -> gs:// shards -> train (gs:// in and out)
-> score on the DirectRunner (gs:// shards, model and tables) -> tables read back from the
bucket with DuckDB, equal to the same chain run on local folders. Then the same chain again
through a proxy that fails every 4th request: exactly the same rows, nothing lost or doubled.

The bucket is a real GCS API server on loopback (gcp-storage-emulator, tests/gcs_server.py).
"""

import json
import os

import numpy as np
import pytest

from components.analysts.tables import query
from components.constants import DEFAULT_SOURCE, IDX_FILES
from components.io import storage
from components.io.idx import load_idx
from components.prepare.dataset import prepare
from components.score.run import score
from components.train.training import train
from tests.conftest import write_idx

TRAIN_IMAGES, TEST_IMAGES = 3000, 600


def write_real_subset(folder: str, train_images: int, test_images: int) -> str:
    """The first images of the real data set as a small custom IDX data set (fast to train)."""
    os.makedirs(folder, exist_ok=True)
    for split, count in (("train", train_images), ("test", test_images)):
        for name, ndim in zip(IDX_FILES[split], (3, 1)):
            array = load_idx(os.path.join(DEFAULT_SOURCE, f"{name}.gz"), ndim=ndim).array[:count]
            write_idx(os.path.join(folder, f"{name}.gz"), array)
    return folder


@pytest.fixture(scope="module")
def real_subset(tmp_path_factory) -> str:
    return write_real_subset(str(tmp_path_factory.mktemp("subset")), TRAIN_IMAGES, TEST_IMAGES)


def run_chain(source: str, root: str) -> tuple[dict, dict]:
    """prepare -> train -> score below `root`; returns the train and score summaries."""
    prepare(source=source, output=f"{root}/shards", shards_per_split=3, allow_unknown_source=True, workers=1)
    trained = train(data=f"{root}/shards", model_root=f"{root}/models", epochs=2, min_accuracy=0.5, seed=7)
    # The DirectRunner by name, as deployments name it (score's own default is its FnApiRunner engine).
    summary = score(
        input=f"{root}/shards/test-*.tfrecord",
        model=f"{root}/models",
        output=f"{root}/scores",
        run_id="e2e",
        run_date="2026-11-29",
        beam_args=["--runner", "DirectRunner"],
    )
    return trained, summary


def read_results(root: str, trained: dict, summary: dict) -> dict:
    """What the tables (through DuckDB) and the model's metrics say."""
    rows = query(
        sql="SELECT image_id, predicted_label, true_label, confidence, model_version, run_id FROM predictions ORDER BY image_id",
        scores=f"{root}/scores",
    ).to_pylist()
    metrics = json.loads(storage.read_bytes(storage.join(trained["uri"], "metrics.json")))
    return {"summary": summary, "rows": rows, "metrics": metrics}


def assert_same_results(cloud: dict, local: dict) -> None:
    assert cloud["summary"]["counts"] == local["summary"]["counts"]
    assert cloud["summary"]["counts"]["read"] == TEST_IMAGES == len(cloud["rows"])
    assert len({row["image_id"] for row in cloud["rows"]}) == TEST_IMAGES
    strip = lambda rows: [(r["image_id"], r["predicted_label"], r["true_label"]) for r in rows]  # noqa: E731
    assert strip(cloud["rows"]) == strip(local["rows"])  # same seed, same data: same model, same answers
    np.testing.assert_allclose([r["confidence"] for r in cloud["rows"]], [r["confidence"] for r in local["rows"]], rtol=1e-5)
    accuracy = np.mean([r["predicted_label"] == r["true_label"] for r in cloud["rows"]])
    assert accuracy == pytest.approx(cloud["metrics"]["test_accuracy"], abs=1e-6)
    assert {r["model_version"] for r in cloud["rows"]} == {cloud["summary"]["model_version"]}


@pytest.fixture(scope="module")
def local_results(real_subset, tmp_path_factory) -> dict:
    root = str(tmp_path_factory.mktemp("local"))
    return read_results(root, *run_chain(real_subset, root))


@pytest.mark.slow
def test_every_step_reads_and_writes_gcs(real_subset, local_results, gcs_bucket):
    cloud = read_results(f"{gcs_bucket}/e2e", *run_chain(real_subset, f"{gcs_bucket}/e2e"))
    assert_same_results(cloud, local_results)
    assert storage.exists(f"{gcs_bucket}/e2e/scores/runs/e2e.json")
    assert all(uri.startswith(gcs_bucket) for uri in cloud["summary"]["inputs"]["shards"])


@pytest.mark.slow
def test_every_step_survives_a_flaky_bucket(real_subset, local_results, faulty_gcs_bucket, gcs_emulator, monkeypatch):
    bucket, proxy = faulty_gcs_bucket
    produced = run_chain(real_subset, f"{bucket}/flaky")
    # Read back through a clean connection: the jobs are under test here, not the reader
    # (Arrow's own GCS client, used by DuckDB's views, retries on its own 15-minute clock).
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://{gcs_emulator}")
    storage._gcs_client.cache_clear()
    cloud = read_results(f"{bucket}/flaky", *produced)
    assert_same_results(cloud, local_results)
    assert set(proxy.injected) == {"503", "reset", "lost"} and sum(proxy.injected.values()) >= 20
