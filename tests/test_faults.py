"""Transient GCS failures (503s, resets, lost responses) are retried: nothing lost, nothing doubled."""
import os

from components import storage
from components.prepare import prepare
from components.shards import read_manifest


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
    assert read_manifest(remote)["splits"] == read_manifest(local)["splits"]
    assert sum(proxy.injected.values()) >= 3
