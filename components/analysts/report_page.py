"""The HTML page of a scoring report: matplotlib figures (Agg) as embedded PNGs, no outside resources."""

from __future__ import annotations

import base64
import datetime
import html
import io
import math

import numpy as np

from components.analysts.report_data import ReportData
from components.analysts.report_metrics import CONFIDENCE_BINS, LOW_CONFIDENCE, PSI_BANDS, format_number, psi_band, shares
from components.constants import CLASS_NAMES, NUM_CLASSES, tool_version
from components.metrics.calibration import CALIBRATION_BINS

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:1100px;color:#1d232a;padding:0 1rem}
h1{margin-bottom:.2rem}h2{border-bottom:1px solid #d6dbe0;padding-bottom:.3rem;margin-top:2.2rem}
.meta{color:#5b6670}.facts{display:flex;flex-wrap:wrap;gap:.8rem;margin:1rem 0}
.fact{background:#f3f5f7;border-radius:6px;padding:.6rem .9rem}.fact b{display:block;font-size:1.35rem}
table{border-collapse:collapse;margin:.8rem 0}th,td{padding:.25rem .7rem;text-align:right;border-bottom:1px solid #e4e8ec}
th:first-child,td:first-child{text-align:left}figure{margin:1rem 0}figure img{max-width:100%;height:auto}
figcaption{color:#5b6670;font-size:.9rem}.warn{color:#a23b00}.note{color:#5b6670}
.thumbs{display:grid;grid-template-columns:repeat(auto-fill,minmax(130px,1fr));gap:.8rem}
.thumb{background:#f3f5f7;border-radius:6px;padding:.5rem;font-size:.8rem;text-align:center}
.thumb img{width:84px;height:84px;image-rendering:pixelated;display:block;margin:0 auto .3rem}
.wrong{color:#a23b00;font-weight:600}.trend{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:.5rem}
"""


def render(data: ReportData) -> str:
    """The whole page as one HTML string."""
    title = "Scoring report: " + ", ".join(run["run_id"] for run in data.runs)
    sections = [_overview(data), _trend(data), _class_mix(data), _confidence(data)]
    if data.reliability is not None:
        sections.append(_calibration(data))
    if data.metrics is not None:
        sections.append(_accuracy(data))
    if data.errors_by_shard:
        sections.append(_errors_by_shard(data))
    sections.append(_baseline(data))
    if data.metrics is not None:
        sections.append(
            _gallery(
                "confident-wrong",
                "Confidently wrong",
                data.confident_wrong,
                f"The {len(data.confident_wrong)} wrong predictions made with the highest confidence: "
                "mislabeled images, or what the model has learned wrong.",
            )
        )
    sections.append(
        _gallery(
            "lowest",
            "Lowest-confidence images",
            data.thumbnails,
            f"The {len(data.thumbnails)} images the model was least sure of, as the model saw them "
            "(28×28, decoded from their source shards), with the predicted class and its confidence.",
        )
    )
    generated = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{_e(title)}</title><link rel="icon" href="data:,"><style>{_STYLE}</style></head>\n<body>\n'
        f'<h1>{_e(title)}</h1>\n<p class="meta">generated {generated} by fmnist-jobs {_e(tool_version())}</p>\n'
        + "\n".join(sections)
        + "\n</body></html>\n"
    )


# --- Sections ---------------------------------------------------------------------------


def _overview(data: ReportData) -> str:
    rows = "".join(
        f"<tr><td>{_e(run['run_id'])}</td><td>{_e(run['run_date'])}</td><td>{_e(run['model_version'])}</td>"
        f"<td>{_e(run['read'])}</td><td>{_e(run['scored'])}</td><td>{_e(run['failed'])}</td></tr>"
        for run in data.runs
    )
    errors = ", ".join(f"{_e(kind)}: {count}" for kind, count in data.errors_by_type.items()) or "none"
    facts = [
        ("images scored", f"{data.rows:,}"),
        ("error rows", f"{sum(data.errors_by_type.values()):,}"),
        ("mean confidence", format_number(data.mean_confidence, ".3f")),
    ]
    if data.psi is not None:
        facts.append(("class-mix PSI", f"{data.psi.sum():.4f} ({psi_band(float(data.psi.sum()))})"))
    if data.metrics is not None:
        facts.append(("accuracy", f"{data.metrics['accuracy']:.2%}"))
    if data.reliability is not None:
        facts.append(("calibration error (ECE)", format_number(data.reliability.ece, ".4f")))
    if data.baseline is not None:
        facts.append(("agreement with baseline", format_number(data.baseline["agreement"], ".2%")))
    return (
        '<section id="overview"><h2>Overview</h2><div class="facts">'
        + "".join(f'<div class="fact">{_e(label)}<b>{value}</b></div>' for label, value in facts)
        + "</div><table><tr><th>run</th><th>run date</th><th>model version</th><th>read</th><th>scored</th>"
        f"<th>failed</th></tr>{rows}</table><p>Error rows by type: {errors}.</p></section>"
    )


_TREND_MEASURES = (  # attribute, title, axis format
    ("accuracy", "accuracy (labeled images)", "percent"),
    ("mean_confidence", "mean confidence", "plain"),
    ("low_confidence_share", f"share below confidence {LOW_CONFIDENCE}", "percent"),
    ("error_rate", "error rate (error rows / records read)", "percent"),
    ("psi", "class-mix PSI against the training set", "psi"),
)


def _trend(data: ReportData) -> str:
    head = (
        f'<section id="trend"><h2>Trend over the last {data.days} run dates</h2>'
        "<p>One point per run date: its current run (the complete run that finished last; a rerun "
        "replaces the run before it)."
    )
    if not data.trend:
        return head + '</p><p class="note">No complete run in that window.</p></section>'
    dates = [point.run_date for point in data.trend]
    figures = []
    for attribute, title, kind in _TREND_MEASURES:
        values = np.array([getattr(point, attribute) for point in data.trend], dtype=np.float64)
        if np.isnan(values).all():
            figures.append(
                f'<p class="note">{_e(title)}: no value in this window'
                + (" (no labeled run)." if attribute == "accuracy" else " (no training histogram).")
                + "</p>"
            )
            continue
        figures.append(_figure(_trend_figure(dates, values, title, kind), f"{title} by run date"))
    rows = "".join(
        f"<tr><td>{_e(p.run_date)}</td><td>{_e(p.run_id)}</td><td>{_e(p.model_version)}</td><td>{p.images:,}</td>"
        f"<td>{format_number(p.accuracy, '.2%')}</td><td>{format_number(p.mean_confidence, '.3f')}</td>"
        f"<td>{format_number(p.low_confidence_share, '.1%')}</td><td>{format_number(p.error_rate, '.2%')}</td>"
        f"<td>{format_number(p.psi, '.4f')}</td></tr>"
        for p in data.trend
    )
    return (
        head + f" {len(data.trend)} of the {data.days} dates up to {_e(dates[-1])} have one.</p>"
        f'<div class="trend">{"".join(figures)}</div>'
        "<table><tr><th>run date</th><th>run</th><th>model</th><th>images</th><th>accuracy</th><th>mean conf.</th>"
        f"<th>low conf.</th><th>error rate</th><th>PSI</th></tr>{rows}</table></section>"
    )


def _calibration(data: ReportData) -> str:
    bins = data.reliability
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = bins.correct_sums / bins.counts
        confidence = bins.confidence_sums / bins.counts
    fig, (top, bottom) = _plt().subplots(2, 1, figsize=(6, 6.2), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    edges = np.linspace(0, 1, CALIBRATION_BINS + 1)
    filled = bins.counts > 0
    top.bar(
        edges[:-1][filled],
        accuracy[filled],
        width=1 / CALIBRATION_BINS,
        align="edge",
        color="#3a7ca5",
        edgecolor="white",
        label="accuracy in bin",
    )
    top.plot(confidence[filled], confidence[filled], "o", color="#d1495b", markersize=4, label="mean confidence in bin")
    top.plot([0, 1], [0, 1], "--", color="#9aa5b1", label="perfectly calibrated")
    top.set_ylabel("accuracy")
    top.set_ylim(0, 1)
    top.legend(frameon=False, loc="upper left")
    _tidy(top)
    bottom.bar(edges[:-1], bins.counts, width=1 / CALIBRATION_BINS, align="edge", color="#9aa5b1", edgecolor="white")
    bottom.set_yscale("symlog")
    bottom.set_ylabel("images")
    bottom.set_xlabel("confidence")
    bottom.set_xlim(0, 1)
    _tidy(bottom)
    fig.tight_layout()
    ece = format_number(bins.ece, ".4f")
    return (
        '<section id="calibration"><h2>Calibration</h2>'
        f"<p>Expected calibration error <b>{ece}</b> on {int(bins.counts.sum()):,} labeled images: the image-weighted "
        f"mean gap between accuracy and confidence over {CALIBRATION_BINS} confidence bins (0 = a confidence of 0.8 "
        "is right 80 % of the time). Bars under the diagonal: over-confident; above: under-confident.</p>"
        + _figure(fig, "Reliability diagram: accuracy of the images in each confidence bin, and how many there are.")
        + "</section>"
    )


def _errors_by_shard(data: ReportData) -> str:
    shards = data.errors_by_shard[:20]
    types = sorted({kind for entry in shards for kind in entry["by_type"]})
    fig, axis = _plt().subplots(figsize=(9, 0.45 * len(shards) + 1.4))
    left = np.zeros(len(shards))
    colours = ("#d1495b", "#edae49", "#3a7ca5", "#66a182", "#8d96a3", "#00798c")
    for index, kind in enumerate(types):
        counts = np.array([entry["by_type"].get(kind, 0) for entry in shards])
        axis.barh(range(len(shards)), counts, left=left, color=colours[index % len(colours)], label=kind)
        left += counts
    axis.set_yticks(range(len(shards)), [_shard_label(entry["source_uri"]) for entry in shards])
    axis.invert_yaxis()
    axis.set_xlabel("error rows")
    axis.xaxis.set_major_locator(_ticker().MaxNLocator(integer=True))
    axis.legend(frameon=False, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(types))  # off the bars
    _tidy(axis)
    fig.tight_layout()
    rows = "".join(
        f"<tr><td><code>{_e(entry['source_uri'])}</code></td><td>{entry['scored']:,}</td><td>{entry['failed']:,}</td>"
        f"<td>{format_number(entry['failed'] / (entry['failed'] + entry['scored']), '.2%')}</td>"
        f"<td>{_e(', '.join(f'{kind} {count}' for kind, count in entry['by_type'].items()))}</td></tr>"
        for entry in shards
    )
    more = len(data.errors_by_shard) - len(shards)
    return (
        '<section id="errors-by-shard"><h2>Error rows by shard</h2>'
        f"<p>Shards with error rows: {len(data.errors_by_shard)}"
        + (f"; the {len(shards)} with the most shown" if more else "")
        + ". A damaged shard stands out here: its images are in the error table, not lost.</p>"
        + _figure(fig, "Error rows of each shard, by type.")
        + "<table><tr><th>shard</th><th>scored</th><th>error rows</th><th>error share</th><th>by type</th></tr>"
        + rows
        + "</table></section>"
    )


def _shard_label(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1]


def _class_mix(data: ReportData) -> str:
    run_shares = shares(data.predicted_counts)
    if data.training_counts is None:
        return (
            '<section id="class-mix"><h2>Class mix</h2>'
            f'<p class="warn">{_e(data.training_source)}: no drift score.</p>'
            + _figure(_bars({"this run (predicted)": run_shares}, "share of images"), "Predicted class mix of this run.")
            + "</section>"
        )
    train_shares = shares(data.training_counts)
    figure = _figure(
        _drift_figure(train_shares, run_shares, data.psi),
        "Left: share of each class in the training set and among this run's predictions. "
        "Right: each class's term of the population stability index.",
    )
    bands = "; ".join(f"&lt; {limit} {label}" for limit, label in PSI_BANDS if math.isfinite(limit))
    rows = "".join(
        f"<tr><td>{_e(name)}</td><td>{train_shares[i]:.1%}</td><td>{run_shares[i]:.1%}</td>"
        f"<td>{int(data.predicted_counts[i]):,}</td><td>{data.psi[i]:.4f}</td></tr>"
        for i, name in enumerate(CLASS_NAMES)
    )
    overall = float(data.psi.sum())
    return (
        '<section id="class-mix"><h2>Class mix against the training set</h2>'
        f"<p>Population stability index over the 10 classes: <b>{overall:.4f}</b> ({psi_band(overall)}; "
        f"{bands}, else major shift). Training distribution from <code>{_e(data.training_source)}</code>.</p>"
        + figure
        + "<table><tr><th>class</th><th>training</th><th>this run</th><th>images</th><th>PSI term</th></tr>"
        + rows
        + "</table></section>"
    )


def _confidence(data: ReportData) -> str:
    fig, axis = _plt().subplots(figsize=(8, 3.2))
    edges = np.linspace(0, 1, CONFIDENCE_BINS + 1)
    labeled = data.confidence_bins[1].sum() > 0 or data.metrics is not None
    axis.bar(
        edges[:-1],
        data.confidence_bins[0],
        width=1 / CONFIDENCE_BINS,
        align="edge",
        color="#3a7ca5",
        label="right" if labeled else "all",
    )
    if labeled:
        axis.bar(
            edges[:-1],
            data.confidence_bins[1],
            width=1 / CONFIDENCE_BINS,
            align="edge",
            bottom=data.confidence_bins[0],
            color="#d1495b",
            label="wrong",
        )
    axis.set_xlabel("confidence (softmax of the predicted class)")
    axis.set_ylabel("images")
    axis.legend(frameon=False)
    _tidy(axis)
    fig.tight_layout()
    return (
        '<section id="confidence"><h2>Confidence</h2>'
        f"<p>{data.low_confidence_share:.1%} of the images were predicted with confidence below {LOW_CONFIDENCE}.</p>"
        + _figure(fig, "Confidence histogram" + (", stacked by right and wrong predictions." if labeled else "."))
        + "</section>"
    )


def _accuracy(data: ReportData) -> str:
    metrics = data.metrics
    fig = _matrix_figure(data.confusion, "true class", "predicted class", row_rates=True)
    rows = "".join(
        f"<tr><td>{_e(name)}</td><td>{format_number(metrics['precision'][i], '.3f')}</td>"
        f"<td>{format_number(metrics['recall'][i], '.3f')}</td>"
        f"<td>{format_number(metrics['f1'][i], '.3f')}</td><td>{int(metrics['support'][i]):,}</td></tr>"
        for i, name in enumerate(CLASS_NAMES)
    )
    return (
        '<section id="accuracy"><h2>Accuracy</h2>'
        f"<p>Accuracy <b>{metrics['accuracy']:.2%}</b> on {metrics['labeled']:,} images whose shards carried a label.</p>"
        + _figure(
            fig,
            "Confusion matrix: rows are the true class, columns the predicted class; each cell holds "
            "the images and the share of its row (the true class), coloured by that share.",
        )
        + "<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>images</th></tr>"
        + rows
        + "</table>"
        + _confused_pairs(data)
        + "</section>"
    )


def _confused_pairs(data: ReportData) -> str:
    if not data.confused_pairs:
        return "<p>No image was confused with another class.</p>"
    rows = "".join(
        f"<tr><td>{_e(CLASS_NAMES[pair['true_label']])}</td><td>{_e(CLASS_NAMES[pair['predicted_label']])}</td>"
        f"<td>{pair['images']:,}</td><td>{pair['rate']:.1%}</td></tr>"
        for pair in data.confused_pairs
    )
    return (
        "<h3>Most confused class pairs</h3><table><tr><th>true class</th><th>predicted as</th><th>images</th>"
        f"<th>share of the true class</th></tr>{rows}</table>"
    )


def _baseline(data: ReportData) -> str:
    baseline = data.baseline
    if baseline is None:
        return f'<section id="baseline"><h2>Baseline</h2><p class="note">{_e(data.baseline_note)}.</p></section>'
    head = (
        f'<section id="baseline"><h2>Against baseline run {_e(baseline["run_id"])}</h2>'
        f"<p>{_e(data.baseline_note)}. Baseline model {_e(', '.join(baseline['model_versions']))}. "
    )
    if not baseline["common_images"]:
        return head + "The two runs have no image in common.</p></section>"
    accuracy = ""
    if baseline["labeled"]:
        accuracy = (
            f" On the {baseline['labeled']:,} labeled ones: accuracy {baseline['accuracy']:.2%} here, "
            f"{baseline['baseline_accuracy']:.2%} in the baseline."
        )
    rows = "".join(
        f"<tr><td>{_e(name)}</td><td>{int(baseline['baseline_counts'][i]):,}</td><td>{int(baseline['current_counts'][i]):,}</td>"
        f"<td>{int(baseline['current_counts'][i] - baseline['baseline_counts'][i]):+d}</td></tr>"
        for i, name in enumerate(CLASS_NAMES)
    )
    return (
        head + f"{baseline['common_images']:,} images scored by both; the predicted class agrees on "
        f"<b>{baseline['agreement']:.2%}</b>.{accuracy}</p>"
        + _figure(
            _matrix_figure(baseline["flips"], "baseline prediction", "this run's prediction"),
            "Where predictions moved: rows are the baseline's class, columns this run's; off the diagonal are changes.",
        )
        + "<table><tr><th>class</th><th>baseline</th><th>this run</th><th>delta</th></tr>"
        + rows
        + "</table></section>"
    )


def _gallery(anchor: str, title: str, thumbs: list, caption: str) -> str:
    if not thumbs:
        return f'<section id="{anchor}"><h2>{_e(title)}</h2><p class="note">None to show.</p></section>'
    cards = []
    for thumb in thumbs:
        picture = (
            f'<img alt="{_e(thumb.image_id)}" src="data:image/png;base64,{base64.b64encode(thumb.png).decode()}">'
            if thumb.png is not None
            else f'<p class="note">{_e(thumb.note)}</p>'
        )
        truth = ""
        if thumb.true_label is not None:
            wrong = ' class="wrong"' if CLASS_NAMES[thumb.true_label] != thumb.predicted_class else ""
            truth = f"<br><span{wrong}>true: {_e(CLASS_NAMES[thumb.true_label])}</span>"
        cards.append(
            f'<div class="thumb" title="{_e(thumb.source_uri)}">{picture}<code>{_e(thumb.image_id)}</code><br>'
            f"{_e(thumb.predicted_class)} {thumb.confidence:.2f}{truth}</div>"
        )
    return f'<section id="{anchor}"><h2>{_e(title)}</h2><p>{_e(caption)}</p><div class="thumbs">{"".join(cards)}</div></section>'


# --- Figures ----------------------------------------------------------------------------


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # no display: render to PNG bytes only
    import matplotlib.pyplot as plt

    return plt


def _ticker():
    import matplotlib.ticker

    return matplotlib.ticker


def _drift_figure(train_shares: np.ndarray, run_shares: np.ndarray, psi: np.ndarray):
    fig, (left, right) = _plt().subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    _bars({"training set": train_shares, "this run (predicted)": run_shares}, "share of images", axis=left)
    right.barh(range(NUM_CLASSES), psi, color=["#d1495b" if value >= 0.1 else "#3a7ca5" for value in psi])
    right.set_yticks(range(NUM_CLASSES), CLASS_NAMES)
    right.invert_yaxis()
    # A fixed scale that always shows the bands' limits: a 0.001 term looks as small as it is.
    limits = [limit for limit, _ in PSI_BANDS if math.isfinite(limit)]
    for limit, style in zip(limits, (":", "--")):
        right.axvline(limit, color="#5b6670", linestyle=style, linewidth=1)
        right.text(limit, -0.7, f" {limit}", color="#5b6670", fontsize=8, va="bottom")
    right.set_xlim(0, max(limits[-1] * 1.2, float(psi.max()) * 1.1))
    right.set_xlabel("PSI term (lines: overall bands 0.1 and 0.25)")
    _tidy(right)
    fig.tight_layout()
    return fig


def _bars(series: dict[str, np.ndarray], ylabel: str, axis=None):
    fig = None
    if axis is None:
        fig, axis = _plt().subplots(figsize=(9, 3.5))
    width = 0.8 / len(series)
    colours = ("#9aa5b1", "#3a7ca5", "#d1495b")
    for index, (label, values) in enumerate(series.items()):
        axis.bar(
            np.arange(NUM_CLASSES) + (index - (len(series) - 1) / 2) * width,
            values,
            width,
            label=label,
            color=colours[index % len(colours)],
        )
    axis.set_xticks(range(NUM_CLASSES), CLASS_NAMES, rotation=30, ha="right")
    axis.yaxis.set_major_formatter(_ticker().PercentFormatter(1.0))
    axis.set_ylabel(ylabel)
    # Above the plot, never over the bars (the last classes' bars reach the top right corner).
    axis.legend(frameon=False, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(series))
    _tidy(axis)
    if fig is not None:
        fig.tight_layout()
    return fig


def _matrix_figure(matrix: np.ndarray, ylabel: str, xlabel: str, *, row_rates: bool = False):
    """Counts in the cells; with `row_rates`, also each cell's share of its row, which sets the colour."""
    fig, axis = _plt().subplots(figsize=(8, 7) if row_rates else (7, 6))
    totals = matrix.sum(axis=1, keepdims=True)
    rates = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    shade = rates if row_rates else matrix
    axis.imshow(shade, cmap="Blues", vmin=0)
    threshold = shade.max() / 2 if shade.max() else 1
    for (row, column), value in np.ndenumerate(matrix):
        if value:
            text = f"{value}\n{rates[row, column]:.0%}" if row_rates else str(value)
            axis.text(
                column,
                row,
                text,
                ha="center",
                va="center",
                fontsize=7 if row_rates else 8,
                color="white" if shade[row, column] > threshold else "#1d232a",
            )
    axis.set_xticks(range(NUM_CLASSES), CLASS_NAMES, rotation=45, ha="right")
    axis.set_yticks(range(NUM_CLASSES), CLASS_NAMES)
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    fig.tight_layout()
    return fig


def _trend_figure(dates: list[str], values: np.ndarray, title: str, kind: str):
    fig, axis = _plt().subplots(figsize=(5, 2.6))
    positions = np.arange(len(dates))
    axis.plot(positions, values, marker="o", color="#3a7ca5")
    axis.set_xticks(positions, [date[5:] for date in dates], rotation=45 if len(dates) > 7 else 0, fontsize=8)
    axis.set_xlim(-0.5, len(dates) - 0.5)
    axis.set_title(title, fontsize=10)
    if kind == "percent":
        axis.yaxis.set_major_formatter(_ticker().PercentFormatter(1.0, decimals=1))
    if kind == "psi":  # the bands' limits as reference lines, on a scale that includes the first
        for limit, _ in PSI_BANDS[:-1]:
            axis.axhline(limit, color="#9aa5b1", linestyle=":", linewidth=1)
        axis.set_ylim(0, max(PSI_BANDS[0][0] * 1.2, float(np.nanmax(values)) * 1.1))
    else:  # a margin around flat series, so that one value is a visible point, not an axis
        low, high = float(np.nanmin(values)), float(np.nanmax(values))
        pad = max((high - low) * 0.2, 0.005)
        axis.set_ylim(low - pad, high + pad)
    _tidy(axis)
    fig.tight_layout()
    return fig


def _tidy(axis) -> None:
    axis.spines[["top", "right"]].set_visible(False)


def _figure(fig, caption: str) -> str:
    """A figure as an <img> with the PNG inline (the page needs no other file)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    _plt().close(fig)
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return (
        f'<figure><img alt="{_e(caption)}" src="data:image/png;base64,{encoded}"><figcaption>{_e(caption)}</figcaption></figure>'
    )


def _e(value) -> str:
    return html.escape(str(value))
