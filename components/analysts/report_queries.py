"""The SQL of a scoring report: a `ReportData` collected from the views of components/analysts/tables.py.

Every number is an aggregate query over the complete runs' predictions and error rows, so
memory does not grow with the run; which runs, the baseline and the training histogram are
chosen as components/analysts/report.py describes.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Sequence

import duckdb
import numpy as np

from components.analysts import report_history
from components.analysts.report_data import ReportData
from components.analysts.report_metrics import (
    CONFIDENCE_BINS,
    LOW_CONFIDENCE,
    psi_per_class,
    top_confused_pairs,
)
from components.analysts.report_thumbnails import thumbnails
from components.analysts.tables import CURRENT_RUN_WINDOW
from components.constants import MANIFEST_NAME, NUM_CLASSES
from components.contracts.manifest import Manifest
from components.contracts.parameters import flag_of
from components.contracts.schema import parse_run_date
from components.contracts.shards import read_manifest
from components.contracts.summary import FAILED_STATUS, RunSummary
from components.errors import InputError
from components.io import storage
from components.metrics.calibration import CALIBRATION_BINS, Reliability
from components.metrics.classification import classification_metrics

NO_BASELINE = "none"  # --baseline-run none: no comparison
PUBLISHED = f"status <> '{FAILED_STATUS}'"  # a failure record (nothing published) is nothing to report on


def collect(
    connection: duckdb.DuckDBPyConnection,
    *,
    run_id: str | None,
    run_date: str | None,
    baseline_run: str | None,
    manifest: str | None,
    lowest: int,
    wrong: int,
    days: int,
) -> ReportData:
    """Runs the report's queries over the views for the selected runs."""
    selected = select_runs(connection, run_id=run_id, run_date=run_date)
    runs = _runs(connection, selected)
    where, params = _in("run_id", selected)
    predicted = _class_counts(connection, where, params)
    [(labeled, mean, low_share)] = _rows(
        connection,
        f"SELECT count(true_label), avg(confidence), avg(CASE WHEN confidence < {LOW_CONFIDENCE} THEN 1 ELSE 0 END) "
        f"FROM predictions WHERE {where}",
        params,
    )
    confusion = _confusion(connection, where, params) if labeled else None
    sources = scored_shards(connection, selected)
    training_counts, training_source = training_histogram(sources, manifest)
    if not predicted.sum():  # every record failed: there is no class mix to compare
        training_counts, training_source = None, "no image was scored"
    errors_by_type = _rows(
        connection, f"SELECT error_type, count(*) FROM errors WHERE {where} GROUP BY 1 ORDER BY 2 DESC, 1", params
    )
    shown = "SELECT image_id, run_id, source_uri, predicted_class, confidence, true_label FROM predictions "
    lowest_rows = _rows(connection, f"{shown} WHERE {where} ORDER BY confidence, image_id LIMIT {int(lowest)}", params)
    wrong_rows = (
        _rows(
            connection,
            f"{shown} WHERE {where} AND predicted_label <> true_label ORDER BY confidence DESC, image_id LIMIT {int(wrong)}",
            params,
        )
        if labeled
        else []
    )
    pictures = thumbnails(lowest_rows + wrong_rows, readable=sources)  # one pass over each shard for both galleries
    baseline, baseline_note = choose_baseline(connection, runs, baseline_run)
    last_date = max(parse_run_date(run["run_date"]) for run in runs)
    return ReportData(
        runs=runs,
        rows=int(predicted.sum()),
        predicted_counts=predicted,
        training_counts=training_counts,
        training_source=training_source,
        psi=None if training_counts is None else psi_per_class(predicted, training_counts),
        confidence_bins=_confidence_bins(connection, where, params, labeled=bool(labeled)),
        low_confidence_share=float(low_share or 0.0),
        mean_confidence=math.nan if mean is None else float(mean),
        errors_by_type=dict(errors_by_type),
        errors_by_shard=_errors_by_shard(connection, where, params),
        confusion=confusion,
        metrics=None if confusion is None else classification_metrics(confusion),
        reliability=_reliability(connection, where, params) if labeled else None,
        confused_pairs=[] if confusion is None else top_confused_pairs(confusion),
        baseline=None if baseline is None else compare(connection, selected, baseline),
        baseline_note=baseline_note,
        thumbnails=pictures[: len(lowest_rows)],
        confident_wrong=pictures[len(lowest_rows) :],
        trend=report_history.trend(connection, last_date, days, training_counts),
        days=days,
    )


