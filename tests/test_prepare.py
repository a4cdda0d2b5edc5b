"""`fmnist prepare`: validated, deterministic shards with the manifest written last."""

import dataclasses
import functools
import gzip
import hashlib
import http.server
import json
import os
import resource
import signal
import socket
import struct
import subprocess
import threading
import time

import numpy as np
import pytest

from components.constants import IDX_FILES, MANIFEST_NAME, SPLIT_SIZES
from components.contracts.manifest import Manifest
from components.contracts.shards import read_manifest, read_shard
from components.errors import InputError
from components.io import storage
from components.io.idx import load_idx
from components.io.images import to_model_image
from components.prepare.dataset import prepare
from tests import cli_runs
from tests.cli_runs import jobs_command, prepare_args, wait_until_stopped
from tests.conftest import write_idx, write_random_idx
from tests.kfp_spec import REPO


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return cli_runs.run_cli(*args, timeout=600)


def read_split(output: str, manifest: Manifest, split: str) -> list:
    return [example for shard in manifest.splits[split].shards for example in read_shard(storage.join(output, shard.name))]


def test_tiny_data_set_round_trips(tiny_idx, tmp_path):
    output = str(tmp_path / "shards")
    manifest = prepare(source=tiny_idx, output=output, shards_per_split=3, allow_unknown_source=True, workers=1)

    assert manifest == read_manifest(output)
    assert sorted(os.listdir(output)) == [MANIFEST_NAME] + [
        f"{s}-0000{i}-of-00003.tfrecord" for s in ("test", "train") for i in range(3)
    ]
    for split, (images_name, labels_name) in IDX_FILES.items():
        images = load_idx(os.path.join(tiny_idx, images_name + ".gz"), ndim=3).array
        labels = load_idx(os.path.join(tiny_idx, labels_name + ".gz"), ndim=1).array
        examples = read_split(output, manifest, split)
        assert [e.image_id for e in examples] == [f"{split}-{i:05d}" for i in range(len(labels))]
        assert [e.label for e in examples] == labels.tolist()
        assert all(np.array_equal(to_model_image(e.encoded), image) for e, image in zip(examples, images))
        assert manifest.splits[split].class_histogram == np.bincount(labels, minlength=10).tolist()
        assert sum(s.num_records for s in manifest.splits[split].shards) == len(labels)
    assert all(not f["published"] for f in manifest.source["files"].values())


def test_output_is_byte_identical_across_runs_and_worker_counts(tiny_idx, tmp_path):
    first, second = str(tmp_path / "one"), str(tmp_path / "two")
    prepare(source=tiny_idx, output=first, shards_per_split=2, allow_unknown_source=True, workers=1)
    prepare(source=tiny_idx, output=second, shards_per_split=2, allow_unknown_source=True, workers=2)
    for name in os.listdir(first):
        if name.endswith(".tfrecord"):
            assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
            sha = hashlib.sha256((tmp_path / "one" / name).read_bytes()).hexdigest()
            assert sha in {s.sha256 for split in read_manifest(first).splits.values() for s in split.shards}


