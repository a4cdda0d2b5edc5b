"""`fmnist train`: shards -> a reproducible, evaluated, gated and (when good) published model version."""

import dataclasses
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from components.constants import CLASS_NAMES, IDX_FILES, MANIFEST_NAME
from components.contracts import registry
from components.contracts.manifest import Manifest, SplitEntry
from components.contracts.shards import class_histogram, read_manifest, read_shard, serialize_example, write_shard
from components.errors import InputError
from components.io import storage
from components.io.idx import load_split as load_idx_split
from components.io.tfrecord import frame_record
from components.prepare.dataset import prepare, publish_manifest, shard_tasks
from components.train.model_artifacts import SIGNATURE_IMAGES, SIGNATURE_PNG, evaluate
from components.train.models import build_model
from components.train.training import train
from components.train.training_data import holdout_mask, load_split
from tests.kfp_spec import REPO
from tests.test_prepare import run_cli

VERSION_RE = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{8}$")
ARTIFACTS = {
    "model.keras",
    "metrics.json",
    "labels.json",
    "confusion_matrix.png",
    "reliability.png",
    "model_card.md",
    "version.json",
    "saved_model/saved_model.pb",
}
TINY = {"train": 600, "test": 200}


def write_data_set(output: str, source: str, sizes: dict[str, int], shards_per_split: int = 2) -> Manifest:
    """Shards + manifest of the first `sizes[split]` real images of each split (learnable, small)."""
    splits = {}
    for split, names in IDX_FILES.items():
        images, labels = (idx.array[: sizes[split]] for idx in load_idx_split(source, *names))
        ids = [f"{split}-{i:05d}" for i in range(len(labels))]
        entries = [write_shard(task) for task in shard_tasks(output, split, ids, images, labels, shards_per_split)]
        splits[split] = SplitEntry(num_records=len(labels), class_histogram=class_histogram(labels), shards=entries)
    manifest = Manifest.new(source={"uri": source, "files": {}}, splits=splits)
    publish_manifest(output, manifest)
    return manifest


@pytest.fixture(scope="module")
def tiny_shards(real_source, tmp_path_factory) -> str:
    output = str(tmp_path_factory.mktemp("tiny") / "shards")
    write_data_set(output, real_source, TINY)
    return output


@pytest.fixture(scope="module")
def trained(tiny_shards, tmp_path_factory) -> tuple[str, dict]:
    """(model_root, summary) of one 2-epoch training on the tiny data set, published."""
    model_root = str(tmp_path_factory.mktemp("registry") / "models")
    return model_root, train(data=tiny_shards, model_root=model_root, epochs=2, min_accuracy=0.5)


def copy_data_set(source: str, target: str, edit_manifest=None) -> str:
    shutil.copytree(source, target)
    if edit_manifest:  # edits the file's JSON document: damage the typed manifest would not let through
        manifest = json.loads(storage.read_bytes(os.path.join(target, MANIFEST_NAME)))
        edit_manifest(manifest)
        storage.write_bytes(os.path.join(target, MANIFEST_NAME), json.dumps(manifest).encode())
    return target


