"""Dataset preparation: raw IDX files -> validated, deterministic PNG image shards + manifest."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import os
import secrets
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from components.constants import DEFAULT_SOURCE, IDX_FILES, MANIFEST_NAME, PUBLISHED_SHA256
from components.contracts.manifest import Manifest, ShardEntry, SplitEntry
from components.contracts.parameters import flag_of, parameter
from components.contracts.shards import SHARD_NAME_RE, ShardTask, class_histogram, encode_shard, shard_entry, shard_name
from components.errors import InputError, RunConflict
from components.io import storage
from components.io.idx import IdxFile, load_split
from components.io.lease import hold_lease, publish_point

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class PrepareParameters:
    """`fmnist prepare`: the raw data set -> image shards and their manifest."""

    output: str = parameter(help="where the shards and manifest.json go", location=True)
    source: str = parameter(
        DEFAULT_SOURCE, help="folder, gs:// or https:// prefix with the IDX files", location=True, tuning=True
    )
    shards_per_split: int = parameter(8, help="shards per split", tuning=True)
    overwrite: bool = parameter(False, help="replace a complete data set at --output")
    allow_unknown_source: bool = parameter(False, help="accept IDX files whose content is not the published data set")
    workers: int | None = parameter(None, help="encoding processes", default_help="all cores")


def prepare(
    *,
    output: str,
    source: str = PrepareParameters.source,
    shards_per_split: int = PrepareParameters.shards_per_split,
    overwrite: bool = PrepareParameters.overwrite,
    allow_unknown_source: bool = PrepareParameters.allow_unknown_source,
    workers: int | None = PrepareParameters.workers,
) -> Manifest:
    """Turns the four IDX files below `source` into train/test shards below `output`.

    Returns the manifest, which is written last. Same input -> byte-identical shards.
    """
    if shards_per_split < 1:
        raise InputError(f"{flag_of('shards_per_split')} must be at least 1, got {shards_per_split}")
    refuse_complete_output(output, overwrite=overwrite)  # early: before the sources are read
    splits = {split: load_split(source, *names) for split, names in IDX_FILES.items()}
    source_files = _check_sources(splits, allow_unknown_source=allow_unknown_source)
    storage.ensure_writable(output)
    with exclusive_output(output):
        refuse_complete_output(output, overwrite=overwrite)  # again: a run may have finished meanwhile
        return _write_data_set(output, source, splits, source_files, shards_per_split, workers)


def _write_data_set(
    output: str, source: str, splits: dict, source_files: dict, shards_per_split: int, workers: int | None
) -> Manifest:
    tasks = {
        split: shard_tasks(
            output, split, [f"{split}-{i:05d}" for i in range(len(labels.array))], images.array, labels.array, shards_per_split
        )
        for split, (images, labels) in splits.items()
    }
    with OutputFence(output) as fence:
        fence.unpublish()
        entries = iter(fence.write_shards([task for group in tasks.values() for task in group], workers=workers))
        manifest = Manifest.new(
            source={"uri": source, "files": source_files},
            splits={
                split: SplitEntry(
                    num_records=len(labels.array),
                    class_histogram=class_histogram(labels.array),
                    shards=[next(entries) for _ in tasks[split]],
                )
                for split, (_, labels) in splits.items()
            },
        )
        publish_manifest(output, manifest, fence)
    return manifest


def shard_tasks(
    output: str,
    split: str,
    image_ids: Sequence[str],
    images: np.ndarray,
    labels: np.ndarray | None,
    count: int,
    *,
    image_uris: Sequence[str] | None = None,
) -> list[ShardTask]:
    """Cuts a split into `count` contiguous shards (order kept: deterministic output)."""
    return [
        ShardTask(
            uri=storage.join(output, shard_name(split, index, count)),
            image_ids=[image_ids[i] for i in positions],
            images=images[positions],
            labels=None if labels is None else labels[positions],
            image_uris=None if image_uris is None else [image_uris[i] for i in positions],
        )
        for index, positions in enumerate(np.array_split(np.arange(len(image_ids)), count))
    ]


def manifest_summary(output: str, manifest: Manifest) -> dict:
    """What a run reports on stdout: counts and where things are, not the whole manifest."""
    return {
        "manifest": storage.join(output, MANIFEST_NAME),
        "splits": {
            split: {"records": entry.num_records, "shards": len(entry.shards)} for split, entry in manifest.splits.items()
        },
    }


def refuse_complete_output(output: str, *, overwrite: bool) -> None:
    """A complete data set (one with a manifest) is replaced only when asked to."""
    if storage.exists(storage.join(output, MANIFEST_NAME)) and not overwrite:
        raise InputError(f"{output}: already holds a complete data set (manifest.json); pass --overwrite to replace it")


def publish_manifest(output: str, manifest: Manifest, fence: OutputFence | None = None) -> None:
    """Removes shards of earlier runs that the new manifest does not list (each only if still as
    the run's `fence` found it; by default, as found now), then writes it.

    The writer removed any earlier manifest before writing shards, so the manifest is created
    only if still absent: a concurrent run that published first makes this one fail with
    StorageConflictError instead of silently replacing its manifest.
    """
    listed = manifest.shard_names()
    fence = fence or OutputFence(output)
    for name in fence.names():
        if SHARD_NAME_RE.match(name) and name not in listed:
            publish_point("prepare-removal")
            fence.remove(name)
    publish_point("prepare-manifest")
    storage.write_bytes(storage.join(output, MANIFEST_NAME), manifest.to_bytes(), if_absent=True)
    log.info("published %s with %d shards", storage.join(output, MANIFEST_NAME), len(listed))


class OutputFence:
    """The files right in a data set's output as this run found them once it held the output.

    Every write and removal of the run is conditional on the file being still as found
    (storage.write_if_version, delete_if_version): a run paused past its lease (a VM pause,
    SIGSTOP) that resumes after another run took the output over changes nothing the other
    one wrote. Its first such write fails; leaving the `with` block on that failure withdraws
    the files the run created, where they are still as it wrote them, and it stops (exit 2,
    one line).
    """

    def __init__(self, output: str) -> None:
        self._output = output
        found = storage.versions_below(output).items()
        # Only the files right in the output (a deeper one is no file of the data set).
        self._found = {storage.basename(uri): version.tag for uri, version in found if storage.dirname(uri) == output.rstrip("/")}
        self._created: list[storage.Version] = []  # files this run wrote where it had found none

    def __enter__(self) -> OutputFence:
        return self

    def __exit__(self, error_type, error, traceback) -> None:
        if error_type is not None and issubclass(error_type, storage.StorageConflictError):
            self.withdraw()

    def names(self) -> list[str]:
        """The files found, by name."""
        return sorted(self._found)

    def version(self, name: str) -> storage.Version:
        return storage.Version(storage.join(self._output, name), self._found.get(name))

    def unpublish(self) -> None:
        """Removes the manifest found (the data set is incomplete until the new one is written)."""
        publish_point("prepare-unpublish")
        self.remove(MANIFEST_NAME)

    def write_shards(self, tasks: Sequence[ShardTask], *, workers: int | None) -> list[ShardEntry]:
        """Encodes and writes the shards in worker processes, each over the file found at its name."""
        written = run_parallel(
            write_fenced_shard, [(task, self.version(storage.basename(task.uri))) for task in tasks], workers=workers
        )
        refused = []
        for result in written:
            if isinstance(result, str):
                refused.append(result)
            else:
                self._wrote(result[1])
        if refused:
            raise storage.StorageConflictError(refused[0])
        return [entry for entry, _ in written]

    def write(self, name: str, data: bytes) -> None:
        self._wrote(storage.write_if_version(self.version(name), data))

    def remove(self, name: str) -> None:
        storage.delete_if_version(self.version(name))

    def withdraw(self) -> None:
        """Removes the files this run created where they are still as it wrote them."""
        for version in self._created:
            with contextlib.suppress(storage.StorageConflictError):  # the other run's now
                storage.delete_if_version(version)

    def _wrote(self, version: storage.Version) -> None:
        if self._found.get(storage.basename(version.uri)) is None:
            self._created.append(version)


def write_fenced_shard(task_and_found: tuple[ShardTask, storage.Version]) -> tuple[ShardEntry, storage.Version] | str:
    """Encodes a shard and writes it only over the file version found (in a worker process): its
    manifest entry and the version written, or why it was not written. A refusal is returned,
    not raised, so that the other workers' writes are still known to the run."""
    task, found = task_and_found
    data = encode_shard(task)
    publish_point("prepare-shard")
    try:
        return shard_entry(task, data), storage.write_if_version(found, data)
    except storage.StorageConflictError as refused:
        return str(refused)


LOCK_NAME = ".prepare.lock"
# A live writer renews its lease every LOCK_TTL_S / 3; a writer that died without releasing it
# (kill -9, an evicted pod) is known dead at once on this host, elsewhere once it expires.
LOCK_TTL_S = 120.0


@contextlib.contextmanager
def exclusive_output(output: str) -> Iterator[None]:
    """One data-set writer per output at a time, or RunConflict (exit 2) before anything is touched.

    Two runs writing the same shard names would otherwise mix or delete each other's shards
    under a published manifest. The lock is the run lease of components.io.lease: a create-only
    object naming its holder, released in `finally` (SIGTERM included), taken over once its
    holder is provably gone.
    """
    with hold_lease(storage.join(output, LOCK_NAME), owner=secrets.token_hex(8), ttl_s=LOCK_TTL_S) as lease:
        try:
            yield
        except storage.StorageConflictError as conflict:  # a fenced write found another run's file
            lost = f" ({lease.lost})" if lease.lost else ""
            raise RunConflict(f"{conflict}: another run took {output} over{lost}; this one stops") from None


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
