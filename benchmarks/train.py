"""Time of `fmnist train` with its defaults from the shards vs the tutorial's in-memory `model.fit`.

    .venv/bin/python -m benchmarks.train [--data runs/local/shards] [--source DIR] [--epochs N]

Baseline (the workshop notebook): the IDX files -> NumPy arrays / 255 -> model.fit on the
arrays (same network, epochs, batch size) -> evaluate. Measured: `train()` as the job runs
it (stage + verify + decode shards, fit with a validation hold-out, evaluate, write and
publish every artifact). Both run in this one process; prints seconds, test accuracy and
the ratio.
"""
import argparse
import json
import os
import tempfile
import time

from components.constants import DEFAULT_SOURCE, IDX_FILES
from components.idx import load_split
from components.models import build_model
from components.training import train

_BATCH_SIZE = 32


def tutorial(source: str, epochs: int) -> dict:
    """The notebook's recipe on in-memory arrays; returns seconds (total, fit) and test accuracy."""
    start = time.perf_counter()
    (train_images, train_labels), (test_images, test_labels) = (
        (images.array / 255.0, labels.array) for images, labels in (load_split(source, *IDX_FILES[split]) for split in ("train", "test"))
    )
    model = build_model("mlp", learning_rate=0.001)
    fit_start = time.perf_counter()
    model.fit(train_images, train_labels, epochs=epochs, batch_size=_BATCH_SIZE, verbose=0)
    fit_seconds = time.perf_counter() - fit_start
    _, accuracy = model.evaluate(test_images, test_labels, verbose=0)
    return {"seconds": time.perf_counter() - start, "fit_seconds": fit_seconds, "accuracy": accuracy}


def from_shards(data: str, epochs: int) -> dict:
    """`fmnist train` with its defaults (but `epochs`), into a temporary model root."""
    with tempfile.TemporaryDirectory(prefix="bench-train-") as model_root:
        start = time.perf_counter()
        summary = train(data=data, model_root=model_root, epochs=epochs, min_accuracy=0.0)
        seconds = time.perf_counter() - start
        with open(os.path.join(summary["uri"], "metrics.json")) as file:
            timings = json.load(file)["timings"]
    return {"seconds": seconds, **timings, "accuracy": summary["test_accuracy"]}


def warm_up() -> None:
    """One tiny fit, so that neither measured run pays TensorFlow's first-call start-up."""
    import numpy as np

    build_model("mlp", learning_rate=0.001).fit(np.zeros((64, 28, 28)), np.zeros(64), epochs=1, verbose=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="runs/local/shards", help="shards made by `fmnist prepare`")
    parser.add_argument("--source", default=DEFAULT_SOURCE, help="the same data set's IDX files")
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    warm_up()
    baseline = tutorial(args.source, args.epochs)
    measured = from_shards(args.data, args.epochs)
    print(f"{'run':<46}{'total s':>9}{'fit s':>8}{'test acc':>10}")
    print(f"{'tutorial: IDX -> NumPy -> model.fit':<46}{baseline['seconds']:>9.1f}"
          f"{baseline['fit_seconds']:>8.1f}{baseline['accuracy']:>10.4f}")
    print(f"{'fmnist train: shards -> tf.data -> fit -> publish':<46}{measured['seconds']:>9.1f}"
          f"{measured['fit_seconds']:>8.1f}{measured['accuracy']:>10.4f}")
    print(f"  of which staging + verifying + decoding the shards: {measured['load_seconds']:.1f} s")
    print(f"ratio (total): {measured['seconds'] / baseline['seconds']:.2f}x   "
          f"ratio (fit only): {measured['fit_seconds'] / baseline['fit_seconds']:.2f}x")


if __name__ == "__main__":
    main()