@pytest.mark.integration
def test_publishes_a_version_with_every_artifact(trained):
    model_root, summary = trained
    version = summary["model_version"]
    folder = os.path.join(model_root, version)

    assert VERSION_RE.match(version)
    assert registry.latest_version(model_root) == version
    assert registry.resolve(model_root).uri == folder
    assert ARTIFACTS <= {os.path.relpath(os.path.join(r, n), folder) for r, _, ns in os.walk(folder) for n in ns}
    metrics = json.loads(open(os.path.join(folder, "metrics.json")).read())
    assert metrics["quality_gate"] == {"passed": True, "min_accuracy": 0.5, "reason": metrics["quality_gate"]["reason"]}
    assert metrics["test_accuracy"] == summary["test_accuracy"] > 0.5  # labels travel with their images
    assert np.isfinite(metrics["test_loss"])
    assert np.sum(metrics["confusion_matrix"]) == TINY["test"] == metrics["data"]["test_records"]
    assert metrics["data"]["train_records"] + metrics["data"]["validation_records"] == TINY["train"]
    assert set(metrics["per_class"]) == set(CLASS_NAMES)
    assert [entry["epoch"] for entry in metrics["history"]] == [1, 2] and 1 <= metrics["best_epoch"] <= 2
    assert metrics["versions"]["tensorflow"] and metrics["parameters"]["model"] == "mlp"
    assert json.loads(open(os.path.join(folder, "labels.json")).read()) == list(CLASS_NAMES)
    assert open(os.path.join(folder, "confusion_matrix.png"), "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert f"{metrics['test_accuracy']:.4f}" in open(os.path.join(folder, "model_card.md")).read()
    [line] = open(os.path.join(folder, "version.json")).read().splitlines()  # one line: BigQuery's models view
    summary_row = json.loads(line)
    assert summary_row["model_version"] == version and summary_row["test_accuracy"] == metrics["test_accuracy"]
    assert summary_row["verdict"] == "passed" and summary_row["model_uri"] == f"file://{folder}"


@pytest.mark.integration
def test_saved_model_signatures_agree_with_the_keras_model(trained, tiny_shards):
    import keras
    import tensorflow as tf

    model_root, summary = trained
    folder = os.path.join(model_root, summary["model_version"])
    examples = list(read_shard(os.path.join(tiny_shards, "test-00000-of-00002.tfrecord")))[:50]
    pngs = tf.constant([example.encoded for example in examples])
    images = tf.stack([tf.cast(tf.io.decode_png(png, channels=1)[..., 0], tf.float32) / 255 for png in pngs])
    expected = tf.nn.softmax(keras.saving.load_model(os.path.join(folder, "model.keras"))(images)).numpy()

    served = tf.saved_model.load(os.path.join(folder, "saved_model"))
    assert {SIGNATURE_PNG, SIGNATURE_IMAGES, "serving_default"} <= set(served.signatures)
    from_png = served.signatures[SIGNATURE_PNG](png=pngs)
    from_images = served.signatures[SIGNATURE_IMAGES](images=images)
    for output in (from_png, from_images):
        np.testing.assert_allclose(output["probabilities"].numpy(), expected, rtol=1e-5, atol=1e-6)
        assert output["class_ids"].numpy().tolist() == expected.argmax(axis=1).tolist()


def test_the_published_model_applies_the_fitted_temperature(trained, tiny_shards):
    """model.keras ends in a division by the temperature that metrics.json records; accuracy unchanged."""
    import keras

    model_root, summary = trained
    folder = os.path.join(model_root, summary["model_version"])
    metrics = json.loads(open(os.path.join(folder, "metrics.json")).read())
    calibration = metrics["calibration"]
    temperature = calibration["temperature"]
    assert 0.05 < temperature < 20 and temperature != 1.0
    assert metrics["test_ece"] == calibration["test_ece_after"]
    assert sum(calibration["test_reliability_after"]["images"]) == TINY["test"]

    model = keras.saving.load_model(os.path.join(folder, "model.keras"))
    last = model.layers[-1]
    assert isinstance(last, keras.layers.Rescaling) and last.scale == pytest.approx(1 / temperature)
    images = load_split(tiny_shards, read_manifest(tiny_shards), "test", str(os.path.dirname(folder) + "-stage"))
    logits = model(images.images).numpy()
    raw = keras.Sequential(model.layers[:-1])(images.images).numpy()
    np.testing.assert_allclose(logits, raw / temperature, rtol=1e-5, atol=1e-6)
    assert (logits.argmax(axis=1) == images.labels).mean() == metrics["test_accuracy"]
    card = open(os.path.join(folder, "model_card.md")).read()
    assert f"{temperature:.4f}" in card and f"{calibration['test_ece_after']:.4f}" in card


@pytest.mark.integration
def test_scoring_reports_the_calibrated_confidence(trained, tiny_shards, tmp_path):
    """`fmnist score` applies the temperature: its confidence is softmax(raw logits / T), not softmax(raw)."""
    import keras

    from components.analysts.tables import query
    from components.metrics.calibration import softmax
    from components.score.run import score

    model_root, summary = trained
    folder = os.path.join(model_root, summary["model_version"])
    temperature = json.loads(open(os.path.join(folder, "metrics.json")).read())["calibration"]["temperature"]
    output = str(tmp_path / "scores")
    score(input=os.path.join(tiny_shards, "test-*.tfrecord"), model=model_root, output=output, run_id="calibrated")
    rows = query(sql="SELECT image_id, confidence FROM predictions ORDER BY image_id", scores=output).to_pylist()

    images = load_split(tiny_shards, read_manifest(tiny_shards), "test", str(tmp_path / "stage"))
    order = np.argsort(images.image_ids)
    raw = keras.Sequential(keras.saving.load_model(os.path.join(folder, "model.keras")).layers[:-1])
    logits = raw(images.images[order]).numpy().astype(np.float64)
    assert [row["image_id"].encode() for row in rows] == images.image_ids[order].tolist()
    confidence = np.array([row["confidence"] for row in rows])
    np.testing.assert_allclose(confidence, softmax(logits / temperature).max(axis=1), rtol=1e-4, atol=1e-5)
    assert np.abs(confidence - softmax(logits).max(axis=1)).max() > 1e-3  # and the temperature made a difference


@pytest.mark.integration
def test_metrics_record_the_hash_of_the_model_file_and_scoring_checks_it(trained, tiny_shards, tmp_path):
    model_root = str(tmp_path / "models")
    shutil.copytree(trained[0], model_root)
    folder = os.path.join(model_root, trained[1]["model_version"])
    model_file, metrics_file = os.path.join(folder, "model.keras"), os.path.join(folder, "metrics.json")
    metrics = json.loads(open(metrics_file).read())
    assert metrics["model_sha256"] == hashlib.sha256(open(model_file, "rb").read()).hexdigest()
    assert registry.resolve(model_root).version == trained[1]["model_version"]

    with open(model_file, "ab") as file:
        file.write(b"\0")  # damaged (or swapped): no longer the evaluated bytes
    result = run_cli(
        "score", "--input", os.path.join(tiny_shards, "test-*.tfrecord"), "--model", model_root, "--output", str(tmp_path / "out")
    )
    assert result.returncode == 2, result.stderr
    [line] = [line for line in result.stderr.splitlines() if "SHA-256" in line]
    assert f"{model_file}: SHA-256" in line and "metrics.json evaluated" in line
    assert not os.path.exists(tmp_path / "out")

    # A metrics.json from before the hash was recorded: refused, with the fix in one line.
    del metrics["model_sha256"]
    open(metrics_file, "w").write(json.dumps(metrics))
    with pytest.raises(InputError, match=r"metrics\.json: records no model_sha256.*retrain, or add"):
        registry.resolve(model_root)


@pytest.mark.integration
def test_same_seed_gives_the_same_model(tiny_shards, tmp_path):
    runs = [
        train(data=tiny_shards, model_root=str(tmp_path / name), epochs=1, seed=seed, min_accuracy=0)
        for name, seed in (("one", 7), ("two", 7), ("other", 8))
    ]
    one, two, other = runs
    assert (one["test_accuracy"], one["test_loss"]) == (two["test_accuracy"], two["test_loss"])
    assert one["model_version"][-8:] == two["model_version"][-8:]  # same weights, same hash
    assert other["model_version"][-8:] != one["model_version"][-8:]


@pytest.mark.integration
def test_failed_gate_exits_3_keeps_artifacts_and_latest(trained, tiny_shards, tmp_path):
    model_root = str(tmp_path / "models")
    shutil.copytree(trained[0], model_root)
    before = registry.latest_version(model_root)

    result = run_cli("train", "--data", tiny_shards, "--model-root", model_root, "--epochs", "1", "--min-accuracy", "0.99")

    assert result.returncode == 3, result.stderr
    assert re.search(r"failed: .*test accuracy 0\.\d{4} < minimum 0\.99; artifacts kept, LATEST unchanged", result.stderr)
    assert registry.latest_version(model_root) == before
    rejected = [name for name in os.listdir(model_root) if VERSION_RE.match(name) and name != before]
    assert len(rejected) == 1
    metrics = json.loads(open(os.path.join(model_root, rejected[0], "metrics.json")).read())
    assert metrics["quality_gate"]["passed"] is False
    with pytest.raises(InputError, match="failed its quality gate"):
        registry.resolve(os.path.join(model_root, rejected[0]))


def _new_versions(model_root: str, *known: str) -> list[str]:
    return sorted(name for name in os.listdir(model_root) if VERSION_RE.match(name) and name not in known)


@pytest.mark.integration
def test_the_first_model_passes_on_the_absolute_gate_alone(trained):
    model_root, summary = trained
    comparison = summary["champion_comparison"]
    assert comparison["passed"] is True and comparison["champion_version"] is None
    assert comparison["reason"].startswith("no champion")
    [change] = registry.read_history(model_root)
    assert (change.from_version, change.to_version, change.command) == (None, summary["model_version"], "train")


@pytest.mark.integration
def test_a_model_worse_than_the_champion_exits_3_and_latest_stays(trained, tiny_shards, tmp_path):
    model_root = str(tmp_path / "models")
    shutil.copytree(trained[0], model_root)
    champion = registry.latest_version(model_root)
    worse = ["--epochs", "1", "--learning-rate", "0.00001", "--min-accuracy", "0"]  # passes the absolute gate

    result = run_cli("train", "--data", tiny_shards, "--model-root", model_root, *worse)

    assert result.returncode == 3, result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.startswith("failed:")]  # the one outcome line
    [rejected] = _new_versions(model_root, champion)
    metrics = json.loads(open(os.path.join(model_root, rejected, "metrics.json")).read())
    comparison = metrics["champion_comparison"]
    assert comparison["passed"] is False and comparison["forced"] is False
    assert comparison["champion_version"] == champion
    assert comparison["challenger"]["test_accuracy"] == metrics["test_accuracy"]
    assert comparison["champion"]["test_accuracy"] == trained[1]["test_accuracy"]  # re-evaluated on the same split
    assert comparison["deltas"]["test_accuracy"] == pytest.approx(metrics["test_accuracy"] - trained[1]["test_accuracy"])
    expected = (
        f"test accuracy {metrics['test_accuracy']:.4f} is more than 0.005 below champion {champion}'s "
        f"{trained[1]['test_accuracy']:.4f}"
    )
    assert expected in line and "LATEST unchanged" in line
    assert registry.latest_version(model_root) == champion
    assert len(registry.read_history(model_root)) == 1  # the champion's own publish only
    with pytest.raises(InputError, match="failed its champion comparison"):
        registry.resolve(os.path.join(model_root, rejected))

    forced = run_cli("train", "--data", tiny_shards, "--model-root", model_root, *worse, "--force-publish")

    assert forced.returncode == 0, forced.stderr
    published = json.loads(forced.stdout)["model_version"]
    assert registry.latest_version(model_root) == published != champion
    recorded = json.loads(open(os.path.join(model_root, published, "metrics.json")).read())["champion_comparison"]
    assert recorded["passed"] is False and recorded["forced"] is True
    change = registry.read_history(model_root)[-1]
    assert (change.from_version, change.to_version, change.command) == (champion, published, "train")
    assert change.reason.startswith("--force-publish despite: test accuracy")
    registry.resolve(model_root)  # a forced version is scored with


