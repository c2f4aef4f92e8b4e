"""``python -m bench.page --quick`` keeps working: it loads the model page in headless Chromium,
writes its section of RESULTS.md in place and saves the screenshot.

On the session's Iris bundle, two loads each way. Skips without a browser, as the page tests
do (``REQUIRE_BROWSER=1`` makes that a failure). Timings are read, never bounded: the machine
is shared.
"""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tests.page import need_browser
from tests.support import ROOT

OTHER = "# Benchmark results\n\n## Model repository (issue 14)\n\nkept\n"
STALE = "## Model page (`GET /`)\n\nstale figures\n"
AFTER = "## Explanations (issue 17)\n\nkept too\n"


def _cells(text: str, start: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(start))
    return [cell.strip() for cell in line.strip("|").split("|")]


@pytest.mark.slow
def test_quick_run_times_the_page_and_saves_its_screenshot(
    iris_bundle: Path, tmp_path: Path
) -> None:
    need_browser()
    out = tmp_path / "RESULTS.md"
    out.write_text(OTHER + "\n" + STALE + "\n" + AFTER)
    shot = tmp_path / "shots" / "model-page.png"
    done = subprocess.run(
        [sys.executable, "-m", "bench.page", "--quick", "--loads", "2",
         "--artifacts", str(iris_bundle.parent.parent), "--out", str(out),
         "--screenshot", str(shot)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = out.read_text()
    # its own section replaced in place, the others kept
    assert text.startswith(OTHER) and text.endswith(AFTER)
    assert text.count("## Model page (`GET /`)") == 1 and "stale figures" not in text
    assert "QUICK" in text and "FAILED LOADS" not in text
    # the goal judged on the cache-off loads, the cache-on ones beside it
    goal = _cells(text, "| the model page loads in under 1 s: `loadEventEnd`, cache off")
    assert float(goal[1].split()[0]) > 0 and goal[2] in ("yes", "**no**")
    assert "| (the model page loads in under 1 s: `loadEventEnd`, cache on" in text
    html = _cells(text, "| `GET /` alone")
    assert float(html[1].split()[0]) >= 0
    assert "`Document /`" in text and "every one to 127.0.0.1" in text
    # a PNG of the whole page, 1280 px wide, after a prediction
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width == 1280 and height > 600
    assert "after predicting '" in text
