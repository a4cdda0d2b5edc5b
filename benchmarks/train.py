"""Time of `fmnist train` with its defaults from the shards vs the tutorial's in-memory `model.fit`.

    .venv/bin/python -m benchmarks.train [--data runs/local/shards] [--source DIR] [--epochs N] [--repeats N]

Baseline (the workshop notebook): the IDX files -> NumPy arrays / 255 -> model.fit on the
arrays (same network, epochs and batch size) -> evaluate on the test arrays. Measured:
`train()` as the job runs it: stage, verify and decode the shards; fit with a validation
hold-out; evaluate; write, upload and publish every artifact. Both run in this process,
alternately `--repeats` times; the fastest run of each counts (the least disturbed by
other work on the machine). Prints seconds per phase, test accuracy and two ratios:
data + fit (like for like) and the whole job (which also exports a SavedModel, a
confusion-matrix picture and a model card). A third row, the tutorial with the job's
steps_per_execution, shows how much of the difference is Keras' per-step overhead.
"""
import argparse
import json
import os
import tempfile
import time

from components.constants import DEFAULT_SOURCE, IDX_FILES
from components.idx import load_split
from components.models import STEPS_PER_EXECUTION, build_model
from components.training import train

_BATCH_SIZE = 32


def tutorial(source: str, epochs: int, steps_per_execution: int = 1) -> dict:
    """The notebook's recipe on in-memory arrays: seconds per phase and test accuracy."""
    start = time.perf_counter()
    (train_images, train_labels), (test_images, test_labels) = (
        (images.array / 255.0, labels.array)
        for images, labels in (load_split(source, *IDX_FILES[split]) for split in ("train", "test"))
    )
    model = build_model("mlp", learning_rate=0.001, steps_per_execution=steps_per_execution)
    fit_start = time.perf_counter()
    model.fit(train_images, train_labels, epochs=epochs, batch_size=_BATCH_SIZE, verbose=0)
    fit_end = time.perf_counter()
    _, accuracy = model.evaluate(test_images, test_labels, verbose=0)
    end = time.perf_counter()
    return {"load": fit_start - start, "fit": fit_end - fit_start, "rest": end - fit_end, "total": end - start,
            "accuracy": accuracy}


def from_shards(data: str, epochs: int) -> dict:
    """`fmnist train` with its defaults (but `epochs`), into a temporary model root."""
    with tempfile.TemporaryDirectory(prefix="bench-train-") as model_root:
        start = time.perf_counter()
        summary = train(data=data, model_root=model_root, epochs=epochs, min_accuracy=0.0)
        total = time.perf_counter() - start
        with open(os.path.join(summary["uri"], "metrics.json")) as file:
            timings = json.load(file)["timings"]
    load, fit = timings["load_seconds"], timings["fit_seconds"]
    return {"load": load, "fit": fit, "rest": total - load - fit, "total": total, "accuracy": summary["test_accuracy"]}


def warm_up() -> None:
    """One tiny fit, so that neither measured run pays TensorFlow's first-call start-up."""
    import numpy as np

    build_model("mlp", learning_rate=0.001).fit(np.zeros((64, 28, 28)), np.zeros(64), epochs=1, verbose=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="runs/local/shards", help="shards made by `fmnist prepare`")
    parser.add_argument("--source", default=DEFAULT_SOURCE, help="the same data set's IDX files")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1, help="alternating runs of each; the fastest counts")
    args = parser.parse_args()
    warm_up()
    labels = {
        "baseline": "tutorial: IDX -> NumPy -> model.fit",
        "measured": "fmnist train: shards -> tf.data -> fit",
        "tutorial_spe": f"(tutorial + steps_per_execution={STEPS_PER_EXECUTION})",
    }
    runs: dict[str, list[dict]] = {name: [] for name in labels}
    for _ in range(args.repeats):
        runs["baseline"].append(tutorial(args.source, args.epochs))
        runs["measured"].append(from_shards(args.data, args.epochs))
        runs["tutorial_spe"].append(tutorial(args.source, args.epochs, steps_per_execution=STEPS_PER_EXECUTION))
    best = {name: min(results, key=lambda run: run["total"]) for name, results in runs.items()}
    print(f"{'run (fastest of ' + str(args.repeats) + ')':<44}{'data s':>8}{'fit s':>8}{'rest s':>8}{'total s':>9}{'test acc':>10}")
    for name, run in best.items():
        print(f"{labels[name]:<44}{run['load']:>8.1f}{run['fit']:>8.1f}{run['rest']:>8.1f}{run['total']:>9.1f}{run['accuracy']:>10.4f}")
    baseline, measured = best["baseline"], best["measured"]
    like_for_like = (measured["load"] + measured["fit"]) / (baseline["load"] + baseline["fit"])
    print(f"ratio data + fit: {like_for_like:.2f}x   ratio whole job: {measured['total'] / baseline['total']:.2f}x")
    print("all totals (s): " + "; ".join(
        f"{name} " + ", ".join(f"{run['total']:.1f}" for run in results) for name, results in runs.items()))


if __name__ == "__main__":
    main()
