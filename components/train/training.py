"""Training: shards -> a fitted, evaluated, gated model version in the registry.

    <model_root>/<model_version>/  model.keras, saved_model/, metrics.json, labels.json,
                                   confusion_matrix.png, reliability.png, model_card.md
    <model_root>/LATEST            updated only when the model passes the quality gate

model_version = UTC start time + a hash of the trained weights, parameters and data set
(e.g. 20261129T043000Z-1a2b3c4d): sortable, unique, and the same weights always hash alike.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import logging
import math
import os
import platform
import secrets
import tempfile
import time

import numpy as np

from components.constants import PROGRESS_LOG_FIELD, tool_version
from components.contracts import model_versions, registry
from components.contracts.manifest import Manifest
from components.contracts.model_metrics import ChampionComparison, ModelMetrics
from components.contracts.parameters import flag_of, parameter
from components.contracts.shards import manifest_digest, read_manifest
from components.errors import CheckFailed, InputError
from components.io import lease, storage
from components.metrics import calibration
from components.train import champion, model_artifacts
from components.train.models import MODEL_NAMES, RECIPES, build_model, published_model
from components.train.training_data import LabeledImages, holdout_mask, load_split

log = logging.getLogger(__name__)

_EVAL_BATCH = 1024
VERSION_WAIT_S = 600.0  # how long a training waits for an identical one writing the same version folder
LR_SCHEDULES = ("cosine", "constant")


def _recipe_defaults(field: str) -> str:
    """How a recipe-dependent default reads in --help: `mlp 20, cnn 18`."""
    return ", ".join(f"{name} {getattr(recipe, field)}" for name, recipe in RECIPES.items())


@dataclasses.dataclass(frozen=True)
class TrainParameters:
    """`fmnist train`: image shards -> a quality-gated model version.

    metrics.json records these under "parameters" with the architecture under its earlier key
    "model" (and epochs, batch size, learning rate resolved from the recipe): the key is part of
    the model version's hash and of the readers' contract, so it stays.
    """

    data: str = parameter(help="folder or gs:// prefix with the shards and manifest.json", location=True)
    model_root: str = parameter(help="folder or gs:// prefix of the model registry (version folders + LATEST)", location=True)
    architecture: str = parameter(
        "mlp",
        help="mlp = the workshop network, cnn = small conv net",
        choices=MODEL_NAMES,
        tuning=True,
        deprecated_aliases=("--model",),
    )
    epochs: int | None = parameter(
        None, help="passes over the training data", default_help=_recipe_defaults("epochs"), tuning=True
    )
    batch_size: int | None = parameter(None, help="images per step", default_help=_recipe_defaults("batch_size"), tuning=True)
    learning_rate: float | None = parameter(
        None, help="Adam's peak learning rate", default_help=_recipe_defaults("learning_rate"), tuning=True
    )
    lr_schedule: str = parameter(
        "cosine",
        help="cosine: decay to 0 over the run; constant: the tutorial's",
        choices=LR_SCHEDULES,
        tuning=True,
    )
    seed: int = parameter(0, help="random seed; same data + seed + flags = same model", tuning=True)
    min_accuracy: float = parameter(0.85, help="quality gate: minimum test accuracy to publish; below it exit 3", tuning=True)
    validation_fraction: float = parameter(0.05, help="share of the training split held out to pick the best epoch", tuning=True)
    max_accuracy_drop: float = parameter(
        0.005, help="champion gate: how far test accuracy may fall below the published model's (0.005 = 0.5 points)"
    )
    max_class_drop: float = parameter(
        0.02, help="champion gate: how far any class's recall may fall below the published model's (0.02 = 2 points)"
    )
    force_publish: bool = parameter(
        False, help="publish even if worse than the published model (a deliberate regression, recorded in metrics.json)"
    )


def train(
    *,
    data: str,
    model_root: str,
    architecture: str = TrainParameters.architecture,
    epochs: int | None = TrainParameters.epochs,
    batch_size: int | None = TrainParameters.batch_size,
    learning_rate: float | None = TrainParameters.learning_rate,
    seed: int = TrainParameters.seed,
    min_accuracy: float = TrainParameters.min_accuracy,
    validation_fraction: float = TrainParameters.validation_fraction,
    lr_schedule: str = TrainParameters.lr_schedule,
    max_accuracy_drop: float = TrainParameters.max_accuracy_drop,
    max_class_drop: float = TrainParameters.max_class_drop,
    force_publish: bool = TrainParameters.force_publish,
) -> dict:
    """Fits a model of `architecture` on the data set at `data`, writes a model version below `model_root`, gates it.

    `epochs`, `batch_size` and `learning_rate` default to the model's recipe
    (components.train.models.RECIPES). The epoch with the best accuracy on a validation slice
    held out of the training split is kept, then calibrated (a temperature fitted on that
    slice); `lr_schedule` "cosine" decays Adam's learning rate to 0 over the run,
    "constant" keeps it (the tutorial's recipe). Publishes the version (LATEST) when its
    test accuracy reaches `min_accuracy` and it is not worse than the published model (the
    champion, evaluated here on the same test split) beyond `max_accuracy_drop` overall and
    `max_class_drop` for any class's recall (components.train.champion); `force_publish`
    overrides the champion comparison, never the absolute gate, and is recorded. Otherwise
    keeps the artifacts for inspection and raises CheckFailed. Returns a summary.
    """
    if architecture not in MODEL_NAMES:
        raise InputError(f"{flag_of('architecture')} {architecture!r}: choose one of {', '.join(MODEL_NAMES)}")
    recipe = RECIPES[architecture]
    params = {
        "model": architecture,  # metrics.json's key (TrainParameters)
        "epochs": recipe.epochs if epochs is None else epochs,
        "batch_size": recipe.batch_size if batch_size is None else batch_size,
        "learning_rate": recipe.learning_rate if learning_rate is None else learning_rate,
        "lr_schedule": lr_schedule,
        "seed": seed,
        "min_accuracy": min_accuracy,
        "validation_fraction": validation_fraction,
    }
    _check_params(params)
    _check_tolerances(max_accuracy_drop=max_accuracy_drop, max_class_drop=max_class_drop)
    started = utc_now()
    manifest = read_manifest(data)
    storage.ensure_writable(model_root)
    with tempfile.TemporaryDirectory(prefix="fmnist-train-") as work:
        clock = time.perf_counter()
        fit_split, validation_split, test_split = load_data(data, manifest, os.path.join(work, "shards"), validation_fraction)
        load_seconds = time.perf_counter() - clock
        fitted, history, best_epoch, fit_seconds = fit(fit_split, validation_split, params)
        keras_model, calibration_metrics = calibrate(architecture, fitted, validation_split, test_split)
        scores = model_artifacts.evaluate(_logits(keras_model, test_split), test_split.labels)
        comparison = compare_with_champion(
            model_root, scores, test_split, work, max_accuracy_drop=max_accuracy_drop, max_class_drop=max_class_drop
        )
        if force_publish and not comparison.passed:
            comparison = dataclasses.replace(comparison, forced=True)
        digest = manifest_digest(manifest)
        version = model_version(started, keras_model, params, digest)
        gate = quality_gate(scores["test_accuracy"], min_accuracy)
        metrics = {
            "model_version": version,
            "created_at": started.isoformat(timespec="seconds"),
            **scores,
            "test_ece": calibration_metrics["test_ece_after"],
            "calibration": calibration_metrics,
            "quality_gate": gate,
            "champion_comparison": comparison.to_dict(),
            "best_epoch": best_epoch,
            "history": history,
            "timings": {"load_seconds": round(load_seconds, 2), "fit_seconds": round(fit_seconds, 2)},
            "parameter_count": int(keras_model.count_params()),
            "parameters": params,
            "data": {
                "uri": data,
                "manifest_digest": digest,
                "train_records": len(fit_split),
                "validation_records": len(validation_split),
                "test_records": len(test_split),
            },
            "versions": _versions(),
        }
        version_uri = storage.join(model_root, version)
        recorded = write_version(keras_model, metrics, os.path.join(work, "model"), model_root, version)

    comparison = recorded.champion_comparison
    if not recorded.quality_gate.passed:
        raise CheckFailed(f"{version_uri}: {recorded.quality_gate.reason}; artifacts kept, LATEST unchanged")
    if not recorded.gates_passed:
        raise CheckFailed(f"{version_uri}: {comparison.reason}; artifacts kept, LATEST unchanged")
    registry.publish(
        model_root,
        version,
        command="train",
        reason=_publish_reason(recorded),
        expected_from=comparison.champion_version if comparison else registry.ANY_VERSION,
    )
    log.info("published %s (test accuracy %.4f)", version_uri, scores["test_accuracy"])
    return {
        "model_version": version,
        "uri": version_uri,
        "test_accuracy": scores["test_accuracy"],
        "test_loss": scores["test_loss"],
        "quality_gate": gate,
        "champion_comparison": comparison.to_dict() if comparison else None,
        "published": True,
    }


def _publish_reason(metrics: ModelMetrics) -> str:
    """Why training moves LATEST, for its history: the gate that decided, and a forced publish as such."""
    comparison = metrics.champion_comparison
    if comparison is None:
        return metrics.quality_gate.reason or "quality gate passed"
    if comparison.forced:
        return f"--force-publish despite: {comparison.reason}"
    return comparison.reason


def compare_with_champion(
    model_root: str, scores: dict, test_split: LabeledImages, work: str, *, max_accuracy_drop: float, max_class_drop: float
) -> ChampionComparison:
    """The new model's scores against the published model's on the same test images."""
    loaded = champion.load_champion(model_root, work)
    if isinstance(loaded, str):
        log.info("%s", loaded)
        return champion.without_champion(loaded, max_accuracy_drop=max_accuracy_drop, max_class_drop=max_class_drop)
    ref, champion_model = loaded
    champion_scores = model_artifacts.evaluate(_logits(champion_model, test_split), test_split.labels)
    comparison = champion.compare(
        champion_version=ref.version,
        champion_scores=champion_scores,
        challenger_scores=scores,
        max_accuracy_drop=max_accuracy_drop,
        max_class_drop=max_class_drop,
    )
    log.info("champion gate %s: %s", "passed" if comparison.passed else "FAILED", comparison.reason)
    return comparison


def utc_now() -> datetime.datetime:
    """The training's start time, the first half of its version name."""
    return datetime.datetime.now(datetime.UTC)


def load_data(
    data: str, manifest: Manifest, staging_dir: str, validation_fraction: float
) -> tuple[LabeledImages, LabeledImages, LabeledImages]:
    """(training, validation, test) images: the validation slice is held out of the train split."""
    train_split = load_split(data, manifest, "train", staging_dir)
    test_split = load_split(data, manifest, "test", staging_dir)
    held_out = holdout_mask(train_split.image_ids, validation_fraction)
    fit_split, validation_split = train_split.subset(~held_out), train_split.subset(held_out)
    if not len(fit_split) or not len(validation_split):
        raise InputError(
            f"{data}: {len(train_split)} training records are too few to hold out a validation slice "
            f"of {validation_fraction:.0%} and train on the rest"
        )
    log.info("data %s: %d training, %d validation, %d test images", data, len(fit_split), len(validation_split), len(test_split))
    return fit_split, validation_split, test_split


def fit(fit_split: LabeledImages, validation_split: LabeledImages, params: dict):
    """Builds and fits the model reproducibly; returns it with the best epoch's weights restored.

    Returns (model, per-epoch history, best epoch (1-based), seconds spent in fit).
    """
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(params["seed"])  # Python, NumPy and TF seeds: same weights, same order
    tf.config.experimental.enable_op_determinism()
    steps = params["epochs"] * math.ceil(len(fit_split) / params["batch_size"])
    model = build_model(
        params["model"], learning_rate=params["learning_rate"], decay_steps=steps if params["lr_schedule"] == "cosine" else None
    )
    batches = (
        tf.data.Dataset.from_tensor_slices((fit_split.images, fit_split.labels))
        .shuffle(len(fit_split), seed=params["seed"], reshuffle_each_iteration=True)
        .batch(params["batch_size"])
        .prefetch(tf.data.AUTOTUNE)
    )
    validation = tf.data.Dataset.from_tensor_slices((validation_split.images, validation_split.labels)).batch(_EVAL_BATCH)
    # Never stops early (patience = all epochs): it only restores the epoch with the best
    # validation accuracy when fit ends.
    best = keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=params["epochs"], restore_best_weights=True)
    # With weight averaging, each epoch is validated and kept with the averaged weights (swapped
    # in before `best` looks at them): what is restored and published is an average.
    averaged = [keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if model.optimizer.use_ema else []
    start = time.perf_counter()
    history = model.fit(
        batches,
        validation_data=validation,
        epochs=params["epochs"],
        shuffle=False,  # shuffled above
        verbose=0,  # Keras prints to stdout, which carries the job's JSON result: log instead
        callbacks=[*averaged, _epoch_logger(model, params["epochs"]), best],
    )
    seconds = time.perf_counter() - start
    losses = history.history["loss"]
    if not all(math.isfinite(loss) for loss in losses):
        raise InputError(
            f"training loss became {losses[-1]} in epoch {len(losses)} (learning rate {params['learning_rate']} "
            "too large?); nothing written"
        )
    per_epoch = [
        {"epoch": epoch + 1, **{name: float(values[epoch]) for name, values in history.history.items()}}
        for epoch in range(len(losses))
    ]
    return model, per_epoch, best.best_epoch + 1, seconds


def calibrate(architecture: str, fitted, validation_split: LabeledImages, test_split: LabeledImages):
    """The model as published with a temperature fitted on the validation hold-out, and the figures.

    Returns (calibrated model, calibration metrics): the temperature and the expected
    calibration error (ECE) and reliability bins on validation and test, before and after.
    """
    model = published_model(architecture, fitted)
    validation_logits, test_logits = _logits(model, validation_split), _logits(model, test_split)
    temperature = calibration.fit_temperature(validation_logits, validation_split.labels)
    figures: dict = {"temperature": temperature, "fitted_on": "validation hold-out", "bins": calibration.CALIBRATION_BINS}
    for split, logits, labels in (
        ("validation", validation_logits, validation_split.labels),
        ("test", test_logits, test_split.labels),
    ):
        for stage, applied in (("before", 1.0), ("after", temperature)):
            figures[f"{split}_ece_{stage}"] = calibration.reliability_of_logits(logits, labels, applied).ece
    for stage, applied in (("before", 1.0), ("after", temperature)):
        figures[f"test_reliability_{stage}"] = calibration.reliability_of_logits(
            test_logits, test_split.labels, applied
        ).to_json()
    log.info("temperature %.4f: test ECE %.4f -> %.4f", temperature, figures["test_ece_before"], figures["test_ece_after"])
    return published_model(architecture, fitted, temperature), figures


def _logits(model, split: LabeledImages) -> np.ndarray:
    return model.predict(split.images, batch_size=_EVAL_BATCH, verbose=0)


def _epoch_logger(model, epochs: int):
    """One log line per epoch; stops training at a non-finite loss (no point going on)."""
    import keras

    started = {}

    def on_epoch_end(epoch: int, logs: dict) -> None:
        seconds = time.perf_counter() - started.pop(epoch)
        log.info(
            "epoch %d/%d: %s (%.1f s)",
            epoch + 1,
            epochs,
            " ".join(f"{name} {value:.4f}" for name, value in logs.items()),
            seconds,
            extra={PROGRESS_LOG_FIELD: {"unit": "epochs", "done": epoch + 1, "total": epochs}},
        )
        if not math.isfinite(logs.get("loss", 0.0)):
            model.stop_training = True

    return keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: started.__setitem__(epoch, time.perf_counter()),
        on_epoch_end=on_epoch_end,
    )


