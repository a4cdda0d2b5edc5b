"""The model registry contract: versioned model folders and the published `LATEST` pointer.

    <model_root>/<model_version>/model.keras, saved_model/, metrics.json, ...
    <model_root>/LATEST          one line: the model_version that scoring uses

Only a model that passed the quality gate is ever named by LATEST, and `resolve` refuses a
version folder whose metrics.json does not record a passed gate, or records the SHA-256 of
another model.keras than the one in the folder (a swapped or damaged file is never scored
under another model's gate). A metrics.json without `model_sha256` (written before the
hash was recorded) is refused too, with the one-line fix in the message.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import logging
import os
import re
import secrets

from components.contracts.model_metrics import ModelMetrics
from components.contracts.summary import ContractError, _JsonRecord
from components.errors import InputError, RunConflict
from components.io import lease, storage

log = logging.getLogger(__name__)

LATEST_NAME = "LATEST"
MODEL_FILE = "model.keras"
METRICS_FILE = "metrics.json"
SAVED_MODEL_DIR = "saved_model"  # signatures serve_png (PNG bytes) and serve_images (floats)
LABELS_FILE = "labels.json"  # class names, index = class id
CONFUSION_MATRIX_FILE = "confusion_matrix.png"
RELIABILITY_FILE = "reliability.png"  # calibration: accuracy against confidence, before and after
MODEL_CARD_FILE = "model_card.md"
VERSION_SUMMARY_FILE = "version.json"  # the version's `model list` row on one JSON line (BigQuery's models view)
HISTORY_NAME = "LATEST.history"  # one JSON line per change of LATEST, oldest first; only ever appended
HISTORY_MAX_BYTES = 16 * 1024 * 1024  # ~80,000 changes
# The change of LATEST in progress, written before LATEST moves and removed once its history
# line is written: a writer killed between the two leaves it, and the change is still told.
PENDING_NAME = "LATEST.pending"
PUBLISH_WAIT_S = 120.0  # how long a change of LATEST waits for another one in progress
ANY_VERSION = object()  # publish(expected_from=...): whatever LATEST names
# LATEST holds one version name (~25 bytes); a file far larger is not a pointer and is not read whole.
POINTER_MAX_BYTES = 1024
# metrics.json is tens of kilobytes (history, reliability bins); a cap keeps a stray huge file out of memory.
METRICS_MAX_BYTES = 16 * 1024 * 1024
# A pointer's line: one token of visible ASCII (training writes 20261129T043000Z-1a2b3c4d);
# storage.child then refuses one that would leave the model root.
POINTER_LINE = re.compile(r"[\x21-\x7e]{1,128}")


@dataclasses.dataclass(frozen=True)
class ModelRef:
    """A resolved, scoreable model version."""

    version: str
    uri: str  # the version folder
    sha256: str  # of the model.keras that metrics.json evaluated

    @property
    def keras_uri(self) -> str:
        return storage.join(self.uri, MODEL_FILE)


@dataclasses.dataclass(frozen=True, kw_only=True)
class LatestChange(_JsonRecord):
    """One line of LATEST's history: which command moved it from which version to which, and why."""

    at: str  # UTC, ISO 8601, seconds
    from_version: str | None  # None: nothing was published before
    to_version: str
    command: str  # train, promote, rollback
    reason: str


