"""``python -m bench --smoke`` keeps working: every server starts, answers the loads and stops.

Runs the real thing briefly against the session's Iris bundle. Without wrk it falls back to the
asyncio load generator, so this runs in CI without installing anything.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.load import run_python
from bench.run import TARGETS
from tests.support import ROOT, free_port


def run_bench(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.slow
def test_smoke_mode_measures_every_server(
    iris_bundle: Path, penguins_bundle: Path, tmp_path: Path
) -> None:
    """The typed loads serve the session's penguins bundle, beside the Iris one."""
    out = tmp_path / "RESULTS.md"
    # The explanation and monitoring phases have smoke tests of their own (test_bench_explain,
    # test_bench_monitoring); the repository's is checked here.
    done = run_bench(
        "--artifacts", str(iris_bundle.parent.parent), "--out", str(out), "--phases", "repository"
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "## Explanations (issue 17)" not in out.read_text()
    if shutil.which("wrk") is None:
        assert "the asyncio client" in done.stdout  # says which load generator it used
    text = out.read_text()
    assert "SMOKE" in text
    for target in TARGETS:
        assert target.title in text
    for goal in (
        "1. single-row throughput",
        "2. p50",
        "3. Keras runtime with batching",
        "4a.",
        "4b.",
        "5a.",
        "13c.",
        "13d.",
        "(13c against its transport",
        "(gRPC ceiling req/s vs V2 REST's)",
    ):
        assert goal in text
    assert "| gRPC ceiling: grpc.aio" in text  # gRPC's ceiling was measured with the protocols
    # the model repository's phase: memory per version, shadow cost, canary share
    assert "## Model repository (issue 14)" in text
    assert "14a. each extra loaded version" in text and "14d. canary_percent 50" in text
    assert "The shadow ran" in text
    assert "FAILED REQUESTS" not in text


@pytest.mark.slow
def test_python_load_generator_without_wrk(
    iris_bundle: Path, penguins_bundle: Path, tmp_path: Path
) -> None:
    out = tmp_path / "RESULTS.md"
    done = run_bench(
        "--artifacts",
        str(iris_bundle.parent.parent),
        "--out",
        str(out),
        "--load",
        "python",
        "--only",
        "ceiling,litert",
        "--phases",
        "none",  # the load generator is what this checks
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "the asyncio client" in done.stdout
    text = out.read_text()
    assert "NOT comparable with wrk" in text
    goal_1 = next(line for line in text.splitlines() if line.startswith("| 1. single-row"))
    assert "x (" in goal_1  # a ratio against the ceiling was measured


def test_python_load_generator_counts_failures() -> None:
    # Nothing listens on this port: every connection fails and is counted, nothing hangs.
    result = run_python(f"http://127.0.0.1:{free_port()}/predict", b"{}", "application/json", 2, 1)
    assert result.requests == 0
    assert result.errors >= 1


@pytest.mark.slow
def test_in_process_costs_are_measured_for_every_app(iris_bundle: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.inprocess", "--rounds", "1", "--requests", "300",
         "--artifacts", str(iris_bundle.parent.parent)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.split() for line in done.stdout.splitlines()[1:]]
    assert [row[0] for row in rows] == ["ceiling", "bare", "quiet", "full"]
    assert all(float(row[2]) > 0 for row in rows)  # microseconds per request: measured, not bounded
