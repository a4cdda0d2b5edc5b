"""Shared fixtures: a real GCS API server on loopback, and tiny data sets made in the test."""

from __future__ import annotations

import gzip
import os
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import numpy as np
import pytest

from components.constants import DEFAULT_SOURCE, IDX_FILES


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s}s")


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[str]:
    """`host:port` of a gcp-storage-emulator process on loopback, for the whole session."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.gcs_server", "--port", str(port)],
    )
    try:
        wait_for_port(port)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def gcs_bucket(gcs_emulator: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """`gs://<fresh bucket>` on the emulator; the storage layer is pointed at it (anonymous)."""
    from components.io import storage

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://{gcs_emulator}")
    storage._gcs_client.cache_clear()
    name = f"test-{uuid.uuid4().hex[:12]}"
    storage._gcs_client().create_bucket(name)
    yield f"gs://{name}"
    storage._gcs_client.cache_clear()


def write_idx(path: str, array: np.ndarray, *, compress: bool = True) -> None:
    """Writes an IDX file of unsigned bytes (gzip-compressed by default)."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    with open(path, "wb") as file:
        file.write(gzip.compress(raw, mtime=0) if compress else raw)


def write_random_idx(folder, counts: dict[str, int], seed: int) -> str:
    """Makes `folder` with the four IDX files of a data set of random pixels, `counts[split]`
    images per split (labels cycle through the ten classes); the same seed gives the same files."""
    rng = np.random.default_rng(seed)
    folder.mkdir()
    for split, (images_name, labels_name) in IDX_FILES.items():
        write_idx(str(folder / f"{images_name}.gz"), rng.integers(0, 256, (counts[split], 28, 28)))
        write_idx(str(folder / f"{labels_name}.gz"), np.arange(counts[split]) % 10)
    return str(folder)


@pytest.fixture
def tiny_idx(tmp_path) -> str:
    """A folder with the four IDX files of a 20-train/10-test data set (random pixels)."""
    return write_random_idx(tmp_path / "raw", {"train": 20, "test": 10}, seed=0)


@pytest.fixture(scope="session")
def real_source() -> str:
    """The real data set from Debian's dataset-fashion-mnist (installed by `make test`)."""
    if not os.path.isdir(DEFAULT_SOURCE):
        pytest.fail(f"{DEFAULT_SOURCE} is missing: `make data` installs dataset-fashion-mnist")
    return DEFAULT_SOURCE


@pytest.fixture
def faulty_gcs_bucket(gcs_bucket: str, gcs_emulator: str, monkeypatch: pytest.MonkeyPatch):
    """(`gs://bucket`, proxy): the bucket of `gcs_bucket`, reached through a proxy that fails
    every 4th request (503, connection reset, or response lost after the write took effect)."""
    from components.io import storage
    from tests.fault_proxy import FaultProxy

    with FaultProxy(upstream=gcs_emulator, every=4) as proxy:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://{proxy.address}")
        storage._gcs_client.cache_clear()
        yield gcs_bucket, proxy
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://{gcs_emulator}")
        storage._gcs_client.cache_clear()


@pytest.fixture(scope="session")
def scored_output(tmp_path_factory) -> tuple[str, str]:
    """(data set URI, scoring output URI): tiny shards and two complete scoring runs over them.

    Written the way `fmnist score` writes its tables (tests/scoring_fixture.py); a test that
    needs real scorer output can take another fixture returning the same pair.
    """
    from tests.scoring_fixture import write_scored_output

    return write_scored_output(str(tmp_path_factory.mktemp("scored")))