def choose_baseline(connection, runs: list[dict], baseline_run: str | None) -> tuple[str | None, str]:
    """The baseline run id (None for none) and a note saying how it was chosen."""
    if baseline_run == NO_BASELINE:
        return None, "No baseline (--baseline-run none)"
    if baseline_run:
        return baseline_run, "Baseline given (--baseline-run)"
    first_date = min(parse_run_date(run["run_date"]) for run in runs)
    previous = report_history.previous_run(connection, first_date)
    if previous is None:
        return None, f"No complete run before {first_date}: no baseline"
    return previous, "Baseline chosen automatically: the previous complete run (the current run of the latest earlier run date)"


def select_runs(connection: duckdb.DuckDBPyConnection, *, run_id: str | None, run_date: str | None) -> list[str]:
    """The run ids a report covers: one run, every run of a day, or the latest run."""
    if run_id:
        if not _rows(connection, f"SELECT count(*) FROM runs WHERE run_id = ? AND {PUBLISHED}", [run_id])[0][0]:
            raise InputError(f"run {run_id}: no complete run with that id (no published runs/{run_id}.json)")
        return [run_id]
    if run_date:
        try:
            day = parse_run_date(run_date)
        except ValueError as error:
            raise InputError(f"{flag_of('run_date')} {run_date!r}: expected YYYY-MM-DD") from error
        selected = [
            row[0]
            for row in _rows(connection, f"SELECT run_id FROM runs WHERE run_date = ? AND {PUBLISHED} ORDER BY run_id", [day])
        ]
        if not selected:
            raise InputError(f"{flag_of('run_date')} {run_date}: no complete run on that day")
        return selected
    # The latest: the current run of the newest run date, from the summaries alone (the `runs`
    # view): no prediction row is read to choose it, however long the history.
    latest = _rows(
        connection,
        f"SELECT run_id FROM runs WHERE {PUBLISHED} QUALIFY row_number() OVER ({CURRENT_RUN_WINDOW}) = 1 "
        "ORDER BY run_date DESC LIMIT 1",
    )
    if not latest:
        raise InputError("no published run: every run summary is a failure record (fmnist status shows them)")
    return [latest[0][0]]


def _rows(connection: duckdb.DuckDBPyConnection, sql: str, params: Sequence = ()) -> list[tuple]:
    """All rows of a query (fetched to the end, so the connection is free for the next one)."""
    return connection.execute(sql, list(params)).fetchall()


def _in(column: str, values: Sequence[str]) -> tuple[str, list[str]]:
    return f"{column} IN ({', '.join('?' for _ in values)})", list(values)


def _class_counts(connection, where: str, params: list) -> np.ndarray:
    counts = np.zeros(NUM_CLASSES, dtype=np.int64)
    for label, count in _rows(connection, f"SELECT predicted_label, count(*) FROM predictions WHERE {where} GROUP BY 1", params):
        if label is not None and 0 <= label < NUM_CLASSES:
            counts[label] = count
    return counts


def _confusion(connection, where: str, params: list) -> np.ndarray:
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    sql = (
        f"SELECT true_label, predicted_label, count(*) FROM predictions WHERE {where} AND true_label BETWEEN 0 AND 9 GROUP BY ALL"
    )
    for true, predicted, count in _rows(connection, sql, params):
        confusion[true, predicted] = count
    return confusion


def _confidence_bins(connection, where: str, params: list, *, labeled: bool) -> np.ndarray:
    bins = np.zeros((2, CONFIDENCE_BINS), dtype=np.int64)
    wrong = "coalesce(true_label <> predicted_label, false)" if labeled else "false"
    sql = (
        f"SELECT {wrong}, least(floor(confidence * {CONFIDENCE_BINS}), {CONFIDENCE_BINS - 1})::INTEGER, count(*) "
        f"FROM predictions WHERE {where} GROUP BY ALL"
    )
    for is_wrong, index, count in _rows(connection, sql, params):
        bins[int(is_wrong), index] = count
    return bins


def _reliability(connection, where: str, params: list) -> Reliability:
    """Reliability bins of the labeled predictions (the same bins as components.metrics.calibration)."""
    counts, confidence_sums, correct_sums = (np.zeros(CALIBRATION_BINS) for _ in range(3))
    sql = (
        f"SELECT least(floor(confidence * {CALIBRATION_BINS}), {CALIBRATION_BINS - 1})::INTEGER, count(*), "
        f"sum(confidence), sum((predicted_label = true_label)::INT) FROM predictions WHERE {where} "
        "AND true_label IS NOT NULL GROUP BY 1"
    )
    for index, count, confidence_sum, correct_sum in _rows(connection, sql, params):
        counts[index], confidence_sums[index], correct_sums[index] = count, confidence_sum, correct_sum
    return Reliability(counts.astype(np.int64), confidence_sums, correct_sums)