def test_unknown_source_is_refused_without_the_flag(tiny_idx, tmp_path):
    with pytest.raises(InputError, match="not the published Fashion-MNIST"):
        prepare(source=tiny_idx, output=str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out" / MANIFEST_NAME)


def test_complete_output_needs_overwrite_and_stale_shards_go(tiny_idx, tmp_path):
    output = str(tmp_path / "shards")
    prepare(source=tiny_idx, output=output, shards_per_split=3, allow_unknown_source=True, workers=1)
    with pytest.raises(InputError, match="--overwrite"):
        prepare(source=tiny_idx, output=output, allow_unknown_source=True, workers=1)
    prepare(source=tiny_idx, output=output, shards_per_split=2, overwrite=True, allow_unknown_source=True, workers=1)
    assert len([n for n in os.listdir(output) if n.endswith(".tfrecord")]) == 4  # no -of-00003 left


@pytest.mark.parametrize("where", ["local", "gcs"])
def test_a_run_that_publishes_second_does_not_replace_the_first_ones_manifest(tiny_idx, tmp_path, where, request):
    """Two runs writing the same output: the manifest is created only if absent (a generation
    precondition on GCS), so the second fails loudly instead of silently replacing it."""
    from components.io.storage import StorageConflictError
    from components.prepare.dataset import publish_manifest

    output = (request.getfixturevalue("gcs_bucket") + "/shards") if where == "gcs" else str(tmp_path / "shards")
    first = prepare(source=tiny_idx, output=output, shards_per_split=2, allow_unknown_source=True, workers=1)
    with pytest.raises(StorageConflictError, match=MANIFEST_NAME):
        publish_manifest(output, dataclasses.replace(first, created_at="a concurrent run"))
    assert read_manifest(output) == first


def test_interrupted_run_leaves_no_manifest_and_a_rerun_completes_it(tiny_idx, tmp_path):
    output = tmp_path / "shards"
    output.mkdir()
    (output / "train-00000-of-00002.tfrecord").write_bytes(b"half-written garbage")  # what a crash leaves
    manifest = prepare(source=tiny_idx, output=str(output), shards_per_split=2, allow_unknown_source=True, workers=1)
    assert len(read_split(str(output), manifest, "train")) == 20


def test_uncompressed_idx_files_are_accepted(tiny_idx, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    for name in os.listdir(tiny_idx):
        (plain / name.removesuffix(".gz")).write_bytes(gzip.decompress(open(os.path.join(tiny_idx, name), "rb").read()))
    manifest = prepare(source=str(plain), output=str(tmp_path / "out"), allow_unknown_source=True, workers=1)
    assert manifest.splits["test"].num_records == 10


def test_gcs_output(tiny_idx, gcs_bucket):
    output = f"{gcs_bucket}/data/shards"
    manifest = prepare(source=tiny_idx, output=output, shards_per_split=2, allow_unknown_source=True, workers=2)
    assert read_manifest(output) == manifest
    assert len(read_split(output, manifest, "train")) == 20


# --- bad input: one line naming the file and the problem, exit 2, no manifest -------------


def break_missing(folder):
    os.remove(os.path.join(folder, "t10k-labels-idx1-ubyte.gz"))
    return "t10k-labels-idx1-ubyte", "file not found"


def break_truncated_gzip(folder):
    path = os.path.join(folder, "train-images-idx3-ubyte.gz")
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    return "train-images-idx3-ubyte.gz", "truncated or corrupt gzip"


def break_magic(folder):
    path = os.path.join(folder, "train-labels-idx1-ubyte.gz")
    raw = bytearray(gzip.decompress(open(path, "rb").read()))
    raw[2:4] = b"\x08\x03"
    open(path, "wb").write(gzip.compress(bytes(raw)))
    return "train-labels-idx1-ubyte.gz", "wrong magic number"


def break_count(folder):
    write_idx(os.path.join(folder, "t10k-labels-idx1-ubyte.gz"), np.zeros(9, np.uint8))
    return "t10k-labels-idx1-ubyte.gz", "9 labels for 10 images"


def break_label_range(folder):
    write_idx(os.path.join(folder, "train-labels-idx1-ubyte.gz"), np.full(20, 10, np.uint8))
    return "train-labels-idx1-ubyte.gz", "outside 0-9"


def break_dimensions(folder):
    write_idx(os.path.join(folder, "t10k-images-idx3-ubyte.gz"), np.zeros((10, 28, 27), np.uint8))
    return "t10k-images-idx3-ubyte.gz", "expected 28x28"


@pytest.mark.parametrize(
    "breakage", [break_missing, break_truncated_gzip, break_magic, break_count, break_label_range, break_dimensions]
)
def test_bad_source_fails_cleanly(tiny_idx, tmp_path, breakage):
    file_name, problem = breakage(tiny_idx)
    output = tmp_path / "out"
    result = run_cli(*prepare_args(tiny_idx, str(output)))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and file_name in lines[0] and problem in lines[0], result.stderr
    assert not output.exists() or not (output / MANIFEST_NAME).exists()


def test_unwritable_output_fails_cleanly(tiny_idx, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = run_cli(*prepare_args(tiny_idx, str(blocker / "out")))
    assert result.returncode == 2 and "not writable" in result.stderr and str(blocker) in result.stderr


def test_bad_flag_value_fails_cleanly(tmp_path):
    result = run_cli("prepare", "--output", str(tmp_path), "--shards-per-split", "0")
    assert result.returncode == 2 and "at least 1" in result.stderr


def test_bad_flag_is_one_line_exit_2(tmp_path):
    result = run_cli("prepare", "--output", str(tmp_path), "--shards-per-split", "many")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: fmnist prepare: argument --shards-per-split: invalid int value: 'many' (see --help)"
    ]


@pytest.mark.slow
def test_real_data_set_round_trips(real_source, tmp_path):
    output = str(tmp_path / "shards")
    result = run_cli("prepare", "--output", output)
    assert result.returncode == 0, result.stderr
    manifest = read_manifest(output)
    assert all(f["published"] for f in manifest.source["files"].values())
    total = 0
    for split, (images_name, labels_name) in IDX_FILES.items():
        images = load_idx(os.path.join(real_source, images_name + ".gz"), ndim=3).array
        labels = load_idx(os.path.join(real_source, labels_name + ".gz"), ndim=1).array
        examples = read_split(output, manifest, split)
        assert len(examples) == manifest.splits[split].num_records == SPLIT_SIZES[split]
        assert len({e.image_id for e in examples}) == len(examples)
        assert np.array_equal(np.stack([to_model_image(e.encoded) for e in examples]), images)
        assert np.array_equal(np.array([e.label for e in examples]), labels)
        total += len(examples)
    assert total == 70_000


class _WebSourceHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; anything below /forbidden/ answers 403 (a mirror refusing access)."""

    def send_head(self):  # shared by GET and HEAD
        if self.path.startswith("/forbidden/"):
            self.send_error(403)
            return None
        return super().send_head()

    def log_message(self, *args):
        pass


@pytest.fixture
def web_source(tiny_idx):
    """`http://127.0.0.1:<port>` serving the tiny IDX data set (a mirror on loopback)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_WebSourceHandler, directory=tiny_idx))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_web_source_gives_the_same_shards_as_the_local_files(tiny_idx, web_source, tmp_path):
    local = prepare(source=tiny_idx, output=str(tmp_path / "local"), allow_unknown_source=True, workers=1)
    web = prepare(source=web_source, output=str(tmp_path / "web"), allow_unknown_source=True, workers=1)
    assert [s.sha256 for s in web.splits["train"].shards] == [s.sha256 for s in local.splits["train"].shards]


