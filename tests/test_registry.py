"""The model registry: LATEST as a pointer that is only ever read as one short line of text."""

import dataclasses
import glob
import json
import os
import shutil
import signal
import subprocess

import pytest

from components.analysts.tables import query
from components.contracts import model_versions, registry
from components.errors import InputError, RunConflict
from components.io import storage
from tests.cli_runs import jobs_command, run_cli
from tests.kfp_spec import REPO


@pytest.fixture
def model_root(tmp_path) -> str:
    root = tmp_path / "models"
    root.mkdir()
    return str(root)


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"\xff\xfe20261129T043000Z\n", "not UTF-8 text"),
        (b"2026\x001129T043000Z\n", "not one line naming a model version"),
        (b"v1\nv2\n", "not one line naming a model version"),
        (b"x" * 300_000, "larger than the 1024 bytes"),
    ],
)
def test_a_latest_that_is_not_a_version_line_is_refused_without_quoting_it(model_root, content, problem):
    pointer = f"{model_root}/{registry.LATEST_NAME}"
    with open(pointer, "wb") as file:
        file.write(content)
    with pytest.raises(InputError, match=problem) as refused:
        registry.resolve(model_root)
    message = str(refused.value)
    assert message.startswith(pointer) and "\n" not in message and "1129T" not in message and "xxx" not in message


def test_a_latest_that_links_to_another_file_is_refused_without_showing_it(model_root, tmp_path):
    secret = tmp_path / "credentials.txt"
    secret.write_text("top-secret-token\n")
    (tmp_path / "models" / registry.LATEST_NAME).symlink_to(secret)
    with pytest.raises(InputError, match="is a symbolic link") as refused:
        registry.resolve(model_root)
    assert "top-secret" not in str(refused.value)


def make_version(
    model_root: str,
    name: str,
    *,
    accuracy: float = 0.9,
    gate: bool = True,
    champion: str | None = None,
    champion_passed: bool = True,
    forced: bool = False,
) -> str:
    """A version folder as training leaves it, without training: a model file and the metrics.json that evaluated it."""
    model_bytes = f"model {name}".encode()
    comparison = {"passed": champion_passed, "forced": forced, "reason": "fixture", "champion_version": champion}
    metrics = {
        "model_version": name,
        "created_at": "2026-12-01T10:00:00+00:00",
        "test_accuracy": accuracy,
        "test_ece": 0.01,
        "quality_gate": {"passed": gate, "min_accuracy": 0.85, "reason": "fixture"},
        "champion_comparison": comparison,
        "model_sha256": registry.model_sha256(model_bytes),
        "parameters": {"model": "mlp"},
        "versions": {"tensorflow": "2.21.0"},
        "data": {"manifest_digest": "d" * 64},
    }
    storage.write_bytes(storage.join(model_root, name, registry.MODEL_FILE), model_bytes)
    storage.write_bytes(storage.join(model_root, name, registry.METRICS_FILE), json.dumps(metrics).encode())
    return name


@pytest.fixture
def versions(model_root) -> dict[str, str]:
    """Three good versions (v1 published by training), one below the absolute gate, one worse than its champion."""
    names = {
        "v1": make_version(model_root, "20261201T100000Z-00000001"),
        "v2": make_version(model_root, "20261202T100000Z-00000002", accuracy=0.91),
        "v3": make_version(model_root, "20261203T100000Z-00000003", accuracy=0.92),
        "low": make_version(model_root, "20261204T100000Z-00000004", accuracy=0.5, gate=False),
        "worse": make_version(model_root, "20261205T100000Z-00000005", champion="x", champion_passed=False),
    }
    registry.publish(model_root, names["v1"], command="train", reason="fixture")
    return names


def _history(model_root: str) -> list[tuple]:
    return [(change.from_version, change.to_version, change.command) for change in registry.read_history(model_root)]


@pytest.mark.parametrize("refused", ["low", "worse", "tampered", "absent", "../v1"])
def test_promote_refuses_a_version_that_did_not_pass_or_was_changed(model_root, versions, refused):
    if refused == "tampered":
        storage.write_bytes(storage.join(model_root, versions["v2"], registry.MODEL_FILE), b"another model")
    version = versions.get(refused, refused) if refused != "tampered" else versions["v2"]

    result = run_cli("model", "promote", "--model-root", model_root, version)

    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error: ")
    assert registry.latest_version(model_root) == versions["v1"]
    assert len(registry.read_history(model_root)) == 1


