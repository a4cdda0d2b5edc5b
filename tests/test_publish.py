"""Run integrity of `fmnist score`'s publish step: one writer per run id, atomic reruns, one row per image.

Real `python -m jobs.cli score` processes: killed with SIGKILL at named points of the publish
sequence (the FMNIST_KILL_AT hook of components/io/lease.py), racing on one run id, writing
into a small full tmpfs (mounted here, as root); locally and on the GCS API server on loopback.
After every hostile event the readers (the views of components/analysts/tables.py) must show the
previous complete run or the new one, never a mix and never nothing, and the next attempt
must finish the job without manual cleanup.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from components.analysts.tables import open_tables
from components.contracts.schema import run_summary_uri
from components.contracts.shards import serialize_example
from components.contracts.summary import RunSummary
from components.errors import InputError
from components.io import storage
from components.io.images import encode_png
from components.io.lease import acquire, lease_uri, release
from components.io.tfrecord import frame_record
from components.score import run as run_module
from components.score.run import part_groups, score, shard_groups, staging_uri
from tests.cli_runs import wait_until_stopped
from tests.test_score import fit_tiny_model, save_model

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_ID = "nightly"
LEASE_TTL_S = 1.0  # short, so that the attempt after a kill -9 can take over at once
KILL_POINTS = ("leased", "part-move", "part-published", "parts-published", "summary", "summary-written", "removal", "cleaned")
CONCURRENT_TRIALS = 3


def write_shard(path: str, image_ids: list[str], seed: int) -> None:
    rng = np.random.default_rng(seed)
    with open(path, "wb") as file:
        for image_id in image_ids:
            png = encode_png(rng.integers(0, 256, (28, 28), dtype=np.uint8))
            file.write(frame_record(serialize_example(image_id, png, int(rng.integers(0, 10)))))


@pytest.fixture(scope="module")
def tiny_model():
    return fit_tiny_model()


@pytest.fixture
def inputs(tmp_path, tiny_model) -> dict:
    """Three shards of 6 unique images, and two published model versions (old and new)."""
    shards = tmp_path / "shards"
    shards.mkdir()
    ids = []
    for index in range(3):
        shard_ids = [f"img-{index}-{i}" for i in range(6)]
        write_shard(str(shards / f"test-{index:05d}-of-00003.tfrecord"), shard_ids, seed=index)
        ids += shard_ids
    models = str(tmp_path / "models")
    old, new, last = (save_model(tiny_model, models, version) for version in ("old", "new", "last"))
    return {"glob": str(shards / "*.tfrecord"), "ids": sorted(ids), "old": old, "new": new, "last": last}


def score_cli(*args: str, kill_at: str | None = None, freeze_at: str | None = None, env: dict | None = None) -> subprocess.Popen:
    environment = dict(env or os.environ)
    if kill_at:
        environment["FMNIST_KILL_AT"] = kill_at
    if freeze_at:
        environment["FMNIST_FREEZE_AT"] = freeze_at
    return subprocess.Popen(
        [sys.executable, "-m", "jobs.cli", "score", *args],
        cwd=REPO_ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def cli_args(inputs: dict, output: str, model: str, lease_ttl_s: float = LEASE_TTL_S) -> list[str]:
    return [
        "--input",
        inputs["glob"],
        "--model",
        model,
        "--output",
        output,
        "--run-id",
        RUN_ID,
        "--run-date",
        "2026-11-30",
        "--lease-ttl-s",
        str(lease_ttl_s),
        "--replaced-parts-grace-s",  # replaced parts go at once, so that assert_clean can check the partitions
        "0",
    ]


def visible_run(output: str) -> tuple[list[str], set[str]]:
    """What a reader sees of the run: its image ids (sorted, with repeats) and model versions."""
    connection = open_tables(scores=output)
    rows = connection.sql(f"SELECT image_id, model_version FROM predictions WHERE run_id = '{RUN_ID}'").fetchall()
    return sorted(image_id for image_id, _ in rows), {version for _, version in rows}


def assert_clean(output: str) -> None:
    """On disk, the run's partitions hold exactly the parts its summary names; no staging is left."""
    summary = RunSummary.from_json(storage.read_bytes(run_summary_uri(output, RUN_ID)))
    on_disk = {
        storage.absolute_uri(uri)
        for table in ("predictions", "errors")
        for uri in storage.glob(storage.join(output, table, "run_date=*", f"run_id={RUN_ID}", "*"))
    }
    assert on_disk == set(summary.parts.predictions) | set(summary.parts.errors)
    assert storage.list_prefix(staging_uri(output, RUN_ID)) == []
    assert not storage.exists(lease_uri(output, RUN_ID))