def quality_gate(test_accuracy: float, min_accuracy: float) -> dict:
    """The gate result recorded in metrics.json (the registry refuses a version without a pass)."""
    passed = test_accuracy >= min_accuracy
    comparison = ">=" if passed else "<"
    return {
        "passed": bool(passed),
        "min_accuracy": float(min_accuracy),
        "reason": f"test accuracy {test_accuracy:.4f} {comparison} minimum {min_accuracy}",
    }


def model_version(started: datetime.datetime, model, params: dict, data_digest: str) -> str:
    """UTC start time + the first 8 hex digits of a hash of weights, parameters and data set."""
    digest = hashlib.sha256(json.dumps({"params": params, "data": data_digest}, sort_keys=True).encode())
    for weights in model.get_weights():
        digest.update(np.ascontiguousarray(weights).tobytes())
    return f"{started:%Y%m%dT%H%M%SZ}-{digest.hexdigest()[:8]}"


def write_version(model, metrics: dict, local_dir: str, model_root: str, version: str) -> ModelMetrics:
    """Writes the version folder, one writer at a time; returns what its metrics.json records.

    Two trainings with the same data, flags and start second compute the same version name.
    The folder is written under a lease on that name, waited for: the second finds the first's
    finished folder (same weights, parameters and data set, by the name's hash) and reuses it
    as written; a folder without metrics.json is a writer's that was killed, written anew.
    """
    version_uri = storage.join(model_root, version)
    with lease.hold_lease(
        storage.join(model_root, lease.LEASES_FOLDER, f"{version}.json"), owner=secrets.token_hex(8), wait_s=VERSION_WAIT_S
    ) as held:
        if storage.exists(storage.join(version_uri, registry.METRICS_FILE)):
            log.info("%s: already written by an identical training; reused", version_uri)
            return registry.read_metrics(version_uri)
        storage.delete_prefix(version_uri)
        held.confirm()
        write_artifacts(model, metrics, local_dir, version_uri)
    return ModelMetrics.from_dict(metrics)


