"""`fmnist report`: a scoring run as a page analysts would rather look at than read.

    report(scores="runs/local/scores", out="runs/local/report")

Reads the prediction and error tables through the SQL views of components/tables.py (only
complete runs), computes everything with aggregate SQL (memory does not grow with the run),
and writes `<out>/report.html` (one self-contained page, PNG figures embedded) and
`<out>/summary.json` (the same numbers for machines). Sections:

- class mix of the run (predicted classes) against the training set's, with the population
  stability index (PSI) per class and overall;
- confidence histogram (split into right/wrong when the shards carried labels);
- the trend over the last `days` run dates (current run of each date, components/report_history.py):
  accuracy, mean confidence, low-confidence share, error rate, class-mix PSI;
- when `true_label` is present: calibration (reliability diagram, ECE), accuracy, the confusion
  matrix with row-normalised rates, the most confused class pairs, per-class precision/recall/F1,
  and the images the model got wrong with the highest confidence;
- error rows by type and by shard;
- against a baseline run (by default the previous complete run: the current run of the latest
  earlier run date; `baseline_run="none"` for none): agreement on the images both runs scored,
  per-class deltas, flips;
- the lowest-confidence images, decoded from their source shards.

Which runs: `run_id`, or every complete run of `run_date`, or else the latest complete run.
The training distribution is `splits.train.class_histogram` of a data set manifest: the one
given as `manifest` (a manifest.json or its folder), else the manifest beside the shards
the run scored (the folder of `source_uri`, which is where the run summary's input glob
points). Without either, the page says so and shows no PSI.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
from collections.abc import Sequence

import duckdb
import numpy as np

from components import report_history, report_page, storage
from components.calibration import CALIBRATION_BINS, Reliability
from components.constants import CLASS_NAMES, MANIFEST_NAME, NUM_CLASSES
from components.errors import InputError
from components.images import ImageError, encode_png, to_model_image
from components.report_metrics import (
    CONFIDENCE_BINS,
    LOW_CONFIDENCE,
    classification_metrics,
    format_number,
    psi_band,
    psi_per_class,
    shares,
    top_confused_pairs,
)
from components.schema import parse_run_date
from components.shards import parse_example, read_manifest
from components.tables import open_tables
from components.tfrecord import read_records

REPORT_NAME = "report.html"
SUMMARY_NAME = "summary.json"
THUMBNAIL_SCALE = 3
NO_BASELINE = "none"  # --baseline-run none: no comparison


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


@dataclasses.dataclass(frozen=True)
class ReportResult:
    report_uri: str
    summary_uri: str
    summary: dict
    terminal: str


def report(
    *,
    scores: str,
    out: str,
    run_id: str | None = None,
    run_date: str | None = None,
    baseline_run: str | None = None,
    manifest: str | None = None,
    lowest: int = 24,
    wrong: int = 24,
    days: int = 14,
) -> ReportResult:
    """Writes report.html and summary.json for the chosen run(s) below `out`."""
    if run_id and run_date:
        raise InputError("--run-id and --run-date exclude each other: a report covers one run or one day")
    for name, value, least in (("lowest", lowest, 0), ("wrong", wrong, 0), ("days", days, 1)):
        if value < least:
            raise InputError(f"--{name} must be {least} or more, got {value}")
    storage.ensure_writable(out)
    connection = open_tables(scores=scores)
    try:
        data = collect(
            connection,
            run_id=run_id,
            run_date=run_date,
            baseline_run=baseline_run,
            manifest=manifest,
            lowest=lowest,
            wrong=wrong,
            days=days,
        )
    finally:
        connection.close()
    summary = summary_of(data)
    report_uri, summary_uri = storage.join(out, REPORT_NAME), storage.join(out, SUMMARY_NAME)
    storage.write_bytes(report_uri, report_page.render(data).encode())
    storage.write_bytes(summary_uri, json.dumps(summary, indent=2).encode())
    return ReportResult(report_uri, summary_uri, summary, terminal_summary(data, report_uri))


# --- Gathering --------------------------------------------------------------------------


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
    training_counts, training_source = training_histogram(connection, selected, manifest)
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
    pictures = thumbnails(lowest_rows + wrong_rows)  # one pass over each shard for both galleries
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
        if not _rows(connection, "SELECT count(*) FROM runs WHERE run_id = ?", [run_id])[0][0]:
            raise InputError(f"run {run_id}: no complete run with that id (no runs/{run_id}.json)")
        return [run_id]
    if run_date:
        try:
            day = parse_run_date(run_date)
        except ValueError as error:
            raise InputError(f"--run-date {run_date!r}: expected YYYY-MM-DD") from error
        selected = [row[0] for row in _rows(connection, "SELECT run_id FROM runs WHERE run_date = ? ORDER BY run_id", [day])]
        if not selected:
            raise InputError(f"--run-date {run_date}: no complete run on that day")
        return selected
    # The latest: newest run date, then the run whose rows were scored last.
    [(latest,)] = _rows(
        connection,
        "SELECT r.run_id FROM runs r LEFT JOIN ("
        "  SELECT run_id, max(scored_at) AS last FROM predictions GROUP BY run_id"
        "  UNION ALL SELECT run_id, max(scored_at) FROM errors GROUP BY run_id) s USING (run_id) "
        "GROUP BY r.run_id, r.run_date ORDER BY r.run_date DESC NULLS LAST, max(s.last) DESC NULLS LAST, r.run_id DESC "
        "LIMIT 1",
    )
    return [latest]


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
    """Reliability bins of the labeled predictions (the same bins as components.calibration)."""
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


def training_histogram(connection, selected: list[str], manifest: str | None) -> tuple[np.ndarray | None, str]:
    """The training split's class counts and where they came from (see the module docstring)."""
    if manifest:
        folder = storage.dirname(manifest) if manifest.endswith(".json") else manifest
        histogram = _train_split_histogram(read_manifest(folder))
        if histogram is None:
            raise InputError(f"{storage.join(folder, MANIFEST_NAME)}: has no train split class_histogram")
        return histogram, storage.join(folder, MANIFEST_NAME)
    where, params = _in("run_id", selected)
    sources = _rows(connection, f"SELECT DISTINCT source_uri FROM predictions WHERE {where}", params)
    folders = sorted({storage.dirname(storage.from_absolute_uri(source)) for (source,) in sources})
    for folder in folders:
        if storage.exists(storage.join(folder, MANIFEST_NAME)):
            histogram = _train_split_histogram(read_manifest(folder))
            if histogram is not None:
                return histogram, storage.join(folder, MANIFEST_NAME)
    return None, "no training class histogram found beside the scored shards; pass --manifest"


