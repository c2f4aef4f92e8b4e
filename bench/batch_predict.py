"""Batch scoring (issue 16): ``keras-serve predict`` of a 1,000,000-row, 13-column CSV, offline.

``python -m bench.batch_predict [--rows N] [--runs N] [--chunk-rows N] [--out FILE]`` replaces
its section of bench/RESULTS.md (``--out -``: prints it). Everything is made in a temporary
directory:

- the model: scikit-learn's wine data set (13 numeric features, 3 classes) written as a CSV and
  trained with ``python -m training --data wine.csv --target target --epochs 10 --quiet``;
- the data: wine rows drawn at random with Gaussian noise (5% of each feature's standard
  deviation, some rows landing outside the training range, as real data does), spelled with
  the source's decimals;
- each run: ``python -m keras_serve predict --data ... --out ... --artifacts ... --model wine
  --quiet`` in a process of its own, timed from start to exit (start-up, imports and model
  loading included), its peak RSS and CPU time read from ``wait4`` (the files are written by
  another process, so this one stays small: a child's peak RSS counts its parent's memory at
  the fork). The answers are checked (one row per input row, the CSV answer's columns).

The figures are medians of the runs: the machine is shared, and the figures are noisy.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench import report
from bench.servers import ROOT

SECTION = "## Batch scoring: `keras-serve predict` (issue 16)"

ROWS = 1_000_000
RUNS = 3
EPOCHS = 10
NOISE = 0.05  # of each feature's standard deviation
TRAIN_TIMEOUT = 900
RUN_TIMEOUT = 600
# The goals: the whole process, start to exit.
GOAL_ROWS_PER_SECOND = 200_000
GOAL_PEAK_RSS_MB = 400
COMMAND = [sys.executable, "-m", "keras_serve", "predict"]


@dataclass(frozen=True)
class Run:
    seconds: float
    cpu_seconds: float  # user + system: less sensitive to a busy machine than the wall time
    peak_rss_mb: float


def say(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


def make_files(work: Path, rows: int) -> None:
    """``wine.csv`` and ``rows.csv`` under ``work``, written by a process of its own
    (``--write``): a forked child's peak RSS counts its parent's memory at the fork, so this
    process keeps no data set and no scikit-learn."""
    command = [sys.executable, "-m", "bench.batch_predict", "--write", str(work)]
    subprocess.run([*command, "--rows", str(rows)], cwd=ROOT, check=True, timeout=RUN_TIMEOUT)


def write_files(work: Path, rows: int, seed: int = 0) -> None:
    """Wine as a CSV with its target (to train on), and ``rows`` wine rows with noise (the 13
    features, no target) to score."""
    import numpy as np
    import orjson
    from sklearn.datasets import load_wine

    wine = load_wine(as_frame=True)
    wine.frame.to_csv(work / "wine.csv", index=False)
    x = wine.data.to_numpy(np.float64)
    decimals = [max(len(f"{v:g}".partition(".")[2]) for v in column) for column in x.T]
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, NOISE, (rows, x.shape[1])) * x.std(axis=0)
    drawn = x[rng.integers(0, len(x), rows)] + noise
    for j, places in enumerate(decimals):
        drawn[:, j] = np.round(drawn[:, j], places)
    with (work / "rows.csv").open("wb") as out:
        out.write((",".join(wine.data.columns) + "\n").encode())
        for start in range(0, rows, 100_000):  # orjson spells each float in its shortest form
            text = orjson.dumps(drawn[start : start + 100_000].tolist())[2:-2]
            out.write(text.replace(b"],[", b"\n") + b"\n")


def train(work: Path) -> Path:
    """``python -m training`` on wine.csv, as the issue says; the artifacts directory."""
    artifacts = work / "artifacts"
    command = [sys.executable, "-m", "training", "--data", str(work / "wine.csv")]
    command += ["--target", "target", "--epochs", str(EPOCHS), "--quiet"]
    done = subprocess.run(
        [*command, "--artifacts", str(artifacts)],
        cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
        text=True,
        timeout=TRAIN_TIMEOUT,
    )
    if done.returncode != 0:
        raise RuntimeError(f"training wine failed: {done.stderr[-3000:]}")
    return artifacts


def run_once(command: list[str]) -> Run:
    """One process: wall time from start to exit, and its own peak RSS (``wait4``)."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    error = process.stderr.read()  # --quiet: nothing, unless it fails
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    process.stderr.close()
    if process.returncode != 0 or error:
        raise RuntimeError(f"keras-serve predict exited {process.returncode}: {error[-2000:]!r}")
    # ru_maxrss is in KiB on Linux
    return Run(seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)


