"""``python -m bench.monitoring --quick`` keeps working: it starts the four configurations
(monitor off, payload log, drift, a stalled CloudEvents sink), loads them and writes its section
of RESULTS.md in place, with the goal rows and what the monitor did.

On the session's Iris bundle, one round of 1 s loads. Timings are read, never bounded: the
machine is shared.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

OTHER = "# Benchmark results\n\n## Model repository (issue 14)\n\nkept\n"
STALE = "## Monitoring loop (issue 15)\n\nstale figures\n"
AFTER = "## Explanations (issue 17)\n\nkept too\n"


def _cells(text: str, start: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(start))
    return [cell.strip() for cell in line.strip("|").split("|")]


def _count(cell: str) -> int:
    return int(cell.split()[0].replace(",", ""))


@pytest.mark.slow
def test_quick_run_measures_the_monitor_and_writes_its_section(
    iris_bundle: Path, tmp_path: Path
) -> None:
    out = tmp_path / "RESULTS.md"
    out.write_text(OTHER + "\n" + STALE + "\n" + AFTER)
    artifacts = iris_bundle.parent.parent
    done = subprocess.run(
        [sys.executable, "-m", "bench.monitoring", "--quick", "--artifacts", str(artifacts),
         "--pin", "off", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = out.read_text()
    # its own section replaced in place, the others kept
    assert text.startswith(OTHER) and text.endswith(AFTER)
    assert text.count("## Monitoring loop (issue 15)") == 1 and "stale figures" not in text
    assert "QUICK" in text and "FAILED REQUESTS" not in text
    # the three goals, each a ratio judged yes or no, with its round's figure
    for start in ("| 15a. payload log on", "| 15b. drift tracking", "| 15c. a stalled"):
        goal = _cells(text, start)
        assert float(goal[1].split("x")[0]) > 0 and goal[2].endswith("x")
        assert goal[3] in ("yes", "**no**")
    assert "(15a: server CPU per request (32 connections)" in text
    # every configuration loaded at both connection counts
    for key in ("drift", "base", "log", "stalled"):
        figures = _cells(text, f"| `{key}`: ")
        assert len(figures) == 9 and "n/a" not in figures
    # the log really ran: lines written during the loads, the metric and the files agree
    log = _cells(text, "| `log` |")
    loaded, answered = (_count(part) for part in log[1].split(" / "))
    assert answered >= loaded > 0 and _count(log[2]) == answered
    assert log[3] == "0"
    metric, files = (_count(part) for part in log[4].split(" / "))
    assert metric == files > 0
    # the stalled sink: the file log goes on, the events are dropped (and counted by reason)
    stalled = _cells(text, "| `stalled` |")
    loaded, answered = (_count(part) for part in stalled[1].split(" / "))
    assert answered >= loaded > 0 and _count(stalled[2]) == answered
    assert '"events queue full"' in stalled[3]
    # drift tracked the rows (the fixture's bundle stores its training distributions)
    drift = _cells(text, "| `drift` |")
    assert _count(drift[5]) > 0  # rows binned: at most the rows answered (see the section)
    assert "its training distributions: the bundle's own" in text
    assert "`model_feature_drift` at the end of the last round" in text
    assert "The stalled sink accepted" in text
