"""`fmnist score`: the Beam pipeline from image shards to the prediction and error tables.

Real pipelines on the DirectRunner (in-process and multi-process), a real GCS API server on
loopback, a tiny Keras model fitted in the test. Dataflow cannot exist here: its test builds
and translates the job graph with `--dry_run` and submits nothing.
"""

import io
import json
import logging
import os
import subprocess

import apache_beam as beam
import duckdb
import numpy as np
import pyarrow.dataset as ds
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from components.contracts import registry
from components.contracts.schema import ERROR_SCHEMA, PREDICTION_SCHEMA, run_summary_uri
from components.contracts.shards import serialize_example
from components.contracts.summary import GroupReceipt, RunSummary
from components.errors import CheckFailed, InputError
from components.io import storage
from components.io.images import encode_png
from components.io.tfrecord import Record, frame_record
from components.score.model_scorer import ModelScorer
from components.score.pipeline import ScoreGroupFn, ScoreShards
from components.score.prediction_rows import parse_record, parsed_example
from components.score.run import score, staging_uri
from components.score.shard_scoring import ScoringTarget, receipt_uri
from tests import cli_runs

RNG_SEED = 0


# --- Fixtures: a tiny model and shards with planted bad records -----------------------------


def fit_tiny_model(input_shape=(28, 28)):
    import keras

    keras.utils.set_random_seed(RNG_SEED)
    images = np.random.default_rng(RNG_SEED).random((64, *input_shape), dtype=np.float32)
    model = keras.Sequential(
        [keras.Input(input_shape), keras.layers.Flatten(), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(10)]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(images, np.arange(64) % 10, epochs=1, verbose=0)
    return model


def save_model(model, model_root: str, version: str, *, passed: bool = True, publish: bool = True) -> str:
    """Saves a model version folder (model.keras + metrics.json) to any URI; publishes it."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        model.save(os.path.join(folder, "model.keras"))
        storage.upload_file(os.path.join(folder, "model.keras"), storage.join(model_root, version, "model.keras"))
        with open(os.path.join(folder, "model.keras"), "rb") as file:
            sha256 = registry.model_sha256(file.read())
    metrics = {"quality_gate": {"passed": passed, "reason": "test fixture"}, "model_sha256": sha256}
    storage.write_bytes(storage.join(model_root, version, "metrics.json"), json.dumps(metrics).encode())
    if publish:
        registry.publish(model_root, version, command="train", reason="test fixture")
    return storage.join(model_root, version)


@pytest.fixture(scope="module")
def tiny_model():
    return fit_tiny_model()


@pytest.fixture
def model_root(tiny_model, tmp_path) -> str:
    root = str(tmp_path / "models")
    save_model(tiny_model, root, "v1")
    return root


def good_record(image_id: str, rng: np.random.Generator, label: int | None = None, image_uri: str | None = None) -> bytes:
    image = rng.integers(0, 256, (28, 28), dtype=np.uint8)
    label = int(rng.integers(0, 10)) if label is None else label
    return serialize_example(image_id, encode_png(image), label, image_uri=image_uri)


def rgb_jpeg() -> bytes:
    """A 64x64 colour product photo: a dark square on white, as JPEG."""
    pixels = np.full((64, 64, 3), 255, np.uint8)
    pixels[16:48, 20:44] = (120, 30, 30)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="JPEG")
    return buffer.getvalue()


def flip_data_byte(framed: bytes) -> bytes:
    damaged = bytearray(framed)
    damaged[20] ^= 0xFF  # inside the data, after the 12-byte header
    return bytes(damaged)


def broken_png() -> bytes:
    """A PNG whose header says 28x28 grayscale (the batch path) but whose pixel data is damaged."""
    data = bytearray(encode_png(np.full((28, 28), 7, np.uint8)))
    data[45] ^= 0xFF  # inside the IDAT chunk
    return bytes(data)


def example_without_image(image_id: str) -> bytes:
    from tensorflow.core.example import example_pb2

    example = example_pb2.Example()
    example.features.feature["image_id"].bytes_list.value.append(image_id.encode())
    return example.SerializeToString()


def contract_breaking(kind: str) -> bytes:
    """A well-formed Example that breaks the shard contract in one way."""
    from tensorflow.core.example import example_pb2

    example = example_pb2.Example.FromString(serialize_example(kind, encode_png(np.zeros((28, 28), np.uint8)), 3))
    feature = example.features.feature
    if kind == "two-images":
        feature["image/encoded"].bytes_list.value.append(encode_png(np.ones((28, 28), np.uint8)))
    elif kind == "float-label":
        feature["label"].Clear()
        feature["label"].float_list.value.append(3.0)
    elif kind == "two-labels":
        feature["label"].int64_list.value.append(7)
    elif kind == "text-label":
        feature["label"].Clear()
        feature["label"].bytes_list.value.append(b"3")
    elif kind == "latin-1-id":
        feature["image_id"].bytes_list.value[0] = "chemise-caf\xe9".encode("latin-1")
    elif kind == "latin-1-uri":
        feature["image/uri"].bytes_list.value.append("file:///caf\xe9.jpg".encode("latin-1"))
    return example.SerializeToString()


# (shard name, [(image_id, framed record, expected error type or None for scored)], cut bytes at end)
def planted_shards(folder: str) -> dict:
    """Three shards with every kind of bad record; returns what scoring must make of them."""
    rng = np.random.default_rng(RNG_SEED)
    frame = frame_record
    shards = {
        "test-00000-of-00003.tfrecord": [
            ("s0-good-0", frame(good_record("s0-good-0", rng)), None),
            ("s0-flipped", flip_data_byte(frame(good_record("s0-flipped", rng))), "corrupt_record"),
            ("s0-good-1", frame(good_record("s0-good-1", rng)), None),
            ("s0-no-image", frame(example_without_image("s0-no-image")), "missing_feature"),
            ("s0-not-image", frame(serialize_example("s0-not-image", b"these bytes are no picture", 1)), "decode_error"),
            ("s0-jpeg", frame(serialize_example("s0-jpeg", rgb_jpeg(), 8, b"jpeg")), None),
            ("s0-broken-png", frame(serialize_example("s0-broken-png", broken_png(), 2)), "decode_error"),
            ("s0-good-2", frame(good_record("s0-good-2", rng)), None),
            ("s0-not-example", frame(b"\xff\xff\xff\xff not a protobuf"), "invalid_example"),
            ("s0-good-3", frame(good_record("s0-good-3", rng)), None),
        ],
        "test-00001-of-00003.tfrecord": [
            *[(f"s1-good-{i}", frame(good_record(f"s1-good-{i}", rng)), None) for i in range(5)],
            ("s1-truncated", frame(good_record("s1-truncated", rng))[:-30], "truncated_record"),
        ],
        "test-00002-of-00003.tfrecord": [
            *[(f"s2-good-{i}", frame(good_record(f"s2-good-{i}", rng)), None) for i in range(4)],
        ],
    }
    for name, records in shards.items():
        with open(os.path.join(folder, name), "wb") as file:
            file.write(b"".join(framed for _, framed, _ in records))
    return shards


def expected_outcome(shards: dict, folder: str) -> tuple[set, set]:
    scored = {image_id for records in shards.values() for image_id, _, error in records if error is None}
    errors = {
        (storage.absolute_uri(storage.join(folder, name)), index, error)
        for name, records in shards.items()
        for index, (_, _, error) in enumerate(records)
        if error
    }
    return scored, errors


@pytest.fixture
def shard_folder(tmp_path) -> tuple[str, dict]:
    folder = tmp_path / "shards"
    folder.mkdir()
    return str(folder), planted_shards(str(folder))


def read_table(output: str, table: str) -> list[dict]:
    folder = storage.join(output, table)
    if not os.path.isdir(folder):
        return []
    return ds.dataset(folder, format="parquet", partitioning="hive").to_table().to_pylist()


def score_folder(folder: str, **arguments) -> dict:
    """score() of every shard in `folder`, with `arguments` (model, output, run_id, ...)."""
    return score(input=storage.join(folder, "*.tfrecord"), **arguments)


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return cli_runs.run_cli("score", *args, timeout=600, env=env)


# --- The DoFn and the transform -----------------------------------------------------------


@pytest.mark.integration
def test_score_group_fn_process_stages_parts_and_a_receipt(shard_folder, model_root, tmp_path):
    folder, shards = shard_folder
    names = ["test-00000-of-00003.tfrecord", "test-00001-of-00003.tfrecord"]
    shard_uris = [storage.join(folder, name) for name in names]
    target = ScoringTarget(
        staging=str(tmp_path / "staging"), run_id="r1", run_date="2026-11-29", model_version="v1", batch_size=4
    )
    fn = ScoreGroupFn(keras_uri=registry.resolve(model_root).keras_uri, target=target)
    fn.setup()
    [receipt] = list(fn.process([(3, shard_uris[0]), (4, shard_uris[1])]))

    assert GroupReceipt.from_json(storage.read_bytes(receipt_uri(target.staging, "part-00003"))) == receipt
    first, second = receipt.shards
    assert (receipt.group_index, first.shard_index, second.shard_index) == (3, 3, 4)
    scored, errors = expected_outcome({names[0]: shards[names[0]]}, folder)
    assert (first.read, first.scored, first.failed) == (10, len(scored), len(errors))
    assert first.failed_by_type == {"corrupt_record": 1, "missing_feature": 1, "decode_error": 2, "invalid_example": 1}
    assert first.source_uri == storage.absolute_uri(shard_uris[0]) and first.source_uri.startswith("file:///")
    predictions = ds.dataset(receipt.predictions).to_table()
    assert predictions.schema.equals(PREDICTION_SCHEMA)
    lineage = predictions.schema.metadata
    assert (lineage[b"run_id"], lineage[b"run_date"], lineage[b"model_version"]) == (b"r1", b"2026-11-29", b"v1")
    error_rows = ds.dataset(receipt.errors).to_table()
    assert error_rows.schema.equals(ERROR_SCHEMA)
    # One part per table for the group: each shard's rows where its counts say, in shard order.
    for shard, (prediction_start, error_start) in zip(receipt.shards, [(0, 0), (first.scored, first.failed)]):
        name = storage.basename(shard.source_uri)
        scored, errors = expected_outcome({name: shards[name]}, folder)
        own_predictions = predictions.slice(prediction_start, shard.scored)
        assert set(own_predictions.column("image_id").to_pylist()) == scored
        assert set(own_predictions.column("source_uri").to_pylist()) == {shard.source_uri}
        own_errors = error_rows.slice(error_start, shard.failed).to_pylist()
        assert {(r["source_uri"], r["record_index"], r["error_type"]) for r in own_errors} == errors
    assert (predictions.num_rows, error_rows.num_rows) == (first.scored + second.scored, first.failed + second.failed)


def test_vectorized_parse_agrees_with_the_record_parser(tiny_model):
    from tensorflow.core.example import example_pb2

    two_labels = example_pb2.Example.FromString(serialize_example("two-labels", b"png", 4))
    two_labels.features.feature["label"].int64_list.value.append(7)
    records = [
        serialize_example("labeled", b"png", 3),
        serialize_example("unlabeled", b"png", None),
        serialize_example("bad-label", b"png", 12),
        serialize_example("jpeg", b"jpg", 0, b"jpeg"),
        serialize_example("from-a-file", b"png", None, image_uri="gs://b/photos/shirts/red.jpg"),
        two_labels.SerializeToString(),
    ]
    columns = ModelScorer(tiny_model).parse_examples(records)
    assert [parsed_example(i, *features) for i, features in enumerate(columns)] == [
        parse_record(Record(i, data=data)) for i, data in enumerate(records)
    ]
    assert ModelScorer(tiny_model).parse_examples([*records, b"\xff not an example"]) is None


def _rows_without_time(batches) -> tuple[list[dict], list[dict]]:
    predictions, errors = batches
    return tuple(
        [{k: v for k, v in row.items() if k != "scored_at"} for row in table.to_pylist()] for table in (predictions, errors)
    )


def test_one_call_path_gives_the_careful_paths_rows(tiny_model):
    """A clean batch is scored in one TensorFlow call; its rows equal the careful path's."""
    import datetime

    from components.score.shard_scoring import _score_batch, _score_batch_carefully

    rng = np.random.default_rng(RNG_SEED)
    records = [
        Record(
            i,
            data=good_record(
                f"img-{i}", rng, label=None if i % 5 == 0 else i % 10, image_uri=f"file:///photos/{i}.jpg" if i % 2 else None
            ),
        )
        for i in range(40)
    ]
    scorer, target = (
        ModelScorer(tiny_model),
        ScoringTarget(staging="unused", run_id="r", run_date="2026-11-29", model_version="v"),
    )
    assert scorer.score_contract_batch([record.data for record in records]) is not None  # the one-call path is taken
    fast = _score_batch(records, scorer=scorer, source_uri="s", target=target)
    careful = _score_batch_carefully(
        records, scorer=scorer, source_uri="s", target=target, scored_at=datetime.datetime.now(datetime.UTC)
    )
    fast_rows, careful_rows = _rows_without_time(fast), _rows_without_time(careful)
    assert len(fast_rows[0]) == 40 and fast_rows[1] == careful_rows[1] == []
    assert [row["image_id"] for row in fast_rows[0]] == [row["image_id"] for row in careful_rows[0]]
    assert [row["true_label"] for row in fast_rows[0]] == [row["true_label"] for row in careful_rows[0]]
    image_uris = [row["image_uri"] for row in fast_rows[0]]
    assert image_uris == [row["image_uri"] for row in careful_rows[0]]
    assert image_uris[:2] == [None, "file:///photos/1.jpg"]
    np.testing.assert_allclose(
        [row["probabilities"] for row in fast_rows[0]], [row["probabilities"] for row in careful_rows[0]], rtol=1e-6, atol=1e-7
    )


@pytest.mark.parametrize(
    "odd_record",
    [
        serialize_example("jpeg", rgb_jpeg(), 1, b"jpeg"),
        serialize_example("broken-png", broken_png(), 1),
        serialize_example("bad-label", encode_png(np.zeros((28, 28), np.uint8)), 12),
        serialize_example("", encode_png(np.zeros((28, 28), np.uint8)), 1),
        example_without_image("no-image"),
        b"\xff not an example",
        *[
            contract_breaking(kind)
            for kind in ("two-images", "float-label", "two-labels", "text-label", "latin-1-id", "latin-1-uri")
        ],
    ],
    ids=[
        "jpeg",
        "broken-png",
        "bad-label",
        "empty-id",
        "no-image",
        "not-an-example",
        "two-images",
        "float-label",
        "two-labels",
        "text-label",
        "latin-1-id",
        "latin-1-uri",
    ],
)
def test_one_odd_record_sends_its_batch_the_careful_way(tiny_model, odd_record):
    rng = np.random.default_rng(RNG_SEED)
    batch = [good_record("a", rng), odd_record, good_record("b", rng)]
    assert ModelScorer(tiny_model).score_contract_batch(batch) is None


@pytest.mark.parametrize(
    "kind, error_type",
    [
        ("empty-id", "missing_feature"),
        ("two-images", "invalid_example"),
        ("float-label", "bad_label"),
        ("two-labels", "bad_label"),
        ("text-label", "bad_label"),
        ("label-12", "bad_label"),
        ("latin-1-id", "invalid_example"),
        ("latin-1-uri", "invalid_example"),
    ],
)
def test_contract_breaking_record_is_an_error_row_the_rest_scored(tiny_model, kind, error_type):
    import datetime

    from components.score.shard_scoring import _score_batch, _score_batch_carefully

    rng = np.random.default_rng(RNG_SEED)
    odd = {
        "empty-id": serialize_example("", encode_png(np.zeros((28, 28), np.uint8)), 1),
        "label-12": serialize_example("label-12", encode_png(np.zeros((28, 28), np.uint8)), 12),
    }.get(kind)
    records = [
        Record(0, data=good_record("a", rng)),
        Record(1, data=odd or contract_breaking(kind)),
        Record(2, data=good_record("b", rng)),
    ]
    scorer, target = (
        ModelScorer(tiny_model),
        ScoringTarget(staging="unused", run_id="r", run_date="2026-11-30", model_version="v"),
    )
    careful = _score_batch_carefully(
        records, scorer=scorer, source_uri="s", target=target, scored_at=datetime.datetime.now(datetime.UTC)
    )
    for predictions, errors in (
        _rows_without_time(_score_batch(records, scorer=scorer, source_uri="s", target=target)),
        _rows_without_time(careful),
    ):
        assert [row["image_id"] for row in predictions] == ["a", "b"]
        assert [(row["record_index"], row["error_type"]) for row in errors] == [(1, error_type)]
        assert errors[0]["error_message"]


def huge_weights_model():
    """Logits of about 1e38 times the pixel sum: finite for a black image, infinite (so the
    softmax is NaN) for a bright one."""
    import keras

    model = keras.Sequential(
        [
            keras.Input((28, 28)),
            keras.layers.Flatten(),
            keras.layers.Dense(10, kernel_initializer=keras.initializers.Constant(1e38)),
        ]
    )
    return model


def test_non_finite_probabilities_are_error_rows_on_both_paths(tiny_model):
    import datetime

    from components.score.shard_scoring import _score_batch, _score_batch_carefully

    black, white = encode_png(np.zeros((28, 28), np.uint8)), encode_png(np.full((28, 28), 255, np.uint8))
    records = [Record(0, data=serialize_example("black", black, 1)), Record(1, data=serialize_example("white", white, 2))]
    scorer, target = (
        ModelScorer(huge_weights_model()),
        ScoringTarget(staging="unused", run_id="r", run_date="2026-11-30", model_version="v"),
    )
    assert scorer.score_contract_batch([records[0].data]) is not None  # finite: the one-call path
    assert scorer.score_contract_batch([record.data for record in records]) is None
    careful = _score_batch_carefully(
        records, scorer=scorer, source_uri="s", target=target, scored_at=datetime.datetime.now(datetime.UTC)
    )
    for predictions, errors in (
        _rows_without_time(_score_batch(records, scorer=scorer, source_uri="s", target=target)),
        _rows_without_time(careful),
    ):
        assert [row["image_id"] for row in predictions] == ["black"]
        assert np.isfinite(predictions[0]["probabilities"]).all()
        assert [(row["record_index"], row["image_id"], row["error_type"]) for row in errors] == [(1, "white", "non_finite_score")]


def receipt_counts(receipt: GroupReceipt) -> list[tuple]:
    """Module-level matcher input: a receipt reduced to what a test can predict, a tuple per shard."""
    return [(os.path.basename(shard.source_uri), shard.read, shard.scored, shard.failed) for shard in receipt.shards]


@pytest.mark.integration
def test_score_shards_transform_in_a_test_pipeline(shard_folder, model_root, tmp_path):
    folder, shards = shard_folder
    target = ScoringTarget(
        staging=str(tmp_path / "staging"), run_id="r1", run_date="2026-11-29", model_version="v1", batch_size=3
    )
    expected = [
        (name, len(records), sum(e is None for _, _, e in records), sum(e is not None for _, _, e in records))
        for name, records in shards.items()
    ]
    with BeamTestPipeline() as pipeline:
        receipts = pipeline | ScoreShards(
            shard_uris=storage.glob(storage.join(folder, "*.tfrecord")),
            keras_uri=registry.resolve(model_root).keras_uri,
            target=target,
        )
        assert_that(receipts | beam.FlatMap(receipt_counts), equal_to(expected))


# --- The whole run ------------------------------------------------------------------------


@pytest.mark.integration
def test_run_scores_good_records_and_lists_every_bad_one(shard_folder, model_root, tmp_path, caplog):
    folder, shards = shard_folder
    output = str(tmp_path / "scores")
    caplog.set_level(logging.INFO)
    summary = score_folder(
        folder,
        model=model_root,
        output=output,
        run_id="r1",
        run_date="2026-11-29",
        max_error_rate=0.5,
        batch_size=4,
    )

    scored, errors = expected_outcome(shards, folder)
    predictions, error_rows = read_table(output, "predictions"), read_table(output, "errors")
    assert sorted(r["image_id"] for r in predictions) == sorted(scored)
    assert {(r["source_uri"], r["record_index"], r["error_type"]) for r in error_rows} == errors
    assert {(r["model_version"], r["run_id"], str(r["run_date"])) for r in predictions} == {("v1", "r1", "2026-11-29")}
    assert all(abs(sum(r["probabilities"]) - 1) < 1e-5 and r["confidence"] == max(r["probabilities"]) for r in predictions)
    jpeg_row = next(r for r in predictions if r["image_id"] == "s0-jpeg")
    assert jpeg_row["true_label"] == 8

    counts = summary["counts"]
    assert counts["read"] == sum(len(records) for records in shards.values()) == counts["scored"] + counts["failed"]
    assert (counts["scored"], counts["failed"]) == (len(scored), len(errors))
    assert counts["failed_by_type"] == {
        "corrupt_record": 1,
        "missing_feature": 1,
        "decode_error": 2,
        "invalid_example": 1,
        "truncated_record": 1,
    }
    assert summary["beam_counters"]["records_read"] == counts["read"]
    assert summary["beam_counters"]["records_failed"] == counts["failed"]
    stored = storage.read_bytes(run_summary_uri(output, "r1"))
    assert stored.count(b"\n") == 1 and RunSummary.from_json(stored).to_dict() == summary  # one JSON line
    assert (summary["status"], summary["model_version"], len(summary["inputs"]["shards"])) == ("ok", "v1", 3)
    assert summary["runner"] == "FnApiRunner" and "Prism" not in caplog.text  # no download attempt offline
    assert storage.list_prefix(staging_uri(output, "r1")) == []
    assert not os.path.exists(os.path.join(output, "_leases", "r1.json"))  # released
    assert sorted(name for name in os.listdir(output) if not name.startswith("_")) == ["errors", "predictions", "runs"]
    # Analysts read the Hive-partitioned table with DuckDB.
    query = f"select count(*) from read_parquet('{output}/predictions/**/*.parquet', hive_partitioning=true) where run_id = 'r1'"
    assert duckdb.sql(query).fetchall() == [(len(scored),)]


@pytest.mark.parametrize(
    "beam_args, expected",
    [
        ([], ("FnApiRunner", 0, "multi_threading")),  # all cores, one thread each
        (["--direct_num_workers", "1"], ("FnApiRunner", 1, "in_memory")),
        (["--direct_running_mode=multi_processing"], ("FnApiRunner", 1, "multi_processing")),
        (["--runner", "DirectRunner"], ("DirectRunner", 1, "in_memory")),
    ],
)
def test_local_runner_defaults_leave_named_options_alone(beam_args, expected):
    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

    from components.score.run import pipeline_options

    options = pipeline_options(beam_args)
    direct = options.view_as(DirectOptions)
    assert (options.view_as(StandardOptions).runner, direct.direct_num_workers, direct.direct_running_mode) == expected


def test_one_shard_runs_on_one_in_process_worker_unless_told_otherwise():
    from apache_beam.options.pipeline_options import DirectOptions

    from components.score.run import pipeline_options

    def workers(beam_args: list[str], shard_count: int) -> tuple[int, str]:
        direct = pipeline_options(beam_args, shard_count=shard_count).view_as(DirectOptions)
        return direct.direct_num_workers, direct.direct_running_mode

    assert workers([], 1) == (1, "in_memory")
    assert workers([], 2) == (0, "multi_threading")
    assert workers(["--direct_num_workers", "2", "--direct_running_mode", "multi_threading"], 1) == (2, "multi_threading")


@pytest.mark.integration
def test_same_run_id_twice_leaves_one_copy(shard_folder, model_root, tmp_path):
    folder, shards = shard_folder
    output = str(tmp_path / "scores")
    # No grace period: the parts the rerun replaced go at once, so the raw folder holds one copy.
    arguments = dict(model=model_root, output=output, max_error_rate=1.0, replaced_parts_grace_s=0)
    score_folder(folder, **arguments, run_id="again", run_date="2026-11-28")
    score_folder(folder, **arguments, run_id="other", run_date="2026-11-28")
    summary = score_folder(folder, **arguments, run_id="again", run_date="2026-11-29")  # a rerun may also move the date

    predictions = read_table(output, "predictions")
    per_run = {run_id: sum(r["run_id"] == run_id for r in predictions) for run_id in ("again", "other")}
    assert per_run == {"again": summary["counts"]["scored"], "other": summary["counts"]["scored"]}
    assert {str(r["run_date"]) for r in predictions if r["run_id"] == "again"} == {"2026-11-29"}
    assert sum(r["run_id"] == "again" for r in read_table(output, "errors")) == summary["counts"]["failed"]
    assert sorted(os.listdir(os.path.join(output, "runs"))) == ["again.json", "other.json"]


@pytest.mark.integration
def test_error_rate_above_the_limit_exits_3_after_publishing(shard_folder, model_root, tmp_path):
    folder, _ = shard_folder
    output = str(tmp_path / "scores")
    completed = run_cli(
        "--input", storage.join(folder, "*.tfrecord"), "--model", model_root, "--output", output, "--run-id", "too-many-errors"
    )
    assert completed.returncode == 3, completed.stderr
    assert "records failed" in completed.stderr and "--max-error-rate 1.00%" in completed.stderr
    summary = json.loads(storage.read_bytes(run_summary_uri(output, "too-many-errors")))
    assert summary["status"] == "error_rate_exceeded"
    assert len(read_table(output, "predictions")) == summary["counts"]["scored"] > 0
    assert len(read_table(output, "errors")) == summary["counts"]["failed"] == 6


@pytest.mark.slow  # each worker process imports TensorFlow
def test_default_run_id_and_date_and_beam_counters_multi_process(shard_folder, model_root, tmp_path):
    folder, shards = shard_folder
    output = str(tmp_path / "scores")
    summary = score_folder(
        folder,
        model=model_root,
        output=output,
        max_error_rate=1.0,
        beam_args=["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"],
    )
    scored, _ = expected_outcome(shards, folder)
    assert sorted(r["image_id"] for r in read_table(output, "predictions")) == sorted(scored)
    assert summary["run_id"].startswith(summary["run_date"].replace("-", ""))
    assert summary["beam_counters"]["shards"] == 3
    assert summary["beam_counters"]["records_scored"] == summary["counts"]["scored"]


# --- Configuration errors: one line, exit 2, nothing written ---------------------------------


def _unpublished(tiny_model, root):
    save_model(tiny_model, root, "v1", publish=False)
    return root


def _failed_gate(tiny_model, root):
    return save_model(tiny_model, root, "v1", passed=False, publish=False)


def _wrong_input_shape(tiny_model, root):
    save_model(fit_tiny_model(input_shape=(32, 32)), root, "v1")
    return root


def _nan_weights(tiny_model, root):
    import keras

    model = keras.models.clone_model(tiny_model)
    model.set_weights([np.full_like(weights, np.nan) for weights in tiny_model.get_weights()])
    save_model(model, root, "v1")
    return root


def _infinite_on_bright_images(tiny_model, root):
    save_model(huge_weights_model(), root, "v1")
    return root


def _minus_infinite_logit_on_bright_images(tiny_model, root):
    """One class's logit falls to -inf on bright images while its softmax stays finite."""
    import keras

    kernel = np.zeros((28 * 28, 10), np.float32)
    kernel[:, 0] = -1e38
    model = keras.Sequential([keras.Input((28, 28)), keras.layers.Flatten(), keras.layers.Dense(10)])
    model.layers[-1].set_weights([kernel, np.zeros(10, np.float32)])
    save_model(model, root, "v1")
    return root


@pytest.mark.parametrize(
    "make_model, message",
    [
        (_nan_weights, "output on a probe batch is not finite"),
        (_infinite_on_bright_images, "output on a probe batch is not finite"),
        (_minus_infinite_logit_on_bright_images, "output on a probe batch is not finite"),
        (_unpublished, "nor a model root with a published LATEST"),
        (_failed_gate, "failed its quality gate"),
        (_wrong_input_shape, "does not fit 28x28 images"),
    ],
)
def test_model_that_cannot_be_used_is_refused_before_writing(shard_folder, tiny_model, tmp_path, make_model, message):
    folder, _ = shard_folder
    model = make_model(tiny_model, str(tmp_path / "models"))
    with pytest.raises(InputError, match=message):
        score_folder(folder, model=model, output=str(tmp_path / "scores"))
    assert not (tmp_path / "scores").exists()


def test_unwritable_output_is_refused(shard_folder, model_root, tmp_path):
    folder, _ = shard_folder
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(InputError, match="not writable"):
        score_folder(folder, model=model_root, output=str(blocker / "scores"))


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"run_id": "../escape"}, "--run-id"),
        ({"run_date": "29.11.2026"}, "--run-date"),
        ({"max_error_rate": 1.5}, "--max-error-rate"),
        ({"beam_args": ["--dry_run", "True"]}, "only the DataflowRunner"),
    ],
)
def test_bad_arguments_are_refused(shard_folder, model_root, tmp_path, arguments, message):
    folder, _ = shard_folder
    with pytest.raises(InputError, match=message):
        score_folder(folder, model=model_root, output=str(tmp_path / "scores"), **arguments)
    assert not (tmp_path / "scores").exists()