def write_artifacts(model, metrics: dict, local_dir: str, version_uri: str) -> None:
    """Writes every artifact into a local folder, then uploads it; metrics.json goes last."""
    os.makedirs(local_dir)
    model.save(os.path.join(local_dir, registry.MODEL_FILE))
    # Ties this metrics.json (and its gate) to these exact bytes: the registry refuses another file.
    with open(os.path.join(local_dir, registry.MODEL_FILE), "rb") as file:
        metrics["model_sha256"] = registry.model_sha256(file.read())
    model_artifacts.export_saved_model(model, os.path.join(local_dir, registry.SAVED_MODEL_DIR))
    model_artifacts.write_labels(os.path.join(local_dir, registry.LABELS_FILE))
    model_artifacts.write_confusion_matrix_png(
        metrics["confusion_matrix"],
        os.path.join(local_dir, registry.CONFUSION_MATRIX_FILE),
        title=f"{metrics['model_version']}: test accuracy {metrics['test_accuracy']:.4f}",
    )
    model_artifacts.write_reliability_png(
        metrics["calibration"], os.path.join(local_dir, registry.RELIABILITY_FILE), title=metrics["model_version"]
    )
    model_artifacts.write_model_card(metrics, os.path.join(local_dir, registry.MODEL_CARD_FILE))
    parsed = ModelMetrics.from_dict(metrics)  # what the readers parse: a document they could not read fails here, before upload
    with open(os.path.join(local_dir, registry.VERSION_SUMMARY_FILE), "wb") as file:
        file.write(model_versions.version_summary_line(version_uri, parsed))
    with open(os.path.join(local_dir, registry.METRICS_FILE), "w") as file:
        json.dump(metrics, file, indent=2)
    # metrics.json last: the registry treats a version folder without it as unevaluated.
    names = sorted(model_artifacts.local_files(local_dir), key=lambda name: name == registry.METRICS_FILE)
    for name in names:
        storage.upload_file(os.path.join(local_dir, name), storage.join(version_uri, name.replace(os.sep, "/")))
    log.info("wrote %d files to %s", len(names), version_uri)


