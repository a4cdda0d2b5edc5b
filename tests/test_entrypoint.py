"""The exit-code contract every job shares (jobs/entrypoint.py): 0 ok, 2 bad input, 1 unexpected,
3 check failed, 143 SIGTERM; every failure one line on stderr, the traceback only with --verbose."""

import hashlib
import json
import logging
import os
import re
import signal
import subprocess
import sys

import pytest

from components.errors import CheckFailed, InputError, RunConflict
from components.io.storage import StorageConflictError
from jobs.entrypoint import run


def fails_with(error: Exception):
    def component(**_):
        raise error

    return component


@pytest.mark.parametrize(
    "error, code, stderr",
    [
        (InputError("gs://b/x: file not found"), 2, "error: gs://b/x: file not found\n"),
        (StorageConflictError("gs://b/manifest.json: already exists"), 2, "error: gs://b/manifest.json: already exists\n"),
        (RunConflict("gs://b/runs/r1: held by host-a pid 7"), 2, "error: gs://b/runs/r1: held by host-a pid 7\n"),
        (CheckFailed("accuracy 0.5 < 0.85"), 3, "failed: accuracy 0.5 < 0.85\n"),
    ],
)
def test_expected_failures_are_one_line_with_their_exit_code(capsys, error, code, stderr):
    assert run(fails_with(error), {}) == code
    assert capsys.readouterr().err == stderr


def test_an_environment_failure_exits_1_with_one_line(capsys, caplog):
    error = OSError(28, "No space left on device")
    assert run(fails_with(error), {}) == 1
    assert capsys.readouterr().err == ("error: OSError: [Errno 28] No space left on device (--verbose shows the traceback)\n")
    assert "Traceback" not in caplog.text


def test_verbose_adds_the_traceback(capsys, caplog, monkeypatch):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)  # restored after the test: verbose sets it
    caplog.set_level(logging.ERROR)
    assert run(fails_with(ZeroDivisionError("a bug\nsecond line")), {"verbose": True}) == 1
    assert capsys.readouterr().err == "error: ZeroDivisionError: a bug\n"
    assert "unexpected failure" in caplog.text and "Traceback" in caplog.text


def test_sigterm_unwinds_through_finally_and_exits_143(capsys):
    cleaned = []

    def stopped_mid_work(**_):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            signal.pause()  # the handler raises before this returns
        finally:
            cleaned.append(True)

    before = signal.getsignal(signal.SIGTERM)
    assert run(stopped_mid_work, {}) == 143
    assert cleaned == [True]
    assert capsys.readouterr().err == "terminated: stopped by SIGTERM\n"
    assert signal.getsignal(signal.SIGTERM) is before  # the job's handler is gone after the job


def test_success_prints_the_result_as_json(capsys):
    assert run(lambda **kwargs: {"echo": kwargs}, {"n": 1, "verbose": False}) == 0
    assert json.loads(capsys.readouterr().out) == {"echo": {"n": 1}}


# Every location flag of every step, with valid values for the other required flags.
LOCATION_FLAGS = {
    "prepare": ({"--output": "o"}, ["--source", "--output"]),
    "prepare-images": ({"--images": "i/*.png", "--output": "o"}, ["--images", "--output"]),
    "train": ({"--data": "d", "--model-root": "m"}, ["--data", "--model-root"]),
    "score": ({"--input": "s/*.tfrecord", "--model": "m", "--output": "o"}, ["--input", "--model", "--output"]),
    "report": ({"--scores": "p", "--out": "r"}, ["--scores", "--out", "--manifest"]),
    "query": ({"--scores": "p"}, ["--scores", "--out"]),
}
MALFORMED = ["gs:/b/x", "GS://b/x", "gs://", "gs:///x", "s3://b/x", "gcs://b/x"]


@pytest.mark.parametrize("step", LOCATION_FLAGS)
def test_a_malformed_uri_in_any_location_flag_is_one_line_exit_2(step, capsys, tmp_path, monkeypatch):
    from jobs.cli import main

    monkeypatch.chdir(tmp_path)
    required, flags = LOCATION_FLAGS[step]
    for flag in flags:
        for bad in MALFORMED:
            argv = [step, *(["SELECT 1"] if step == "query" else [])]
            for name, value in {**required, flag: bad}.items():
                argv += [name, value]
            with pytest.raises(SystemExit) as exit_:
                main(argv)
            err = capsys.readouterr().err
            assert exit_.value.code == 2, argv
            assert err.count("\n") == 1 and f"argument {flag}" in err and f": {bad}:" in err, err
    assert list(tmp_path.iterdir()) == []  # nothing written anywhere, no folder named `gs:`


# --- real processes: a damaged file or a missing bucket is one line naming it, exit 2 -------------

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobs.cli", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)


