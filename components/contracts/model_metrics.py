"""A model version's `metrics.json` as a type: the fields that the steps after training read.

Training writes the whole document (history, calibration, timings, versions, ...); readers parse
it with `ModelMetrics.from_json`, which checks the fields they use and ignores the rest. Only
the quality gate is required: it is the one field every metrics file has ever had, and the
registry refuses a version without a passed gate (and without `model_sha256`) itself, with a
message that says how to fix the file.

    metrics = ModelMetrics.from_json(storage.read_bytes(storage.join(version_uri, METRICS_FILE)))
    metrics.quality_gate.passed, metrics.model_sha256, metrics.data.manifest_digest
"""

from __future__ import annotations

import dataclasses
from typing import Any

from components.contracts.summary import _JsonRecord


@dataclasses.dataclass(frozen=True, kw_only=True)
class QualityGate(_JsonRecord):
    """Whether the version may be published and scored with, and why."""

    passed: bool
    min_accuracy: float | None = None
    reason: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainingDataRef(_JsonRecord):
    """The data set a version was trained on: the digest ties it to one manifest."""

    manifest_digest: str
    uri: str | None = None
    train_records: int | None = None
    validation_records: int | None = None
    test_records: int | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ChampionComparison(_JsonRecord):
    """The new model against the published one (the champion), on the same test split.

    `passed` is the verdict of the tolerances; `forced` records a publish despite a failed
    verdict (`--force-publish`). No champion (a first model, or one trained on another label
    set): `champion_version` is None and the verdict passes, the absolute gate decides alone.
    """

    passed: bool
    reason: str
    forced: bool = False
    champion_version: str | None = None
    max_accuracy_drop: float | None = None  # accuracy units: 0.005 = 0.5 points
    max_class_drop: float | None = None  # of any class's recall (accuracy within the class)
    champion: dict[str, Any] | None = None  # test_accuracy, class_recall {class name: recall}
    challenger: dict[str, Any] | None = None
    deltas: dict[str, Any] | None = None  # challenger - champion, same keys


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelMetrics(_JsonRecord):
    """What a reader may rely on in a version's metrics.json."""

    quality_gate: QualityGate
    model_version: str | None = None
    model_sha256: str | None = None  # of the model.keras evaluated; absent in files written before it was recorded
    test_accuracy: float | None = None
    test_loss: float | None = None
    test_ece: float | None = None
    per_class: dict[str, dict[str, Any]] | None = None  # class name -> precision, recall, f1, support
    confusion_matrix: list[list[int]] | None = None  # rows: true label, columns: predicted
    parameters: dict[str, Any] | None = None  # the training parameters (TrainParameters' fields)
    data: TrainingDataRef | None = None
    champion_comparison: ChampionComparison | None = None  # absent before the comparison existed
    created_at: str | None = None
    versions: dict[str, str] | None = None  # of the software that trained it: tensorflow, keras, fmnist_jobs, ...

    @property
    def gates_passed(self) -> bool:
        """May be published and scored with: the absolute gate, and the champion comparison
        passed or deliberately overridden."""
        comparison = self.champion_comparison
        return self.quality_gate.passed is True and (comparison is None or comparison.passed or comparison.forced)
