"""The HTML report in headless Chromium: it loads, shows every figure and thumbnail, logs no error."""
from __future__ import annotations

import pytest

from components.report import report
from tests.browser import chromium_path, load_page
from tests.scoring_fixture import RUNS


@pytest.fixture(scope="module")
def chromium() -> None:
    if chromium_path() is None:
        pytest.fail("chromium is missing: `make browser` installs Debian's chromium package")


def test_report_loads_with_its_figures_and_no_console_errors(chromium, scored_output, tmp_path):
    _, scores = scored_output
    result = report(predictions=scores, out=str(tmp_path / "report"), baseline_run=RUNS[0].run_id)
    page = load_page(f"file://{result.report_uri}")
    (tmp_path / "screenshot.png").write_bytes(page.screenshot)  # kept in the test's tmp folder for a look
    assert page.errors == []
    assert page.title == f"Scoring report: {RUNS[1].run_id}"
    assert len(page.images) == 4 + 24  # class mix, confidence, confusion, baseline flips + thumbnails
    assert all(image["complete"] and image["width"] > 0 and image["height"] > 0 for image in page.images)
    assert max(image["width"] for image in page.images) > 600  # figures, not just icons
    assert len(page.screenshot) > 50_000


def test_the_check_sees_a_broken_page(chromium, tmp_path):
    """The same check on a page with a missing picture, a console error and an exception."""
    broken = tmp_path / "broken.html"
    broken.write_text("<!doctype html><html><head><title>broken</title></head><body><img src='missing.png'>"
                      "<script>console.error('boom'); throw new Error('kaput');</script></body></html>")
    page = load_page(f"file://{broken}")
    assert [image["width"] for image in page.images] == [0]
    assert any("boom" in error for error in page.errors)
    assert any("kaput" in error for error in page.errors)
    assert any("missing.png" in error for error in page.errors)
