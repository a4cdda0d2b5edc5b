"""Throughput of `prepare` on the full data set: parallel (all cores) vs one process.

    .venv/bin/python -m benchmarks.prepare [--source DIR] [--shards-per-split N]

Both runs write byte-identical shards into temporary folders; prints images/s and the
speed-up of the parallel run over the single-process baseline measured in this invocation.
"""

import argparse
import os
import tempfile
import time

from components.constants import DEFAULT_SOURCE, SPLIT_SIZES
from components.prepare.dataset import prepare


def timed_prepare(source: str, shards_per_split: int, workers: int) -> float:
    with tempfile.TemporaryDirectory(prefix="bench-prepare-") as output:
        start = time.perf_counter()
        prepare(source=source, output=output, shards_per_split=shards_per_split, workers=workers)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=DEFAULT_SOURCE)
    parser.add_argument("--shards-per-split", type=int, default=8)
    args = parser.parse_args()
    images = sum(SPLIT_SIZES.values())
    cores = os.cpu_count() or 1
    single = timed_prepare(args.source, args.shards_per_split, workers=1)
    parallel = timed_prepare(args.source, args.shards_per_split, workers=cores)
    print(f"{'run':<22}{'seconds':>9}{'images/s':>11}")
    print(f"{'1 process (baseline)':<22}{single:>9.2f}{images / single:>11,.0f}")
    print(f"{f'{cores} processes':<22}{parallel:>9.2f}{images / parallel:>11,.0f}")
    print(f"speed-up: {single / parallel:.2f}x on {cores} cores")


if __name__ == "__main__":
    main()