def assert_one_line_exit_2(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and all(f in result.stderr for f in fragments), result.stderr


@pytest.mark.integration
def test_damaged_model_metrics_and_manifest_files_are_named(tiny_idx, tmp_path):
    from components.prepare.dataset import prepare

    shards = str(tmp_path / "shards")
    prepare(source=tiny_idx, output=shards, shards_per_split=1, allow_unknown_source=True, workers=1)
    version = tmp_path / "models" / "v1"
    version.mkdir(parents=True)
    damaged = b"PK\x03\x04 a zip header, then nothing"
    (version / "model.keras").write_bytes(damaged)
    # The metrics of exactly this file: the hash check passes, loading it fails.
    (version / "metrics.json").write_text(
        json.dumps({"quality_gate": {"passed": True}, "model_sha256": hashlib.sha256(damaged).hexdigest()})
    )
    score = ["score", "--input", f"{shards}/test-*.tfrecord", "--model", str(version), "--output", str(tmp_path / "scores")]

    assert_one_line_exit_2(cli(*score), f"{version}/model.keras: damaged or not a Keras model file")
    (version / "metrics.json").write_text('{"quality_gate": ')
    assert_one_line_exit_2(cli(*score), f"{version}/metrics.json: not a valid metrics file")
    assert not (tmp_path / "scores").exists()

    (tmp_path / "shards" / "manifest.json").write_text("[]")
    result = cli("train", "--data", shards, "--model-root", str(tmp_path / "models2"))
    assert_one_line_exit_2(result, f"{shards}/manifest.json: manifest is a JSON list")


@pytest.mark.integration
def test_a_missing_bucket_is_named(tiny_idx, gcs_bucket, tmp_path):
    missing = gcs_bucket + "-missing"  # the emulator address reaches the child through the environment
    result = cli("prepare", "--source", tiny_idx, "--output", f"{missing}/shards", "--allow-unknown-source")
    assert_one_line_exit_2(result, f"bucket {missing} does not exist")
    result = cli("prepare", "--source", f"{missing}/raw", "--output", str(tmp_path / "shards"))
    assert_one_line_exit_2(result, f"bucket {missing} does not exist")
    result = cli("prepare-images", "--images", f"{missing}/photos/*.png", "--output", str(tmp_path / "out"))
    assert_one_line_exit_2(result, f"bucket {missing} does not exist")


# --- quiet by default, everything with --verbose ----------------------------------------------

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING|ERROR) [\w.]+: ")


def test_prepare_prints_a_compact_result_and_one_log_line(tiny_idx, tmp_path):
    output = str(tmp_path / "shards")
    result = cli("prepare", "--source", tiny_idx, "--output", output, "--allow-unknown-source", "--shards-per-split", "3")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "manifest": f"{output}/manifest.json",
        "splits": {"train": {"records": 20, "shards": 3}, "test": {"records": 10, "shards": 3}},
    }
    assert [LOG_LINE.match(line) is not None for line in result.stderr.splitlines()] == [True]


@pytest.mark.slow
def test_train_and_score_are_quiet_unless_verbose(tiny_idx, tmp_path):
    """No TensorFlow C++ banner, no Beam worker-harness INFO line: only our own log lines, in one
    format; --verbose brings both back."""
    shards, models = str(tmp_path / "shards"), str(tmp_path / "models")
    assert cli("prepare", "--source", tiny_idx, "--output", shards, "--allow-unknown-source").returncode == 0
    train = cli(
        "train", "--data", shards, "--model-root", models, "--epochs", "1", "--min-accuracy", "0", "--validation-fraction", "0.1"
    )
    score = ["score", "--input", f"{shards}/test-*.tfrecord", "--model", models, "--run-id", "r1"]
    quiet = cli(*score, "--output", str(tmp_path / "quiet"))
    loud = cli(*score, "--output", str(tmp_path / "loud"), "--verbose")

    for result in (train, quiet, loud):
        assert result.returncode == 0, result.stderr
        assert len(result.stdout.splitlines()) == 1 and json.loads(result.stdout)
    for result in (train, quiet):
        assert all(LOG_LINE.match(line) and " components." in line for line in result.stderr.splitlines()), result.stderr
    # TensorFlow's C++ log lines (absl's "I0000 00:00:…" format): the oneDNN banner on CPUs where
    # oneDNN is on by default (AVX-512), the CPU feature guard's line on the others.
    assert re.search(r"^[IWE]\d{4} \d\d:\d\d:\d\d", loud.stderr, re.MULTILINE), loud.stderr
    assert "INFO apache_beam.runners" in loud.stderr


def test_train_model_flag_is_a_deprecated_alias_of_architecture(caplog):
    from jobs.train import build_parser

    with caplog.at_level("WARNING", logger="jobs.entrypoint"):
        args = build_parser().parse_args(["--data", "d", "--model-root", "m", "--model", "cnn"])
    assert vars(args)["architecture"] == "cnn" and "model" not in vars(args)
    assert [record.getMessage() for record in caplog.records] == ["--model is deprecated; use --architecture"]


STEP_PARAMETERS = {
    "prepare": "components.prepare.dataset:PrepareParameters",
    "prepare-images": "components.prepare.product_images:PrepareImagesParameters",
    "train": "components.train.training:TrainParameters",
    "score": "components.score.parameters:ScoreParameters",
    "report": "components.analysts.report:ReportParameters",
    "query": "components.analysts.tables:QueryParameters",
    "migrate-tables": "components.analysts.migration:MigrateTablesParameters",
    "record-failure": "components.score.failure_record:RecordFailureParameters",
    "status": "components.analysts.run_status:StatusParameters",
}


@pytest.mark.parametrize("step", STEP_PARAMETERS)
def test_every_flag_of_a_step_is_a_field_of_its_parameters_with_the_default_in_its_help(step):
    import importlib

    from components.contracts.parameters import parameters_of
    from jobs.cli import STEPS

    module, name = STEP_PARAMETERS[step].split(":")
    parameters = {parameter.name: parameter for parameter in parameters_of(getattr(importlib.import_module(module), name))}
    parser = importlib.import_module(STEPS[step]).build_parser()
    actions = {action.dest: action for action in parser._actions if action.dest not in ("help", "verbose", "log_format")}
    assert sorted(actions) == sorted(parameters)
    for dest, action in actions.items():
        parameter = parameters[dest]
        assert action.required == parameter.required
        if not parameter.required and parameter.kind is not bool and parameter.default is not None:
            assert f"(default {parameter.default})" in action.help
