"""Where the model side of a scoring run's fixed cost goes, phase by phase, in fresh processes.

    .venv/bin/python -m benchmarks.score_start --shard <a shard of fmnist prepare> --model <model version folder>
                                               [--rounds 5]

Each round is a fresh process (tracing and TensorFlow's first-call costs are paid once per
process), timed inside it after the bare imports (tensorflow, keras, apache_beam, pyarrow.parquet):

- load: `load_model` of the version's `model.keras` (its SHA-256 checked);
- probe: the launcher's probe batch through the scorer (traces the model);
- trace: tracing the fused batch function (parse, check, decode, model, softmax);
- first batch: its first call on 512 of the shard's records (graph optimization, kernels);
- next batch: the second call, on the next 512;
- steady: the mean of 20 further calls on 512 records.

Prints the median of each phase over the rounds, and every round.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time

BATCH = 512
STEADY_CALLS = 20
PHASES = ("load", "probe", "trace", "first batch", "next batch", "steady")


def one_round(shard: str, model_folder: str) -> dict[str, float]:
    """The phases' seconds in this process."""
    import apache_beam  # noqa: F401  the bare imports every scoring process pays, before the clock
    import keras  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    import tensorflow  # noqa: F401

    from components.contracts.registry import resolve
    from components.io.tfrecord import read_records
    from components.score.model_scorer import load_model, probe_images, scorer_of

    with open(shard, "rb") as stream:
        records = [record.data for record in read_records(stream)]
    reference = resolve(model_folder, check_file=False)
    clock = [time.perf_counter()]

    def lap() -> None:
        clock.append(time.perf_counter())

    model = load_model(reference.keras_uri, expected_sha256=reference.sha256)
    lap()
    scorer = scorer_of(model)
    scorer.outputs(probe_images())
    lap()
    scorer._score_contract_batch.get_concrete_function()
    lap()
    for start in (0, BATCH):
        scorer.score_contract_batch(records[start : start + BATCH])
        lap()
    for _ in range(STEADY_CALLS):
        scorer.score_contract_batch(records[:BATCH])
    lap()
    seconds = [end - start for start, end in zip(clock, clock[1:])]
    seconds[-1] /= STEADY_CALLS
    return dict(zip(PHASES, seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shard", required=True, help="one TFRecord shard of `fmnist prepare` (at least 1,024 records)")
    parser.add_argument("--model", required=True, help="a model version folder (fmnist train's output)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--one-round", action="store_true", help=argparse.SUPPRESS)  # child process
    args = parser.parse_args()
    if args.one_round:
        print(json.dumps(one_round(args.shard, args.model)))
        return
    child = [sys.executable, "-m", "benchmarks.score_start", "--shard", args.shard, "--model", args.model, "--one-round"]
    rounds = [
        json.loads(subprocess.run(child, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        for _ in range(args.rounds)
    ]
    print(f"fresh processes: {args.rounds}; seconds, median (rounds)")
    for phase in PHASES:
        values = [round(one[phase], 3) for one in rounds]
        print(f"{phase:<12} {statistics.median(values):7.3f}   ({', '.join(f'{v:.3f}' for v in values)})")


if __name__ == "__main__":
    main()
