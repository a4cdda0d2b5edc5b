"""Dataset preparation: raw IDX files -> validated, deterministic PNG image shards + manifest."""
from __future__ import annotations

import contextlib
import datetime
import json
import logging
import multiprocessing
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from components import storage
from components.constants import (
    CLASS_NAMES,
    DEFAULT_SOURCE,
    IDX_FILES,
    IMAGE_SIZE,
    MANIFEST_NAME,
    PUBLISHED_SHA256,
    SHARD_SCHEMA_VERSION,
    tool_version,
)
from components.errors import InputError, RunConflict
from components.idx import IdxFile, load_split
from components.shards import SHARD_NAME_RE, ShardTask, class_histogram, shard_name, write_shard

log = logging.getLogger(__name__)


def prepare(
    *,
    output: str,
    source: str = DEFAULT_SOURCE,
    shards_per_split: int = 8,
    overwrite: bool = False,
    allow_unknown_source: bool = False,
    workers: int | None = None,
) -> dict:
    """Turns the four IDX files below `source` into train/test shards below `output`.

    Returns the manifest, which is written last. Same input -> byte-identical shards.
    """
    if shards_per_split < 1:
        raise InputError(f"--shards-per-split must be at least 1, got {shards_per_split}")
    refuse_complete_output(output, overwrite=overwrite)  # early: before the sources are read
    splits = {split: load_split(source, *names) for split, names in IDX_FILES.items()}
    source_files = _check_sources(splits, allow_unknown_source=allow_unknown_source)
    storage.ensure_writable(output)
    with exclusive_output(output):
        refuse_complete_output(output, overwrite=overwrite)  # again: a run may have finished meanwhile
        return _write_data_set(output, source, splits, source_files, shards_per_split, workers)


def _write_data_set(output: str, source: str, splits: dict, source_files: dict, shards_per_split: int,
                    workers: int | None) -> dict:
    tasks = {
        split: shard_tasks(output, split, [f"{split}-{i:05d}" for i in range(len(labels.array))],
                           images.array, labels.array, shards_per_split)
        for split, (images, labels) in splits.items()
    }
    storage.delete(storage.join(output, MANIFEST_NAME))  # unpublish before rewriting
    entries = iter(run_parallel(write_shard, [task for group in tasks.values() for task in group], workers=workers))
    manifest = new_manifest(
        source={"uri": source, "files": source_files},
        splits={
            split: {
                "num_records": len(labels.array),
                "class_histogram": class_histogram(labels.array),
                "shards": [next(entries) for _ in tasks[split]],
            }
            for split, (_, labels) in splits.items()
        },
    )
    publish_manifest(output, manifest)
    return manifest


def shard_tasks(
    output: str, split: str, image_ids: Sequence[str], images: np.ndarray, labels: np.ndarray | None, count: int
) -> list[ShardTask]:
    """Cuts a split into `count` contiguous shards (order kept: deterministic output)."""
    return [
        ShardTask(
            uri=storage.join(output, shard_name(split, index, count)),
            image_ids=[image_ids[i] for i in positions],
            images=images[positions],
            labels=None if labels is None else labels[positions],
        )
        for index, positions in enumerate(np.array_split(np.arange(len(image_ids)), count))
    ]


def manifest_summary(output: str, manifest: dict) -> dict:
    """What a run reports on stdout: counts and where things are, not the whole manifest."""
    return {
        "manifest": storage.join(output, MANIFEST_NAME),
        "splits": {split: {"records": entry["num_records"], "shards": len(entry["shards"])}
                   for split, entry in manifest["splits"].items()},
    }


def new_manifest(*, source: dict, splits: dict) -> dict:
    """The manifest of a data set (DESIGN.md, image shards)."""
    return {
        "schema_version": SHARD_SCHEMA_VERSION,
        "tool": {"name": "fmnist-jobs", "version": tool_version()},
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "image": {"height": IMAGE_SIZE, "width": IMAGE_SIZE, "channels": 1, "format": "png"},
        "class_names": list(CLASS_NAMES),
        "source": source,
        "splits": splits,
    }


def refuse_complete_output(output: str, *, overwrite: bool) -> None:
    """A complete data set (one with a manifest) is replaced only when asked to."""
    if storage.exists(storage.join(output, MANIFEST_NAME)) and not overwrite:
        raise InputError(f"{output}: already holds a complete data set (manifest.json); pass --overwrite to replace it")


def publish_manifest(output: str, manifest: dict) -> None:
    """Removes shards of earlier runs that the new manifest does not list, then writes it.

    The writer removed any earlier manifest before writing shards, so the manifest is created
    only if still absent: a concurrent run that published first makes this one fail with
    StorageConflictError instead of silently replacing its manifest.
    """
    listed = {shard["name"] for split in manifest["splits"].values() for shard in split["shards"]}
    for uri in storage.list_prefix(output):
        name = storage.basename(uri)
        if SHARD_NAME_RE.match(name) and name not in listed and storage.join(output, name) == uri:
            storage.delete(uri)
    storage.write_bytes(storage.join(output, MANIFEST_NAME), json.dumps(manifest, indent=2).encode(), if_absent=True)
    log.info("published %s with %d shards", storage.join(output, MANIFEST_NAME), len(listed))


