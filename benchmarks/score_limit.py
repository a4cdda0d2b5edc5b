"""`fmnist score` as whole processes against the machine's compute limit, in one invocation.

    .venv/bin/python -m benchmarks.score_limit --shards /tmp/records-bench/shards [--workdir /tmp/score-limit]
                                               [--repeat 10] [--rounds 2] [--plain-beam]

The shards are the real data set as `fmnist prepare` writes it (70,000 images); `--repeat`
holds every shard that many times (copies with their own image ids, benchmarks.score.repeat_shards) for the large
input. A model is trained once (benchmarks.score.train_model). Then, each in a fresh process:

- **limit**: the large input's records (the shards `--repeat` times) read into memory before
  the clock starts, so that it runs as long as score's large run and a burst of a shared
  machine weighs as little in both; timed: parse, PNG decode, the model, softmax, Arrow
  rows of the prediction schema and Parquet encoding (the parts' writer options) into
  memory, in batches of 512, one thread per core (each its own shards). No Beam, no
  files, no error handling: what this machine can do at all.
- **imports**: `python -c "import tensorflow, keras, apache_beam, pyarrow.parquet"`, the
  bare imports every scoring process pays.
- **score**: `python -m jobs.cli score` on one shard, on all shards and on `--repeat` times
  all shards, timed from outside (wall time of the whole process, peak RSS of it and its
  children).
- **plain Beam** (with `--plain-beam`): benchmarks.score's RunInference pipeline (b) on all shards.

Reported: the marginal throughput of `score`, (N_large - N_one) / (t_large - t_one), and its
ratio to the limit; the fixed cost, t_one - N_one / marginal, beside the bare imports; peak
RSS at 1x and at `--repeat`x; the ratio to plain RunInference. Every variant runs `--rounds`
times, interleaved, and the median of each counts (a shared machine is noisy).
"""

import argparse
import concurrent.futures
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks.score import repeat_shards

TARGET_MARGINAL_VS_LIMIT = 0.9
TARGET_FIXED_OVER_IMPORTS_S = 0.5
TARGET_RSS_GROWTH = 1.25
TARGET_VS_PLAIN_BEAM = 5.0
BATCH_SIZE = 512
BARE_IMPORTS = "import tensorflow, keras, apache_beam, pyarrow.parquet"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", required=True, help="folder of the prepared shards (fmnist prepare --output)")
    parser.add_argument("--workdir", default="/tmp/score-limit", help="scratch folder (model, outputs); replaced")
    parser.add_argument("--repeat", type=int, default=10, help="input multiplier of the large run")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each variant, interleaved; the median counts")
    parser.add_argument("--plain-beam", action="store_true", help="also run the plain RunInference pipeline")
    parser.add_argument("--limit-glob", help=argparse.SUPPRESS)  # child process: the in-memory limit
    args = parser.parse_args()
    if args.limit_glob:
        model_path = os.path.join(args.workdir, "models", "bench", "model.keras")
        print(json.dumps(in_memory_limit(sorted(glob.glob(args.limit_glob)), model_path)))
        return

    shutil.rmtree(args.workdir, ignore_errors=True)
    os.makedirs(args.workdir)
    shards = sorted(glob.glob(os.path.join(os.path.abspath(args.shards), "*.tfrecord")))
    all_glob = os.path.join(os.path.abspath(args.shards), "*.tfrecord")
    large_glob = repeat_shards(all_glob, os.path.join(args.workdir, "repeated"), args.repeat)
    model_root = os.path.join(args.workdir, "models")
    run_python(["-m", "benchmarks.score", "--variant", "train", "--glob", all_glob, "--workdir", args.workdir])

    inputs = {"one": shards[0], "all": all_glob, "large": large_glob}
    rounds = []
    for round_index in range(args.rounds):
        results = {
            "limit": json.loads(
                run_python(
                    [
                        "-m",
                        "benchmarks.score_limit",
                        "--shards",
                        args.shards,
                        "--workdir",
                        args.workdir,
                        "--limit-glob",
                        large_glob,
                    ]
                )["stdout"].splitlines()[-1]
            ),
            "imports": run_python(["-c", BARE_IMPORTS]),
        }
        for name, shard_glob in inputs.items():
            output = os.path.join(args.workdir, f"out-{name}-{round_index}")
            run = run_python(
                ["-m", "jobs.cli", "score", "--input", shard_glob, "--model", model_root, "--output", output, "--run-id", "bench"]
            )
            summary = json.loads(run["stdout"].strip().splitlines()[-1])
            run["images"] = summary["counts"]["read"]
            results[name] = run
            shutil.rmtree(output)
        if args.plain_beam:
            plain_beam = run_python(
                ["-m", "benchmarks.score", "--variant", "b", "--glob", all_glob, "--workdir", args.workdir, "--beam-args", ""]
            )
            results["plain_beam"] = json.loads(plain_beam["stdout"].strip().splitlines()[-1])
        rounds.append(results)
        print(f"round {round_index + 1}: " + json.dumps({name: _figures(result) for name, result in results.items()}), flush=True)
    report(rounds, args)