@pytest.mark.integration
def test_an_identical_retraining_passes_the_champion_gate(trained, tiny_shards, tmp_path):
    model_root = str(tmp_path / "models")
    shutil.copytree(trained[0], model_root)
    champion = registry.latest_version(model_root)

    summary = train(data=tiny_shards, model_root=model_root, epochs=2, min_accuracy=0.5)  # the fixture's flags

    comparison = summary["champion_comparison"]
    assert comparison["passed"] is True and comparison["champion_version"] == champion
    assert comparison["deltas"]["test_accuracy"] == 0 and set(comparison["deltas"]["class_recall"].values()) == {0}
    assert registry.latest_version(model_root) == summary["model_version"]


# `fmnist train` in a process whose clock reads one fixed second: two of them compute one version name.
_TRAIN_IN_ONE_SECOND = """
import datetime, sys
from components.train import training
training.utc_now = lambda: datetime.datetime(2026, 12, 4, 12, 0, 0, tzinfo=datetime.UTC)
from jobs.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.integration
@pytest.mark.parametrize("trial", range(3))
def test_two_identical_trainings_in_one_second_never_interleave_a_version(tiny_shards, tmp_path, trial):
    model_root = str(tmp_path / "models")
    args = ["train", "--data", tiny_shards, "--model-root", model_root, "--epochs", "1", "--min-accuracy", "0"]
    command = [sys.executable, "-c", _TRAIN_IN_ONE_SECOND, *args]
    processes = [subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in "ab"]
    results = [(process.wait(timeout=600), *process.communicate()) for process in processes]

    assert [code for code, _, _ in results] == [0, 0], [err for _, _, err in results]
    [version] = {json.loads(out)["model_version"] for _, out, _ in results}
    assert version.startswith("20261204T120000Z-")
    assert sum("already written by an identical training; reused" in err for _, _, err in results) == 1
    assert _new_versions(model_root) == [version]
    folder = os.path.join(model_root, version)
    metrics = json.loads(open(os.path.join(folder, "metrics.json")).read())
    assert metrics["model_sha256"] == registry.model_sha256(open(os.path.join(folder, "model.keras"), "rb").read())
    assert registry.resolve(model_root).version == version
    assert [change.to_version for change in registry.read_history(model_root)] == [version]  # the second changed nothing
    assert os.listdir(os.path.join(model_root, "_leases")) == []


def test_one_class_falling_beyond_its_tolerance_fails_the_comparison():
    from components.train.champion import compare

    def scores(accuracy: float, recalls: list[float]) -> dict:
        return {"test_accuracy": accuracy, "per_class": {name: {"recall": r} for name, r in zip(CLASS_NAMES, recalls)}}

    champion = scores(0.90, [0.9] * 10)
    within = compare(
        champion_version="c",
        champion_scores=champion,
        challenger_scores=scores(0.896, [0.881] + [0.9] * 9),
        max_accuracy_drop=0.005,
        max_class_drop=0.02,
    )
    assert within.passed, within.reason
    beyond = compare(
        champion_version="c",
        champion_scores=champion,
        challenger_scores=scores(0.91, [0.95] * 9 + [0.85]),
        max_accuracy_drop=0.005,
        max_class_drop=0.02,
    )
    assert not beyond.passed
    assert beyond.reason == "recall of class 'Ankle boot' 0.8500 is more than 0.02 below champion c's 0.9000"
    assert beyond.deltas["class_recall"]["Ankle boot"] == pytest.approx(-0.05)


@pytest.mark.integration
def test_trains_from_and_publishes_to_gcs(tiny_shards, gcs_bucket):
    data, model_root = f"{gcs_bucket}/shards", f"{gcs_bucket}/models"
    for name in sorted(os.listdir(tiny_shards)):
        storage.upload_file(os.path.join(tiny_shards, name), storage.join(data, name))

    result = run_cli("train", "--data", data, "--model-root", model_root, "--epochs", "1", "--min-accuracy", "0")

    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert registry.latest_version(model_root) == summary["model_version"]
    ref = registry.resolve(model_root)
    assert all(storage.exists(storage.join(ref.uri, name)) for name in ARTIFACTS)
    assert json.loads(storage.read_bytes(storage.join(ref.uri, "metrics.json")))["data"]["uri"] == data


def _drop_manifest(data: str) -> None:
    os.unlink(os.path.join(data, MANIFEST_NAME))


def _miscount(manifest: dict) -> None:
    manifest["splits"]["train"]["shards"][1]["num_records"] += 1
    manifest["splits"]["train"]["num_records"] += 1


def _empty_test_split(manifest: dict) -> None:
    manifest["splits"]["test"].update(num_records=0, shards=[])


def _old_schema(manifest: dict) -> None:
    manifest["schema_version"] = "fmnist-shards/0"


@pytest.mark.parametrize(
    "break_data, message",
    [
        ("no_manifest", "no manifest"),
        (_miscount, r"train-00001-of-00002.tfrecord: holds 300 records, the manifest says 301"),
        (_empty_test_split, "split 'test' is missing or empty"),
        (_old_schema, "schema version 'fmnist-shards/0'"),
        ("swap_shard", r"train-00000-of-00002.tfrecord: SHA-256 .* differs from the manifest's"),
    ],
)
def test_bad_data_is_an_input_error_and_nothing_is_written(tiny_shards, tmp_path, break_data, message):
    data = copy_data_set(tiny_shards, str(tmp_path / "data"), None if isinstance(break_data, str) else break_data)
    if break_data == "no_manifest":
        _drop_manifest(data)
    if break_data == "swap_shard":
        shutil.copyfile(os.path.join(data, "train-00001-of-00002.tfrecord"), os.path.join(data, "train-00000-of-00002.tfrecord"))
    model_root = str(tmp_path / "models")

    with pytest.raises(InputError, match=message):
        train(data=data, model_root=model_root, epochs=1)

    assert storage.list_prefix(model_root) == []


def _with_test_shard(manifest: Manifest, index: int, **changes) -> Manifest:
    """The manifest with fields of one test shard's entry changed."""
    test = manifest.splits["test"]
    shards = [dataclasses.replace(shard, **changes) if i == index else shard for i, shard in enumerate(test.shards)]
    return dataclasses.replace(manifest, splits={**manifest.splits, "test": dataclasses.replace(test, shards=shards)})


