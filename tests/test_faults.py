"""Environment failures: transient GCS errors are retried (nothing lost, nothing doubled); a full disk
is one line, exit 1, nothing left behind."""

import os
import subprocess

import pytest

from components.contracts.shards import read_manifest
from components.io import storage
from components.prepare.dataset import prepare
from tests.cli_runs import prepare_args, run_cli
from tests.conftest import write_random_idx


@pytest.mark.integration
def test_storage_operations_survive_injected_faults(faulty_gcs_bucket, tmp_path):
    bucket, proxy = faulty_gcs_bucket
    for i in range(12):
        storage.write_bytes(f"{bucket}/objects/{i}.bin", bytes([i]) * 100)
    storage.write_bytes(f"{bucket}/objects/manifest.json", b"{}", if_absent=True)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(storage.RESUMABLE_CHUNK_BYTES * 2 + 123))
    storage.upload_file(str(big), f"{bucket}/objects/big.bin")

    assert [storage.read_bytes(f"{bucket}/objects/{i}.bin") for i in range(12)] == [bytes([i]) * 100 for i in range(12)]
    assert storage.read_bytes(f"{bucket}/objects/big.bin") == big.read_bytes()
    assert len(storage.list_prefix(f"{bucket}/objects")) == 14
    assert set(proxy.injected) == {"503", "reset", "lost"}


@pytest.mark.integration
def test_prepare_to_a_flaky_bucket_writes_exactly_the_local_bytes(tiny_idx, faulty_gcs_bucket, tmp_path):
    bucket, proxy = faulty_gcs_bucket
    local = str(tmp_path / "local")
    prepare(source=tiny_idx, output=local, shards_per_split=3, allow_unknown_source=True, workers=1)
    remote = f"{bucket}/shards"
    prepare(source=tiny_idx, output=remote, shards_per_split=3, allow_unknown_source=True, workers=1)

    names = sorted(n for n in os.listdir(local) if n.endswith(".tfrecord"))
    assert [storage.basename(u) for u in storage.list_prefix(remote)] == sorted(names + ["manifest.json"])
    for name in names:
        assert storage.read_bytes(f"{remote}/{name}") == open(os.path.join(local, name), "rb").read()
    assert read_manifest(remote).splits == read_manifest(local).splits
    assert sum(proxy.injected.values()) >= 3


@pytest.fixture
def full_disk(tmp_path):
    """A 128 KiB tmpfs mounted for the test (needs root): a disk that fills up mid-run."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def test_a_full_disk_is_exit_1_in_one_line_and_leaves_nothing_behind(tmp_path, full_disk):
    source = write_random_idx(tmp_path / "raw", {"train": 400, "test": 400}, seed=2)  # ~0.4 MB of PNGs
    output = full_disk / "shards"
    for verbose in ([], ["--verbose"]):
        result = run_cli(*prepare_args(source, str(output), "--workers", "1", *verbose), timeout=300)
        assert result.returncode == 1, result.stderr
        assert "No space left on device" in result.stderr
        if verbose:
            assert "Traceback" in result.stderr
        else:
            assert result.stderr.count("\n") == 1, result.stderr
        # No manifest, no half-written temporary file, the output's lock released.
        assert [name for name in os.listdir(output) if not name.endswith(".tfrecord")] == []
