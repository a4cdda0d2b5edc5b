"""The numbers of a scoring report, as pure functions of class counts (tested on their own)."""

from __future__ import annotations

import math

import numpy as np

# Confidence histogram: this many equal bins over [0, 1]; "low confidence" is below LOW_CONFIDENCE.
CONFIDENCE_BINS = 20
LOW_CONFIDENCE = 0.5
# Shares below this are floored before the logarithm of the PSI: an empty class in either
# distribution would otherwise make the index infinite.
PSI_FLOOR = 1e-4
# The customary reading of a population stability index.
PSI_BANDS: tuple[tuple[float, str], ...] = ((0.1, "stable"), (0.25, "moderate shift"), (float("inf"), "major shift"))


def shares(counts) -> np.ndarray:
    """Counts as fractions of their total (all zeros for an empty distribution)."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    return counts / total if total else np.zeros_like(counts)


def psi_per_class(actual_counts, expected_counts) -> np.ndarray:
    """Each class's term of the population stability index: (a - e) * ln(a / e) on shares."""
    actual = np.maximum(shares(actual_counts), PSI_FLOOR)
    expected = np.maximum(shares(expected_counts), PSI_FLOOR)
    return (actual - expected) * np.log(actual / expected)


def psi_band(psi: float) -> str:
    """'stable', 'moderate shift' or 'major shift' for an overall PSI."""
    return next(label for limit, label in PSI_BANDS if psi < limit)


def format_number(value, spec: str) -> str:
    """A number for people: "–" for a missing one (None or NaN)."""
    if value is None or math.isnan(float(value)):
        return "–"
    return format(float(value), spec)


def top_confused_pairs(confusion, limit: int = 10) -> list[dict]:
    """The most frequent mistakes: (true class, predicted class) off the diagonal, most images first.

    `rate` is the share of the true class's images that went to the predicted class.
    """
    confusion = np.asarray(confusion, dtype=np.int64)
    support = confusion.sum(axis=1)
    pairs = [
        (int(confusion[true, predicted]), true, predicted)
        for true in range(len(confusion))
        for predicted in range(len(confusion))
        if true != predicted and confusion[true, predicted] > 0
    ]
    pairs.sort(key=lambda pair: (-pair[0], pair[1], pair[2]))
    return [
        {"true_label": true, "predicted_label": predicted, "images": count, "rate": count / support[true]}
        for count, true, predicted in pairs[:limit]
    ]