def test_promote_and_rollback_move_latest_with_one_history_line_each(model_root, versions):
    v1, v2, v3 = versions["v1"], versions["v2"], versions["v3"]
    for version in (v2, v3):
        result = run_cli("model", "promote", "--model-root", model_root, version, "--reason", "better")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["latest"] == version
    assert registry.latest_version(model_root) == v3
    assert registry.read_history(model_root)[-1].reason == "better"

    for expected in (v2, v1):
        result = run_cli("model", "rollback", "--model-root", model_root)
        assert result.returncode == 0, result.stderr
        assert registry.latest_version(model_root) == expected
    assert _history(model_root) == [
        (None, v1, "train"),
        (v1, v2, "promote"),
        (v2, v3, "promote"),
        (v3, v2, "rollback"),
        (v2, v1, "rollback"),
    ]
    result = run_cli("model", "rollback", "--model-root", model_root)
    assert result.returncode == 2 and "no earlier published version" in result.stderr
    assert len(registry.read_history(model_root)) == 5


def test_model_list_shows_every_version_its_verdict_and_the_history(model_root, versions):
    rows = {row.model_version: row for row in model_versions.list_versions(model_root)}
    assert set(rows) == set(versions.values())
    assert [name for name, row in rows.items() if row.is_latest] == [versions["v1"]]
    assert rows[versions["low"]].verdict == "failed quality gate"
    assert rows[versions["worse"]].verdict == "failed champion gate"
    assert rows[versions["v3"]].test_accuracy == 0.92 and rows[versions["v3"]].architecture == "mlp"

    result = run_cli("model", "list", "--model-root", model_root)
    assert result.returncode == 0, result.stderr
    assert all(name in result.stdout for name in versions.values())
    assert f"- -> {versions['v1']}  train: fixture" in result.stdout


def test_model_list_with_a_binary_latest_exits_2_in_one_line(model_root, versions):
    with open(f"{model_root}/{registry.LATEST_NAME}", "wb") as file:
        file.write(b"\x80\x81\x82 garbage")
    result = run_cli("model", "list", "--model-root", model_root)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "not UTF-8 text" in line and "garbage" not in line