@pytest.mark.integration
def test_cli_empty_glob_is_one_line_exit_2(model_root, tmp_path):
    completed = run_cli(
        "--input", str(tmp_path / "nothing-*.tfrecord"), "--model", model_root, "--output", str(tmp_path / "scores")
    )
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines()[-1] == f"error: {tmp_path}/nothing-*.tfrecord: no file matches the input glob"
    assert not (tmp_path / "scores").exists()


# --- Cloud: gs:// everywhere, and the Dataflow translation --------------------------------


@pytest.fixture
def gcs_inputs(gcs_bucket, shard_folder, tiny_model) -> dict:
    """The planted shards and the published tiny model in a bucket on the GCS API server."""
    folder, shards = shard_folder
    for name in shards:
        storage.upload_file(os.path.join(folder, name), storage.join(gcs_bucket, "shards", name))
    save_model(tiny_model, storage.join(gcs_bucket, "models"), "v1")
    return shards


@pytest.mark.integration
def test_gcs_input_model_and_output(gcs_bucket, gcs_inputs):
    shards = gcs_inputs
    output = storage.join(gcs_bucket, "scores")
    summary = score(
        input=storage.join(gcs_bucket, "shards", "*.tfrecord"),
        model=storage.join(gcs_bucket, "models"),
        output=output,
        run_id="cloud",
        run_date="2026-11-29",
        max_error_rate=1.0,
    )

    scored, errors = expected_outcome(shards, storage.join(gcs_bucket, "shards"))
    assert (summary["counts"]["scored"], summary["counts"]["failed"]) == (len(scored), len(errors))
    published = storage.list_prefix(output)
    assert run_summary_uri(output, "cloud") in published
    assert not [uri for uri in published if "/_staging" in uri]
    prediction_parts = [uri for uri in published if "/predictions/run_date=2026-11-29/run_id=cloud/" in uri]
    assert len(prediction_parts) == 1  # three small shards' parts merged into one (PART_TARGET_BYTES)
    error_parts = sorted(uri for uri in published if "/errors/" in uri)
    assert [uri.rsplit("-", 1)[-1] for uri in error_parts] == ["00000.parquet"]  # shards 0 and 1's, merged
    assert summary["parts"] == {"predictions": prediction_parts, "errors": error_parts}
    assert not [uri for uri in published if "/_leases/" in uri]  # released


