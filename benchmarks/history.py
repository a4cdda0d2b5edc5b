"""What the readers cost as the history grows: requests, seconds and peak memory per command.

    .venv/bin/python -m benchmarks.history --template runs/local/scores [--days 30 365 1095]
        [--parts-per-day 160] [--gcs-days 30 365] [--gcs-parts-per-day 4] [--work /tmp/history]

Synthesizes history from copies of a real run: the template root's latest complete run (its
summary and parts) becomes run `daily-<date>` on each of the last N days, with
`--parts-per-day` prediction parts (the template's parts again and again; locally hard links,
so a long history costs no disk) and a summary naming them whose counts are the copies' rows.
Then, in a fresh process each, as a person would type them:

- one date: `fmnist query "SELECT count(*) FROM predictions_current WHERE run_date = '<last>'"`;
- report: `fmnist report --run-date <last> --days 30`;
- whole history: `fmnist query "SELECT count(*) FROM predictions_current"`.

Locally, and on the GCS emulator (tests/gcs_server.py) through a relay that counts requests
(`--gcs-days`: uploading is one request per object, so keep it small there). Prints one line
per command and history: storage requests (GCS only), wall seconds and the child's peak RSS.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

from components.analysts.tables import read_run_summaries
from components.contracts import run_index
from components.contracts.schema import ERRORS_TABLE, PREDICTIONS_TABLE, part_file_name, partition_uri, run_summary_uri
from components.contracts.summary import RunCounts, RunParts, RunSummary
from components.io import storage
from components.io.parquet_parts import part_rows
from tests.relay_proxy import RelayProxy

ATTEMPT = "history"
LAST_DAY = datetime.date(2026, 11, 30)


class CountingRelay(RelayProxy):
    """Relays every request unchanged and counts them."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.requests = 0
        self._counter_lock = threading.Lock()

    def intercept(self, request):
        with self._counter_lock:
            self.requests += 1
        return None


def latest_run(template: str) -> RunSummary:
    """The template root's complete run that finished last."""
    summaries = read_run_summaries(template)
    if not summaries:
        sys.exit(f"{template}: no complete run to copy")
    return max(summaries, key=lambda summary: (summary.timings.get("finished_at") or "", summary.run_id))


def synthesize(template: str, run: RunSummary, root: str, days: int, parts_per_day: int) -> None:
    """`days` daily runs below `root`, each a copy of `run` with `parts_per_day` prediction parts."""
    sources = {
        table: [
            storage.join(partition_uri(template, table, run.run_date, run.run_id), storage.basename(part))
            for part in run.parts.of(table)
        ]
        for table in (PREDICTIONS_TABLE, ERRORS_TABLE)
    }
    rows = {uri: part_rows(uri) for table in sources for uri in sources[table]}
    for offset in range(days):
        day = (LAST_DAY - datetime.timedelta(days=offset)).isoformat()
        run_id = f"daily-{day}"
        copies = {
            PREDICTIONS_TABLE: [sources[PREDICTIONS_TABLE][i % len(sources[PREDICTIONS_TABLE])] for i in range(parts_per_day)]
        }
        copies[ERRORS_TABLE] = list(sources[ERRORS_TABLE])
        parts: dict[str, list[str]] = {PREDICTIONS_TABLE: [], ERRORS_TABLE: []}
        for table, originals in copies.items():
            for index, original in enumerate(originals):
                name = part_file_name(publication=1, attempt=ATTEMPT, index=index)
                target = storage.join(partition_uri(root, table, day, run_id), name)
                _copy(original, target)
                parts[table].append(storage.absolute_uri(target))
        scored = sum(rows[uri] for uri in copies[PREDICTIONS_TABLE])
        failed = sum(rows[uri] for uri in copies[ERRORS_TABLE])
        finished = datetime.datetime.fromisoformat(f"{day}T03:30:00+00:00") + datetime.timedelta(days=1)
        summary = dataclasses.replace(
            run,
            run_id=run_id,
            run_date=day,
            parts=RunParts(predictions=parts[PREDICTIONS_TABLE], errors=parts[ERRORS_TABLE]),
            counts=RunCounts(read=scored + failed, scored=scored, failed=failed, failed_by_type=run.counts.failed_by_type),
            attempt=ATTEMPT,
            publication=1,
            timings={"started_at": (finished - datetime.timedelta(minutes=5)).isoformat(), "finished_at": finished.isoformat()},
        )
        run_index.add_run(root, day, run_id)
        storage.write_bytes(run_summary_uri(root, run_id), (summary.to_json() + "\n").encode())