def score_again(inputs: dict, output: str, model: str) -> dict:
    """The next attempt at the run, in this process, once the one before has gone."""
    return score(
        input=inputs["glob"],
        model=inputs[model],
        output=output,
        run_id=RUN_ID,
        run_date="2026-11-30",
        lease_ttl_s=LEASE_TTL_S,
        replaced_parts_grace_s=0,
    )


def wait_for_lease_expiry() -> None:
    time.sleep(LEASE_TTL_S + 0.5)


# --- kill -9 at every point of the publish sequence ------------------------------------------


def kill_and_recover(inputs: dict, output: str, point: str, env: dict | None = None) -> None:
    score(
        input=inputs["glob"], model=inputs["old"], output=output, run_id=RUN_ID, run_date="2026-11-30", replaced_parts_grace_s=0
    )
    assert visible_run(output) == (inputs["ids"], {"old"})

    process = score_cli(*cli_args(inputs, output, inputs["new"]), kill_at=point, env=env)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == -9, stderr[-2000:]
    ids, versions = visible_run(output)  # the old run, or the new one: whole either way
    assert ids == inputs["ids"]
    assert versions == ({"new"} if point in ("summary-written", "removal", "cleaned") else {"old"})

    wait_for_lease_expiry()
    summary = score_again(inputs, output, "new")
    assert visible_run(output) == (inputs["ids"], {"new"})
    assert summary["counts"]["read"] == summary["counts"]["scored"] == len(inputs["ids"])
    assert_clean(output)


@pytest.mark.slow
@pytest.mark.parametrize("point", KILL_POINTS)
def test_kill_9_in_the_publish_sequence_keeps_a_whole_run_and_the_next_attempt_finishes(inputs, tmp_path, point):
    kill_and_recover(inputs, str(tmp_path / "scores"), point)


@pytest.mark.slow
@pytest.mark.parametrize("point", ["part-published", "summary-written"])
def test_kill_9_in_the_publish_sequence_on_gcs(inputs, gcs_bucket, point):
    kill_and_recover(inputs, storage.join(gcs_bucket, "scores"), point, env=dict(os.environ))


# --- Attempts frozen past their lease (a VM pause, a long GC, SIGSTOP), then resumed ----------------

FREEZE_POINTS = ("part-move", "summary", "removal")
FROZEN_TTL_S = 2.0  # long enough for a live attempt's heartbeat on a loaded machine, short for the test


def freeze_and_take_over(inputs: dict, output: str, point: str, attempts: int, env: dict | None = None) -> None:
    """Every attempt but the last freezes at `point`; each next one starts once the lease of the
    one before has expired; the last one runs through. Then the frozen ones resume, newest first."""
    score(
        input=inputs["glob"], model=inputs["old"], output=output, run_id=RUN_ID, run_date="2026-11-30", replaced_parts_grace_s=0
    )
    frozen = []
    for _ in range(attempts - 1):
        process = score_cli(*cli_args(inputs, output, inputs["new"], lease_ttl_s=FROZEN_TTL_S), freeze_at=point, env=env)
        wait_until_stopped(process)
        frozen.append(process)
        time.sleep(FROZEN_TTL_S + 0.5)
    last = score_cli(*cli_args(inputs, output, inputs["last"], lease_ttl_s=FROZEN_TTL_S), env=env)
    _, stderr = last.communicate(timeout=300)
    assert last.returncode == 0, stderr[-2000:]
    for process in reversed(frozen):
        process.send_signal(signal.SIGCONT)
        _, stderr = process.communicate(timeout=300)
        lines = stderr.strip().splitlines()
        if point == "removal":  # it had published before it froze; what it removes now is garbage only
            assert process.returncode == 0, stderr[-2000:]
        else:  # it lost the run: one line naming who has it, and nothing of it stays published
            assert process.returncode == 2, stderr[-2000:]
            assert lines[-1].startswith("error: ") and ("lost the lease" in lines[-1] or "published by" in lines[-1])
    assert visible_run(output) == (inputs["ids"], {"last"})
    assert_clean(output)


@pytest.mark.slow
@pytest.mark.parametrize("attempts", [2, 3])
@pytest.mark.parametrize("point", FREEZE_POINTS)
def test_an_attempt_frozen_past_its_lease_changes_nothing_when_it_resumes(inputs, tmp_path, point, attempts):
    freeze_and_take_over(inputs, str(tmp_path / "scores"), point, attempts)


