"""What a scoring report is drawn from, and its renderings that are not HTML.

`ReportData` (built by components/analysts/report_queries.py from the tables) is the one value the page
(components/analysts/report_page.py), `summary.json` (`summary_of`) and the terminal table
(`terminal_summary`) are made of; this module reads nothing and writes nothing.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from components.analysts import report_history
from components.analysts.report_metrics import LOW_CONFIDENCE, format_number, psi_band, shares
from components.constants import CLASS_NAMES
from components.metrics.calibration import Reliability


@dataclasses.dataclass(frozen=True)
class Thumbnail:
    """One low-confidence image and what the model said about it."""

    image_id: str
    run_id: str
    source_uri: str
    predicted_class: str
    confidence: float
    true_label: int | None
    png: bytes | None  # None when the source shard no longer yields the image
    note: str = ""


@dataclasses.dataclass
class ReportData:
    """Everything the page, the summary JSON and the terminal table are made of."""

    runs: list[dict]
    rows: int
    predicted_counts: np.ndarray
    training_counts: np.ndarray | None
    training_source: str
    psi: np.ndarray | None
    confidence_bins: np.ndarray  # (2, CONFIDENCE_BINS): right, wrong (or all, zeros unlabeled)
    low_confidence_share: float
    mean_confidence: float
    errors_by_type: dict[str, int]
    errors_by_shard: list[dict]  # shards with error rows: source_uri, scored, failed, by type
    confusion: np.ndarray | None
    metrics: dict | None
    reliability: Reliability | None  # labeled runs only
    confused_pairs: list[dict]
    baseline: dict | None
    baseline_note: str  # how the baseline was chosen, or why there is none
    thumbnails: list[Thumbnail]
    confident_wrong: list[Thumbnail]
    trend: list[report_history.TrendPoint]
    days: int


def summary_of(data: ReportData) -> dict:
    """The report's numbers as JSON (NaN -> null)."""
    per_class = []
    for label, name in enumerate(CLASS_NAMES):
        entry = {
            "label": label,
            "class": name,
            "predicted": int(data.predicted_counts[label]),
            "run_share": float(shares(data.predicted_counts)[label]),
        }
        if data.training_counts is not None:
            entry["training_share"] = float(shares(data.training_counts)[label])
            entry["psi"] = float(data.psi[label])
        if data.metrics is not None:
            for key in ("precision", "recall", "f1"):
                entry[key] = _number(data.metrics[key][label])
        if data.baseline is not None:
            entry["baseline_delta"] = int(data.baseline["current_counts"][label] - data.baseline["baseline_counts"][label])
        per_class.append(entry)
    overall_psi = None if data.psi is None else float(data.psi.sum())
    baseline = None
    if data.baseline is not None:
        baseline = {
            key: _number(value) if isinstance(value, float) else value
            for key, value in data.baseline.items()
            if not isinstance(value, np.ndarray)
        }
    reliability = None
    if data.reliability is not None:
        reliability = {"ece": _number(data.reliability.ece), "bins": data.reliability.to_json()}
    return {
        "runs": data.runs,
        "rows": data.rows,
        "errors_by_type": data.errors_by_type,
        "errors_by_shard": data.errors_by_shard,
        "training_source": data.training_source,
        "overall_psi": overall_psi,
        "psi_band": None if overall_psi is None else psi_band(overall_psi),
        "mean_confidence": _number(data.mean_confidence),
        "low_confidence_share": data.low_confidence_share,
        "accuracy": None if data.metrics is None else _number(data.metrics["accuracy"]),
        "labeled": 0 if data.metrics is None else data.metrics["labeled"],
        "calibration": reliability,
        "confused_pairs": data.confused_pairs,
        "classes": per_class,
        "baseline": baseline,
        "baseline_note": data.baseline_note,
        "trend": {"days": data.days, "points": [point.to_json() for point in data.trend]},
        "lowest_confidence": [_thumbnail_json(t) for t in data.thumbnails],
        "confidently_wrong": [_thumbnail_json(t) for t in data.confident_wrong],
    }


def _thumbnail_json(thumb: Thumbnail) -> dict:
    return {
        "image_id": thumb.image_id,
        "run_id": thumb.run_id,
        "confidence": thumb.confidence,
        "predicted_class": thumb.predicted_class,
        "true_label": thumb.true_label,
        "source_uri": thumb.source_uri,
        "decoded": thumb.png is not None,
    }


def _number(value) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def terminal_summary(data: ReportData, report_uri: str) -> str:
    """A short fixed-width table for the terminal."""
    cell = format_number
    runs = ", ".join(f"{run['run_id']} ({run['run_date']}, model {run['model_version']})" for run in data.runs)
    failed = sum(data.errors_by_type.values())
    lines = [
        f"report of {runs}",
        f"  scored {data.rows} images, {failed} error rows"
        + (f" ({', '.join(f'{k} {v}' for k, v in data.errors_by_type.items())})" if failed else ""),
    ]
    header = f"  {'class':<12} {'train':>6} {'run':>6} {'PSI':>7} {'prec':>5} {'recall':>6}"
    if data.baseline is not None:
        header += f" {'Δ base':>6}"
    lines.append(header)
    run_shares = shares(data.predicted_counts)
    train_shares = None if data.training_counts is None else shares(data.training_counts)
    for label, name in enumerate(CLASS_NAMES):
        train = None if train_shares is None else train_shares[label]
        psi = None if data.psi is None else data.psi[label]
        precision, recall = (
            (None, None) if data.metrics is None else (data.metrics["precision"][label], data.metrics["recall"][label])
        )
        row = (
            f"  {name:<12} {cell(train, '.1%'):>6} {run_shares[label]:>6.1%} {cell(psi, '.4f'):>7} "
            f"{cell(precision, '.2f'):>5} {cell(recall, '.2f'):>6}"
        )
        if data.baseline is not None:
            row += f" {int(data.baseline['current_counts'][label] - data.baseline['baseline_counts'][label]):+6d}"
        lines.append(row)
    facts = []
    if data.psi is not None:
        facts.append(f"overall PSI {data.psi.sum():.4f} ({psi_band(float(data.psi.sum()))})")
    else:
        facts.append(data.training_source)
    if data.metrics is not None:
        facts.append(f"accuracy {data.metrics['accuracy']:.4f} on {data.metrics['labeled']} labeled")
    if data.reliability is not None:
        facts.append(f"ECE {cell(data.reliability.ece, '.4f')}")
    facts.append(f"mean confidence {cell(data.mean_confidence, '.3f')}, {data.low_confidence_share:.1%} below {LOW_CONFIDENCE}")
    lines.append("  " + " · ".join(facts))
    if len(data.trend) > 1:
        first, last = data.trend[0], data.trend[-1]
        lines.append(
            f"  trend over {len(data.trend)} run dates ({first.run_date} .. {last.run_date}): "
            f"mean confidence {cell(first.mean_confidence, '.3f')} -> {cell(last.mean_confidence, '.3f')}, "
            f"error rate {cell(first.error_rate, '.2%')} -> {cell(last.error_rate, '.2%')}"
        )
    if data.baseline is not None:
        baseline = data.baseline
        lines.append(
            f"  vs baseline {baseline['run_id']} (model {', '.join(baseline['model_versions'])}): "
            f"{baseline['common_images']} common images, agreement {cell(baseline['agreement'], '.4f')}"
        )
    lines.append(f"report: {report_uri}")
    return "\n".join(lines)
