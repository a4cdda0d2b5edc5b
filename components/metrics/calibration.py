"""How far a model's confidence can be trusted: temperature scaling and the calibration error.

A softmax classifier trained on cross-entropy is usually over-confident. Temperature
scaling divides its logits by one number T > 0, fitted on held-out data to minimise the
cross-entropy: the predicted class (so the accuracy) stays the same, the confidence
becomes honest. Calibration is measured as the expected calibration error (ECE): the
predictions are put into equal-width confidence bins, and the ECE is the image-weighted
mean gap between each bin's accuracy and its mean confidence.

Training (components.train.training) and the report (components.analysts.report, from SQL bins) both go
through `reliability_bins` / `expected_calibration_error`, so they measure alike.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

CALIBRATION_BINS = 15  # equal-width confidence bins over [0, 1], the customary number
# Search interval of the temperature: far wider than any sensible model needs.
_MIN_TEMPERATURE, _MAX_TEMPERATURE = 0.05, 20.0


@dataclasses.dataclass(frozen=True)
class Reliability:
    """Per confidence bin: images, summed confidence and summed correctness."""

    counts: np.ndarray  # (CALIBRATION_BINS,) int
    confidence_sums: np.ndarray  # (CALIBRATION_BINS,) float
    correct_sums: np.ndarray  # (CALIBRATION_BINS,) float

    @property
    def ece(self) -> float:
        return expected_calibration_error(self)

    def to_json(self) -> dict:
        """Per bin: lower edge, images, mean confidence and accuracy (null for an empty bin)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            confidence = self.confidence_sums / self.counts
            accuracy = self.correct_sums / self.counts
        return {
            "bin_lower_edges": [round(edge, 6) for edge in np.linspace(0, 1, CALIBRATION_BINS + 1)[:-1].tolist()],
            "images": self.counts.astype(int).tolist(),
            "mean_confidence": [None if math.isnan(value) else float(value) for value in confidence],
            "accuracy": [None if math.isnan(value) else float(value) for value in accuracy],
        }


def bin_index(confidence: np.ndarray) -> np.ndarray:
    """The confidence bin of each prediction (1.0 falls into the last bin)."""
    return np.minimum((np.asarray(confidence) * CALIBRATION_BINS).astype(np.int64), CALIBRATION_BINS - 1)


def reliability_bins(confidence: np.ndarray, correct: np.ndarray) -> Reliability:
    """Bins predictions by confidence (top-class probability); `correct` is 1 for a right prediction."""
    index = bin_index(confidence)
    return Reliability(
        counts=np.bincount(index, minlength=CALIBRATION_BINS),
        confidence_sums=np.bincount(index, weights=confidence, minlength=CALIBRATION_BINS),
        correct_sums=np.bincount(index, weights=np.asarray(correct, dtype=np.float64), minlength=CALIBRATION_BINS),
    )


def expected_calibration_error(bins: Reliability) -> float:
    """Σ over bins of (images in bin / all images) · |accuracy − mean confidence|; NaN with no image."""
    total = bins.counts.sum()
    if not total:
        return math.nan
    return float(np.abs(bins.correct_sums - bins.confidence_sums).sum() / total)


def reliability_of_logits(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> Reliability:
    """Reliability bins of softmax(logits / temperature) against the true labels."""
    probabilities = softmax(np.asarray(logits, dtype=np.float64) / temperature)
    return reliability_bins(probabilities.max(axis=1), probabilities.argmax(axis=1) == labels)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T > 0 that minimises the mean cross-entropy of softmax(logits / T) on these labels.

    The cross-entropy is convex in 1/T, so a golden-section search over 1/T finds the
    minimum; 100 steps narrow the interval far below any meaningful precision.
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    if not len(labels):
        raise ValueError("no held-out predictions to fit a temperature on")
    true_logits = logits[np.arange(len(labels)), labels]

    def cross_entropy(inverse: float) -> float:
        scaled = logits * inverse
        top = scaled.max(axis=1)
        log_sum = top + np.log(np.exp(scaled - top[:, None]).sum(axis=1))
        return float((log_sum - true_logits * inverse).mean())

    low, high = 1 / _MAX_TEMPERATURE, 1 / _MIN_TEMPERATURE
    ratio = (math.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    loss_a, loss_b = cross_entropy(a), cross_entropy(b)
    for _ in range(100):
        if loss_a < loss_b:
            high, b, loss_b = b, a, loss_a
            a = high - ratio * (high - low)
            loss_a = cross_entropy(a)
        else:
            low, a, loss_a = a, b, loss_b
            b = low + ratio * (high - low)
            loss_b = cross_entropy(b)
    return float(2 / (low + high))


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exponentials = np.exp(shifted)
    return exponentials / exponentials.sum(axis=1, keepdims=True)