@pytest.mark.parametrize("trial", range(10))
def test_two_promotes_at_once_leave_one_of_them_and_both_history_lines_in_order(model_root, versions, trial):
    rivals = [versions["v2"], versions["v3"]]
    processes = [
        subprocess.Popen(
            jobs_command("model", "promote", "--model-root", model_root, version),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for version in rivals
    ]
    outcomes = [(process.wait(timeout=120), process.communicate()[1]) for process in processes]

    assert [code for code, _ in outcomes] == [0, 0], outcomes
    first, second = registry.read_history(model_root)[1:]
    assert {first.to_version, second.to_version} == set(rivals)
    assert first.from_version == versions["v1"] and second.from_version == first.to_version  # the order they happened
    assert first.at <= second.at
    assert registry.latest_version(model_root) == second.to_version


@pytest.mark.parametrize("where", ["local", "gcs"])
@pytest.mark.parametrize("point", ["latest-pending", "latest-moved", "latest-told"])
def test_a_change_of_latest_killed_between_its_writes_is_told_once(request, tmp_path, point, where):
    """kill -9 before LATEST moves, after it moves, after its history line: LATEST and its
    history always agree, and the next change writes any line the killed one could not."""
    model_root = f"{request.getfixturevalue('gcs_bucket')}/models" if where == "gcs" else str(tmp_path / "models")
    v1, v2, v3 = (make_version(model_root, f"2026120{day}T100000Z-0000000{day}") for day in (1, 2, 3))
    registry.publish(model_root, v1, command="train", reason="fixture")

    killed = run_cli("model", "promote", "--model-root", model_root, v2, env={**os.environ, "FMNIST_KILL_AT": point})

    assert killed.returncode == -signal.SIGKILL, killed.stderr
    moved = point != "latest-pending"
    told = [(None, v1, "train"), *([(v1, v2, "promote")] if moved else [])]
    assert registry.latest_version(model_root) == (v2 if moved else v1)
    assert _history(model_root) == told  # read as it happened, before the next change writes a missing line
    listing = run_cli("model", "list", "--model-root", model_root)
    assert listing.returncode == 0 and (f"{v1} -> {v2}  promote" in listing.stdout) == moved, listing.stdout

    result = run_cli("model", "promote", "--model-root", model_root, v3)
    assert result.returncode == 0, result.stderr
    assert _history(model_root) == [*told, (told[-1][1], v3, "promote")]
    lines = storage.read_bytes(storage.join(model_root, registry.HISTORY_NAME)).decode().splitlines()
    assert len(lines) == len(told) + 1  # each change written once, in the file itself
    assert not storage.exists(storage.join(model_root, registry.PENDING_NAME))
    assert run_cli("model", "rollback", "--model-root", model_root).returncode == 0
    assert registry.latest_version(model_root) == told[-1][1]


def test_latest_on_gcs_changes_only_over_the_generation_read(gcs_bucket, monkeypatch):
    model_root = f"{gcs_bucket}/models"
    v1, v2 = make_version(model_root, "v1"), make_version(model_root, "v2")
    model_versions.promote(model_root=model_root, version=v1)
    model_versions.promote(model_root=model_root, version=v2)
    model_versions.rollback(model_root=model_root)
    assert registry.latest_version(model_root) == v1
    assert _history(model_root) == [(None, v1, "promote"), (v1, v2, "promote"), (v2, v1, "rollback")]

    latest_uri = storage.join(model_root, registry.LATEST_NAME)
    stale = storage.read_snapshot(latest_uri, max_bytes=registry.POINTER_MAX_BYTES)
    registry.publish(model_root, v2, command="promote", reason="a rival")
    with pytest.raises(storage.StorageConflictError, match="replaced by another writer"):
        storage.replace_if_unchanged(stale, f"{v1}\n".encode())  # what publish writes with: refused over a newer LATEST
    assert registry.latest_version(model_root) == v2


def test_training_never_publishes_over_a_latest_that_moved_after_its_comparison(model_root, versions):
    with pytest.raises(RunConflict, match=f"now names {versions['v1']}, not the {versions['v2']}"):
        registry.publish(model_root, versions["v3"], command="train", reason="x", expected_from=versions["v2"])
    assert registry.latest_version(model_root) == versions["v1"]


def test_the_models_view_lists_every_version_of_the_roots_the_runs_scored_with(scored_output, model_root, versions, tmp_path):
    scores = str(tmp_path / "scores")
    shutil.copytree(scored_output[1], scores)
    for path in glob.glob(f"{scores}/runs/*.json"):  # the runs scored with v1 of this model root
        summary = json.loads(open(path).read())
        summary["model_uri"] = storage.absolute_uri(f"{model_root}/{versions['v1']}")
        open(path, "w").write(json.dumps(summary))
    sql = "SELECT model_version, test_accuracy, verdict, is_latest FROM models ORDER BY model_version"

    derived = query(sql=sql, scores=scores).to_pylist()
    named = query(sql=sql, scores=scored_output[1], models=model_root).to_pylist()

    assert derived == named
    from components.analysts import read

    columns = ["model_version", "test_accuracy", "verdict", "is_latest"]
    assert sorted(read(scores, "models", columns=columns).to_pylist(), key=lambda row: row["model_version"]) == derived
    assert [row["model_version"] for row in derived] == sorted(versions.values())
    assert [row["model_version"] for row in derived if row["is_latest"]] == [versions["v1"]]
    assert {row["verdict"] for row in derived} == {"passed", "failed quality gate", "failed champion gate"}
    assert set(query(sql="SELECT * FROM models", scores=scores).column_names) == {
        field.name for field in dataclasses.fields(model_versions.ModelVersionRow)
    }
    result = run_cli("query", "SELECT model_version, test_accuracy FROM models", "--scores", scores)
    assert result.returncode == 0 and all(name in result.stdout for name in versions.values()), result.stderr