def publish(
    model_root: str, version: str, *, command: str, reason: str, expected_from: str | None | object = ANY_VERSION
) -> LatestChange | None:
    """Makes `version` the model that scoring uses and appends the change to the history, as one step.

    Changes of LATEST under one model root happen one at a time (a lease below the root, waited
    for); LATEST is read inside it and rewritten only over exactly what was read (the object's
    generation on GCS; the lease's compare-and-swap locally), so two publishers never leave a torn
    or unexpected LATEST, and the history lists the changes in the order they happened.
    `expected_from`: the version the caller's decision rests on (training's champion); when
    LATEST names another by now, RunConflict and nothing changes. Returns the change, or None
    when LATEST already names `version` (nothing to change, nothing appended).
    """
    storage.child(model_root, version)  # a plain name inside the root
    latest_uri = storage.join(model_root, LATEST_NAME)
    history_uri, pending_uri = storage.join(model_root, HISTORY_NAME), storage.join(model_root, PENDING_NAME)
    with lease.hold_lease(
        storage.join(model_root, lease.LEASES_FOLDER, f"{LATEST_NAME}.json"),
        owner=secrets.token_hex(8),
        wait_s=PUBLISH_WAIT_S,
    ) as held:
        seen = storage.read_snapshot(latest_uri, max_bytes=POINTER_MAX_BYTES)
        current = _version_in(latest_uri, seen.data)
        if pending := _pending_change(model_root):
            if _unrecorded(pending, _recorded_history(model_root), current):
                _append_history(history_uri, pending)  # an earlier writer's change, killed before its line
            storage.delete(pending_uri)  # told now, or never made: nothing left to tell
        if current == version:
            return None
        if expected_from is not ANY_VERSION and current != expected_from:
            raise RunConflict(
                f"{latest_uri}: now names {current or 'nothing'}, not the {expected_from or 'nothing'} this decision "
                f"compared against; {version} not published (run again)"
            )
        change = LatestChange(
            at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            from_version=current,
            to_version=version,
            command=command,
            reason=reason,
        )
        held.confirm()  # still ours: a holder frozen past its lease changes nothing
        storage.write_bytes(pending_uri, change.to_json().encode())
        lease.publish_point("latest-pending")
        try:  # over exactly what was read: the generation on GCS, compare-and-swap under an flock locally
            storage.replace_if_unchanged(seen, f"{version}\n".encode())
        except storage.StorageConflictError as error:
            raise RunConflict(f"{error}; {version} not published") from None
        lease.publish_point("latest-moved")
        _append_history(history_uri, change)
        lease.publish_point("latest-told")
        storage.delete(pending_uri)
    log.info("%s: %s -> %s (%s: %s)", latest_uri, current, version, command, reason)
    return change


def read_history(model_root: str) -> list[LatestChange]:
    """Every change of LATEST under a model root, oldest first; [] before the first.

    A change whose writer was killed after moving LATEST and before writing its line is
    included (from the pending change it left); the next change of LATEST writes that line.
    """
    history = _recorded_history(model_root)
    pending = _pending_change(model_root)
    if pending and _unrecorded(pending, history, latest_version(model_root)):
        return [*history, pending]
    return history


def _pending_change(model_root: str) -> LatestChange | None:
    """The change a writer of LATEST left in LATEST.pending (None: there is none)."""
    uri = storage.join(model_root, PENDING_NAME)
    data = storage.read_snapshot(uri, max_bytes=HISTORY_MAX_BYTES).data  # one line of the history
    if data is None:
        return None
    try:
        return LatestChange.from_json(data)
    except ContractError as error:
        raise InputError(f"{uri}: not a change of {LATEST_NAME} ({error})") from None


def _unrecorded(pending: LatestChange, history: list[LatestChange], current: str | None) -> bool:
    """Whether a pending change happened without its history line: LATEST (`current`) names its
    version and the history does not lead there. A pending change that LATEST does not name
    never happened (its writer was stopped before moving LATEST, or lost the race for it), and
    one the history leads to is told already."""
    told = bool(history) and history[-1].to_version == pending.to_version
    return current == pending.to_version and not told


