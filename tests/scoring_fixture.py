"""A small scoring output made in the test, faithful to the table contract (components/contracts/schema.py).

The readers (SQL views, `fmnist report`, the analysts' SQL examples) are tested on tables
written the way `fmnist score` writes them: real image shards and manifest (components.contracts.shards
/ components.prepare.dataset), rows built with pyarrow against PREDICTION_SCHEMA / ERROR_SCHEMA,
`pq.write_table` into `partition_uri(...)/part-<attempt>-NNNNN.parquet` with the run's lineage
in the key-value metadata (after the run's marker in the run index), and the run summary
(components.contracts.summary.RunSummary, naming the parts) written last at
`run_summary_uri(...)`. Only the model is stood in for: probabilities come from a seeded
random generator that favours the true label, so two "model versions" mostly agree.

The `scored_output` fixture (tests/conftest.py) builds:
  data/         2 train + 2 test shards of synthetic garments, manifest.json (train histogram)
  scores/       run nightly-2026-11-27 (model v1, test split, 2 error rows in 2 shards)
                run nightly-2026-11-28 (model v2, same images, no errors: no errors files)
                run_date=2026-11-29/run_id=unfinished: files without a summary (invisible)
"""

from __future__ import annotations

import dataclasses
import datetime

import numpy as np
import pyarrow as pa

from components.constants import CLASS_NAMES, NUM_CLASSES
from components.contracts import run_index
from components.contracts.manifest import Manifest, SplitEntry
from components.contracts.schema import (
    DICTIONARY_COLUMNS,
    ERROR_SCHEMA,
    ERRORS_TABLE,
    PREDICTION_SCHEMA,
    PREDICTIONS_TABLE,
    partition_uri,
    run_summary_uri,
    with_lineage,
)
from components.contracts.shards import ShardTask, class_histogram, parse_example, shard_name, write_shard
from components.contracts.summary import RunCounts, RunInputs, RunParts, RunSummary
from components.io import storage
from components.io.parquet_parts import write_part
from components.io.tfrecord import read_records
from components.prepare.dataset import publish_manifest

# Train split skewed towards the first classes, so a run's class mix visibly drifts from it.
TRAIN_LABELS = np.repeat(np.arange(NUM_CLASSES), [12, 10, 9, 8, 7, 6, 5, 4, 3, 2])
TEST_LABELS = np.arange(40) % NUM_CLASSES


@dataclasses.dataclass(frozen=True)
class ScoredRun:
    run_id: str
    run_date: str
    model_version: str
    seed: int
    failures: tuple[tuple[int, int, str], ...] = ()  # (shard index, record index, error_type)


RUNS = (
    ScoredRun("nightly-2026-11-27", "2026-11-27", "v1", seed=1, failures=((0, 3, "decode_error"), (1, 0, "missing_feature"))),
    ScoredRun("nightly-2026-11-28", "2026-11-28", "v2", seed=2),
)
UNFINISHED = ScoredRun("unfinished", "2026-11-29", "v3", seed=3)


def garment_images(labels: np.ndarray, seed: int) -> np.ndarray:
    """28x28 uint8 pictures: a light blob whose size and place depend on the label."""
    rng = np.random.default_rng(seed)
    images = np.zeros((len(labels), 28, 28), dtype=np.uint8)
    rows, cols = np.mgrid[:28, :28]
    for i, label in enumerate(labels):
        half_height, half_width = 4 + label, 12 - label
        centre = 14 + rng.integers(-2, 3, 2)
        inside = (abs(rows - centre[0]) < half_height) & (abs(cols - centre[1]) < half_width)
        images[i] = np.where(inside, 120 + rng.integers(0, 120, (28, 28)), rng.integers(0, 20, (28, 28)))
    return images


def write_dataset(data_uri: str) -> Manifest:
    """Two train and two test shards plus the manifest, written by the real shard writer."""
    splits = {}
    for seed, (split, labels) in enumerate((("train", TRAIN_LABELS), ("test", TEST_LABELS))):
        images = garment_images(labels, seed)
        parts = np.array_split(np.arange(len(labels)), 2)
        entries = [
            write_shard(
                ShardTask(
                    uri=storage.join(data_uri, shard_name(split, index, len(parts))),
                    image_ids=[f"{split}-{i:05d}" for i in positions],
                    images=images[positions],
                    labels=labels[positions],
                )
            )
            for index, positions in enumerate(parts)
        ]
        splits[split] = SplitEntry(num_records=len(labels), class_histogram=class_histogram(labels), shards=entries)
    manifest = Manifest.new(source={"uri": "synthetic", "files": {}}, splits=splits)
    publish_manifest(data_uri, manifest)
    return manifest