@pytest.mark.slow
@pytest.mark.parametrize("point", FREEZE_POINTS)
def test_an_attempt_frozen_past_its_lease_changes_nothing_on_gcs(inputs, gcs_bucket, point):
    freeze_and_take_over(inputs, storage.join(gcs_bucket, "scores"), point, attempts=2, env=dict(os.environ))


# --- Two live attempts at once ---------------------------------------------------------------


def race(inputs: dict, output: str, env: dict | None = None) -> None:
    # Both live: a TTL no scheduling delay on a loaded machine can outlast, so the loser is refused.
    processes = [score_cli(*cli_args(inputs, output, inputs[model], lease_ttl_s=60), env=env) for model in ("old", "new")]
    results = [(process.wait(timeout=300), process.communicate()[1]) for process in processes]
    codes = sorted(code for code, _ in results)
    assert codes in ([0, 0], [0, 2]), [stderr[-2000:] for _, stderr in results]  # [0, 0]: one ran after the other
    for code, stderr in results:
        if code == 2:  # the loser: one line, and it wrote nothing (the winner's run is whole)
            assert stderr.strip().splitlines()[-1].startswith("error: ")
            assert "held by live attempt" in stderr.strip().splitlines()[-1]
    summaries = storage.glob(storage.join(output, "runs", "*.json"))
    assert summaries == [run_summary_uri(output, RUN_ID)]
    ids, versions = visible_run(output)
    assert ids == inputs["ids"] and len(versions) == 1
    assert_clean(output)


@pytest.mark.slow
def test_two_concurrent_attempts_on_one_run_id_publish_one_whole_run(inputs, tmp_path):
    for trial in range(CONCURRENT_TRIALS):
        race(inputs, str(tmp_path / f"scores-{trial}"))


@pytest.mark.slow
def test_two_concurrent_attempts_on_one_run_id_on_gcs(inputs, gcs_bucket):
    for trial in range(2):
        race(inputs, storage.join(gcs_bucket, f"scores-{trial}"), env=dict(os.environ))


# --- A full disk --------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs mounted at tmp_path/disk (root only)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], check=True)
    try:
        yield str(disk)
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def fill(folder: str, leave_bytes: int) -> str:
    """Fills the file system of `folder` up to `leave_bytes` free; returns the filler file."""
    filler = os.path.join(folder, "filler")
    with open(filler, "wb") as file:
        free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
        try:
            file.write(b"\0" * max(0, free - leave_bytes))
        except OSError:
            pass  # already full: exactly what the test wants
    return filler


@pytest.mark.slow
@pytest.mark.parametrize("leave_bytes", [0, 12 * 1024])
def test_a_full_disk_keeps_the_previous_run_and_the_next_attempt_finishes(inputs, small_disk, leave_bytes):
    output = os.path.join(small_disk, "scores")
    score(
        input=inputs["glob"], model=inputs["old"], output=output, run_id=RUN_ID, run_date="2026-11-30", replaced_parts_grace_s=0
    )
    filler = fill(small_disk, leave_bytes)

    process = score_cli(*cli_args(inputs, output, inputs["new"]))
    _, stderr = process.communicate(timeout=300)
    assert process.returncode in (1, 2), stderr[-2000:]
    assert visible_run(output) == (inputs["ids"], {"old"})

    os.unlink(filler)
    wait_for_lease_expiry()
    score_again(inputs, output, "new")
    assert visible_run(output) == (inputs["ids"], {"new"})
    assert_clean(output)


# --- One row per image ----------------------------------------------------------------------------