@pytest.mark.parametrize(
    "path, message",
    [
        ("/missing", "file not found"),
        ("/forbidden", "HTTP 403"),
    ],
)
def test_web_source_errors_are_one_line_exit_2(web_source, tmp_path, path, message):
    result = run_cli("prepare", "--source", web_source + path, "--output", str(tmp_path / "out"))
    assert result.returncode == 2 and message in result.stderr and web_source in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not os.path.exists(tmp_path / "out")


def test_unreachable_web_source_is_exit_2(tmp_path):
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run_cli("prepare", "--source", f"http://127.0.0.1:{port}/data", "--output", str(tmp_path / "out"))
    assert result.returncode == 2 and "cannot be reached" in result.stderr, result.stderr
    assert not os.path.exists(tmp_path / "out")


# --- two writers, kill -9, SIGTERM: the published manifest always names exactly its shards -----


def random_idx(folder, train_count: int) -> str:
    """IDX files of random images (a third as many test images as training images)."""
    return write_random_idx(folder, {"train": train_count, "test": train_count // 3}, seed=1)


@pytest.fixture
def busy_idx(tmp_path) -> str:
    """IDX files of 4,000 random images: enough encoding work that two runs overlap in time."""
    return random_idx(tmp_path / "busy-raw", 3000)


@pytest.fixture
def long_idx(tmp_path) -> str:
    """IDX files of 40,000 random images: seconds of encoding, so a signal lands mid-run."""
    return random_idx(tmp_path / "long-raw", 30000)


def start_prepare(source: str, output: str, shards_per_split: int, *, freeze_at: str | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        jobs_command(*prepare_args(source, output, "--overwrite", "--workers", "1", "--shards-per-split", str(shards_per_split))),
        env={**os.environ, "FMNIST_FREEZE_AT": freeze_at} if freeze_at else None,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(predicate, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def assert_published_data_set_is_whole(output: str) -> None:
    """The manifest names exactly the shards present, each with the bytes it records; no lock left."""
    manifest = read_manifest(output)
    listed = {shard.name: shard.sha256 for split in manifest.splits.values() for shard in split.shards}
    present = {storage.basename(uri) for uri in storage.list_prefix(output)}
    assert present == set(listed) | {MANIFEST_NAME}, present ^ (set(listed) | {MANIFEST_NAME})
    for name, sha256 in listed.items():
        assert hashlib.sha256(storage.read_bytes(storage.join(output, name))).hexdigest() == sha256, name


@pytest.mark.integration
@pytest.mark.parametrize("where", ["local", "gcs"])
def test_two_concurrent_runs_never_publish_a_mix(busy_idx, tmp_path, where, request):
    """Two real processes into one output with different shard counts, many times: each trial
    ends with one whole data set; a run that found the other one writing exits 2 with one line
    and deleted nothing. Half the trials start the second run once the first holds the output."""
    output = (request.getfixturevalue("gcs_bucket") + "/shards") if where == "gcs" else str(tmp_path / "shards")
    lock = storage.join(output, ".prepare.lock")
    outcomes = []
    for trial in range(6):
        first = start_prepare(busy_idx, output, 2)
        if trial % 2:
            wait_for(lambda first=first: storage.exists(lock) or first.poll() is not None)
        second = start_prepare(busy_idx, output, 3)
        for process in (first, second):
            _, stderr = process.communicate(timeout=300)
            assert process.returncode in (0, 2), stderr
            if process.returncode == 2:
                assert len(stderr.strip().splitlines()) == 1 and "held by live attempt" in stderr, stderr
            outcomes.append(process.returncode)
        assert 0 in (first.returncode, second.returncode)
        assert_published_data_set_is_whole(output)
    assert 2 in outcomes  # the conflict really happened, and was refused


@pytest.mark.integration
@pytest.mark.parametrize("where", ["local", "gcs"])
def test_a_run_killed_holding_the_output_is_taken_over_by_the_next(busy_idx, tmp_path, where, request):
    output = (request.getfixturevalue("gcs_bucket") + "/shards") if where == "gcs" else str(tmp_path / "shards")
    killed = start_prepare(busy_idx, output, 2)
    wait_for(lambda: storage.exists(storage.join(output, ".prepare.lock")))
    killed.kill()  # kill -9: no finally runs, the lock stays behind
    killed.wait()
    assert storage.exists(storage.join(output, ".prepare.lock"))

    retry = start_prepare(busy_idx, output, 3)
    _, stderr = retry.communicate(timeout=300)
    assert retry.returncode == 0, stderr
    assert_published_data_set_is_whole(output)


@pytest.mark.integration
@pytest.mark.parametrize("where", ["local", "gcs"])
@pytest.mark.parametrize("point", ["prepare-unpublish", "prepare-shard", "prepare-removal", "prepare-manifest"])
@pytest.mark.parametrize("winner_shards", [2, 3])
def test_a_run_frozen_past_its_lease_changes_nothing_of_the_run_that_took_over(tmp_path, where, point, winner_shards, request):
    """A run of two shards per split frozen (SIGSTOP) before one of its writes, whose output
    another run then takes over and publishes anew from other images, with the same shard names
    or with the three-shard names the frozen run would remove: resumed, it exits 2 in one line,
    and the other run's data set is whole, with no file of the frozen run beside it. The takeover
    removes the frozen run's lease, as a taker of an expired one replaces it (the TTL is
    minutes, and the frozen holder is alive on this host)."""
    output = (request.getfixturevalue("gcs_bucket") + "/shards") if where == "gcs" else str(tmp_path / "shards")
    lock = storage.join(output, ".prepare.lock")
    first_images = write_random_idx(tmp_path / "first", {"train": 30, "test": 12}, seed=1)
    other_images = write_random_idx(tmp_path / "other", {"train": 30, "test": 12}, seed=2)
    # A data set of three shards per split beforehand: the runs of two leave stale shards to remove.
    prepare(source=first_images, output=output, shards_per_split=3, allow_unknown_source=True, workers=1)
    frozen = start_prepare(first_images, output, 2, freeze_at=point)
    wait_until_stopped(frozen)
    storage.delete(lock)
    winner = start_prepare(other_images, output, winner_shards)
    _, stderr = winner.communicate(timeout=300)
    assert winner.returncode == 0, stderr
    published = storage.read_bytes(storage.join(output, MANIFEST_NAME))

    frozen.send_signal(signal.SIGCONT)
    _, stderr = frozen.communicate(timeout=300)
    assert frozen.returncode == 2, stderr
    last_line = stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: ") and "another run took" in last_line, stderr
    assert storage.read_bytes(storage.join(output, MANIFEST_NAME)) == published
    assert_published_data_set_is_whole(output)
    assert read_manifest(output).source["uri"] == other_images


@pytest.mark.integration
@pytest.mark.parametrize("delay_s", [0.0, 0.05, 0.2, 0.5])
def test_sigterm_stops_prepare_in_one_line_and_releases_the_output(long_idx, tmp_path, delay_s):
    """SIGTERM at several points after the output was locked: taking the lock, encoding, writing."""
    output = str(tmp_path / "shards")
    stopped = start_prepare(long_idx, output, 2)
    wait_for(lambda: os.path.exists(os.path.join(output, ".prepare.lock")))
    time.sleep(delay_s)
    stopped.send_signal(signal.SIGTERM)
    _, stderr = stopped.communicate(timeout=60)
    assert stopped.returncode == 143
    assert stderr.strip().splitlines() == ["terminated: stopped by SIGTERM"]
    # The lock released in `finally`, no manifest, no temporary file.
    assert [name for name in os.listdir(output) if not name.endswith(".tfrecord")] == []


def test_a_lock_held_elsewhere_is_respected_until_it_expires(tiny_idx, tmp_path, monkeypatch):
    """A holder on another machine cannot be asked whether it lives: its renewals tell."""
    from components.errors import RunConflict
    from components.prepare import dataset as prepare_module

    output = tmp_path / "shards"
    output.mkdir()
    held = {"owner": "a1", "host": "another-machine", "pid": 1, "ttl_s": 60}
    (output / ".prepare.lock").write_text(json.dumps(held))  # just renewed
    with pytest.raises(RunConflict, match="held by live attempt a1"):
        prepare(source=tiny_idx, output=str(output), allow_unknown_source=True, workers=1)
    assert sorted(os.listdir(output)) == [".prepare.lock"]

    last_renewal = time.time() - 61  # its age is the file's: the storage's clock, not the holder's
    os.utime(output / ".prepare.lock", (last_renewal, last_renewal))
    prepare(source=tiny_idx, output=str(output), allow_unknown_source=True, workers=1)
    assert_published_data_set_is_whole(str(output))
    assert prepare_module.LOCK_TTL_S >= 60  # a slow GCS write never lets a live writer's lease lapse


def gzip_bomb(path: str, header: bytes, inflated_mib: int) -> None:
    """A small file that inflates to `inflated_mib` MiB: concatenated gzip members of zeros."""
    member = gzip.compress(bytes(1 << 20), compresslevel=9, mtime=0)
    with open(path, "wb") as file:
        file.write(gzip.compress(header, mtime=0))
        for _ in range(inflated_mib):
            file.write(member)


@pytest.mark.parametrize(
    "header, message",
    [
        (bytes([0, 0, 8, 3]) + struct.pack(">3I", 10, 28, 28), "holds more than the 7856 bytes its header declares"),
        (bytes([0, 0, 8, 3]) + struct.pack(">3I", 2_000_000, 28, 28), "header declares 1568000016 bytes"),
    ],
)
def test_a_gzip_bomb_is_refused_before_it_is_inflated(tiny_idx, tmp_path, header, message):
    """A 0.6 MB source inflating to 600 MiB: refused in one line with memory bounded by the cap."""
    bomb = os.path.join(tiny_idx, "train-images-idx3-ubyte.gz")
    gzip_bomb(bomb, header, inflated_mib=600)
    assert os.path.getsize(bomb) < 1_000_000

    def at_most_300_mib_of_data():  # the inflated 600 MiB would be a MemoryError, exit 1
        resource.setrlimit(resource.RLIMIT_DATA, (300 << 20, 300 << 20))

    result = cli_runs.run_cli(*prepare_args(tiny_idx, str(tmp_path / "out")), preexec_fn=at_most_300_mib_of_data)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert bomb in result.stderr and message in result.stderr, result.stderr
    assert not (tmp_path / "out" / MANIFEST_NAME).exists()