def test_counts_are_checked_against_the_records_not_only_the_manifest(tiny_shards, tmp_path):
    # A shard rewritten with fewer records, its SHA-256 updated: the count still disagrees.
    data = copy_data_set(tiny_shards, str(tmp_path / "data"))
    manifest = read_manifest(data)
    images, labels = (idx.array[:10] for idx in load_idx_split(manifest.source["uri"], *IDX_FILES["test"]))
    entry = write_shard(shard_tasks(data, "test", [f"test-{i:05d}" for i in range(10)], images, labels, 2)[0])
    manifest = _with_test_shard(manifest, 0, sha256=entry.sha256)
    storage.write_bytes(os.path.join(data, MANIFEST_NAME), manifest.to_bytes())

    with pytest.raises(InputError, match=r"test-00000-of-00002.tfrecord: holds 5 records, the manifest says 100"):
        load_split(data, manifest, "test", str(tmp_path / "staging"))


def test_undecodable_image_is_an_input_error(tiny_shards, tmp_path):
    data = copy_data_set(tiny_shards, str(tmp_path / "data"))
    manifest = read_manifest(data)
    shard = b"".join(frame_record(serialize_example(f"test-{i:05d}", b"not a png", 1)) for i in range(3))
    storage.write_bytes(os.path.join(data, "test-00001-of-00002.tfrecord"), shard)
    manifest = _with_test_shard(manifest, 1, num_records=3, sha256=hashlib.sha256(shard).hexdigest())

    with pytest.raises(InputError, match=r"split 'test' holds a record that is not a labeled 28x28 PNG example"):
        load_split(data, manifest, "test", str(tmp_path / "staging"))