def _recorded_history(model_root: str) -> list[LatestChange]:
    uri = storage.join(model_root, HISTORY_NAME)
    if not storage.exists(uri):
        return []
    changes = []
    for number, line in enumerate(storage.read_bytes(uri, max_bytes=HISTORY_MAX_BYTES).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            changes.append(LatestChange.from_json(line))
        except ContractError as error:
            raise InputError(f"{uri}: line {number} is not a change of {LATEST_NAME} ({error})") from None
    return changes


def _version_in(uri: str, data: bytes | None) -> str | None:
    """The version a pointer's bytes name (None: no pointer, or an empty one)."""
    return None if data is None else parse_version_pointer(uri, data)


def _append_history(history_uri: str, change: LatestChange) -> None:
    line = f"{change.to_json()}\n".encode()
    if not history_uri.startswith(storage.GCS_SCHEME):
        os.makedirs(os.path.dirname(os.path.abspath(history_uri)), exist_ok=True)
        with open(history_uri, "ab") as file:  # O_APPEND: earlier lines are never rewritten
            file.write(line)
            file.flush()
            os.fsync(file.fileno())
        return
    # An object cannot grow in place: rewrite it with the line added, over exactly what was read.
    seen = storage.read_snapshot(history_uri, max_bytes=HISTORY_MAX_BYTES)
    try:
        storage.replace_if_unchanged(seen, (seen.data or b"") + line)
    except storage.StorageConflictError as error:
        raise RunConflict(f"{error}; the change to {change.to_version} is not in the history") from None


def latest_version(model_root: str) -> str | None:
    """The published version under a model root, or None when nothing is published."""
    pointer = storage.join(model_root, LATEST_NAME)
    if not storage.exists(pointer):
        return None
    return read_version_pointer(pointer)


def read_version_pointer(uri: str) -> str | None:
    """The version a pointer file names; None when it is empty.

    A pointer is one short line of text written by this registry. Anything else (a symbolic
    link, a large file, bytes that are not UTF-8, a line that is no version name) is an
    InputError naming the file and the problem, never quoting its content.
    """
    return parse_version_pointer(uri, storage.read_bytes(uri, max_bytes=POINTER_MAX_BYTES))


def parse_version_pointer(uri: str, data: bytes) -> str | None:
    """The version a pointer's bytes name (read_version_pointer); `uri` names it in errors."""
    try:
        text = data.decode("utf-8", errors="strict").strip()
    except UnicodeDecodeError:
        raise InputError(f"{uri}: not UTF-8 text; a pointer names one model version") from None
    if not text:
        return None
    if not POINTER_LINE.fullmatch(text):
        raise InputError(f"{uri}: not one line naming a model version (printable characters, no spaces)")
    return text


def resolve(model: str, *, check_file: bool = True) -> ModelRef:
    """A model version folder, or a model root (then its published LATEST), as a ModelRef.

    `check_file=False` leaves the model file's hash to the caller that reads the file anyway
    (scoring's load_model checks `ref.sha256` on the bytes it deserializes: one read).
    """
    if storage.exists(storage.join(model, MODEL_FILE)):
        ref = ModelRef(version=storage.basename(model), uri=model.rstrip("/"), sha256="")
    else:
        version = latest_version(model)
        if version is None:
            raise InputError(
                f"{model}: neither a model version folder ({MODEL_FILE}) nor a model root with a published {LATEST_NAME}"
            )
        ref = ModelRef(version=version, uri=storage.child(model, version), sha256="")  # LATEST never leaves the root
        if not storage.exists(ref.keras_uri):
            raise InputError(f"{ref.keras_uri}: {LATEST_NAME} names a version whose model file is missing")
    metrics = read_metrics(ref.uri)
    _require_passed_gate(ref, metrics)
    ref = dataclasses.replace(ref, sha256=_recorded_sha256(ref, metrics))
    if check_file:
        actual = model_sha256(storage.read_bytes(ref.keras_uri))
        require_evaluated_model(ref.keras_uri, expected_sha256=ref.sha256, actual_sha256=actual)
    return ref


def read_metrics(version_uri: str) -> ModelMetrics:
    """A version's metrics.json; a missing or damaged one is an InputError naming the file."""
    metrics_uri = storage.join(version_uri, METRICS_FILE)
    if not storage.exists(metrics_uri):
        raise InputError(f"{metrics_uri}: missing; an unevaluated model is never scored with")
    try:
        return ModelMetrics.from_json(storage.read_bytes(metrics_uri, max_bytes=METRICS_MAX_BYTES))
    except ContractError as error:  # not JSON, or not the metrics contract
        raise InputError(f"{metrics_uri}: not a valid metrics file ({type(error).__name__}: {error})") from error


def _require_passed_gate(ref: ModelRef, metrics: ModelMetrics) -> None:
    gate = metrics.quality_gate
    if gate.passed is not True:
        reason = "no gate result" if gate.reason is None else gate.reason
        raise InputError(f"{ref.uri}: model failed its quality gate ({reason}); not scored with")
    if not metrics.gates_passed:
        reason = metrics.champion_comparison.reason
        raise InputError(f"{ref.uri}: model failed its champion comparison ({reason}); not scored with")


def _recorded_sha256(ref: ModelRef, metrics: ModelMetrics) -> str:
    """The SHA-256 of the model file that metrics.json evaluated."""
    expected = metrics.model_sha256
    if expected is None:
        raise InputError(
            f"{storage.join(ref.uri, METRICS_FILE)}: records no model_sha256, so nothing ties it to {MODEL_FILE}; "
            f'retrain, or add "model_sha256": "<sha256sum of the {MODEL_FILE} it evaluated>" to it'
        )
    return str(expected)


def require_evaluated_model(keras_uri: str, *, expected_sha256: str, actual_sha256: str) -> None:
    """The model file must be the one metrics.json evaluated (byte for byte)."""
    if actual_sha256 != expected_sha256:
        raise InputError(
            f"{keras_uri}: SHA-256 {actual_sha256[:12]}… is not the {expected_sha256[:12]}… that metrics.json evaluated "
            "(a replaced or damaged model file); not scored with"
        )


def model_sha256(data: bytes) -> str:
    """The hash metrics.json records for model.keras (hex SHA-256 of the file's bytes)."""
    return hashlib.sha256(data).hexdigest()