def _train_split_histogram(manifest: dict) -> np.ndarray | None:
    histogram = (manifest.get("splits", {}).get("train") or {}).get("class_histogram")
    return None if not histogram else np.asarray(histogram, dtype=np.int64)


def compare(connection, selected: list[str], baseline_run: str) -> dict:
    """This run against a baseline run on the images both scored: agreement, deltas, flips."""
    if not _rows(connection, "SELECT count(*) FROM runs WHERE run_id = ?", [baseline_run])[0][0]:
        raise InputError(f"--baseline-run {baseline_run}: no complete run with that id (no runs/{baseline_run}.json)")
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


def thumbnails(rows: list[tuple]) -> list[Thumbnail]:
    """Decodes the listed images from their source shards (each shard read once, up to its last hit)."""
    wanted: dict[str, dict[str, tuple]] = {}
    for row in rows:
        wanted.setdefault(row[2], {})[row[0]] = row
    found: dict[tuple[str, str], tuple[bytes | None, str]] = {}
    for uri, rows_of_shard in wanted.items():
        missing = dict(rows_of_shard)
        try:
            with storage.open_read(storage.from_absolute_uri(uri)) as stream:
                for record in read_records(stream):
                    if record.data is None:
                        continue  # a damaged record was an error row, not a prediction
                    try:
                        example = parse_example(record.data)
                    except (KeyError, ValueError):
                        continue  # likewise: such a record is in the error table
                    if missing.pop(example.image_id, None) is not None:
                        found[(uri, example.image_id)] = _thumbnail_png(example.encoded)
                    if not missing:
                        break
        except InputError as error:  # the shard is gone (retention): show the row without a picture
            for image_id in missing:
                found[(uri, image_id)] = (None, str(error))
            continue
        for image_id in missing:
            found[(uri, image_id)] = (None, f"{image_id} not found in {uri}")
    result = []
    for image_id, run_id, uri, predicted_class, confidence, true_label in rows:
        png, note = found[(uri, image_id)]
        result.append(Thumbnail(image_id, run_id, uri, predicted_class, float(confidence), true_label, png, note))
    return result


def _thumbnail_png(encoded: bytes) -> tuple[bytes | None, str]:
    """The 28x28 image the model saw, enlarged with square pixels."""
    try:
        image = to_model_image(encoded)
    except ImageError as error:
        return None, f"cannot decode: {error}"
    return encode_png(np.kron(image, np.ones((THUMBNAIL_SCALE, THUMBNAIL_SCALE), dtype=np.uint8))), ""


# --- Summaries --------------------------------------------------------------------------


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