def test_too_few_training_records_for_a_validation_slice(real_source, tmp_path):
    data = str(tmp_path / "data")
    write_data_set(data, real_source, {"train": 2, "test": 4}, shards_per_split=1)
    with pytest.raises(InputError, match="2 training records are too few to hold out a validation slice"):
        train(data=data, model_root=str(tmp_path / "models"))


@pytest.mark.integration
def test_non_finite_loss_exits_2_and_publishes_nothing(tiny_shards, tmp_path):
    model_root = str(tmp_path / "models")
    result = run_cli(
        "train",
        "--data",
        tiny_shards,
        "--model-root",
        model_root,
        "--epochs",
        "2",
        "--learning-rate",
        "1e30",
        "--min-accuracy",
        "0",
    )
    assert result.returncode == 2, result.stderr
    assert "training loss became" in result.stderr
    assert storage.list_prefix(model_root) == []


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--architecture", "resnet"], "invalid choice: 'resnet'"),
        (["--lr-schedule", "step"], "invalid choice: 'step'"),
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--min-accuracy", "1.5"], "--min-accuracy must be between 0 and 1"),
        (["--max-accuracy-drop", "-0.1"], "--max-accuracy-drop must be between 0 and 1"),
        (["--max-class-drop", "nan"], "--max-class-drop must be between 0 and 1"),
    ],
)
def test_bad_flags_exit_2(tiny_shards, tmp_path, flags, message):
    result = run_cli("train", "--data", tiny_shards, "--model-root", str(tmp_path / "models"), *flags)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr  # one line
    assert not os.path.exists(tmp_path / "models")


