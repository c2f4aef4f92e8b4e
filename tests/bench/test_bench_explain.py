"""``python -m bench.explain --quick`` keeps working: it explains a bundle in process and over
HTTP, trains the noise-column model, and writes its section of RESULTS.md in place.

At tiny scale, on the session's Iris bundle instead of the wine and breast cancer models the
full run trains. Timings are read, never bounded: the machine is shared.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

OTHER = "# Benchmark results\n\n## Model repository (issue 14)\n\nkept\n"
STALE = "## Explanations (issue 17)\n\nstale figures\n"
AFTER = "## Later section\n\nkept too\n"


def _cells(text: str, start: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(start))
    return [cell.strip() for cell in line.strip("|").split("|")]


@pytest.mark.slow
def test_quick_run_explains_and_writes_its_section(iris_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "RESULTS.md"
    out.write_text(OTHER + "\n" + STALE + "\n" + AFTER)
    done = subprocess.run(
        [sys.executable, "-m", "bench.explain", "--quick", "--bundle", str(iris_bundle),
         "--rows", "3", "--batch", "2", "--requests", "3", "--pin", "off", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = out.read_text()
    # its own section replaced in place, the others kept
    assert text.startswith(OTHER) and text.endswith(AFTER)
    assert text.count("## Explanations (issue 17)") == 1 and "stale figures" not in text
    assert "QUICK" in text and "FAILED REQUESTS" not in text
    # the goal judged on the in-process median, the end to end figure beside it
    goal = _cells(text, "| 17a. exact explanations of a 4-feature model (iris)")
    assert float(goal[1].split()[0]) > 0 and goal[2] in ("yes", "**no**")
    assert "| (17a end to end: `POST /models/iris/explain`" in text
    # where the time goes: exact against the 32-row background, 16 coalitions x 32 rows
    cost = _cells(text, "| iris | 4 | 3 | exact | 32 |")
    assert cost[5] == "512"
    assert all(float(cell.split()[0]) > 0 for cell in cost[6:9] + cost[10:])
    accuracy = _cells(text, "| iris | exact |")
    assert float(accuracy[2]) < 1e-6  # the attributions add up to the probabilities
    # the noise column's figure
    assert "| sepal_length | sepal_width | petal_length | petal_width | noise |" in text
    assert "The noise column's mean |attribution| is " in text