@pytest.mark.integration
def test_a_repeated_image_id_is_scored_once_and_each_repeat_is_an_error_row(tmp_path, tiny_model):
    shards = tmp_path / "shards"
    shards.mkdir()
    write_shard(str(shards / "test-00000-of-00003.tfrecord"), ["a", "b", "a", "c"], seed=1)
    write_shard(str(shards / "test-00001-of-00003.tfrecord"), ["d", "b", "e", "a"], seed=2)
    write_shard(str(shards / "test-00002-of-00003.tfrecord"), ["c", "d"], seed=3)  # nothing new: no prediction part
    model = save_model(tiny_model, str(tmp_path / "models"), "v1")
    output = str(tmp_path / "scores")
    summary = score(input=str(shards / "*.tfrecord"), model=model, output=output, run_id=RUN_ID, max_error_rate=1.0)

    connection = open_tables(scores=output)
    scored = connection.sql("SELECT image_id, source_uri FROM predictions ORDER BY image_id").fetchall()
    first, second, third = (storage.absolute_uri(str(shards / f"test-0000{i}-of-00003.tfrecord")) for i in (0, 1, 2))
    assert scored == [("a", first), ("b", first), ("c", first), ("d", second), ("e", second)]
    errors = connection.sql("SELECT source_uri, record_index, image_id, error_type FROM errors ORDER BY ALL").fetchall()
    assert errors == [
        (first, 2, "a", "duplicate_image_id"),
        (second, 1, "b", "duplicate_image_id"),
        (second, 3, "a", "duplicate_image_id"),
        (third, 0, "c", "duplicate_image_id"),
        (third, 1, "d", "duplicate_image_id"),
    ]
    assert summary["counts"] == {
        "read": 10,
        "scored": 5,
        "failed": 5,
        "failed_by_type": {"duplicate_image_id": 5},
        "expected": None,
    }
    # the small shards' parts are merged into one part per table (PART_TARGET_BYTES)
    assert len(summary["parts"]["predictions"]) == 1 and len(summary["parts"]["errors"]) == 1


@pytest.mark.integration
def test_the_same_shard_twice_in_the_input_is_refused(tmp_path, tiny_model):
    shards = tmp_path / "shards"
    shards.mkdir()
    write_shard(str(shards / "test-00000-of-00001.tfrecord"), ["a", "b"], seed=1)
    os.symlink(shards / "test-00000-of-00001.tfrecord", shards / "test-copy.tfrecord")
    model = save_model(tiny_model, str(tmp_path / "models"), "v1")
    with pytest.raises(InputError, match="are the same file"):
        score(input=str(shards / "*.tfrecord"), model=model, output=str(tmp_path / "scores"))
    assert not (tmp_path / "scores").exists()


# --- A live holder, and receipts that do not match their shard ------------------------------------