def fake_probabilities(label: int | None, image_id: str, seed: int) -> np.ndarray:
    """Softmax of random logits that favour the true label (a stand-in for the model)."""
    rng = np.random.default_rng([seed, int.from_bytes(image_id.encode()[-4:], "big")])
    logits = rng.normal(0.0, 1.0, NUM_CLASSES)
    if label is not None:
        logits[label] += rng.uniform(0.5, 4.0)
    exp = np.exp(logits - logits.max())
    return (exp / exp.sum()).astype(np.float32)


def write_run(output: str, shard_uris: list[str], run: ScoredRun, *, summary: bool = True) -> RunSummary:
    """Scores the shards with the stand-in model into the tables; the summary is written last."""
    scored_at = datetime.datetime(*map(int, run.run_date.split("-")), 6, 0, tzinfo=datetime.UTC)
    failures = {(shard, record): error_type for shard, record, error_type in run.failures}
    read, failed_by_type, started_at = 0, {}, datetime.datetime.now(datetime.UTC)
    attempt = f"{run.run_id}-attempt"
    lineage = dict(run_id=run.run_id, run_date=run.run_date, model_version=run.model_version)
    parts: dict[str, list[str]] = {PREDICTIONS_TABLE: [], ERRORS_TABLE: []}
    run_index.add_run(output, run.run_date, run.run_id)  # as the scorer does, before anything is published
    for shard_index, uri in enumerate(shard_uris):
        source_uri = storage.absolute_uri(uri)
        predictions, errors = [], []
        with storage.open_read(uri) as stream:
            for record in read_records(stream):
                read += 1
                example = parse_example(record.data)
                error_type = failures.get((shard_index, record.index))
                if error_type:
                    failed_by_type[error_type] = failed_by_type.get(error_type, 0) + 1
                    errors.append(
                        {
                            "source_uri": source_uri,
                            "record_index": record.index,
                            "image_id": example.image_id,
                            "error_type": error_type,
                            "error_message": f"planted {error_type}",
                            "scored_at": scored_at,
                        }
                    )
                    continue
                probabilities = fake_probabilities(example.label, example.image_id, run.seed)
                label = int(probabilities.argmax())
                predictions.append(
                    {
                        "image_id": example.image_id,
                        "source_uri": source_uri,
                        "predicted_label": label,
                        "predicted_class": CLASS_NAMES[label],
                        "confidence": float(probabilities[label]),
                        "probabilities": probabilities.tolist(),
                        "true_label": example.label,
                        "model_version": run.model_version,
                        "scored_at": scored_at,
                    }
                )
        part = f"part-{attempt}-{shard_index:05d}.parquet"
        for table, rows, schema in ((PREDICTIONS_TABLE, predictions, PREDICTION_SCHEMA), (ERRORS_TABLE, errors, ERROR_SCHEMA)):
            if rows:  # like the scorer, which writes no file for a shard without rows of a table
                part_uri = storage.join(partition_uri(output, table, run.run_date, run.run_id), part)
                write_part(  # as the scorer writes
                    part_uri,
                    pa.Table.from_pylist(rows, schema=with_lineage(schema, **lineage)),
                    dictionary_columns=DICTIONARY_COLUMNS,
                )
                parts[table].append(storage.absolute_uri(part_uri))
    failed = sum(failed_by_type.values())
    finished_at = datetime.datetime.now(datetime.UTC)
    document = RunSummary(  # what `fmnist score` writes (components/score/run.py), minus Beam's counters
        run_id=run.run_id,
        run_date=run.run_date,
        status="ok",
        model_version=run.model_version,
        model_uri=storage.absolute_uri(f"models/{run.model_version}"),
        inputs=RunInputs(
            glob=storage.absolute_uri(storage.join(storage.dirname(shard_uris[0]), "test-*.tfrecord")),
            shards=[storage.absolute_uri(uri) for uri in shard_uris],
        ),
        parts=RunParts(predictions=parts[PREDICTIONS_TABLE], errors=parts[ERRORS_TABLE]),
        counts=RunCounts(read=read, scored=read - failed, failed=failed, failed_by_type=failed_by_type),
        error_rate=failed / read,
        max_error_rate=0.01,
        attempt=attempt,
        timings={
            "started_at": started_at.isoformat(),
            "finished_at": finished_at.isoformat(),
            "total_seconds": round((finished_at - started_at).total_seconds(), 3),
        },
    )
    if summary:
        storage.write_bytes(run_summary_uri(output, run.run_id), (document.to_json() + "\n").encode())
    return document


def write_scored_output(root: str) -> tuple[str, str]:
    """The data set and the scoring output of RUNS (+ one unfinished run); returns (data, scores)."""
    data_uri, scores_uri = storage.join(root, "data"), storage.join(root, "scores")
    manifest = write_dataset(data_uri)
    test_shards = [storage.join(data_uri, shard.name) for shard in manifest.splits["test"].shards]
    for run in RUNS:
        write_run(scores_uri, test_shards, run)
    write_run(scores_uri, test_shards, UNFINISHED, summary=False)
    return data_uri, scores_uri
