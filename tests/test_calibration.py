"""Temperature scaling and the expected calibration error, on numbers whose answer is known."""

import math

import numpy as np
import pytest

from components.metrics.calibration import (
    CALIBRATION_BINS,
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
    reliability_of_logits,
    softmax,
)


def sampled_labels(logits: np.ndarray, temperature: float, seed: int) -> np.ndarray:
    """Labels drawn from softmax(logits / temperature): data for which that temperature is right."""
    probabilities = softmax(logits / temperature)
    uniform = np.random.default_rng(seed).random((len(logits), 1))
    return (probabilities.cumsum(axis=1) < uniform).sum(axis=1)


@pytest.mark.parametrize("true_temperature", [0.7, 1.0, 2.5])
def test_fit_temperature_recovers_the_temperature_of_the_data(true_temperature):
    logits = np.random.default_rng(1).normal(scale=4.0, size=(40_000, 10))
    labels = sampled_labels(logits, true_temperature, seed=2)
    assert fit_temperature(logits, labels) == pytest.approx(true_temperature, rel=0.05)


def test_temperature_scaling_removes_over_confidence_and_keeps_the_predictions():
    logits = np.random.default_rng(3).normal(scale=4.0, size=(40_000, 10))
    labels = sampled_labels(logits, 2.0, seed=4)  # the raw softmax is over-confident
    temperature = fit_temperature(logits, labels)
    before, after = reliability_of_logits(logits, labels), reliability_of_logits(logits, labels, temperature)
    assert before.ece > 0.1 and after.ece < 0.01
    assert before.counts.sum() == after.counts.sum() == len(labels)
    assert np.array_equal(softmax(logits).argmax(axis=1), softmax(logits / temperature).argmax(axis=1))


def test_ece_by_hand():
    # Bin [0.6, 0.667): two images at 0.65 and 0.62, one right -> |1 - 1.27| = 0.27
    # Last bin: 1.0 (falls into it) right, 0.95 wrong -> |1 - 1.95| = 0.95; ECE = (0.27 + 0.95) / 4
    bins = reliability_bins(np.array([0.65, 0.62, 1.0, 0.95]), np.array([1, 0, 1, 0]))
    assert bins.counts.sum() == 4 and bins.counts[CALIBRATION_BINS - 1] == 2 and bins.counts[9] == 2
    assert expected_calibration_error(bins) == pytest.approx((0.27 + 0.95) / 4)
    summary = bins.to_json()
    assert summary["images"][9] == 2 and summary["accuracy"][9] == 0.5 and summary["mean_confidence"][0] is None


def test_no_predictions_have_no_ece():
    assert math.isnan(expected_calibration_error(reliability_bins(np.empty(0), np.empty(0))))
    with pytest.raises(ValueError):
        fit_temperature(np.empty((0, 10)), np.empty(0, dtype=int))
