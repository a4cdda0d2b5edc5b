"""The exit-code contract every job shares (jobs/runner.py): 0 ok, 2 bad input, 1 unexpected, 3 check failed."""
import json
import logging

import pytest

from components.errors import CheckFailed, InputError
from components.storage import StorageConflictError
from jobs.runner import run


def fails_with(error: Exception):
    def component(**_):
        raise error
    return component


@pytest.mark.parametrize("error, code, stderr", [
    (InputError("gs://b/x: file not found"), 2, "error: gs://b/x: file not found\n"),
    (StorageConflictError("gs://b/manifest.json: already exists"), 2, "error: gs://b/manifest.json: already exists\n"),
    (CheckFailed("accuracy 0.5 < 0.85"), 3, "failed: accuracy 0.5 < 0.85\n"),
])
def test_expected_failures_are_one_line_with_their_exit_code(capsys, error, code, stderr):
    assert run(fails_with(error), {}) == code
    assert capsys.readouterr().err == stderr


def test_an_unexpected_failure_exits_1_with_its_traceback(caplog):
    caplog.set_level(logging.ERROR)
    assert run(fails_with(ZeroDivisionError("a bug")), {}) == 1
    assert "unexpected failure" in caplog.text and "ZeroDivisionError: a bug" in caplog.text


def test_success_prints_the_result_as_json(capsys):
    assert run(lambda **kwargs: {"echo": kwargs}, {"n": 1}) == 0
    assert json.loads(capsys.readouterr().out) == {"echo": {"n": 1}}
