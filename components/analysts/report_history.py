"""The report over time: the current run of each run date, the trend of its measures, the baseline.

A run date may hold several complete runs (a rerun, a backfill); the one that counts for
that date is its *current* run: the complete run whose summary finished last (then the
greatest run id). The trend takes the current run of each of the last N run dates up to
the report's date; the automatic baseline is the current run of the latest earlier date.
"""

from __future__ import annotations

import dataclasses
import datetime
import math

import duckdb
import numpy as np

from components.analysts.report_metrics import LOW_CONFIDENCE, psi_per_class
from components.analysts.tables import CURRENT_RUN_WINDOW
from components.constants import NUM_CLASSES
from components.contracts.summary import FAILED_STATUS

# The current run of each run date in [?, ?] among the published runs (a failure record has no
# rows; a run that failed its error-rate check stays in the trend, where its error rate shows).
_CURRENT_RUNS = f"""
SELECT run_id, run_date, model_version, read, failed FROM (
  SELECT *, row_number() OVER ({CURRENT_RUN_WINDOW}) AS rank FROM runs
  WHERE run_date BETWEEN ? AND ? AND status <> '{FAILED_STATUS}')
WHERE rank = 1 ORDER BY run_date
"""


@dataclasses.dataclass(frozen=True)
class TrendPoint:
    """The measures of one run date's current run."""

    run_date: str
    run_id: str
    model_version: str
    images: int  # scored
    error_rate: float  # failed / read
    mean_confidence: float
    low_confidence_share: float
    accuracy: float  # NaN when the run's shards carried no label
    labeled: int
    psi: float  # NaN without a training class histogram

    def to_json(self) -> dict:
        return {
            key: None if isinstance(value, float) and math.isnan(value) else value
            for key, value in dataclasses.asdict(self).items()
        }


def current_runs(connection: duckdb.DuckDBPyConnection, first: datetime.date, last: datetime.date) -> list[dict]:
    """The current run of every run date from `first` to `last` (inclusive), oldest first."""
    columns = ("run_id", "run_date", "model_version", "read", "failed")
    return [dict(zip(columns, row)) for row in connection.execute(_CURRENT_RUNS, [first, last]).fetchall()]


def previous_run(connection: duckdb.DuckDBPyConnection, before: datetime.date) -> str | None:
    """The automatic baseline: the current run of the latest run date before `before`."""
    [(latest,)] = connection.execute(
        f"SELECT max(run_date) FROM runs WHERE run_date < ? AND status <> '{FAILED_STATUS}'", [before]
    ).fetchall()
    if latest is None:
        return None
    return current_runs(connection, latest, latest)[0]["run_id"]


def trend(
    connection: duckdb.DuckDBPyConnection, last: datetime.date, days: int, training_counts: np.ndarray | None
) -> list[TrendPoint]:
    """One point per run date of the `days` dates ending at `last` that has a complete run."""
    runs = current_runs(connection, last - datetime.timedelta(days=days - 1), last)
    if not runs:
        return []
    ids = [run["run_id"] for run in runs]
    placeholders = ", ".join("?" for _ in ids)
    measures = {
        row[0]: row[1:]
        for row in connection.execute(
            f"SELECT run_id, count(*), avg(confidence), avg((confidence < {LOW_CONFIDENCE})::INT), "
            "count(true_label), sum((predicted_label = true_label)::INT) "
            f"FROM predictions WHERE run_id IN ({placeholders}) GROUP BY run_id",
            ids,
        ).fetchall()
    }
    class_counts = {run_id: np.zeros(NUM_CLASSES, dtype=np.int64) for run_id in ids}
    for run_id, label, count in connection.execute(
        f"SELECT run_id, predicted_label, count(*) FROM predictions WHERE run_id IN ({placeholders}) "
        "AND predicted_label BETWEEN 0 AND 9 GROUP BY ALL",
        ids,
    ).fetchall():
        class_counts[run_id][label] = count
    points = []
    for run in runs:
        images, mean, low, labeled, right = measures.get(run["run_id"], (0, None, None, 0, None))
        counts = class_counts[run["run_id"]]
        psi = math.nan if training_counts is None or not counts.sum() else float(psi_per_class(counts, training_counts).sum())
        points.append(
            TrendPoint(
                run_date=str(run["run_date"]),
                run_id=run["run_id"],
                model_version=run["model_version"],
                images=int(images),
                error_rate=_ratio(run["failed"], run["read"]),
                mean_confidence=math.nan if mean is None else float(mean),
                low_confidence_share=math.nan if low is None else float(low),
                accuracy=_ratio(right, labeled),
                labeled=int(labeled),
                psi=psi,
            )
        )
    return points


def _ratio(numerator, denominator) -> float:
    return float(numerator) / float(denominator) if numerator is not None and denominator else math.nan