def _figures(result: dict) -> dict:
    return {
        key: round(value, 3) if isinstance(value, float) else value
        for key, value in result.items()
        if key in ("images", "seconds", "cpu_seconds", "images_per_s", "peak_rss_kib")
    }


def run_python(arguments: list[str]) -> dict:
    """Runs `python ARGUMENTS` to the end: wall and CPU seconds, its peak RSS (KiB), its stdout."""
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, *arguments], stdout=stdout, stderr=stderr, text=True)
        _, status, usage = os.wait4(process.pid, 0)  # the rusage of this child alone
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0)
        stderr.seek(0)
        if process.returncode != 0:
            sys.exit(f"python {' '.join(arguments)} failed:\n{stderr.read()[-4000:]}")
        return {
            "seconds": seconds,
            "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "stdout": stdout.read(),
            "peak_rss_kib": usage.ru_maxrss,
        }


def median(values: list[float]) -> float:
    return statistics.median(values)


def report(rounds: list[dict], args) -> None:
    one = median([r["one"]["seconds"] for r in rounds])
    large = median([r["large"]["seconds"] for r in rounds])
    n_one, n_large = rounds[0]["one"]["images"], rounds[0]["large"]["images"]
    marginal = (n_large - n_one) / (large - one)
    limit = median([r["limit"]["images_per_s"] for r in rounds])
    imports = median([r["imports"]["seconds"] for r in rounds])
    fixed = one - n_one / marginal
    print(f"\nload average at the end: {', '.join(f'{load:.1f}' for load in os.getloadavg())}")
    print(f"{'what':<52}{'images':>10}{'seconds (median; rounds)':>34}")
    for name, label in (
        ("imports", f"bare imports ({BARE_IMPORTS[7:]})"),
        ("one", "fmnist score, one shard"),
        ("all", "fmnist score, all shards"),
        ("large", f"fmnist score, all shards x{args.repeat}"),
    ):
        times = [r[name]["seconds"] for r in rounds]
        images = rounds[0][name].get("images", "")
        print(f"{label:<52}{images:>10}{median(times):>10.2f} ({', '.join(f'{t:.2f}' for t in times)})")
    limits = [round(r["limit"]["images_per_s"]) for r in rounds]
    print(
        f"{'in-memory limit (images/s)':<52}{rounds[0]['limit']['images']:>10}"
        f"{limit:>10,.0f} ({', '.join(f'{x:,}' for x in limits)})"
    )
    print(f"marginal throughput of score = ({n_large:,} - {n_one:,}) / ({large:.2f} - {one:.2f}) s = {marginal:,.0f} images/s")
    print(f"marginal / limit = {marginal / limit:.2f}x (target >= {TARGET_MARGINAL_VS_LIMIT}x)")
    print(
        f"fixed cost = {one:.2f} - {n_one:,} / marginal = {fixed:.2f} s; bare imports {imports:.2f} s; "
        f"over the imports {fixed - imports:+.2f} s (target <= +{TARGET_FIXED_OVER_IMPORTS_S} s)"
    )
    # The same within each round: its one-shard run against its own imports, taken moments
    # apart, so a drift of the machine's speed between rounds cancels out.
    paired = [r["one"]["seconds"] - n_one / marginal - r["imports"]["seconds"] for r in rounds]
    print(
        f"the same per round (one shard - its images / marginal - that round's imports): "
        f"{median(paired):+.2f} s median ({', '.join(f'{p:+.2f}' for p in paired)})"
    )
    # CPU time is what a busy machine distorts least: the same figures per CPU second.
    cpu_one, cpu_large = (median([r[name]["cpu_seconds"] for r in rounds]) for name in ("one", "large"))
    marginal_cpu_us = (cpu_large - cpu_one) / (n_large - n_one) * 1e6
    limit_cpu_us = median([r["limit"]["cpu_seconds"] / r["limit"]["images"] for r in rounds]) * 1e6
    imports_cpu = median([r["imports"]["cpu_seconds"] for r in rounds])
    fixed_cpu = cpu_one - n_one * marginal_cpu_us / 1e6
    print(
        f"CPU per image: score marginal {marginal_cpu_us:.1f} us, limit {limit_cpu_us:.1f} us: "
        f"limit / score = {limit_cpu_us / marginal_cpu_us:.2f}x"
    )
    print(
        f"fixed CPU: score {fixed_cpu:.2f} s, bare imports {imports_cpu:.2f} s: over the imports {fixed_cpu - imports_cpu:+.2f} s"
    )
    rss_all, rss_large = (median([r[name]["peak_rss_kib"] for r in rounds]) / 1024 for name in ("all", "large"))
    print(
        f"peak RSS (median): all shards {rss_all:,.0f} MiB, x{args.repeat} {rss_large:,.0f} MiB: "
        f"{rss_large / rss_all:.2f}x (target <= {TARGET_RSS_GROWTH})"
    )
    if "plain_beam" in rounds[0]:
        plain = median([r["plain_beam"]["images_per_s"] for r in rounds])
        print(
            f"plain RunInference {plain:,.0f} images/s (its own work, after imports); "
            f"marginal / plain = {marginal / plain:.1f}x (target >= {TARGET_VS_PLAIN_BEAM}x)"
        )


