"""The atheris harness over request parsing runs clean for a few hundred inputs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support import ROOT

HARNESS = ROOT / "fuzz" / "fuzz_inputs.py"
CORPUS = ROOT / "fuzz" / "corpus"


def test_fuzz_harness_runs_clean(tmp_path: Path) -> None:
    """Seeds (including past crashers) and 300 mutated inputs: only ServiceErrors, no crash."""
    new = tmp_path / "new"
    new.mkdir()
    result = subprocess.run(
        [
            sys.executable,
            str(HARNESS),
            "-runs=300",
            "-seed=1",
            "-max_len=8192",
            f"-dict={ROOT / 'fuzz' / 'inputs.dict'}",
            f"-artifact_prefix={tmp_path}/",
            str(new),
            str(CORPUS),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Done 300 runs" in result.stderr, result.stderr[-3000:]
    assert not list(tmp_path.glob("crash-*")), "the harness left a crash artifact"


def test_corpus_is_small_seed_files() -> None:
    """The kept corpus is a handful of small seeds, one per target (parser and model) at least."""
    seeds = sorted(CORPUS.iterdir())
    assert 5 <= len(seeds) <= 40
    assert all(seed.stat().st_size <= 16 * 1024 for seed in seeds)
    assert {seed.read_bytes()[0] % 2 for seed in seeds} == {0, 1}  # JSON and CSV seeds
    assert {seed.read_bytes()[0] % 8 for seed in seeds} == set(range(8))  # every target
