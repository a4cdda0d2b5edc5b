"""Champion/challenger: the new model against the one LATEST names, on the same test split.

The new model (the challenger) may replace the published one (the champion) only if it is not
worse beyond a tolerance, overall and for every class:

    challenger accuracy >= champion accuracy - max_accuracy_drop
    challenger recall of each class >= champion's recall of that class - max_class_drop

(a class's recall is the accuracy on the images of that class). Both models are evaluated
here on the same images, so the comparison never rests on figures from another test split.
A champion trained on another label set is no baseline: the absolute gate decides alone.
"""

from __future__ import annotations

import json
import logging
import os

from components.constants import CLASS_NAMES
from components.contracts import registry
from components.contracts.model_metrics import ChampionComparison
from components.errors import InputError
from components.io import storage

log = logging.getLogger(__name__)

_LABELS_MAX_BYTES = 64 * 1024


def class_recall(scores: dict) -> dict[str, float]:
    """Each class's recall (accuracy within the class) from training's evaluation scores."""
    return {name: float(figures["recall"]) for name, figures in scores["per_class"].items()}


def compare(
    *,
    champion_version: str,
    champion_scores: dict,
    challenger_scores: dict,
    max_accuracy_drop: float,
    max_class_drop: float,
) -> ChampionComparison:
    """The verdict of the tolerances, with both models' figures and the deltas (challenger - champion)."""
    champion = {"test_accuracy": float(champion_scores["test_accuracy"]), "class_recall": class_recall(champion_scores)}
    challenger = {"test_accuracy": float(challenger_scores["test_accuracy"]), "class_recall": class_recall(challenger_scores)}
    deltas = {
        "test_accuracy": challenger["test_accuracy"] - champion["test_accuracy"],
        "class_recall": {name: challenger["class_recall"][name] - value for name, value in champion["class_recall"].items()},
    }
    # The first failing measure names the verdict: overall accuracy, then the class that lost most.
    failure = None
    if deltas["test_accuracy"] < -max_accuracy_drop - 1e-12:
        failure = ("test accuracy", champion["test_accuracy"], challenger["test_accuracy"], max_accuracy_drop)
    else:
        worst = min(deltas["class_recall"], key=deltas["class_recall"].get)
        if deltas["class_recall"][worst] < -max_class_drop - 1e-12:
            measure = f"recall of class {worst!r}"
            failure = (measure, champion["class_recall"][worst], challenger["class_recall"][worst], max_class_drop)
    if failure is None:
        reason = (
            f"test accuracy {challenger['test_accuracy']:.4f} against champion {champion_version}'s "
            f"{champion['test_accuracy']:.4f}; no class more than {max_class_drop} lower"
        )
    else:
        measure, champion_value, challenger_value, tolerance = failure
        reason = (
            f"{measure} {challenger_value:.4f} is more than {tolerance} below champion {champion_version}'s {champion_value:.4f}"
        )
    return ChampionComparison(
        passed=failure is None,
        reason=reason,
        champion_version=champion_version,
        max_accuracy_drop=max_accuracy_drop,
        max_class_drop=max_class_drop,
        champion=champion,
        challenger=challenger,
        deltas=deltas,
    )


def without_champion(reason: str, *, max_accuracy_drop: float, max_class_drop: float) -> ChampionComparison:
    """The comparison of a model that has no baseline: it passes, the absolute gate decides."""
    return ChampionComparison(passed=True, reason=reason, max_accuracy_drop=max_accuracy_drop, max_class_drop=max_class_drop)


def load_champion(model_root: str, work_dir: str):  # -> tuple[registry.ModelRef, keras.Model] | str
    """The published model and its Keras model, or the reason there is no baseline (a string)."""
    import keras

    if registry.latest_version(model_root) is None:
        return f"no champion: nothing published under {model_root} yet"
    ref = registry.resolve(model_root, check_file=False)
    labels = _labels_of(ref)
    if labels != list(CLASS_NAMES):
        return f"no champion: {ref.version} was trained on another label set"
    local = os.path.join(work_dir, "champion.keras")
    storage.download_file(ref.keras_uri, local)
    with open(local, "rb") as file:
        actual = registry.model_sha256(file.read())
    registry.require_evaluated_model(ref.keras_uri, expected_sha256=ref.sha256, actual_sha256=actual)
    try:
        model = keras.saving.load_model(local, compile=False)
    except (ValueError, KeyError, TypeError) as error:
        raise InputError(f"{ref.keras_uri}: the champion's model file does not load ({type(error).__name__})") from error
    return ref, model


def _labels_of(ref: registry.ModelRef) -> list | None:
    uri = storage.join(ref.uri, registry.LABELS_FILE)
    if not storage.exists(uri):
        return None
    try:
        return json.loads(storage.read_bytes(uri, max_bytes=_LABELS_MAX_BYTES))
    except (ValueError, UnicodeDecodeError):
        raise InputError(f"{uri}: not a JSON list of class names") from None
