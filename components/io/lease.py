"""One writer at a time: a create-only lease object with an owner and an expiry, kept alive by a heartbeat.

    with hold_lease(lease_uri(output, run_id), owner=attempt, ttl_s=60.0) as lease:
        ...                     # stage, then publish
        lease.confirm()         # before each publishing write: still ours, or RunConflict

The lease is a small JSON object `{"owner", "host", "pid", "ttl_s"}`. Its age is judged by one
clock: the storage's. On GCS, by the object's `updated` time (set by the server at each
renewal) against the server's own time (the creation time of a probe object), so a host whose
clock runs ahead or behind can neither take a live lease nor keep a dead one; locally, by the
file's modification time against this host's clock (one host, one clock).
- GCS: created with `if_generation_match=0`; renewed, taken over and released only with a
  precondition on the generation that was read, so of two takers of a stale lease exactly
  one wins, and a holder that lost its lease cannot overwrite the winner's.
- Local files: created with O_EXCL; renewal, takeover and release happen under an flock on
  the lease's folder (read, check, replace as one step).
A live lease of another owner is a RunConflict. An expired one (its holder was killed or
evicted and stopped renewing), or one whose holder's process is gone from this host, is
taken over without manual cleanup. The heartbeat renews the lease every ttl/3, so a holder
that is alive never lets it expire. A lease says who should write; the publishing writes
themselves are fenced by compare-and-swap (components/score/run.py), so a holder frozen past
its lease changes nothing when it resumes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator

from components.errors import InputError, RunConflict, termination_deferred
from components.io import storage

log = logging.getLogger(__name__)

LEASES_FOLDER = "_leases"
DEFAULT_TTL_S = 60.0  # a killed holder blocks its run id for at most this long
# Name a point of a fenced write sequence at which the process kills itself (SIGKILL) or freezes
# itself once (SIGSTOP, until a SIGCONT): tests only. They prove that a kill -9 between any two
# steps leaves readable, complete output, and that a holder frozen before a write and resumed
# after another one took over changes nothing.
KILL_POINT_VARIABLE = "FMNIST_KILL_AT"
FREEZE_POINT_VARIABLE = "FMNIST_FREEZE_AT"
_frozen_at: set[str] = set()
MAX_TTL_S = 3600.0  # a longer lease would let one dead holder block its run id for hours
_WAIT_POLL_S = 0.05  # how often a waiting taker asks again


def lease_uri(output: str, run_id: str) -> str:
    """The lease object of a run id below a scoring output root."""
    return storage.join(output, LEASES_FOLDER, f"{run_id}.json")


@dataclasses.dataclass
class Lease:
    """A lease we hold. `token` is what the next conditional write checks (GCS generation,
    or our own document locally)."""

    uri: str
    owner: str
    ttl_s: float
    token: object = None
    lost: str | None = None  # why the heartbeat found it gone, if it did

    def check(self) -> None:
        """RunConflict if the heartbeat found the lease lost (no storage call)."""
        if self.lost:
            raise RunConflict(self.lost)

    def confirm(self) -> None:
        """Renews the lease, or raises RunConflict when another attempt holds it now."""
        self.check()
        renew(self)


def check_ttl(ttl_s: float, flag: str) -> None:
    """InputError unless the TTL is a number of seconds a dead holder may block a run id for."""
    if not 0 < ttl_s <= MAX_TTL_S:  # also refuses nan and inf
        raise InputError(f"{flag} {ttl_s}: must be more than 0 and at most {MAX_TTL_S:.0f} seconds")


def _document(owner: str, ttl_s: float) -> bytes:
    return json.dumps({"owner": owner, "host": socket.gethostname(), "pid": os.getpid(), "ttl_s": ttl_s}).encode()


@dataclasses.dataclass(frozen=True)
class _Holder:
    owner: str
    host: str
    pid: int
    ttl_s: float
    age_s: float  # since its last renewal, by the storage's clock


def _parse(data: bytes, uri: str, age_s: float) -> _Holder:
    try:
        document = json.loads(data)
        ttl_s = float(document.get("ttl_s", DEFAULT_TTL_S))
        holder = _Holder(
            owner=str(document["owner"]),
            host=str(document.get("host", "")),
            pid=int(document.get("pid", 0)),
            ttl_s=min(ttl_s, MAX_TTL_S) if ttl_s == ttl_s else 0.0,  # nan: expired; longer: capped
            age_s=age_s,
        )
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError):
        # A torn or foreign lease object: treat it as expired, so the run id is never blocked forever.
        log.warning("%s: unreadable lease, treated as expired", uri)
        return _Holder(owner="", host="", pid=0, ttl_s=0.0, age_s=age_s)
    return holder


def _is_live(holder: _Holder) -> bool:
    """True while the holder renews its lease and, on this host, its process still exists: a
    holder killed here (kill -9) is known dead at once instead of after its lease expires."""
    if holder.age_s >= holder.ttl_s:
        return False
    if holder.host != socket.gethostname() or holder.pid <= 0:
        return True  # another machine cannot be asked: its renewals tell
    try:
        os.kill(holder.pid, 0)  # signal 0 only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _conflict(uri: str, holder: _Holder) -> RunConflict:
    left = max(0.0, holder.ttl_s - holder.age_s)
    return RunConflict(
        f"{uri}: held by live attempt {holder.owner} ({holder.host or '?'} pid "
        f"{holder.pid}, lease expires in {left:.0f} s); run again when it has finished"
    )


def _lost(lease: Lease, holder: _Holder | None) -> RunConflict:
    taker = f" to attempt {holder.owner} ({holder.host or '?'} pid {holder.pid})" if holder and holder.owner else ""
    return RunConflict(f"{lease.uri}: this attempt ({lease.owner}) lost the lease{taker}; it publishes nothing")


def acquire(uri: str, *, owner: str, ttl_s: float = DEFAULT_TTL_S) -> Lease:
    """Takes the lease: creates it, or takes over an expired one; RunConflict if another holds it."""
    lease = Lease(uri=uri, owner=owner, ttl_s=ttl_s)
    if uri.startswith(storage.GCS_SCHEME):
        _acquire_gcs(lease)
    else:
        _acquire_local(lease)
    return lease


def renew(lease: Lease) -> None:
    """Pushes the expiry ttl_s ahead; RunConflict if the lease is no longer ours."""
    if lease.uri.startswith(storage.GCS_SCHEME):
        _replace_gcs(lease, lease.token)
    else:
        with storage.folder_lock(lease.uri):
            current = _read_local(lease.uri)
            if current is None or current.owner != lease.owner:
                raise _lost(lease, current)
            storage.write_bytes(lease.uri, _document(lease.owner, lease.ttl_s))


def release(lease: Lease) -> None:
    """Gives the lease up, if it is still ours (never deletes another attempt's lease)."""
    if lease.uri.startswith(storage.GCS_SCHEME):
        from google.api_core.exceptions import NotFound, PreconditionFailed

        with contextlib.suppress(NotFound, PreconditionFailed):  # gone or taken over: not ours to delete
            storage.gcs_blob(lease.uri).delete(if_generation_match=lease.token, retry=storage.gcs_retry())
        return
    with storage.folder_lock(lease.uri):
        current = _read_local(lease.uri)
        if current is not None and current.owner == lease.owner:
            storage.delete(lease.uri)


@contextlib.contextmanager
def hold_lease(uri: str, *, owner: str, ttl_s: float = DEFAULT_TTL_S, wait_s: float = 0.0) -> Iterator[Lease]:
    """Holds the lease for the block, renewed by a heartbeat thread; released on the way out.

    With `wait_s`, a lease held by a live attempt is waited for (polled) up to that long
    before RunConflict: for short critical sections that every caller should get in turn.
    """
    lease, heartbeat, stop = None, None, threading.Event()
    deadline = time.monotonic() + wait_s
    try:
        while lease is None:
            try:
                # A SIGTERM while the lease is being created is raised once it is ours: the finally
                # below then releases it, instead of leaving it to expire.
                with termination_deferred():
                    lease = acquire(uri, owner=owner, ttl_s=ttl_s)
            except RunConflict:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(_WAIT_POLL_S)
        heartbeat = threading.Thread(target=_heartbeat, args=(lease, stop), name="fmnist-lease", daemon=True)
        heartbeat.start()
        yield lease
    finally:
        stop.set()
        if heartbeat is not None:
            heartbeat.join()
        if lease is not None:
            release(lease)


def _heartbeat(lease: Lease, stop: threading.Event) -> None:
    while not stop.wait(lease.ttl_s / 3):
        try:
            renew(lease)
        except RunConflict as error:
            lease.lost = str(error)
            log.error("%s", error)
            return
        except Exception as error:  # a transient storage failure: the next beat tries again
            log.warning("%s: lease renewal failed (%s: %s)", lease.uri, type(error).__name__, error)


# --- Local files ----------------------------------------------------------------------------


def _read_local(uri: str) -> _Holder | None:
    try:
        with open(uri, "rb") as file:
            age_s = time.time() - os.fstat(file.fileno()).st_mtime
            return _parse(file.read(4096), uri, age_s)
    except FileNotFoundError:
        return None


def _acquire_local(lease: Lease) -> None:
    try:
        # Create-only with the whole document at once (a hard link of a written temporary file):
        # a rival never reads a lease that exists but is still empty, and never takes it for abandoned.
        storage.write_bytes(lease.uri, _document(lease.owner, lease.ttl_s), if_absent=True)
        return
    except (storage.StorageConflictError, InputError):  # InputError: released before it could be compared
        pass
    with storage.folder_lock(lease.uri):
        current = _read_local(lease.uri)
        if current is not None and _is_live(current) and current.owner != lease.owner:
            raise _conflict(lease.uri, current) from None
        if current is not None:
            log.warning("%s: taking over the abandoned lease of %s", lease.uri, current.owner or "?")
        storage.write_bytes(lease.uri, _document(lease.owner, lease.ttl_s))  # atomic replace


# --- Google Cloud Storage -------------------------------------------------------------------


def _acquire_gcs(lease: Lease) -> None:
    from google.api_core.exceptions import NotFound, PreconditionFailed

    blob = storage.gcs_blob(lease.uri)
    try:
        _upload(blob, _document(lease.owner, lease.ttl_s), if_generation_match=0)
        lease.token = blob.generation
        return
    except PreconditionFailed:
        pass
    try:
        generation, current = _read_gcs(blob, lease.uri, with_age=True)
    except NotFound:  # released between our create and our read: try once more
        _upload(blob, _document(lease.owner, lease.ttl_s), if_generation_match=0)
        lease.token = blob.generation
        return
    if current.owner == lease.owner:  # a retried create that had succeeded
        lease.token = generation
        return
    if _is_live(current):
        raise _conflict(lease.uri, current)
    log.warning("%s: taking over the abandoned lease of %s", lease.uri, current.owner or "?")
    _replace_gcs(lease, generation)


def _replace_gcs(lease: Lease, generation: object) -> None:
    """Writes our lease over the generation we last saw; RunConflict if someone wrote in between."""
    from google.api_core.exceptions import NotFound, PreconditionFailed

    blob = storage.gcs_blob(lease.uri)
    try:
        _upload(blob, _document(lease.owner, lease.ttl_s), if_generation_match=generation)
    except PreconditionFailed:
        try:
            generation, current = _read_gcs(blob, lease.uri, with_age=False)
        except NotFound:
            raise _lost(lease, None) from None
        if current.owner != lease.owner:  # not a retried write of ours that had succeeded
            raise _lost(lease, current) from None
        lease.token = generation
        return
    lease.token = blob.generation


def _read_gcs(blob, uri: str, *, with_age: bool) -> tuple[object, _Holder]:
    """The lease's generation and holder (the content of exactly that generation); with_age, its
    age by the server's clock: the server's time now minus the server's time of the last write."""
    blob.reload(retry=storage.gcs_retry())
    generation, updated = blob.generation, blob.updated.timestamp()
    data = blob.download_as_bytes(if_generation_match=generation, retry=storage.gcs_retry())
    age_s = storage.gcs_server_time(uri) - updated if with_age else 0.0
    return generation, _parse(data[:4096], uri, age_s)


def _upload(blob, data: bytes, *, if_generation_match: object) -> None:
    blob.upload_from_string(
        data, content_type="application/json", if_generation_match=if_generation_match, retry=storage.gcs_retry()
    )


def publish_point(name: str) -> None:
    """A named point of a write sequence under a lease (scoring's publish, the table migration,
    a change of a model root's LATEST): the process kills or freezes itself there when a test
    asks for it through the environment."""
    if os.environ.get(KILL_POINT_VARIABLE) == name:
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get(FREEZE_POINT_VARIABLE) == name and name not in _frozen_at:
        _frozen_at.add(name)
        os.kill(os.getpid(), signal.SIGSTOP)
