"""``python -m bench.batch_predict`` keeps working: it trains its model, scores a file with
``keras-serve predict`` in a process of its own, checks the answers, and replaces its section of
a results file (a small run here; the figures are ``make bench``'s)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.batch_predict import SECTION
from bench.servers import ROOT


@pytest.mark.slow
def test_a_small_run_replaces_its_section(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    results.write_text(f"# Results\n\n{SECTION}\n\nold figures\n\n## Another phase\n\nkept\n")
    done = subprocess.run(
        [sys.executable, "-m", "bench.batch_predict", "--rows", "3000", "--runs", "1",
         "--out", str(results)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    text = results.read_text()
    assert "old figures" not in text and text.count(SECTION) == 1
    assert "## Another phase\n\nkept" in text
    assert "3,000 rows x 13 columns" in text
    assert "| rows/s |" in text and "| peak RSS |" in text
