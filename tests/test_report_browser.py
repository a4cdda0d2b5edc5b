"""The HTML report in headless Chromium: it loads, shows every figure and thumbnail, logs no error."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from PIL import Image

from components.analysts.report import report
from components.io import storage
from tests.browser import chromium_path, load_page
from tests.scoring_fixture import write_run
from tests.test_report import week_runs

# Figures of a labeled run with error rows and a baseline: 5 trend measures, class mix,
# confidence, reliability, confusion matrix, errors by shard, baseline flips.
FIGURES = 11


@pytest.fixture(scope="module")
def chromium() -> None:
    if chromium_path() is None:
        pytest.fail("chromium is missing: `make browser` installs Debian's chromium package")


def test_report_loads_with_its_figures_and_no_console_errors(chromium, scored_output, tmp_path):
    data, _ = scored_output
    scores = str(tmp_path / "scores")
    for run in week_runs():  # a week with a damaged shard, a rerun and a backfill
        write_run(scores, [storage.join(data, f"test-0000{i}-of-00002.tfrecord") for i in range(2)], run)
    result = report(scores=scores, out=str(tmp_path / "report"), run_id="daily-2026-11-25", days=7)
    page = load_page(f"file://{result.report_uri}")
    (tmp_path / "screenshot.png").write_bytes(page.screenshot)  # kept in the test's tmp folder for a look
    assert page.errors == []
    assert page.title == "Scoring report: daily-2026-11-25"
    thumbnails = len(result.summary["lowest_confidence"]) + len(result.summary["confidently_wrong"])
    assert len(result.summary["confidently_wrong"]) > 0 and len(result.summary["errors_by_shard"]) == 1
    assert len(page.images) == FIGURES + thumbnails
    assert all(image["complete"] and image["width"] > 0 and image["height"] > 0 for image in page.images)
    figures = [image for image in page.images if image["width"] > 300]
    assert len(figures) == FIGURES  # figures, not just icons
    assert len(page.screenshot) > 50_000
    # None is empty: every embedded figure draws something besides its background.
    html = storage.read_bytes(result.report_uri).decode()
    for encoded in re.findall(r'src="data:image/png;base64,([^"]+)"', html):
        pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded))).convert("L"))
        assert pixels.min() < 128 and pixels.std() > 5


def test_the_check_sees_a_broken_page(chromium, tmp_path):
    """The same check on a page with a missing picture, a console error and an exception."""
    broken = tmp_path / "broken.html"
    broken.write_text(
        "<!doctype html><html><head><title>broken</title></head><body><img src='missing.png'>"
        "<script>console.error('boom'); throw new Error('kaput');</script></body></html>"
    )
    page = load_page(f"file://{broken}")
    assert [image["width"] for image in page.images] == [0]
    assert any("boom" in error for error in page.errors)
    assert any("kaput" in error for error in page.errors)
    assert any("missing.png" in error for error in page.errors)
