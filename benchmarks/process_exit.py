"""How long a job process takes to end once its work is done, with and without the exit hook.

    .venv/bin/python -m benchmarks.process_exit [--rounds 5]

Each round runs two fresh processes, interleaved; both import what every scoring process imports
(tensorflow, keras, apache_beam, pyarrow.parquet), print the time, and end:

- **plain**: nothing else (Python's own exit: atexit hooks, then a last garbage collection that
  walks every object the imports created);
- **jobs**: also imports `jobs.entrypoint`, whose exit hook freezes the objects alive so that
  last collection skips them.

Timed from the child's printed time to its end as the parent sees it (`wait4`). Prints the
median and every round of each, and the ratio.
"""

import argparse
import statistics
import subprocess
import sys
import time

IMPORTS = "import tensorflow, keras, apache_beam, pyarrow.parquet"
CHILDREN = {
    "plain": f"{IMPORTS}; import time; print(time.time(), flush=True)",
    "jobs": f"{IMPORTS}; import jobs.entrypoint, time; print(time.time(), flush=True)",
}


def exit_seconds(code: str) -> float:
    """Seconds from the child's last line (after its imports) to its end."""
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    printed = process.stdout.readline()
    process.wait()
    ended_at = time.time()
    if process.returncode != 0:  # before reading the time: a failed child printed none
        sys.exit(f"python -c {code!r} failed with exit code {process.returncode}")
    return ended_at - float(printed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    seconds: dict[str, list[float]] = {name: [] for name in CHILDREN}
    for _ in range(args.rounds):
        for name, code in CHILDREN.items():
            seconds[name].append(exit_seconds(code))
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    for name, values in seconds.items():
        print(f"{name:<6} exit {medians[name]:.3f} s median ({', '.join(f'{v:.3f}' for v in values)})")
    print(f"jobs / plain = {medians['jobs'] / medians['plain']:.2f}x")


if __name__ == "__main__":
    main()
