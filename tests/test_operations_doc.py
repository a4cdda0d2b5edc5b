"""Every local command of docs/operations.md runs, in order, with the exit code it announces.

The blocks marked `bash local` are run as the runbook's reader would after `make run`: in a
folder with `runs/local/shards` (a tiny data set prepared by `fmnist prepare`) and a published
model in `runs/local/models` (fitted for one epoch on 64 images), `infra/` of the repository
beside them, and the `fmnist` of this interpreter on PATH. A command's line may end with
`# exit N`; every other command must exit 0.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.cli_runs import run_cli
from tests.kfp_spec import REPO

DOC = os.path.join(REPO, "docs", "operations.md")
_EXPECTED_EXIT = re.compile(r"#\s*exit (\d+)\s*$")


def local_blocks(path: str) -> list[str]:
    with open(path) as file:
        return re.findall(r"```bash local\n(.*?)```", file.read(), flags=re.DOTALL)


def commands(block: str) -> list[str]:
    """The block's commands: continued lines joined, a `for ... done` loop kept whole."""
    found, current, loop_depth = [], "", 0
    for line in block.splitlines():
        if not line.strip() and not current:
            continue
        current += line + "\n"
        stripped = _EXPECTED_EXIT.sub("", line).rstrip()
        loop_depth += len(re.findall(r"^\s*for\b", stripped)) - len(re.findall(r"^\s*done\b", stripped))
        if not stripped.endswith("\\") and loop_depth == 0:
            found.append(current.strip())
            current = ""
    assert not current, f"an unfinished command in docs/operations.md: {current!r}"
    return found


def expected_exit(command: str) -> int:
    match = _EXPECTED_EXIT.search(command.splitlines()[-1])
    return int(match.group(1)) if match else 0


def test_the_runbook_has_local_commands_for_each_situation():
    every = [command for block in local_blocks(DOC) for command in commands(block)]
    text = "\n".join(every)
    for situation in ("fmnist status", "fmnist record-failure", "fmnist query", "fmnist pipeline backfill", "--max-error-rate"):
        assert situation in text, situation
    assert any(expected_exit(command) == 3 for command in every)


@pytest.mark.integration
def test_every_local_command_of_the_runbook_runs(tmp_path, tiny_idx):
    from tests.test_score import fit_tiny_model, save_model

    prepared = run_cli("prepare", "--source", tiny_idx, "--output", str(tmp_path / "runs/local/shards"), "--allow-unknown-source")
    assert prepared.returncode == 0, prepared.stderr
    save_model(fit_tiny_model(), str(tmp_path / "runs/local/models"), "v1")
    os.symlink(os.path.join(REPO, "infra"), tmp_path / "infra")
    bin_folder = tmp_path / "bin"
    bin_folder.mkdir()
    fmnist = bin_folder / "fmnist"  # this interpreter's `fmnist`, wherever the virtualenv is
    fmnist.write_text(f'#!/bin/sh\nPYTHONPATH="{REPO}" exec "{sys.executable}" -m jobs.cli "$@"\n')
    fmnist.chmod(0o755)
    environment = {**os.environ, "PATH": f"{bin_folder}:{os.environ['PATH']}"}
    environment.pop("FMNIST_LOG_FORMAT", None)
    for block in local_blocks(DOC):
        for command in commands(block):
            completed = subprocess.run(
                ["bash", "-e", "-o", "pipefail", "-c", command],
                cwd=tmp_path,
                env=environment,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert completed.returncode == expected_exit(command), (command, completed.stdout, completed.stderr)