@pytest.mark.integration
def test_steps_per_execution_changes_speed_not_weights():
    import keras

    rng = np.random.default_rng(0)
    images, labels = rng.random((300, 28, 28), dtype=np.float32), rng.integers(0, 10, 300)
    weights = []
    for steps in (1, 4):  # 10 steps per epoch: the last call of each epoch runs 2 steps
        keras.utils.set_random_seed(3)
        model = build_model("mlp", learning_rate=0.001, decay_steps=20, steps_per_execution=steps)
        model.fit(images, labels, batch_size=32, epochs=2, shuffle=False, verbose=0)
        weights.append(model.get_weights())
    assert all(np.array_equal(one, other) for one, other in zip(*weights))


@pytest.mark.integration
def test_cnn_trains_reproducibly_and_serves(tiny_shards, tmp_path):
    """Its augmentation (random flips and erasing) is seeded too, and its convolutions (bfloat16
    where the CPU computes it) are deterministic: same seed, same weights."""
    import tensorflow as tf

    summary, again = (
        train(data=tiny_shards, model_root=str(tmp_path / name), architecture="cnn", epochs=1, min_accuracy=0)
        for name in ("models", "again")
    )
    assert summary["model_version"][-8:] == again["model_version"][-8:]
    served = tf.saved_model.load(os.path.join(summary["uri"], "saved_model"))
    probabilities = served.signatures[SIGNATURE_IMAGES](images=tf.zeros((3, 28, 28)))["probabilities"].numpy()
    assert probabilities.shape == (3, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    metrics = json.loads(open(os.path.join(summary["uri"], "metrics.json")).read())
    assert metrics["parameters"]["model"] == "cnn" and metrics["parameter_count"] > 100_000


@pytest.mark.integration
def test_the_published_cnn_averages_an_image_and_its_mirror(tiny_shards, tmp_path):
    """model.keras (built-in layers and ops only: it loads in safe mode) outputs the mean of the
    calibrated logits of each image and of its left-right mirror."""
    import keras
    import tensorflow as tf

    from components.metrics.calibration import softmax

    summary = train(data=tiny_shards, model_root=str(tmp_path / "models"), architecture="cnn", epochs=1, min_accuracy=0)
    model = keras.saving.load_model(os.path.join(summary["uri"], "model.keras"), safe_mode=True)
    calibrated = next(layer for layer in model.layers if isinstance(layer, keras.Sequential))
    temperature = json.loads(open(os.path.join(summary["uri"], "metrics.json")).read())["calibration"]["temperature"]
    assert calibrated.layers[-1].scale == pytest.approx(1 / temperature)
    images = np.random.default_rng(0).random((6, 28, 28), dtype=np.float32)
    alone, mirrored = (calibrated(batch, training=False).numpy() for batch in (images, images[:, :, ::-1]))
    expected = (alone + mirrored) / 2
    np.testing.assert_allclose(model(images, training=False).numpy(), expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(alone, expected, atol=1e-3)  # the mirror made a difference
    served = tf.saved_model.load(os.path.join(summary["uri"], "saved_model"))  # the SavedModel averages too
    probabilities = served.signatures[SIGNATURE_IMAGES](images=tf.constant(images))["probabilities"].numpy()
    # bfloat16 layers round differently in the exported graph than in eager Keras: compare the
    # error against the mirror's own effect, which is far larger.
    error, mirror_effect = (np.abs(probabilities - softmax(expected)).max(), np.abs(softmax(alone) - softmax(expected)).max())
    assert error < 2e-3 and error < mirror_effect / 5, (error, mirror_effect)


@pytest.mark.parametrize(
    "flags, dtype",
    [
        ({"fma", "avx2"}, "float32"),
        ({"avx512f", "avx512_bf16"}, "mixed_bfloat16"),
        ({"avx512_bf16", "amx_bf16"}, "mixed_bfloat16"),
    ],
)
def test_the_cnn_computes_in_bfloat16_only_where_the_cpu_does(monkeypatch, flags, dtype):
    """Emulated bfloat16 (an AVX2 CPU) trains eight times slower than float32."""
    from components.train import models

    assert platform.machine() != "x86_64" or "sse2" in models.cpu_flags()  # this machine's flags are read
    monkeypatch.setattr(models, "cpu_flags", lambda: frozenset(flags))
    layers = build_model("cnn", learning_rate=0.001).layers
    convolutions = [layer for layer in layers if type(layer).__name__ == "Conv2D"]
    assert len(convolutions) == 4 and {layer.dtype_policy.name for layer in convolutions} == {dtype}
    assert layers[-1].dtype_policy.name == "float32"  # the logits


def test_label_smoothing_spreads_a_share_of_each_label_over_all_classes():
    from components.train.models import _smoothed_cross_entropy

    logits = np.random.default_rng(1).normal(size=(5, 10)).astype(np.float32)
    labels = np.array([0, 3, 9, 3, 1])
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    targets = np.full((5, 10), 0.1 / 10) + 0.9 * np.eye(10)[labels]
    expected = -(targets * log_probs).sum(axis=1)
    np.testing.assert_allclose(np.asarray(_smoothed_cross_entropy(0.1)(labels, logits)), expected, rtol=1e-5)


def test_holdout_depends_only_on_the_image_ids():
    ids = np.array([f"train-{i:05d}".encode() for i in range(20_000)])
    mask = holdout_mask(ids, 0.05)
    order = np.random.default_rng(0).permutation(len(ids))
    assert np.array_equal(holdout_mask(ids[order], 0.05), mask[order])
    assert 0.04 < mask.mean() < 0.06


def test_evaluate_counts_and_scores():
    labels = np.array([0, 0, 1, 2, 2, 2])
    logits = np.full((6, 10), -5.0)
    logits[np.arange(6), [0, 1, 1, 2, 2, 0]] = 5.0  # one 0 taken for 1, one 2 taken for 0
    scores = evaluate(logits, labels)
    assert scores["test_accuracy"] == pytest.approx(4 / 6)
    assert scores["confusion_matrix"][0][:3] == [1, 1, 0] and scores["confusion_matrix"][2][:3] == [1, 0, 2]
    assert scores["per_class"]["T-shirt/top"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert scores["per_class"]["Trouser"]["precision"] == 0.5 and scores["per_class"]["Trouser"]["recall"] == 1.0
    assert scores["per_class"]["Bag"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    import keras

    expected = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits.astype("float32"))
    assert scores["test_loss"] == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.slow
def test_one_epoch_on_the_real_data_set(real_source, tmp_path):
    data = str(tmp_path / "shards")
    prepare(source=real_source, output=data)
    summary = train(data=data, model_root=str(tmp_path / "models"), epochs=1, min_accuracy=0.8)
    assert summary["published"] and summary["test_accuracy"] >= 0.8
