"""What a trained model leaves behind: evaluation metrics, pictures, a model card, a serving export.

Every writer here takes a local folder; components.train.training uploads the folder's files to
the model version folder afterwards (so `gs://` model roots work the same as local ones).
"""

from __future__ import annotations

import json
import os

import numpy as np

from components.constants import CLASS_NAMES, IMAGE_SIZE, NUM_CLASSES
from components.contracts.shard_contract import decode_png_images
from components.metrics.classification import classification_metrics

# Serving signatures of the exported SavedModel (the first is also `serving_default`).
SIGNATURE_PNG = "serve_png"  # encoded PNG bytes, tf.string [None]
SIGNATURE_IMAGES = "serve_images"  # float images [None, 28, 28] in [0, 1]


def evaluate(logits: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy, mean cross-entropy, confusion matrix and per-class precision/recall/F1."""
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    predicted = logits.argmax(axis=1)
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)  # rows: true label, columns: predicted
    scores = classification_metrics(confusion)
    # metrics.json is JSON (no NaN): a class never predicted (or never present) has precision (recall) 0.
    precision, recall, f1 = (np.nan_to_num(scores[name], nan=0.0) for name in ("precision", "recall", "f1"))
    return {
        "test_accuracy": float((predicted == labels).mean()),
        "test_loss": float(-log_probabilities[np.arange(len(labels)), labels].mean()),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(confusion[i].sum()),
            }
            for i, name in enumerate(CLASS_NAMES)
        },
        "confusion_matrix": confusion.tolist(),
    }


def export_saved_model(model, path: str) -> None:
    """A SavedModel with two serving signatures; both return softmax `probabilities` and `class_ids`."""
    import keras
    import tensorflow as tf

    def serve_images(images):
        probabilities = tf.nn.softmax(model(images, training=False), axis=-1)
        return {"probabilities": probabilities, "class_ids": tf.argmax(probabilities, axis=-1, output_type=tf.int32)}

    def serve_png(png):
        return serve_images(decode_png_images(png))

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SIGNATURE_PNG, serve_png, input_signature=[tf.TensorSpec((None,), tf.string, name="png")])
    archive.add_endpoint(
        SIGNATURE_IMAGES,
        serve_images,
        input_signature=[tf.TensorSpec((None, IMAGE_SIZE, IMAGE_SIZE), tf.float32, name="images")],
    )
    archive.write_out(path, verbose=False)


def write_confusion_matrix_png(confusion: list[list[int]], path: str, title: str) -> None:
    """The confusion matrix as a picture: counts in the cells, true labels down, predictions across."""
    import matplotlib

    matplotlib.use("Agg")  # no display in a batch job
    from matplotlib import pyplot

    matrix = np.asarray(confusion)
    figure, axes = pyplot.subplots(figsize=(9, 8))
    axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(NUM_CLASSES), CLASS_NAMES, rotation=45, ha="right")
    axes.set_yticks(range(NUM_CLASSES), CLASS_NAMES)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    threshold = matrix.max() / 2
    for (row, column), count in np.ndenumerate(matrix):
        axes.text(column, row, str(count), ha="center", va="center", fontsize=8, color="white" if count > threshold else "black")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


def write_reliability_png(calibration: dict, path: str, title: str) -> None:
    """Reliability diagram of the test split: accuracy against mean confidence per bin, before and after."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(5.5, 5))
    axes.plot([0, 1], [0, 1], color="#9aa5b1", linestyle="--", label="perfectly calibrated")
    for stage, colour in (("before", "#d1495b"), ("after", "#3a7ca5")):
        bins = calibration[f"test_reliability_{stage}"]
        points = [
            (confidence, accuracy)
            for confidence, accuracy in zip(bins["mean_confidence"], bins["accuracy"])
            if confidence is not None
        ]
        label = (
            f"{'softmax of the logits' if stage == 'before' else 'temperature ' + format(calibration['temperature'], '.3f')}"
            f" (ECE {calibration[f'test_ece_{stage}']:.4f})"
        )
        axes.plot(*zip(*points), marker="o", color=colour, label=label)
    axes.set_xlabel("mean confidence in bin")
    axes.set_ylabel("accuracy in bin")
    axes.set_title(f"{title}: reliability on the test split")
    axes.legend(frameon=False, loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


def write_labels(path: str) -> None:
    """labels.json: the class names in label order (index = class id)."""
    with open(path, "w") as file:
        json.dump(list(CLASS_NAMES), file, indent=2)


def write_model_card(metrics: dict, path: str) -> None:
    """model_card.md: what the model is, what it was trained on, how good it is, how to use it."""
    params, data, gate = metrics["parameters"], metrics["data"], metrics["quality_gate"]
    calibration = metrics["calibration"]
    rows = "\n".join(
        f"| {name} | {scores['precision']:.3f} | {scores['recall']:.3f} | {scores['f1']:.3f} | {scores['support']} |"
        for name, scores in metrics["per_class"].items()
    )
    text = f"""# Model card: {metrics["model_version"]}

Fashion-MNIST clothing classifier (`{params["model"]}`, {metrics["parameter_count"]:,} parameters), trained by
`fmnist train` (fmnist-jobs {metrics["versions"]["fmnist_jobs"]}, TensorFlow {metrics["versions"]["tensorflow"]},
Keras {metrics["versions"]["keras"]}) on {metrics["created_at"]}.

## Intended use
Labels 28x28 grayscale pictures of a single garment, light on a black background, in one of
ten classes ({", ".join(CLASS_NAMES)}). Other pictures must first go through
`fmnist prepare-images`; the model knows nothing outside those ten classes.

## Data
`{data["uri"]}` (manifest digest `{data["manifest_digest"][:16]}…`): {data["train_records"]:,} training
images, {data["validation_records"]:,} held out of the training split for validation (epoch selection),
{data["test_records"]:,} test images used only for the final evaluation.

## Training
{params["epochs"]} epochs, batch {params["batch_size"]}, Adam (learning rate {params["learning_rate"]},
{params["lr_schedule"]} schedule),
seed {params["seed"]}; weights of the epoch with the best validation accuracy (epoch {metrics["best_epoch"]}).

## Evaluation (test split)
Accuracy **{metrics["test_accuracy"]:.4f}**, loss {metrics["test_loss"]:.4f}. Quality gate
(min accuracy {gate["min_accuracy"]}): **{"passed" if gate["passed"] else "FAILED"}** — {gate["reason"]}.

| class | precision | recall | F1 | support |
|---|---|---|---|---|
{rows}

Confusion matrix: `confusion_matrix.png`; every figure: `metrics.json`.

## Calibration
The logits are divided by a temperature of **{calibration["temperature"]:.4f}**, fitted on the validation hold-out
(a layer of the model, so every way of serving it applies it): `confidence` is an honest
probability. Expected calibration error on the test split ({calibration["bins"]} equal-width bins):
**{calibration["test_ece_after"]:.4f}**, against {calibration["test_ece_before"]:.4f} for the softmax of the raw logits;
accuracy is unchanged. Reliability diagram: `reliability.png`.

## Serving
`model.keras` (Keras; SHA-256 `{metrics["model_sha256"][:16]}…`, checked before scoring) and `saved_model/`
with the signatures `{SIGNATURE_PNG}` (PNG bytes) and
`{SIGNATURE_IMAGES}` (float images in [0, 1]); both return softmax `probabilities` and `class_ids`.
"""
    with open(path, "w") as file:
        file.write(text)


def local_files(folder: str) -> list[str]:
    """Every file below a folder, relative to it, sorted (the upload order is then stable)."""
    return sorted(os.path.relpath(os.path.join(root, name), folder) for root, _, names in os.walk(folder) for name in names)
