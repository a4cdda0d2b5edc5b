"""`fmnist pipeline submit` as a test runs it: a fresh process and the command-line items it takes."""

import os
import subprocess
import sys

from tests.kfp_spec import IMAGE, REPO, WORKER

SCORING_DAILY = "infra/schedules/scoring-daily.yaml"
TRAINING_SPEC = "infra/kfp/training.yaml"


def params(**values: object) -> list[str]:
    """`--param name=value` for each of `values`, in order."""
    return [item for name, value in values.items() for item in ("--param", f"{name}={value}")]


# The release's image digests, which no schedule file holds.
SCORING_IMAGES = params(image=IMAGE, worker_image=WORKER)


def pipeline_submit(*args: str, home) -> subprocess.CompletedProcess:
    """`fmnist pipeline submit ARGS` from the repository root, with HOME at `home` so that no
    ~/.config/kfp/context.json of the machine's user takes part."""
    return subprocess.run(
        [sys.executable, "-m", "jobs.cli", "pipeline", "submit", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "HOME": str(home)},
    )