def in_memory_limit(shard_paths: list[str], model_path: str) -> dict:
    """Scores the shards with everything but the framework: records in memory before the clock
    starts; timed: parse, decode, model, softmax, Arrow rows, Parquet into memory; all cores."""
    import keras
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import tensorflow as tf

    from components.constants import CLASS_NAMES
    from components.contracts.schema import DICTIONARY_COLUMNS, PREDICTION_SCHEMA
    from components.io.parquet_parts import writer_options

    records = [[r.numpy() for r in tf.data.TFRecordDataset(path)] for path in shard_paths]
    model = keras.saving.load_model(model_path, compile=False)
    features = {
        "image_id": tf.io.FixedLenFeature([], tf.string),
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
    }

    @tf.function(input_signature=[tf.TensorSpec((None,), tf.string)], autograph=False)
    def score(serialized):
        example = tf.io.parse_example(serialized, features)
        images = tf.map_fn(
            lambda png: tf.io.decode_png(png, channels=1)[:, :, 0],
            example["image/encoded"],
            fn_output_signature=tf.TensorSpec((28, 28), tf.uint8),
        )
        logits = model(tf.cast(images, tf.float32) / 255.0, training=False)
        return example["image_id"], example["label"], tf.nn.softmax(logits)

    class_names = np.array(CLASS_NAMES, dtype=object)
    probabilities_type = PREDICTION_SCHEMA.field("probabilities").type
    scored_at = pa.scalar(time.time_ns() // 1000, PREDICTION_SCHEMA.field("scored_at").type)

    def one_shard(shard: list[bytes]) -> int:
        sink = pa.BufferOutputStream()
        with pq.ParquetWriter(sink, PREDICTION_SCHEMA, **writer_options(PREDICTION_SCHEMA, DICTIONARY_COLUMNS)) as writer:
            for start in range(0, len(shard), BATCH_SIZE):
                image_ids, labels, probabilities = (
                    t.numpy() for t in score(np.array(shard[start : start + BATCH_SIZE], dtype=object))
                )
                count = len(labels)
                predicted = probabilities.argmax(axis=1).astype(np.int32)
                labels = labels.astype(np.int32)
                columns = [
                    pa.array(image_ids, pa.binary()).cast(pa.string()),
                    pa.nulls(count, pa.string()),  # image_uri
                    pa.repeat(pa.scalar("source"), count),
                    pa.array(predicted),
                    pa.array(class_names[predicted], pa.string()),
                    pa.array(probabilities[np.arange(count), predicted]),
                    pa.ListArray.from_arrays(
                        pa.array(np.arange(0, 10 * count + 1, 10, dtype=np.int32)),
                        pa.array(probabilities.ravel()),
                        type=probabilities_type,
                    ),
                    pa.array(labels, mask=labels < 0),
                    pa.repeat(pa.scalar("bench"), count),  # model_version
                    pa.repeat(scored_at, count),
                ]
                writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=PREDICTION_SCHEMA))
        return pq.read_metadata(sink.getvalue()).num_rows

    score(np.array(records[0][:BATCH_SIZE], dtype=object))  # trace before the clock starts
    started, cpu_started = time.perf_counter(), time.process_time()
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as threads:
        images = sum(threads.map(one_shard, records))
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    return {"images": images, "seconds": seconds, "cpu_seconds": cpu_seconds, "images_per_s": images / seconds}


if __name__ == "__main__":
    main()
