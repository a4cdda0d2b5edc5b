"""Time of `fmnist train` from the shards vs the same network in a plain in-memory `model.fit`.

    .venv/bin/python -m benchmarks.train [--data runs/local/shards] [--source DIR] [--architecture mlp|cnn]
        [--epochs N] [--batch-size N] [--learning-rate X] [--repeats N]

Baseline: the IDX files -> NumPy arrays / 255 -> `model.fit` on the arrays of the very model
the job builds (same network, compile settings, cosine schedule, epochs and batch size), then
evaluate on the test arrays. Measured: `train()` as the job runs it: stage, verify and decode
the shards; fit with a validation hold-out; calibrate; evaluate; write, upload and publish
every artifact. Both run in this process, alternately `--repeats` times; the fastest run of
each counts (the least disturbed by other work on the machine). Prints seconds per phase,
test accuracy and two ratios: data + fit (like for like) and the whole job (which also
calibrates and exports a SavedModel, pictures and a model card). For the mlp, a third row,
the tutorial's own recipe (one step per call into TensorFlow, constant learning rate), shows
what Keras' per-step overhead costs.
"""

import argparse
import dataclasses
import json
import os
import tempfile
import time

from components.constants import DEFAULT_SOURCE, IDX_FILES
from components.io.idx import load_split
from components.train.models import MODEL_NAMES, RECIPES, Recipe, build_model
from components.train.training import train


def in_memory(source: str, *, architecture: str, recipe: Recipe, tutorial: bool = False) -> dict:
    """`model.fit` on in-memory arrays: seconds per phase and test accuracy.

    `tutorial`: the notebook's recipe instead of the job's compile settings (one step per
    call into TensorFlow, constant learning rate).
    """
    start = time.perf_counter()
    (train_images, train_labels), (test_images, test_labels) = (
        (images.array / 255.0, labels.array)
        for images, labels in (load_split(source, *IDX_FILES[split]) for split in ("train", "test"))
    )
    steps = recipe.epochs * -(-len(train_labels) // recipe.batch_size)
    options = {"decay_steps": None, "steps_per_execution": 1} if tutorial else {"decay_steps": steps}
    network = build_model(architecture, learning_rate=recipe.learning_rate, **options)
    fit_start = time.perf_counter()
    network.fit(train_images, train_labels, epochs=recipe.epochs, batch_size=recipe.batch_size, verbose=0)
    fit_end = time.perf_counter()
    _, accuracy = network.evaluate(test_images, test_labels, batch_size=1024, verbose=0)
    end = time.perf_counter()
    return {
        "load": fit_start - start,
        "fit": fit_end - fit_start,
        "rest": end - fit_end,
        "total": end - start,
        "accuracy": accuracy,
    }


def from_shards(data: str, *, architecture: str, recipe: Recipe) -> dict:
    """`fmnist train` with these flags (the rest default), into a temporary model root."""
    with tempfile.TemporaryDirectory(prefix="bench-train-") as model_root:
        start = time.perf_counter()
        summary = train(
            data=data, model_root=model_root, architecture=architecture, min_accuracy=0.0, **dataclasses.asdict(recipe)
        )
        total = time.perf_counter() - start
        with open(os.path.join(summary["uri"], "metrics.json")) as file:
            metrics = json.load(file)
    load, fit = metrics["timings"]["load_seconds"], metrics["timings"]["fit_seconds"]
    return {
        "load": load,
        "fit": fit,
        "rest": total - load - fit,
        "total": total,
        "accuracy": summary["test_accuracy"],
        "ece": metrics["test_ece"],
        "ece_before": metrics["calibration"]["test_ece_before"],
    }


def warm_up() -> None:
    """One tiny fit, so that neither measured run pays TensorFlow's first-call start-up."""
    import numpy as np

    build_model("mlp", learning_rate=0.001).fit(np.zeros((64, 28, 28)), np.zeros(64), epochs=1, verbose=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="runs/local/shards", help="shards made by `fmnist prepare`")
    parser.add_argument("--source", default=DEFAULT_SOURCE, help="the same data set's IDX files")
    parser.add_argument("--architecture", choices=MODEL_NAMES, default="mlp")
    parser.add_argument("--epochs", type=int, help="default: the model's recipe (components/train/models.py)")
    parser.add_argument("--batch-size", type=int, help="default: the model's recipe")
    parser.add_argument("--learning-rate", type=float, help="default: the model's recipe")
    parser.add_argument("--repeats", type=int, default=1, help="alternating runs of each; the fastest counts")
    args = parser.parse_args()
    default = RECIPES[args.architecture]
    recipe = Recipe(
        epochs=args.epochs or default.epochs,
        batch_size=args.batch_size or default.batch_size,
        learning_rate=args.learning_rate or default.learning_rate,
    )
    flags = {"architecture": args.architecture, **dataclasses.asdict(recipe)}
    warm_up()
    labels = {
        "baseline": "in memory: IDX -> NumPy -> model.fit",
        "measured": "fmnist train: shards -> tf.data -> fit",
    }
    if args.architecture == "mlp":
        labels["tutorial"] = "(the tutorial: 1 step per call, constant lr)"
    runs: dict[str, list[dict]] = {name: [] for name in labels}
    for _ in range(args.repeats):
        runs["baseline"].append(in_memory(args.source, architecture=args.architecture, recipe=recipe))
        runs["measured"].append(from_shards(args.data, architecture=args.architecture, recipe=recipe))
        if "tutorial" in runs:
            runs["tutorial"].append(in_memory(args.source, architecture=args.architecture, recipe=recipe, tutorial=True))
    best = {name: min(results, key=lambda run: run["total"]) for name, results in runs.items()}
    print(" ".join(f"--{name.replace('_', '-')} {value}" for name, value in flags.items()))
    print(
        f"{'run (fastest of ' + str(args.repeats) + ')':<46}{'data s':>8}{'fit s':>8}{'rest s':>8}{'total s':>9}{'test acc':>10}"
    )
    for name, run in best.items():
        print(
            f"{labels[name]:<46}{run['load']:>8.1f}{run['fit']:>8.1f}{run['rest']:>8.1f}{run['total']:>9.1f}{run['accuracy']:>10.4f}"
        )
    baseline, measured = best["baseline"], best["measured"]
    like_for_like = (measured["load"] + measured["fit"]) / (baseline["load"] + baseline["fit"])
    print(f"ratio data + fit: {like_for_like:.2f}x   ratio whole job: {measured['total'] / baseline['total']:.2f}x")
    print(f"fmnist train test ECE: {measured['ece_before']:.4f} before calibration, {measured['ece']:.4f} after")
    print(
        "all totals (s): "
        + "; ".join(f"{name} " + ", ".join(f"{run['total']:.1f}" for run in results) for name, results in runs.items())
    )


if __name__ == "__main__":
    main()