@pytest.mark.integration
def test_dataflow_translation_dry_run(gcs_bucket, gcs_inputs):
    output = storage.join(gcs_bucket, "scores")
    result = score(
        input=storage.join(gcs_bucket, "shards", "*.tfrecord"),
        model=storage.join(gcs_bucket, "models"),
        output=output,
        beam_args=[
            "--runner",
            "DataflowRunner",
            "--dry_run",
            "True",
            "--project",
            "fmnist-test",
            "--region",
            "europe-west1",
            "--temp_location",
            f"{gcs_bucket}/tmp",
            "--sdk_container_image",
            "europe-docker.pkg.dev/fmnist-test/fmnist/fmnist-jobs:0.1.0",
            "--max_num_workers",
            "2",  # two groups of shards: they are spread over the workers
        ],
    )
    assert result["dry_run"] is True
    assert result["steps"] == ["ScoreShards/DistributeGroups", "ScoreShards/ListGroups", "ScoreShards/ScoreGroup"]
    assert result["worker_images"] == ["europe-docker.pkg.dev/fmnist-test/fmnist/fmnist-jobs:0.1.0"]
    assert result["job_name"].startswith("beamapp-")
    assert storage.list_prefix(output) == []


# --- The real test split ----------------------------------------------------------------------


@pytest.mark.slow
def test_real_test_shards_accuracy_equals_model_evaluate(tmp_path, real_source):
    """10,000 real test images: unique ids, and the table's accuracy is the model's own test accuracy."""
    import keras

    from components.constants import IDX_FILES
    from components.contracts.shards import write_shard
    from components.io.idx import load_split
    from components.prepare.dataset import run_parallel, shard_tasks

    train_images, train_labels = (f.array for f in load_split(real_source, *IDX_FILES["train"]))
    test_images, test_labels = (f.array for f in load_split(real_source, *IDX_FILES["test"]))
    shards = str(tmp_path / "shards")  # the test split, sharded exactly as `prepare` shards it
    ids = [f"test-{i:05d}" for i in range(len(test_labels))]
    run_parallel(write_shard, shard_tasks(shards, "test", ids, test_images, test_labels, 4))
    keras.utils.set_random_seed(RNG_SEED)
    model = keras.Sequential(
        [keras.Input((28, 28)), keras.layers.Flatten(), keras.layers.Dense(128, activation="relu"), keras.layers.Dense(10)]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(train_images / 255.0, train_labels, epochs=1, batch_size=128, verbose=0)
    _, evaluated_accuracy = model.evaluate(test_images / 255.0, test_labels, verbose=0)
    model_root = str(tmp_path / "models")
    save_model(model, model_root, "real")

    output = str(tmp_path / "scores")
    summary = score(input=storage.join(shards, "test-*.tfrecord"), model=model_root, output=output, run_id="real")
    rows = read_table(output, "predictions")
    assert summary["counts"] == {"read": 10_000, "scored": 10_000, "failed": 0, "failed_by_type": {}, "expected": None}
    assert len({r["image_id"] for r in rows}) == len(rows) == 10_000
    accuracy = np.mean([r["predicted_label"] == r["true_label"] for r in rows])
    assert accuracy == pytest.approx(evaluated_accuracy, abs=1e-6)


# --- Damaged shards: every record accounted for, with and without a manifest ----------------

DAMAGED_SHARD_RECORDS = 6


def damaged_shards(folder: str, *, with_manifest: bool) -> dict[str, set[str]]:
    """Four shards written by the real shard writer (and manifest), then damaged the way
    uploads break; returns, per shard, the image ids whose records the damage left intact."""
    from components.contracts.manifest import Manifest, SplitEntry
    from components.contracts.shards import ShardTask, write_shard

    rng = np.random.default_rng(RNG_SEED)
    names = [f"test-{i:05d}-of-00004.tfrecord" for i in range(4)]
    entries, intact = [], {}
    for shard, name in enumerate(names):
        ids = [f"d{shard}-{i}" for i in range(DAMAGED_SHARD_RECORDS)]
        entries.append(
            write_shard(
                ShardTask(
                    uri=os.path.join(folder, name),
                    image_ids=ids,
                    images=rng.integers(0, 256, (len(ids), 28, 28), dtype=np.uint8),
                    labels=np.arange(len(ids)) % 10,
                )
            )
        )
        intact[name] = set(ids)
    if with_manifest:
        splits = {"test": SplitEntry(num_records=4 * DAMAGED_SHARD_RECORDS, class_histogram=[], shards=entries)}
        storage.write_bytes(
            os.path.join(folder, "manifest.json"), Manifest.new(source={"uri": "test", "files": {}}, splits=splits).to_bytes()
        )

    def framed_bounds(path: str) -> list[int]:
        with open(path, "rb") as file:
            data = file.read()
        bounds, offset = [0], 0
        while offset < len(data):
            offset += 16 + int.from_bytes(data[offset : offset + 8], "little")
            bounds.append(offset)
        return bounds

    paths = [os.path.join(folder, name) for name in names]
    with open(paths[0], "r+b") as file:  # a damaged length header: record 2
        start = framed_bounds(paths[0])[2]
        file.seek(start)
        file.write(bytes([file.read(1)[0] ^ 0x40]))
    intact[names[0]].discard("d0-2")
    cut = framed_bounds(paths[1])[3] + 30  # a truncated upload: inside record 3
    with open(paths[1], "r+b") as file:
        file.truncate(cut)
    intact[names[1]] -= {"d1-3", "d1-4", "d1-5"}
    open(paths[2], "wb").close()  # a zero-length object
    intact[names[2]] = set()
    with open(paths[3], "rb") as file:  # garbage in the middle: inside record 1 to inside record 3
        data = file.read()
    bounds = framed_bounds(paths[3])
    garbage = bytes(np.random.default_rng(1).integers(0, 256, bounds[3] - bounds[1], dtype=np.uint8))
    with open(paths[3], "wb") as file:
        file.write(data[: bounds[1] + 10] + garbage + data[bounds[3] - 10 :])
    intact[names[3]] -= {"d3-1", "d3-2"}
    return intact


@pytest.mark.integration
@pytest.mark.parametrize("place", ["local", "gcs", "flaky-gcs"])
@pytest.mark.parametrize("with_manifest", [True, False], ids=["manifest", "no-manifest"])
def test_damaged_shards_lose_no_record(request, tmp_path, tiny_model, place, with_manifest):
    """Damaged shards in a local folder, in a bucket, and in a bucket behind a proxy that fails
    every 4th request (the reads are retried; the damage, not the faults, makes the error rows)."""
    folder = str(tmp_path / "damaged")
    os.makedirs(folder)
    intact = damaged_shards(folder, with_manifest=with_manifest)
    root = str(tmp_path)
    proxy = None
    if place == "gcs":
        root = request.getfixturevalue("gcs_bucket")
    elif place == "flaky-gcs":
        root, proxy = request.getfixturevalue("faulty_gcs_bucket")
    if place != "local":
        for name in os.listdir(folder):
            storage.upload_file(os.path.join(folder, name), storage.join(root, "damaged", name))
        folder = storage.join(root, "damaged")
    model_root = storage.join(root, "models")
    save_model(tiny_model, model_root, "v1")
    output = storage.join(root, "scores")
    arguments = dict(
        model=model_root,
        output=output,
        run_id="damaged",
        run_date="2026-11-29",
        max_error_rate=1.0,
    )
    if with_manifest:  # the damaged shards' hashes differ from the manifest: exit 3, rows published
        with pytest.raises(CheckFailed, match="differ from their manifest.*test-00000-of-00004.tfrecord: sha256"):
            score_folder(folder, **arguments)
        summary = json.loads(storage.read_bytes(run_summary_uri(output, "damaged")))
        assert summary["status"] == "source_mismatch"
    else:
        summary = score_folder(folder, **arguments)
        assert summary["status"] == "ok"

    predictions, errors = (_rows_at(storage.join(output, table)) for table in ("predictions", "errors"))
    counts = summary["counts"]
    assert counts["read"] == counts["scored"] + counts["failed"] == len(predictions) + len(errors)
    scored_ids = {row["image_id"] for row in predictions}
    assert scored_ids == set().union(*intact.values())  # every intact image scored, nothing invented
    for name in intact:
        uri = storage.absolute_uri(storage.join(folder, name))  # lineage: absolute URIs
        shard_errors = [row for row in errors if row["source_uri"] == uri]
        assert shard_errors, f"{name}: its damage left no error row"
        indices = [row["record_index"] for row in shard_errors]
        assert len(set(indices)) == len(indices)
        rows = len(shard_errors) + sum(row["source_uri"] == uri for row in predictions)
        if with_manifest:  # read = the manifest's count = scored + failed, per shard
            assert rows == DAMAGED_SHARD_RECORDS and set(indices) <= set(range(DAMAGED_SHARD_RECORDS))
    if with_manifest:
        assert counts["expected"] == counts["read"] == 4 * DAMAGED_SHARD_RECORDS
        assert counts["failed_by_type"] == {"unreadable_record": 1 + 2 + 6 + 2, "truncated_record": 1}
    else:
        assert counts["expected"] is None
        # one row per unreadable byte range: the bad header, the cut record, the empty object, the garbage
        assert counts["failed_by_type"] == {"unreadable_record": 3, "truncated_record": 1}
    if proxy is not None:
        assert proxy.requests >= 2 * proxy.every  # faults were injected along the way


def _rows_at(table_uri: str) -> list[dict]:
    """Every row of the Parquet parts below a local or gs:// table folder."""
    import pyarrow.parquet as pq

    return [
        row
        for uri in storage.list_prefix(table_uri)
        if uri.endswith(".parquet")
        for row in pq.read_table(io.BytesIO(storage.read_bytes(uri))).to_pylist()
    ]


@pytest.mark.integration
def test_cli_exit_codes_for_a_non_finite_model_and_a_shard_unlike_its_manifest(tmp_path, tiny_model):
    """Real processes: a NaN model is exit 2 before anything is written; a shard whose bytes
    differ from its manifest is exit 3 naming it, with its rows published."""
    folder = str(tmp_path / "damaged")
    os.makedirs(folder)
    damaged_shards(folder, with_manifest=True)
    nan_root = _nan_weights(tiny_model, str(tmp_path / "nan-models"))
    refused = run_cli("--input", storage.join(folder, "*.tfrecord"), "--model", nan_root, "--output", str(tmp_path / "refused"))
    assert refused.returncode == 2, refused.stderr
    last_line = refused.stderr.strip().splitlines()[-1]
    assert "model.keras" in last_line and "not finite" in last_line
    assert not (tmp_path / "refused").exists()

    output = str(tmp_path / "scores")
    model = save_model(tiny_model, str(tmp_path / "models"), "v1")
    completed = run_cli(
        "--input",
        storage.join(folder, "*.tfrecord"),
        "--model",
        model,
        "--output",
        output,
        "--run-id",
        "mismatch",
        "--max-error-rate",
        "1",
    )
    assert completed.returncode == 3, completed.stderr
    assert "test-00000-of-00004.tfrecord: sha256" in completed.stderr.strip().splitlines()[-1]
    summary = json.loads(storage.read_bytes(run_summary_uri(output, "mismatch")))
    assert summary["status"] == "source_mismatch"
    assert len(read_table(output, "predictions")) + len(read_table(output, "errors")) == 4 * DAMAGED_SHARD_RECORDS


def test_the_model_file_is_read_once_and_checked_against_the_hash_metrics_json_evaluated(model_root, tmp_path):
    from components.score.model_scorer import load_model

    ref = registry.resolve(model_root, check_file=False)  # no read of model.keras here
    other = save_model(fit_tiny_model(), str(tmp_path / "other"), "v", publish=False)
    evaluated_elsewhere = registry.resolve(other, check_file=False).sha256  # a digest never loaded before
    refusal = r"/model\.keras: SHA-256 \w{12}… is not the \w{12}… that metrics\.json evaluated"
    with pytest.raises(InputError, match=refusal):
        load_model(ref.keras_uri, expected_sha256=evaluated_elsewhere)

    model = load_model(ref.keras_uri, expected_sha256=ref.sha256)
    os.unlink(ref.keras_uri)  # a second load of the same digest in the process reads nothing
    assert load_model(ref.keras_uri, expected_sha256=ref.sha256) is model
