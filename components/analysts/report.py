"""`fmnist report`: a scoring run as a page analysts would rather look at than read.

    report(scores="runs/local/scores", out="runs/local/report")

Reads the prediction and error tables through the SQL views of components/analysts/tables.py (only
complete runs), computes everything with aggregate SQL (memory does not grow with the run),
and writes `<out>/report.html` (one self-contained page, PNG figures embedded) and
`<out>/summary.json` (the same numbers for machines). Sections:

- class mix of the run (predicted classes) against the training set's, with the population
  stability index (PSI) per class and overall;
- confidence histogram (split into right/wrong when the shards carried labels);
- the trend over the last `days` run dates (current run of each date, components/analysts/report_history.py):
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

This module is the step (parameters, writing the files); the SQL that collects the numbers is
components/analysts/report_queries.py, the images from the shards components/analysts/report_thumbnails.py,
the collected value with its JSON and terminal renderings components/analysts/report_data.py, and the
page components/analysts/report_page.py.
"""

from __future__ import annotations

import dataclasses
import json

from components.analysts import report_page
from components.analysts.report_data import summary_of, terminal_summary
from components.analysts.report_queries import NO_BASELINE, collect
from components.analysts.tables import open_tables, published_dates_newest_first, run_date_of, scores_root
from components.contracts.parameters import flag_of, parameter
from components.contracts.run_index import DateRange
from components.contracts.schema import parse_run_date
from components.errors import InputError
from components.io import storage

REPORT_NAME = "report.html"
SUMMARY_NAME = "summary.json"


@dataclasses.dataclass(frozen=True)
class ReportParameters:
    """`fmnist report`: the scoring tables -> one self-contained HTML report."""

    scores: str = scores_root()
    out: str = parameter(help="folder for report.html and summary.json", location=True)
    run_id: str | None = parameter(
        None, help="the run to report on", default_help="the latest complete run", exclusive_group="which runs"
    )
    run_date: str | None = parameter(
        None, help="report on every complete run of this day (YYYY-MM-DD)", exclusive_group="which runs"
    )
    baseline_run: str | None = parameter(
        None,
        help="the run to compare with on the images both scored; `none` for no comparison",
        default_help="the previous complete run, i.e. the current run of the latest earlier run date",
    )
    manifest: str | None = parameter(
        None,
        help="data set manifest.json (or its folder) holding the training class histogram",
        default_help="the manifest beside the scored shards",
        location=True,
    )
    lowest: int = parameter(24, help="how many lowest-confidence images to show")
    wrong: int = parameter(24, help="how many confidently wrong images to show, labeled runs")
    days: int = parameter(14, help="run dates in the trend section, ending at the report's")


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
    lowest: int = ReportParameters.lowest,
    wrong: int = ReportParameters.wrong,
    days: int = ReportParameters.days,
) -> ReportResult:
    """Writes report.html and summary.json for the chosen run(s) below `out`."""
    if run_id and run_date:
        raise InputError(f"{flag_of('run_id')} and {flag_of('run_date')} exclude each other: a report covers one run or one day")
    for name, value, least in (("lowest", lowest, 0), ("wrong", wrong, 0), ("days", days, 1)):
        if value < least:
            raise InputError(f"{flag_of(name)} must be {least} or more, got {value}")
    storage.ensure_writable(out)
    dates = report_dates(scores, run_id=run_id, run_date=run_date, baseline_run=baseline_run, days=days)
    connection = open_tables(scores=scores, dates=dates)
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


def report_dates(
    scores: str, *, run_id: str | None, run_date: str | None, baseline_run: str | None, days: int
) -> DateRange | None:
    """The run dates a report reads: its runs' date, the `days` dates of the trend ending there and
    the baseline's date; so a report's cost does not grow with the history. None (every date)
    when the runs cannot be placed (the views then say what is wrong) or the root has no run index."""
    if run_id:
        last = run_date_of(scores, run_id)
    elif run_date:
        try:
            last = parse_run_date(run_date)
        except ValueError:
            return None
    else:
        newest = published_dates_newest_first(scores)
        last = next(newest, None) if newest is not None else None
    if last is None:
        return None
    window = DateRange.days_ending(last, days)
    if baseline_run == NO_BASELINE:
        return window
    if baseline_run:
        baseline_date = run_date_of(scores, baseline_run)
    else:  # the automatic baseline: the latest earlier date with a published run
        earlier = published_dates_newest_first(scores, before=last)
        baseline_date = next(earlier, None) if earlier is not None else None
    if baseline_date is None:
        return window if not baseline_run else None
    return DateRange(min(window.first, baseline_date), max(last, baseline_date))