def _check_tolerances(*, max_accuracy_drop: float, max_class_drop: float) -> None:
    for name, value in (("max_accuracy_drop", max_accuracy_drop), ("max_class_drop", max_class_drop)):
        if not (math.isfinite(value) and 0 <= value <= 1):
            raise InputError(f"{flag_of(name)} must be between 0 and 1 (0.005 = 0.5 points), got {value}")


def _check_params(params: dict) -> None:
    for name in ("epochs", "batch_size"):
        if params[name] < 1:
            raise InputError(f"{flag_of(name)} must be at least 1, got {params[name]}")
    if not (math.isfinite(params["learning_rate"]) and params["learning_rate"] > 0):
        raise InputError(f"{flag_of('learning_rate')} must be a positive number, got {params['learning_rate']}")
    if params["lr_schedule"] not in LR_SCHEDULES:
        raise InputError(f"{flag_of('lr_schedule')} {params['lr_schedule']!r}: choose one of {', '.join(LR_SCHEDULES)}")
    if not 0 <= params["min_accuracy"] <= 1:
        raise InputError(f"{flag_of('min_accuracy')} must be between 0 and 1, got {params['min_accuracy']}")
    if not 0 < params["validation_fraction"] < 1:
        raise InputError(f"{flag_of('validation_fraction')} must be between 0 and 1, got {params['validation_fraction']}")


def _versions() -> dict:
    import keras
    import tensorflow as tf

    return {
        "fmnist_jobs": tool_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
