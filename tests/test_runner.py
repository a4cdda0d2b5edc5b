"""The exit-code contract every job shares (jobs/runner.py): 0 ok, 2 bad input, 1 unexpected,
3 check failed, 143 SIGTERM; every failure one line on stderr, the traceback only with --verbose."""
import json
import logging
import os
import signal

import pytest

from components.errors import CheckFailed, InputError, RunConflict
from components.storage import StorageConflictError
from jobs.runner import run


def fails_with(error: Exception):
    def component(**_):
        raise error
    return component


@pytest.mark.parametrize("error, code, stderr", [
    (InputError("gs://b/x: file not found"), 2, "error: gs://b/x: file not found\n"),
    (StorageConflictError("gs://b/manifest.json: already exists"), 2, "error: gs://b/manifest.json: already exists\n"),
    (RunConflict("gs://b/runs/r1: held by host-a pid 7"), 2, "error: gs://b/runs/r1: held by host-a pid 7\n"),
    (CheckFailed("accuracy 0.5 < 0.85"), 3, "failed: accuracy 0.5 < 0.85\n"),
])
def test_expected_failures_are_one_line_with_their_exit_code(capsys, error, code, stderr):
    assert run(fails_with(error), {}) == code
    assert capsys.readouterr().err == stderr


def test_an_environment_failure_exits_1_with_one_line(capsys, caplog):
    error = OSError(28, "No space left on device")
    assert run(fails_with(error), {}) == 1
    assert capsys.readouterr().err == (
        "error: unexpected failure: OSError: [Errno 28] No space left on device (--verbose shows the traceback)\n")
    assert "Traceback" not in caplog.text


def test_verbose_adds_the_traceback(capsys, caplog):
    caplog.set_level(logging.ERROR)
    assert run(fails_with(ZeroDivisionError("a bug\nsecond line")), {"verbose": True}) == 1
    assert capsys.readouterr().err == "error: unexpected failure: ZeroDivisionError: a bug\n"
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
    "report": ({"--predictions": "p", "--out": "r"}, ["--predictions", "--out", "--manifest"]),
    "query": ({"--predictions": "p"}, ["--predictions", "--out"]),
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
            assert err.count("\n") == 1 and f"argument {flag}: {bad}:" in err, err
    assert list(tmp_path.iterdir()) == []  # nothing written anywhere, no folder named `gs:`
