"""How often a classifier is right, overall and per class, from its confusion matrix."""

from __future__ import annotations

import numpy as np


def classification_metrics(confusion) -> dict:
    """Accuracy and per-class precision/recall/F1 of a confusion matrix (rows true, columns predicted).

    A class never predicted has no precision (NaN), one never present no recall (NaN).
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    correct = np.diag(confusion)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = correct / confusion.sum(axis=0)
        recall = correct / confusion.sum(axis=1)
        f1 = 2 * precision * recall / (precision + recall)
    total = confusion.sum()
    return {
        "labeled": int(total),
        "accuracy": float(correct.sum() / total) if total else float("nan"),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "support": confusion.sum(axis=1).astype(int),
    }