@pytest.mark.integration
def test_a_second_live_attempt_exits_2_in_one_line_having_written_nothing(inputs, tmp_path):
    output = str(tmp_path / "scores")
    holder = acquire(lease_uri(output, RUN_ID), owner="live-attempt", ttl_s=300)
    process = score_cli(*cli_args(inputs, output, inputs["new"]))
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 2, stderr[-2000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "held by live attempt live-attempt" in last
    assert storage.list_prefix(output) == [lease_uri(output, RUN_ID)]
    release(holder)


def _with_first_shard(receipt, **changes):
    return dataclasses.replace(receipt, shards=[dataclasses.replace(receipt.shards[0], **changes), *receipt.shards[1:]])


@pytest.mark.parametrize(
    "tamper, message",
    [
        (lambda receipt, other: _with_first_shard(receipt, source_uri=other), "expected shards"),
        (lambda receipt, other: _with_first_shard(receipt, shard_index=1), "expected shards"),
        (lambda receipt, other: dataclasses.replace(receipt, shards=receipt.shards[:1]), "expected shards"),
        (lambda receipt, other: dataclasses.replace(receipt, group_index=1), "expected shards"),
        (
            lambda receipt, other: _with_first_shard(
                receipt, scored=receipt.shards[0].scored + 1, read=receipt.shards[0].read + 1
            ),
            "staged parts hold",
        ),
        (lambda receipt, other: _with_first_shard(receipt, read=receipt.shards[0].read + 1), "read"),
        (lambda receipt, other: dataclasses.replace(receipt, predictions=other), "not this group's staged"),
    ],
)
def test_a_receipt_is_checked_against_its_shards_and_its_parts(inputs, tmp_path, tiny_model, tamper, message):
    from components.score.model_scorer import ModelScorer
    from components.score.run import checked_receipts
    from components.score.shard_scoring import ScoringTarget, part_name, receipt_uri, score_group

    shards = storage.glob(inputs["glob"])
    staging = str(tmp_path / "staging")
    target = ScoringTarget(staging=staging, run_id=RUN_ID, run_date="2026-11-30", model_version="v1")
    receipt = score_group(list(enumerate(shards[:2])), scorer=ModelScorer(tiny_model), target=target)
    assert checked_receipts(staging, shards[:2], [[0, 1]]) == [receipt]
    storage.write_bytes(receipt_uri(staging, part_name(0)), tamper(receipt, storage.absolute_uri(shards[2])).to_json().encode())
    with pytest.raises(RuntimeError, match=message):
        checked_receipts(staging, shards[:2], [[0, 1]])


@pytest.mark.integration
def test_an_attempt_that_lost_its_lease_never_swaps_the_summary(inputs, tmp_path, tiny_model):
    """A holder that stalled past its TTL (its heartbeat starved) and was taken over stops at the swap."""
    import datetime

    from components.contracts.summary import RunInputs, RunParts
    from components.errors import RunConflict
    from components.score.model_scorer import ModelScorer
    from components.score.run import checked_receipts, publish, run_counts
    from components.score.shard_scoring import ScoringTarget, score_group

    output, shards = str(tmp_path / "scores"), storage.glob(inputs["glob"])
    score(
        input=inputs["glob"], model=inputs["old"], output=output, run_id=RUN_ID, run_date="2026-11-30", replaced_parts_grace_s=0
    )
    stalled = acquire(lease_uri(output, RUN_ID), owner="stalled", ttl_s=0.2)
    staging = staging_uri(output, RUN_ID, "stalled")
    target = ScoringTarget(staging=staging, run_id=RUN_ID, run_date="2026-11-30", model_version="new")
    scorer = ModelScorer(tiny_model)
    for index, shard in enumerate(shards):
        score_group([(index, shard)], scorer=scorer, target=target)
    receipts = checked_receipts(staging, shards, [[index] for index in range(len(shards))])
    time.sleep(0.4)
    successor = acquire(lease_uri(output, RUN_ID), owner="successor", ttl_s=30)
    summary = RunSummary(
        run_id=RUN_ID,
        run_date="2026-11-30",
        status="ok",
        model_version="new",
        model_uri="m",
        inputs=RunInputs(glob=inputs["glob"], shards=shards),
        parts=RunParts(predictions=[], errors=[]),
        counts=run_counts(receipts),
        error_rate=0.0,
        max_error_rate=0.0,
        attempt="stalled",
        timings={},
    )
    with pytest.raises(RunConflict, match="lost the lease"):
        publish(
            output,
            summary,
            receipts,
            lease=stalled,
            baseline=storage.read_snapshot(run_summary_uri(output, RUN_ID), max_bytes=1 << 20),
            replaced_parts_grace_s=0,
            started=time.monotonic(),
            started_at=datetime.datetime.now(datetime.UTC),
            pipeline_seconds=0.0,
            publish_started=time.monotonic(),
        )
    assert visible_run(output) == (inputs["ids"], {"old"})  # its parts were moved in, but no summary names them
    release(successor)


# --- Bounds that keep a run id from being blocked forever ----------------------------------------------


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--lease-ttl-s", "inf"),
        ("--lease-ttl-s", "1e300"),
        ("--lease-ttl-s", "nan"),
        ("--lease-ttl-s", "0"),
        ("--replaced-parts-grace-s", "-1"),
        ("--replaced-parts-grace-s", "inf"),
    ],
)
def test_a_lease_or_grace_without_bounds_is_refused_in_one_line(inputs, tmp_path, capsys, flag, value):
    from jobs import score as score_job

    output = str(tmp_path / "scores")
    args = ["--input", inputs["glob"], "--model", inputs["new"], "--output", output, "--run-id", RUN_ID, flag, value]
    assert score_job.main(args) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ") and flag in line and "must be" in line
    assert not os.path.exists(output)


@pytest.mark.slow
def test_parts_a_rerun_replaced_stay_readable_for_the_grace_period(inputs, tmp_path):
    """A reader that read the previous summary can still read its parts after a rerun's swap;
    the next attempt after the grace period removes them."""
    output = str(tmp_path / "scores")
    run = dict(input=inputs["glob"], output=output, run_id=RUN_ID, run_date="2026-11-30", replaced_parts_grace_s=3.0)
    score(model=inputs["old"], **run)
    slow_reader = open_tables(scores=output)  # has read the old summary
    score(model=inputs["new"], **run)
    rows = slow_reader.sql("SELECT image_id, model_version FROM predictions").fetchall()
    assert sorted(image_id for image_id, _ in rows) == inputs["ids"] and {v for _, v in rows} == {"old"}
    assert visible_run(output) == (inputs["ids"], {"new"})
    time.sleep(3.5)
    score(model=inputs["last"], **{**run, "replaced_parts_grace_s": 0.0})
    assert visible_run(output) == (inputs["ids"], {"last"})
    assert_clean(output)