LOCK_NAME = ".prepare.lock"
# A live holder renews its lock every LOCK_RENEW_S; a lock not renewed for LOCK_TTL_S belongs to
# an attempt that died without releasing it (kill -9, an evicted pod), and the next one takes it.
LOCK_TTL_S = 120.0
LOCK_RENEW_S = 30.0


@contextlib.contextmanager
def exclusive_output(output: str) -> Iterator[None]:
    """One data-set writer per output at a time, or RunConflict (exit 2) before anything is touched.

    Two runs writing the same shard names would otherwise mix or delete each other's shards
    under a published manifest. The lock is a create-only object (a generation precondition
    on GCS, O_EXCL locally) naming its holder; it is released in `finally` (SIGTERM included)
    and taken over once its holder is provably gone: its process has exited (same host) or
    it stopped renewing the lock.
    """
    lock = _OutputLock(output)
    try:  # a SIGTERM may land between creating the lock and returning from acquire()
        lock.acquire()
        yield
    finally:
        lock.release()  # deletes the lock only if it is this attempt's


class _OutputLock:
    """The lock object of one output and this attempt's hold on it (see exclusive_output)."""

    def __init__(self, output: str):
        self.uri = storage.join(output, LOCK_NAME)
        self.attempt = secrets.token_hex(8)
        self._takeover_uri: str | None = None
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew, name="prepare-lock", daemon=True)

    def _record(self) -> bytes:
        return json.dumps({"attempt": self.attempt, "host": socket.gethostname(), "pid": os.getpid(),
                           "expires_at": time.time() + LOCK_TTL_S}).encode()

    def acquire(self) -> None:
        for _ in range(3):  # a lock released between our create and our read: try again
            try:
                storage.write_bytes(self.uri, self._record(), if_absent=True)
                break
            except storage.StorageConflictError:
                held = self._held()
            if held is None:
                continue
            if not _is_abandoned(held):
                raise RunConflict(
                    f"{storage.dirname(self.uri)}: another prepare is writing this output ({held.get('host')} "
                    f"pid {held.get('pid')}, lock {LOCK_NAME}); run again when it has finished"
                )
            # Only one attempt may take over a given abandoned lock: the one that creates this marker.
            takeover = f"{self.uri}.taken-{held.get('attempt')}"
            try:
                storage.write_bytes(takeover, self.attempt.encode(), if_absent=True)
            except storage.StorageConflictError:
                raise RunConflict(f"{storage.dirname(self.uri)}: another prepare is taking over this output") from None
            self._takeover_uri = takeover
            storage.write_bytes(self.uri, self._record())
            log.warning("took over %s from %s pid %s, which stopped without releasing it",
                        self.uri, held.get("host"), held.get("pid"))
            break
        else:
            raise RunConflict(f"{self.uri}: cannot be created or read; is it a folder?")
        self._renewer.start()

    def release(self) -> None:
        self._stop.set()
        if self._renewer.is_alive():
            self._renewer.join()
        held = self._held()
        if held is not None and held.get("attempt") == self.attempt:
            storage.delete(self.uri)
        if self._takeover_uri:
            storage.delete(self._takeover_uri)

    def _held(self) -> dict | None:
        """The current lock record; None when there is none. An unreadable one counts as abandoned."""
        try:
            record = json.loads(storage.read_bytes(self.uri))
        except InputError:
            return None
        except ValueError:
            return {"expires_at": 0}
        return record if isinstance(record, dict) else {"expires_at": 0}

    def _renew(self) -> None:
        while not self._stop.wait(LOCK_RENEW_S):
            try:
                held = self._held()
                if held is None or held.get("attempt") != self.attempt:
                    log.warning("%s is no longer held by this run", self.uri)
                    return
                storage.write_bytes(self.uri, self._record())
            except Exception as error:  # a missed renewal is retried next round; the work goes on
                log.warning("could not renew %s: %s", self.uri, error)


def _is_abandoned(held: dict) -> bool:
    """True when the lock's holder has stopped renewing it or its process is gone (same host)."""
    if float(held.get("expires_at", 0)) < time.time():
        return True
    pid = held.get("pid")
    if held.get("host") != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists, under another user
        return False
    return False


def _check_sources(splits: dict[str, tuple[IdxFile, IdxFile]], *, allow_unknown_source: bool) -> dict:
    files = {}
    for split, pair in splits.items():
        for idx_file, name in zip(pair, IDX_FILES[split]):
            published = PUBLISHED_SHA256[name] == idx_file.sha256
            if not published and not allow_unknown_source:
                raise InputError(
                    f"{idx_file.uri}: SHA-256 {idx_file.sha256[:12]}… of the decompressed content is not "
                    "the published Fashion-MNIST; pass --allow-unknown-source for a custom data set"
                )
            files[name] = {"uri": idx_file.uri, "sha256": idx_file.sha256, "published": published}
    return files


def run_parallel(function: Callable, tasks: Sequence, *, workers: int | None = None) -> list:
    """Maps `function` over tasks in worker processes (all cores by default), keeping order.

    'spawn' rather than 'fork': TensorFlow and the GCS client hold threads and locks that a
    forked child would inherit in an undefined state.
    """
    workers = min(workers or os.cpu_count() or 1, len(tasks))
    if workers <= 1:
        return [function(task) for task in tasks]
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        return pool.map(function, tasks, chunksize=1)