def check_answers(out: Path, rows: int) -> None:
    with out.open("rb") as answers:
        header = answers.readline()
        count = sum(1 for _ in answers)
    if header != b"label,prob_0,prob_1,prob_2,warnings\n" or count != rows:
        raise RuntimeError(f"{out}: header {header!r}, {count} rows (expected {rows})")


def measure(rows: int, runs: int, chunk_rows: int | None, work: Path) -> tuple[list[Run], int]:
    say(f"writing wine.csv and {rows:,} rows to score")
    make_files(work, rows)
    say(f"training wine ({EPOCHS} epochs)")
    artifacts = train(work)
    data, out = work / "rows.csv", work / "answers.csv"
    command = [*COMMAND, "--data", str(data), "--out", str(out), "--artifacts", str(artifacts)]
    command += ["--model", "wine", "--quiet"]
    if chunk_rows is not None:
        command += ["--chunk-rows", str(chunk_rows)]
    results = []
    for n in range(runs):
        results.append(run_once(command))
        say(f"run {n + 1}: {results[-1].seconds:.2f} s, {results[-1].peak_rss_mb:.0f} MB")
    check_answers(out, rows)
    return results, data.stat().st_size


def table(results: list[Run], rows: int, size: int, chunk_rows: int | None) -> str:
    seconds = statistics.median(r.seconds for r in results)
    rss = statistics.median(r.peak_rss_mb for r in results)
    cpu = statistics.median(r.cpu_seconds for r in results)
    rate = rows / seconds
    chunks = f"{chunk_rows:,}" if chunk_rows is not None else "10,000 (the default)"
    basics = report.machine_basics(())
    lines = [
        SECTION,
        "",
        f"Measured by `python -m bench.batch_predict` on {basics['cpu']}, {basics['cores']} "
        f"cores, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC. "
        f"keras-serve predict, offline: {rows:,} rows x 13 columns ({size / 1e6:.0f} MB), "
        f"chunks of {chunks} rows, median of {len(results)} runs (whole process)",
        "",
        "| figure | value | goal | met |",
        "| --- | --- | --- | --- |",
        f"| wall time, start to exit | {seconds:.2f} s | | |",
        f"| CPU time (user + system) | {cpu:.2f} s | | |",
        f"| rows/s | {rate:,.0f} | >= {GOAL_ROWS_PER_SECOND:,} | "
        f"{'yes' if rate >= GOAL_ROWS_PER_SECOND else 'NO'} |",
        f"| peak RSS | {rss:.0f} MB | <= {GOAL_PEAK_RSS_MB} MB | "
        f"{'yes' if rss <= GOAL_PEAK_RSS_MB else 'NO'} |",
        "",
        "runs: "
        + ", ".join(f"{r.seconds:.2f} s / {r.peak_rss_mb:.0f} MB" for r in results)
        + f"; load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.batch_predict", description=__doc__)
    parser.add_argument("--rows", type=int, default=ROWS, help=f"rows in the CSV ({ROWS:,})")
    parser.add_argument("--runs", type=int, default=RUNS, help=f"timed runs ({RUNS})")
    parser.add_argument("--chunk-rows", type=int, help="keras-serve predict's --chunk-rows")
    parser.add_argument(
        "--out", default=str(ROOT / "bench" / "RESULTS.md"),
        help="results file whose section is replaced (default bench/RESULTS.md; - prints it)",
    )  # fmt: skip
    parser.add_argument("--write", type=Path, metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rows < 1 or args.runs < 1:
        parser.error("--rows and --runs must be at least 1")
    if args.write is not None:  # the files only (make_files' process)
        write_files(args.write, args.rows)
        return 0
    with tempfile.TemporaryDirectory(prefix="batch-predict-") as work:
        results, size = measure(args.rows, args.runs, args.chunk_rows, Path(work))
    out = None if args.out == "-" else Path(args.out)
    report.publish(table(results, args.rows, size, args.chunk_rows), out, SECTION)
    return 0


if __name__ == "__main__":
    sys.exit(main())
