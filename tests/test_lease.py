"""The run-id lease (components/io/lease.py): one live holder, stale takeover, on local files and on gs://.

Takers race as real processes (multiprocessing, fork), on a real file system and on the
GCS API server on loopback.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from components.errors import RunConflict
from components.io import storage
from components.io.lease import acquire, hold_lease, lease_uri, release, renew

TRIALS = 5
TAKERS = 4


@pytest.fixture(params=["local", "gcs"])
def output(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "scores")
    return storage.join(request.getfixturevalue("gcs_bucket"), "scores")


def test_a_live_lease_refuses_a_second_owner_and_is_released_by_its_own(output):
    uri = lease_uri(output, "r1")
    first = acquire(uri, owner="attempt-1", ttl_s=30)
    with pytest.raises(RunConflict, match="held by live attempt attempt-1"):
        acquire(uri, owner="attempt-2", ttl_s=30)
    renew(first)
    release(first)
    second = acquire(uri, owner="attempt-2", ttl_s=30)
    release(first)  # no longer the holder: must not remove attempt-2's lease
    with pytest.raises(RunConflict, match="attempt-2"):
        acquire(uri, owner="attempt-3", ttl_s=30)
    release(second)
    assert not storage.exists(uri)


def test_an_expired_lease_is_taken_over_and_its_old_holder_is_told(output):
    uri = lease_uri(output, "r1")
    dead = acquire(uri, owner="killed", ttl_s=0.2)
    time.sleep(0.5)
    successor = acquire(uri, owner="next", ttl_s=30)
    with pytest.raises(RunConflict, match="lost the lease|held by live attempt next"):
        renew(dead)
    with pytest.raises(RunConflict):
        dead.confirm()
    successor.confirm()
    release(successor)


@pytest.mark.integration
def test_the_heartbeat_keeps_a_short_lease_alive(output):
    uri = lease_uri(output, "r1")
    with hold_lease(uri, owner="holder", ttl_s=1.2) as lease:
        time.sleep(3.0)  # several TTLs: only the heartbeat keeps it ours
        with pytest.raises(RunConflict):
            acquire(uri, owner="intruder", ttl_s=1.2)
        lease.confirm()
    assert not storage.exists(uri)


def _take(args) -> str | None:
    uri, owner, start = args
    while time.time() < start:  # all takers fire at the same moment
        time.sleep(0.001)
    try:
        acquire(uri, owner=owner, ttl_s=30)
    except RunConflict:
        return None
    return owner


@pytest.mark.integration
def test_of_several_takers_of_a_stale_lease_exactly_one_wins(output):
    context = multiprocessing.get_context("fork")
    with context.Pool(TAKERS) as pool:
        for trial in range(TRIALS):
            uri = lease_uri(output, f"run-{trial}")
            acquire(uri, owner="killed", ttl_s=0.05)
            time.sleep(0.1)
            start = time.time() + 0.3
            winners = [owner for owner in pool.map(_take, [(uri, f"taker-{i}", start) for i in range(TAKERS)]) if owner]
            assert len(winners) == 1, winners
            with pytest.raises(RunConflict, match=winners[0]):
                acquire(uri, owner="late", ttl_s=30)


def test_a_sigterm_while_the_lease_is_created_stops_the_run_and_releases_the_lease(tmp_path, monkeypatch):
    """SIGTERM between creating the lease and holding it: raised once the lease can be released."""
    from components.errors import Terminated, raise_terminated
    from components.io import lease as lease_module

    uri = str(tmp_path / "run.lease")
    create = lease_module.acquire

    def create_then_sigterm(*args, **kwargs):
        created = create(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)  # handled at the next line of Python in this thread
        return created

    monkeypatch.setattr(lease_module, "acquire", create_then_sigterm)
    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        with pytest.raises(Terminated), lease_module.hold_lease(uri, owner="a1"):
            pytest.fail("the block must not start after a SIGTERM")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert not os.path.exists(uri)


# --- One clock: the storage server's ------------------------------------------------------------

TAKE_LEASE = """
import sys
from components.errors import RunConflict
from components.io.lease import acquire
try:
    acquire(sys.argv[1], owner="skewed-host", ttl_s=20)
except RunConflict as error:
    print(error)
    sys.exit(2)
"""


@pytest.mark.parametrize("skew", ["+5m", "-5m"])
def test_a_host_whose_clock_is_off_neither_takes_a_live_gcs_lease_nor_keeps_a_dead_one(gcs_bucket, skew):
    """The taker runs under libfaketime: its clock is five minutes off, the storage server's is not."""
    if shutil.which("faketime") is None:
        pytest.fail("faketime is missing: `make tools` installs it")
    uri = lease_uri(storage.join(gcs_bucket, "scores"), "r-skew")
    holder = acquire(uri, owner="live-holder", ttl_s=20)
    take = ["faketime", "-f", skew, sys.executable, "-c", TAKE_LEASE, uri]
    refused = subprocess.run(take, capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "held by live attempt live-holder" in refused.stdout
    renew(holder)  # still the holder's

    dead = acquire(lease_uri(storage.join(gcs_bucket, "scores"), "r-dead"), owner="dead-holder", ttl_s=1)
    time.sleep(1.5)  # it stopped renewing: expired by the server's clock, whatever the taker's says
    taken = subprocess.run([*take[:-1], dead.uri], capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert taken.returncode == 0, taken.stdout + taken.stderr[-2000:]
    with pytest.raises(RunConflict, match="lost the lease to attempt skewed-host"):
        renew(dead)
    release(holder)
