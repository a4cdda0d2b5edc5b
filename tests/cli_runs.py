"""The jobs' command line as tests run it: `python -m jobs.cli ...` in a fresh process, from the repository root."""

import os
import subprocess
import sys
import time

from tests.kfp_spec import IMAGE, REPO, WORKER

SCORING_DAILY = "infra/schedules/scoring-daily.yaml"
# `terraform output -json` of a made-up project, acme-ml: the names every submission takes.
EXAMPLE_DEPLOYMENT = "infra/deployments/example.json"
TRAINING_SPEC = "infra/kfp/training.yaml"


def jobs_command(*args: str) -> list[str]:
    """The command line of `fmnist ARGS` with this interpreter."""
    return [sys.executable, "-m", "jobs.cli", *args]


def run_cli(*args: str, **options) -> subprocess.CompletedProcess:
    """`fmnist ARGS` run to its end with its output captured as text; `options` go to subprocess.run
    (timeout, env, preexec_fn)."""
    return subprocess.run(jobs_command(*args), cwd=REPO, capture_output=True, text=True, **options)


def prepare_args(source: str, output: str, *extra: str) -> list[str]:
    """`prepare` of an IDX folder made in the test (no known source digest) into `output`."""
    return ["prepare", "--source", source, "--output", output, "--allow-unknown-source", *extra]


def params(**values: object) -> list[str]:
    """`--param name=value` for each of `values`, in order."""
    return [item for name, value in values.items() for item in ("--param", f"{name}={value}")]


# The release's image digests, which no schedule file holds.
SCORING_IMAGES = params(image=IMAGE, worker_image=WORKER)


def pipeline_submit(*args: str, home, deployment: str | None = EXAMPLE_DEPLOYMENT, action: str = "submit"):
    """`fmnist pipeline submit --deployment DEPLOYMENT ARGS` with HOME at `home`, so that no
    ~/.config/kfp/context.json of the machine's user takes part."""
    named = ["--deployment", deployment] if deployment else []
    return run_cli("pipeline", action, *named, *args, env={**os.environ, "HOME": str(home)})


def wait_until_stopped(process: subprocess.Popen, timeout_s: float = 300) -> None:
    """Waits until the process has stopped itself (state T in /proc), or fails if it ended."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1][-2000:]
        with open(f"/proc/{process.pid}/stat") as stat:
            if stat.read().rsplit(")", 1)[1].split()[0] == "T":
                return
        time.sleep(0.05)
    raise AssertionError("the attempt never reached its freeze point")