def _errors_by_shard(connection, where: str, params: list) -> list[dict]:
    """Each shard with error rows: its scored images, error rows, and those by type (most errors first)."""
    shards: dict[str, dict] = {}
    for source, error_type, count in _rows(
        connection, f"SELECT source_uri, error_type, count(*) FROM errors WHERE {where} GROUP BY ALL ORDER BY ALL", params
    ):
        entry = shards.setdefault(source, {"source_uri": source, "scored": 0, "failed": 0, "by_type": {}})
        entry["failed"] += count
        entry["by_type"][error_type] = count
    if shards:
        sources, source_params = _in("source_uri", list(shards))
        for source, count in _rows(
            connection,
            f"SELECT source_uri, count(*) FROM predictions WHERE {where} AND {sources} GROUP BY 1",
            params + source_params,
        ):
            shards[source]["scored"] = count
    return sorted(shards.values(), key=lambda entry: (-entry["failed"], entry["source_uri"]))


def _runs(connection, selected: list[str]) -> list[dict]:
    where, params = _in("run_id", selected)
    columns = ["run_id", "run_date", "model_version", "read", "scored", "failed"]
    rows = _rows(connection, f"SELECT {', '.join(columns)} FROM runs WHERE {where} ORDER BY run_id", params)
    return [dict(zip(columns, (str(value) if isinstance(value, datetime.date) else value for value in row))) for row in rows]


def scored_shards(connection, selected: list[str]) -> set[str]:
    """The shards the selected runs' summaries say they scored: the only sources the report reads
    (a row's source_uri is data, and could name any host), never over plain http://."""
    where, params = _in("run_id", selected)
    shards = set()
    for (summary,) in _rows(connection, f"SELECT summary FROM runs WHERE {where}", params):
        shards.update(RunSummary.from_json(summary).inputs.shards)
    return {shard for shard in shards if not shard.startswith("http://")}


def training_histogram(sources: set[str], manifest: str | None) -> tuple[np.ndarray | None, str]:
    """The training split's class counts and where they came from (see the docstring of components/analysts/report.py)."""
    if manifest:
        folder = storage.dirname(manifest) if manifest.endswith(".json") else manifest
        histogram = _train_split_histogram(read_manifest(folder))
        if histogram is None:
            raise InputError(f"{storage.join(folder, MANIFEST_NAME)}: has no train split class_histogram")
        return histogram, storage.join(folder, MANIFEST_NAME)
    folders = sorted({storage.dirname(storage.from_absolute_uri(source)) for source in sources})
    for folder in folders:
        if storage.exists(storage.join(folder, MANIFEST_NAME)):
            histogram = _train_split_histogram(read_manifest(folder))
            if histogram is not None:
                return histogram, storage.join(folder, MANIFEST_NAME)
    return None, "no training class histogram found beside the scored shards; pass --manifest"


def _train_split_histogram(manifest: Manifest) -> np.ndarray | None:
    train = manifest.split("train")
    return None if train is None or not train.class_histogram else np.asarray(train.class_histogram, dtype=np.int64)


def compare(connection, selected: list[str], baseline_run: str) -> dict:
    """This run against a baseline run on the images both scored: agreement, deltas, flips."""
    if not _rows(connection, "SELECT count(*) FROM runs WHERE run_id = ?", [baseline_run])[0][0]:
        raise InputError(f"{flag_of('baseline_run')} {baseline_run}: no complete run with that id (no runs/{baseline_run}.json)")
    where, params = _in("c.run_id", selected)
    pairs = f"FROM predictions c JOIN predictions b ON c.image_id = b.image_id AND b.run_id = ? WHERE {where}"
    params = [baseline_run, *params]
    flips = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    for base, current, count in _rows(
        connection, f"SELECT b.predicted_label, c.predicted_label, count(*) {pairs} GROUP BY ALL", params
    ):
        flips[base, current] = count
    [(labeled, right, baseline_right)] = _rows(
        connection,
        "SELECT count(*), sum((c.predicted_label = c.true_label)::INT), sum((b.predicted_label = b.true_label)::INT) "
        f"{pairs} AND c.true_label IS NOT NULL",
        params,
    )
    versions = [
        version
        for (version,) in _rows(connection, "SELECT DISTINCT model_version FROM runs WHERE run_id = ? ORDER BY 1", [baseline_run])
    ]
    common = int(flips.sum())
    return {
        "run_id": baseline_run,
        "model_versions": versions,
        "common_images": common,
        "agreement": float(np.trace(flips) / common) if common else math.nan,
        "flips": flips,
        "current_counts": flips.sum(axis=0),
        "baseline_counts": flips.sum(axis=1),
        "labeled": labeled,
        "accuracy": float(right / labeled) if labeled else math.nan,
        "baseline_accuracy": float(baseline_right / labeled) if labeled else math.nan,
    }
