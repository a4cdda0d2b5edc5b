"""The benchmark scripts are not run by CI (minutes on the full data set), but they must
at least compile: a syntax error once slipped into one unnoticed."""

import glob
import os

import pytest

BENCHMARKS = sorted(glob.glob(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "*.py")))


@pytest.mark.parametrize("path", BENCHMARKS, ids=os.path.basename)
def test_benchmark_script_compiles(path):
    with open(path) as file:
        compile(file.read(), path, "exec")
