"""The run index: which run ids may have a summary on each run date, so that a reader finds the
runs of the dates it needs without listing or reading the summaries of the whole history.

    <scores>/_run_index/<YYYY-MM>/<YYYY-MM-DD>/<run_id>    a marker: {"run_date": .., "run_id": ..}
    <scores>/_run_index/COMPLETE                           every summary has its marker

Every writer of a summary (`fmnist score`, `record-failure`, `migrate-tables`) puts the marker
of its run id and run date in place *before* it swaps the summary in. So the markers are a
superset of the summaries: a marker whose run has no summary (an attempt that died before
publishing, a run id rerun on another date) means nothing, and the summaries stay the only
truth of what is complete. The index can neither hide a run nor show one the summaries do not
have, whatever process is killed or frozen where.

A root written before the index existed has summaries without markers: the first writer that
finds no COMPLETE flag adds the marker of every summary there is, then the flag. Readers use the
index only where the flag is, and otherwise list every summary.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from collections.abc import Iterator

from components.contracts.schema import RUNS_FOLDER, is_run_id, parse_run_date
from components.contracts.summary import MAX_SUMMARY_BYTES
from components.errors import InputError
from components.io import storage

INDEX_FOLDER = "_run_index"
COMPLETE_FLAG = "COMPLETE"


@dataclasses.dataclass(frozen=True)
class DateRange:
    """The run dates from `first` to `last`, both included; None: no bound on that side."""

    first: datetime.date | None = None
    last: datetime.date | None = None

    def __contains__(self, day: datetime.date) -> bool:
        return (self.first is None or day >= self.first) and (self.last is None or day <= self.last)

    @property
    def empty(self) -> bool:
        return self.first is not None and self.last is not None and self.first > self.last

    @classmethod
    def days_ending(cls, last: datetime.date, days: int) -> DateRange:
        return cls(last - datetime.timedelta(days=days - 1), last)


def index_uri(scores: str) -> str:
    return storage.join(scores, INDEX_FOLDER)


def marker_uri(scores: str, run_date: str, run_id: str) -> str:
    return storage.join(scores, INDEX_FOLDER, run_date[:7], run_date, run_id)


def add_run(scores: str, run_date: str, run_id: str) -> None:
    """Indexes run `run_id` under `run_date`: call it before the run's summary is written."""
    ensure_complete(scores)
    _write_marker(scores, run_date, run_id)


def is_complete(scores: str) -> bool:
    """True when every summary below `scores` has its marker (readers may use the index)."""
    return storage.exists(storage.join(index_uri(scores), COMPLETE_FLAG))


def ensure_complete(scores: str) -> None:
    """Adds the marker of every summary written before the index existed, then the flag.

    Idempotent: a writer killed half-way leaves markers only, and the next one does it again.
    A summary without a valid run id and date is left out (readers skip it as invalid anyway).
    """
    if is_complete(scores):
        return
    for uri in storage.glob(storage.join(scores, RUNS_FOLDER, "*.json")):
        key = _run_key(uri)
        if key:
            _write_marker(scores, *key)
    storage.write_bytes(storage.join(index_uri(scores), COMPLETE_FLAG), b"complete\n", if_absent=True)


def _write_marker(scores: str, run_date: str, run_id: str) -> None:
    # Create-only, the same bytes every time: a marker in place already is a success.
    document = json.dumps({"run_date": run_date, "run_id": run_id}) + "\n"
    storage.write_bytes(marker_uri(scores, run_date, run_id), document.encode(), if_absent=True)


def _run_key(summary_uri: str) -> tuple[str, str] | None:
    """(run date, run id) of a summary, or None when it has no valid ones (or is gone)."""
    try:
        document = json.loads(storage.read_bytes(summary_uri, max_bytes=MAX_SUMMARY_BYTES))
        run_date, run_id = document["run_date"], document["run_id"]
        parse_run_date(run_date)
    except (InputError, KeyError, TypeError, ValueError):  # gone, too large, not JSON, no or a bad date
        return None  # (a storage error propagates: the flag must not be written over a summary not read)
    if not (isinstance(run_id, str) and is_run_id(run_id) and storage.basename(summary_uri) == f"{run_id}.json"):
        return None
    return run_date, run_id


def run_ids(scores: str, dates: DateRange) -> list[str]:
    """The run ids indexed under the run dates of `dates` (each once, sorted)."""
    if dates.empty:
        return []
    found: set[str] = set()
    for month in _months(scores, dates):
        for day, ids in _month_markers(scores, month).items():
            if day in dates:
                found.update(ids)
    return sorted(found)


def dates_newest_first(scores: str, *, before: datetime.date | None = None) -> Iterator[tuple[datetime.date, list[str]]]:
    """(run date, its run ids) of every indexed date before `before` (all when None), newest
    first, one month listed at a time: a caller that stops early lists only the months it saw."""
    for month in reversed(storage.list_folders(index_uri(scores))):
        if before is not None and month > before.isoformat()[:7]:
            continue
        markers = _month_markers(scores, month)
        for day in sorted(markers, reverse=True):
            if before is None or day < before:
                yield day, sorted(markers[day])


def _months(scores: str, dates: DateRange) -> list[str]:
    """The month folders that can hold `dates`: counted from a bounded range, listed otherwise."""
    if dates.first is not None and dates.last is not None:
        months, day = [], dates.first.replace(day=1)
        while day <= dates.last:
            months.append(day.isoformat()[:7])
            day = (day + datetime.timedelta(days=32)).replace(day=1)
        return months
    return [
        month
        for month in storage.list_folders(index_uri(scores))
        if (dates.first is None or month >= dates.first.isoformat()[:7])
        and (dates.last is None or month <= dates.last.isoformat()[:7])
    ]


def _month_markers(scores: str, month: str) -> dict[datetime.date, set[str]]:
    """Run date -> run ids, from the markers of one month folder (anything else there is ignored)."""
    folder = storage.join(index_uri(scores), month)
    markers: dict[datetime.date, set[str]] = {}
    for uri in storage.list_prefix(folder):
        relative = uri[len(folder) :].strip("/").split("/")
        if len(relative) != 2 or not is_run_id(relative[1]):
            continue
        try:
            day = parse_run_date(relative[0])
        except ValueError:
            continue
        if day.isoformat()[:7] == month:
            markers.setdefault(day, set()).add(relative[1])
    return markers