def _copy(source: str, target: str) -> None:
    if storage.is_remote(target):
        storage.upload_file(source, target)
        return
    os.makedirs(os.path.dirname(target), exist_ok=True)
    try:
        os.link(source, target)  # the same bytes, no disk: a long history fits anywhere
    except OSError:
        shutil.copyfile(source, target)


def commands(root: str, work: str) -> dict[str, list[str]]:
    last = LAST_DAY.isoformat()
    return {
        "one date": ["query", f"SELECT count(*) FROM predictions_current WHERE run_date = '{last}'", "--scores", root],
        "report 30 days": ["report", "--scores", root, "--run-date", last, "--days", "30", "--out", os.path.join(work, "report")],
        "whole history": ["query", "SELECT count(*) FROM predictions_current", "--scores", root],
    }


def measure(arguments: list[str], env: dict[str, str]) -> tuple[float, int, int]:
    """(seconds, peak RSS in MB, exit code) of `fmnist <arguments>` in a fresh process."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "jobs.cli", *arguments], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - started, usage.ru_maxrss // 1024, process.returncode


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--template", default="runs/local/scores", help="a scoring output root (make run's)")
    parser.add_argument("--days", type=int, nargs="*", default=[30, 365, 1095])
    parser.add_argument("--parts-per-day", type=int, default=160)
    parser.add_argument("--gcs-days", type=int, nargs="*", default=[30, 365])
    parser.add_argument("--gcs-parts-per-day", type=int, default=4)
    parser.add_argument("--work", default=None, help="where the local histories go (default: a temporary folder)")
    args = parser.parse_args()
    run = latest_run(args.template)
    work = args.work or tempfile.mkdtemp(prefix="fmnist-history-")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    print(f"template run {run.run_id}: {run.counts.scored} rows in {len(run.parts.predictions)} part(s); work {work}")
    for days in args.days:
        root = os.path.join(work, f"local-{days}")
        if not os.path.isdir(root):
            synthesize(args.template, run, root, days, args.parts_per_day)
        for name, arguments in commands(root, work).items():
            seconds, megabytes, code = measure(arguments, env)
            print(f"local {days:5d} days x {args.parts_per_day} parts  {name:15s} {seconds:7.2f} s {megabytes:6d} MB exit {code}")
    if not args.gcs_days:
        return
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "tests.gcs_server", "--port", str(port)], stderr=subprocess.DEVNULL)
    try:
        time.sleep(2)  # the emulator binds its port
        os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
        storage._gcs_client.cache_clear()
        for days in args.gcs_days:
            bucket = f"history-{days}"
            storage._gcs_client().create_bucket(bucket)
            root = f"gs://{bucket}/scores"
            synthesize(args.template, run, root, days, args.gcs_parts_per_day)
            with CountingRelay(upstream=f"127.0.0.1:{port}") as relay:
                relayed = {**env, "STORAGE_EMULATOR_HOST": f"http://{relay.address}"}
                for name, arguments in commands(root, work).items():
                    relay.requests = 0
                    seconds, megabytes, code = measure(arguments, relayed)
                    print(
                        f"gcs   {days:5d} days x {args.gcs_parts_per_day} parts  {name:15s} {relay.requests:6d} requests "
                        f"{seconds:7.2f} s {megabytes:6d} MB exit {code}"
                    )
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
