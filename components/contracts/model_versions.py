"""The model versions below a root, and the commands that move LATEST by hand: promote, roll back.

    fmnist model list --model-root runs/local/models
    fmnist model promote --model-root runs/local/models 20261129T043000Z-1a2b3c4d
    fmnist model rollback --model-root runs/local/models

One row per version folder that has a metrics.json (`ModelVersionRow`: the columns of `model
list` and of the analysts' `models` view). `promote` accepts only a version whose metrics.json
passed its gates and whose model.keras is the file it evaluated; `rollback` returns to the
version that was published before the current one, replaying LATEST's history (a rollback
undoes one publish, so two rollbacks go back two). Both change LATEST through
`registry.publish`: one at a time, over what was read, one history line each.
"""

from __future__ import annotations

import dataclasses
import json
import logging

from components.contracts import registry
from components.contracts.parameters import parameter
from components.errors import InputError
from components.io import storage

log = logging.getLogger(__name__)

_MODEL_ROOT_HELP = "folder or gs:// prefix of the model registry (version folders + LATEST)"


@dataclasses.dataclass(frozen=True)
class ListParameters:
    """`fmnist model list`: every version with its figures and verdict, and LATEST's history."""

    model_root: str = parameter(help=_MODEL_ROOT_HELP, location=True)


@dataclasses.dataclass(frozen=True)
class PromoteParameters:
    """`fmnist model promote`: make a version that passed its gates the one scoring uses."""

    model_root: str = parameter(help=_MODEL_ROOT_HELP, location=True)
    version: str = parameter(help="the version folder's name", positional=True)
    reason: str = parameter("promoted by hand", help="why, for LATEST's history")


@dataclasses.dataclass(frozen=True)
class RollbackParameters:
    """`fmnist model rollback`: back to the version published before the current one."""

    model_root: str = parameter(help=_MODEL_ROOT_HELP, location=True)
    reason: str = parameter("rolled back by hand", help="why, for LATEST's history")


@dataclasses.dataclass(frozen=True)
class ResolveParameters:
    """`fmnist model resolve`: the version LATEST names now, with its URI and figures (once per pipeline run)."""

    model_root: str = parameter(help=_MODEL_ROOT_HELP, location=True)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelVersionRow:
    """One version as `model list` and the `models` view show it."""

    model_version: str
    test_accuracy: float | None
    test_ece: float | None
    architecture: str | None
    trained_at: str | None  # UTC, ISO 8601
    verdict: str  # passed, forced, failed quality gate, failed champion gate
    champion_version: str | None  # what it was compared with (None: no champion)
    is_latest: bool
    manifest_digest: str | None  # the data set it was trained on
    model_uri: str


def verdict_of(metrics) -> str:
    """The gate verdict in one word or two (metrics: a ModelMetrics)."""
    if metrics.quality_gate.passed is not True:
        return "failed quality gate"
    comparison = metrics.champion_comparison
    if comparison is None or comparison.passed:
        return "passed"
    return "forced" if comparison.forced else "failed champion gate"


def version_row(version_uri: str, metrics, *, is_latest: bool) -> ModelVersionRow:
    """The row of one version folder from its metrics (a ModelMetrics)."""
    comparison = metrics.champion_comparison
    return ModelVersionRow(
        model_version=storage.basename(version_uri),
        test_accuracy=metrics.test_accuracy,
        test_ece=metrics.test_ece,
        architecture=(metrics.parameters or {}).get("model"),
        trained_at=metrics.created_at,
        verdict=verdict_of(metrics),
        champion_version=comparison.champion_version if comparison else None,
        is_latest=is_latest,
        manifest_digest=metrics.data.manifest_digest if metrics.data else None,
        model_uri=storage.absolute_uri(version_uri),
    )


def version_summary_line(version_uri: str, metrics) -> bytes:
    """version.json: the version's row on one JSON line, without `is_latest` (LATEST decides that),
    for readers of one-line JSON such as a BigQuery external table."""
    row = dataclasses.asdict(version_row(version_uri, metrics, is_latest=False))
    del row["is_latest"]
    return (json.dumps(row, separators=(",", ":"), allow_nan=False) + "\n").encode()


def list_versions(model_root: str) -> list[ModelVersionRow]:
    """Every evaluated version below the root, oldest first (version names sort by time)."""
    latest = registry.latest_version(model_root)
    rows = []
    for metrics_uri in storage.glob(storage.join(model_root, "*", registry.METRICS_FILE)):
        version_uri = storage.dirname(metrics_uri)
        try:
            metrics = registry.read_metrics(version_uri)
        except InputError as error:  # one damaged folder never hides the others
            log.warning("%s", error)
            continue
        rows.append(version_row(version_uri, metrics, is_latest=storage.basename(version_uri) == latest))
    return sorted(rows, key=lambda row: row.model_version)


def resolve_latest(*, model_root: str) -> dict:
    """The published version's row as a JSON result: what a pipeline imports as its Model artifact,
    so that the whole run uses exactly this version even if LATEST moves meanwhile."""
    ref = registry.resolve(model_root)  # gates passed, model.keras is the file metrics.json evaluated
    row = version_row(ref.uri, registry.read_metrics(ref.uri), is_latest=True)
    return {
        "model_version": row.model_version,
        "model_uri": ref.uri,  # as the root was given (gs:// or a path): what `fmnist score --model` takes
        "test_accuracy": row.test_accuracy,
        "test_ece": row.test_ece,
        "manifest_digest": row.manifest_digest,
    }


def promote(*, model_root: str, version: str, reason: str = PromoteParameters.reason) -> dict:
    """Points LATEST at `version` after checking its gates and its model file's hash."""
    version_uri = storage.child(model_root, version)
    if not storage.exists(storage.join(version_uri, registry.MODEL_FILE)):
        raise InputError(f"{version_uri}: no such model version ({registry.MODEL_FILE} missing)")
    registry.resolve(version_uri)  # gates passed, model.keras is the file metrics.json evaluated
    change = registry.publish(model_root, version, command="promote", reason=reason)
    return _outcome(model_root, version, change)


def rollback(*, model_root: str, reason: str = RollbackParameters.reason) -> dict:
    """Points LATEST back at the version published before the current one."""
    current = registry.latest_version(model_root)
    target = previous_version(registry.read_history(model_root), current)
    if target is None:
        raise InputError(f"{storage.join(model_root, registry.HISTORY_NAME)}: no earlier published version to roll back to")
    registry.resolve(storage.child(model_root, target))  # still intact and gate-passed
    change = registry.publish(model_root, target, command="rollback", reason=reason, expected_from=current)
    return _outcome(model_root, target, change)


def previous_version(history: list[registry.LatestChange], current: str | None) -> str | None:
    """The version a rollback returns to: replays the history as a stack (a publish pushes, a
    rollback pops), so consecutive rollbacks walk back through what was published."""
    published: list[str] = []
    for change in history:
        if change.command == "rollback":
            while published and published[-1] != change.to_version:
                published.pop()
            if not published:  # a history that begins after the version it returned to
                published.append(change.to_version)
        else:
            published.append(change.to_version)
    while published and published[-1] == current:
        published.pop()
    return published[-1] if published else None


def _outcome(model_root: str, version: str, change: registry.LatestChange | None) -> dict:
    if change is None:
        return {"latest": version, "changed": False, "model_root": model_root}
    return {"latest": version, "changed": True, "from": change.from_version, "at": change.at, "command": change.command}