@pytest.mark.parametrize(
    ("sizes", "groups"),
    [
        ([10, 10, 10, 10], [[0, 1, 2], [3]]),  # target 30
        ([40, 5, 5], [[0], [1, 2]]),  # a part above the target stays alone
        ([5, 40, 5], [[0], [1], [2]]),
        ([20, 25, 5, 20, 5], [[0], [1], [2], [3], [4]]),  # at least the minimum (20): as it is
        ([19, 5, 19, 19], [[0, 1], [2], [3]]),
        ([], []),
    ],
)
def test_staged_parts_below_the_minimum_are_grouped_up_to_the_target_size(sizes, groups):
    assert part_groups(sizes, target_bytes=30, min_bytes=20) == groups


@pytest.mark.parametrize(
    ("sizes", "workers", "groups"),
    [
        ([9] * 8, 2, [[0, 1, 2, 3], [4, 5, 6, 7]]),  # within the maximum (100): one group per worker
        ([9] * 8, 1, [[0, 1, 2, 3, 4, 5, 6, 7]]),
        ([9] * 8, 3, [[0, 1, 2], [3, 4], [5, 6, 7]]),
        ([9] * 3, 4, [[0], [1], [2]]),  # never more groups than shards
        ([1, 1, 1, 1, 30, 30], 2, [[0, 1, 2, 3, 4], [5]]),  # about equal bytes, in input order
        ([40] * 10, 2, [[0, 1], [2], [3, 4], [5, 6], [7], [8, 9]]),  # 400 bytes: each worker 3 groups of at most 100
        ([0, 0, 0, 0], 2, [[0, 1], [2, 3]]),  # empty shards weigh alike
    ],
)
def test_shards_are_cut_into_groups_of_consecutive_shards_of_about_equal_bytes(sizes, workers, groups):
    result = shard_groups(sizes, workers=workers, max_bytes=100)
    assert result == groups
    assert sum(result, []) == list(range(len(sizes)))


@pytest.mark.integration
def test_parts_of_small_shards_are_merged_up_to_the_target_in_input_order(tmp_path, tiny_model, monkeypatch):
    shards = tmp_path / "shards"
    shards.mkdir()
    for index in range(5):
        ids = [f"s{index}-{n}" for n in range(6)]
        write_shard(str(shards / f"test-0000{index}-of-00005.tfrecord"), ids, seed=index)
    model = save_model(tiny_model, str(tmp_path / "models"), "v1")
    one_part = os.path.getsize(_a_staged_part_size_probe(tmp_path, tiny_model, model))
    monkeypatch.setattr(run_module, "GROUP_MAX_BYTES", 1)  # a group per shard: a staged part per shard
    monkeypatch.setattr(run_module, "PART_TARGET_BYTES", int(one_part * 2.5))  # two shards' parts per published part
    monkeypatch.setattr(run_module, "PART_MIN_BYTES", int(one_part * 2.5))
    output = str(tmp_path / "scores")
    summary = score(input=str(shards / "*.tfrecord"), model=model, output=output, run_id=RUN_ID)
    names = [storage.basename(uri) for uri in summary["parts"]["predictions"]]
    assert [name[-13:] for name in names] == ["00000.parquet", "00002.parquet", "00004.parquet"]
    rows = [
        pq.read_table(storage.from_absolute_uri(uri)).column("image_id").to_pylist() for uri in summary["parts"]["predictions"]
    ]
    assert sum(rows, []) == [f"s{index}-{n}" for index in range(5) for n in range(6)]  # input order, nothing lost
    assert open_tables(scores=output).sql("SELECT count(*) FROM predictions").fetchall() == [(30,)]
    for uri in summary["parts"]["predictions"]:  # each merged part keeps the run's lineage in its metadata
        metadata = pq.read_schema(storage.from_absolute_uri(uri)).metadata
        assert metadata and any(RUN_ID.encode() in value for value in metadata.values())


def _a_staged_part_size_probe(tmp_path, tiny_model, model: str) -> str:
    """A published part of one 6-image shard: the size a staged part of these shards has."""
    shards = tmp_path / "probe-shards"
    shards.mkdir()
    write_shard(str(shards / "test-00000-of-00001.tfrecord"), [f"p-{n}" for n in range(6)], seed=9)
    summary = score(input=str(shards / "*.tfrecord"), model=model, output=str(tmp_path / "probe"), run_id=RUN_ID)
    return storage.from_absolute_uri(summary["parts"]["predictions"][0])
