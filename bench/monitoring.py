"""The monitoring loop's cost on the hot path (issue 15): the payload log, drift tracking, and a
stalled CloudEvents sink.

``python -m bench.monitoring [--quick]`` runs it alone (full: replaces its section of
bench/RESULTS.md; ``--quick``: prints it); ``python -m bench`` runs it after the other phases
(quickly with ``--smoke``, training nothing) and writes the same section. The settings are read
at start, so each configuration is its own ``python -m service`` process (LiteRT, the main
benchmark's ``litert`` server otherwise) over a copy of the Iris bundle:

- ``base``: ``DRIFT_WINDOW=0``, no payload log: the monitor is off;
- ``log``: ``DRIFT_WINDOW=0``, ``PAYLOAD_LOG_DIR`` set, ``PAYLOAD_LOG_SAMPLE=1`` (every request);
- ``drift``: ``DRIFT_WINDOW=1000``, no payload log;
- ``stalled``: as ``log``, plus ``PAYLOAD_LOG_URL`` on a local socket that accepts connections,
  reads what it is sent and never answers.

Each round starts the four, warms each up, then loads them in turn with the single-row
``POST /predict`` of the main benchmark (wrk, or its asyncio client) at 1 and 32 connections,
the order reversed from round to round so that the configurations compared are adjacent; ratios
are taken within each round and the goals judge their median. ``/metrics`` shows what the
monitor did: payload log lines written, drops by reason, rows taken in by the drift tracker.

The bench's Iris bundle may predate drift tracking (no training distributions in its
metadata): drift would then track nothing. The copy measured is given distributions fitted on
scikit-learn's Iris data (``bundle.distributions.fit``, its manifest written again); the
section says which it was. Medians and ratios only: the machine is shared, and noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import selectors
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

import bundle
from bench import load, report
from bench.servers import HOST, ROOT, Server

MODEL = "iris"
SECTION = "## Monitoring loop (issue 15)"
ROW = b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}'
JSON = {"Content-Type": "application/json"}

# The goals.
LOG_RPS = 0.85  # payload log on (every request): req/s at least this times off's
DRIFT_RPS = 0.95  # drift tracking (DRIFT_WINDOW=1000): req/s at least this times DRIFT_WINDOW=0's
STALL_P99 = 1.2  # a stalled sink: single-row p99 at most this times no sink's

LOAD_CONNECTIONS = (1, 32)  # as bench/run.py: latency at 1 connection, requests/s at 32
DRIFT_WINDOW = 1000  # the service's default
# Every configuration stops within a few seconds: a stalled sink holds the shutdown for the
# whole drain time otherwise (its unsent events are counted as dropped, "events shutdown").
SHUTDOWN_TIMEOUT = 3.0


@dataclass(frozen=True)
class Config:
    key: str
    title: str
    log: bool = False  # PAYLOAD_LOG_DIR set, PAYLOAD_LOG_SAMPLE=1
    drift: bool = False  # DRIFT_WINDOW=1000 (else 0)
    stalled: bool = False  # PAYLOAD_LOG_URL on the stalled socket


CONFIGS = {
    c.key: c
    for c in (
        Config("drift", f"DRIFT_WINDOW={DRIFT_WINDOW}, no payload log", drift=True),
        Config("base", "DRIFT_WINDOW=0, no payload log (monitor off)"),
        Config("log", "DRIFT_WINDOW=0, PAYLOAD_LOG_DIR set, PAYLOAD_LOG_SAMPLE=1", log=True),
        Config(
            "stalled",
            "as `log`, plus PAYLOAD_LOG_URL on a socket that never answers",
            log=True,
            stalled=True,
        ),
    )
}
# The load order of even rounds (odd rounds: reversed): each pair compared is adjacent.
ORDER = ("drift", "base", "log", "stalled")


@dataclass(frozen=True)
class Comparison:
    label: str
    what: str
    on: str
    off: str


COMPARISONS = (
    Comparison("15a", "payload log on, every request (DRIFT_WINDOW=0 in both)", "log", "base"),
    Comparison(
        "15b", f"drift tracking, DRIFT_WINDOW={DRIFT_WINDOW} vs 0 (no payload log)", "drift", "base"
    ),
    Comparison(
        "15c",
        "a stalled CloudEvents sink (payload log on in both, DRIFT_WINDOW=0)",
        "stalled",
        "log",
    ),
)


@dataclass
class Options:
    quick: bool
    rounds: int
    seconds: float
    warmup: float
    generator: str  # "wrk" or "python"
    source: Path  # the Iris version directory copied
    pin: tuple[set[int], set[int]] | None = None  # (server CPUs, load generator CPUs)
    command: str = "python -m bench.monitoring"


@dataclass
class Counts:
    """What one configuration's monitor did, summed over rounds."""

    requests: int = 0  # answered during the timed loads (the load generator's count)
    answered: float = 0.0  # the same by the service: inference_requests_total{status="200"}
    lines: float = 0.0  # payload_log_lines_total growth during the timed loads
    drops: dict[str, float] = field(default_factory=dict)  # by reason, during the timed loads
    lines_total: float = 0.0  # payload_log_lines_total at the end of each process (warm-up too)
    file_lines: int = 0  # lines in its payloads-*.jsonl files at the end (warm-up too)
    drift_rows: int = 0  # rows the drift tracker took in during the timed loads
    stop_s: list[float] = field(default_factory=list)  # SIGTERM to exit


@dataclass
class Results:
    options: Options
    machine: dict[str, str] = field(default_factory=dict)
    distributions: str = ""  # where the bundle's training distributions came from
    # per round: configuration key -> figures (bench.run.record's keys)
    rounds: list[dict[str, dict[str, Any]]] = field(default_factory=list)
    counts: dict[str, Counts] = field(default_factory=lambda: {k: Counts() for k in CONFIGS})
    psi: dict[str, float] = field(default_factory=dict)  # model_feature_drift at the end
    sink_connections: int = 0  # connections the stalled sink accepted
    sink_bytes: int = 0  # bytes it read (events' headers and bodies)
    errors: int = 0
    seconds: float = 0.0


# -- the bundle ---------------------------------------------------------------------------------
def prepare_bundle(source: Path, artifacts: Path) -> str:
    """A copy of ``source`` as ``<artifacts>/iris/1``, with training distributions; says where
    they came from."""
    target = artifacts / MODEL / "1"
    shutil.copytree(source, target)
    metadata = bundle.read_metadata(target)
    if metadata.distributions is not None:
        return "the bundle's own (stored at training)"
    from sklearn.datasets import load_iris

    from bundle import distributions

    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    if metadata.feature_names != names:
        raise RuntimeError(f"{source} has no distributions and is not the Iris bundle")
    data = load_iris().data.astype(np.float32)
    fitted = [distributions.fit("numeric", data[:, j]) for j in range(len(names))]
    bundle.write_metadata(target, metadata.model_copy(update={"distributions": fitted}))
    bundle.write_manifest(target)
    return (
        "the bundle has none (trained before drift tracking): the copy measured got deciles "
        "fitted on scikit-learn's 150 Iris rows (`bundle.distributions.fit`), its manifest "
        "written again"
    )


# -- the stalled sink ---------------------------------------------------------------------------
class StalledSink:
    """A loopback socket that accepts every connection, reads (and discards) what it is sent and
    never answers: a CloudEvents sink that hangs."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind((HOST, 0))
        self.listener.listen(64)
        self.listener.setblocking(False)
        self.url = f"http://{HOST}:{self.listener.getsockname()[1]}/events"
        self.connections = 0
        self.bytes = 0
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ)
        self.open: list[socket.socket] = []
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name="stalled-sink", daemon=True)

    def _run(self) -> None:
        while not self.stopping:
            for key, _ in self.selector.select(0.2):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self.listener:
                    with contextlib.suppress(OSError):
                        conn, _ = self.listener.accept()
                        conn.setblocking(False)
                        self.selector.register(conn, selectors.EVENT_READ)
                        self.open.append(conn)
                        self.connections += 1
                    continue
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if data:
                    self.bytes += len(data)
                else:  # the sender gave up on this connection: close our end too
                    self.selector.unregister(sock)
                    self.open.remove(sock)
                    sock.close()

    def __enter__(self) -> StalledSink:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping = True
        self.thread.join(5)
        for sock in [*self.open, self.listener]:
            sock.close()
        self.selector.close()


# -- the servers --------------------------------------------------------------------------------
def env_for(config: Config, artifacts: Path, payloads: Path, sink: StalledSink) -> dict[str, str]:
    env = {
        "ARTIFACTS_DIR": str(artifacts),
        "MODEL_NAME": MODEL,
        "MODEL_RUNTIME": "litert",
        "DRIFT_WINDOW": str(DRIFT_WINDOW if config.drift else 0),
        "SHUTDOWN_TIMEOUT_SECONDS": f"{SHUTDOWN_TIMEOUT:g}",
    }
    if config.log:
        env["PAYLOAD_LOG_DIR"] = str(payloads)
        env["PAYLOAD_LOG_SAMPLE"] = "1"
    if config.stalled:
        env["PAYLOAD_LOG_URL"] = sink.url
    return env


def _request(server: Server, method: str, path: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(HOST, server.port, timeout=60)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def scrape(server: Server) -> str:
    status, answer = _request(server, "GET", "/metrics")
    if status != 200:
        raise RuntimeError(f"/metrics answered {status}")
    return answer.decode()


def samples(text: str, name: str) -> dict[str, float]:
    """The samples of the Prometheus series ``name`` by their label string ("" for none)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            head, _, value = line.rpartition(" ")
            out[head[len(name) :]] = out.get(head[len(name) :], 0.0) + float(value)
    return out


def _reason(labels: str) -> str:
    return labels.split('reason="', 1)[1].split('"', 1)[0] if 'reason="' in labels else labels


@dataclass
class Snapshot:
    answered: float  # inference_requests_total{status="200"}
    lines: float
    drops: dict[str, float]
    drift_rows: int

    def __sub__(self, other: Snapshot) -> Snapshot:
        reasons = set(self.drops) | set(other.drops)
        return Snapshot(
            self.answered - other.answered,
            self.lines - other.lines,
            {r: self.drops.get(r, 0.0) - other.drops.get(r, 0.0) for r in reasons},
            self.drift_rows - other.drift_rows,
        )


def snapshot(server: Server, drift: bool) -> Snapshot:
    text = scrape(server)
    answered = sum(
        value
        for labels, value in samples(text, "inference_requests_total").items()
        if 'status="200"' in labels
    )
    lines = sum(samples(text, "payload_log_lines_total").values())
    drops = {
        _reason(labels): value
        for labels, value in samples(text, "payload_log_dropped_total").items()
    }
    rows = 0
    if drift:
        status, answer = _request(server, "GET", f"/models/{MODEL}/drift")
        if status != 200:
            raise RuntimeError(f"GET /models/{MODEL}/drift answered {status}: {answer[:300]!r}")
        rows = int(orjson.loads(answer).get("rows_seen", 0))
    return Snapshot(answered, lines, drops, rows)


def settled(server: Server, drift: bool, timeout: float = 15.0) -> Snapshot:
    """The monitor's counters once its queue is drained: two readings 0.2 s apart agree."""
    previous = snapshot(server, drift)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.2)
        current = snapshot(server, drift)
        if current == previous:
            return current
        previous = current
    return previous


def file_lines(directory: Path) -> int:
    return sum(
        path.read_bytes().count(b"\n") for path in sorted(directory.glob("payloads-*.jsonl"))
    )


# -- the measurement ----------------------------------------------------------------------------
def measure_round(
    options: Options,
    results: Results,
    work: Path,
    artifacts: Path,
    sink: StalledSink,
    round_: int,
) -> None:
    from bench.run import record  # bench.run imports this module

    runner: Callable[..., load.LoadResult] = (
        load.run_wrk if options.generator == "wrk" else load.run_python
    )
    order = ORDER if round_ % 2 == 0 else ORDER[::-1]
    cpus = None if options.pin is None else options.pin[0]
    figures: dict[str, dict[str, Any]] = {key: {"errors": 0} for key in order}
    servers: dict[str, Server] = {}
    payloads = {key: work / f"payloads-{key}-{round_}" for key in order}
    with contextlib.ExitStack() as stack:
        for key in order:
            env = env_for(CONFIGS[key], artifacts, payloads[key], sink)
            log = work / f"{key}-{round_}.log"
            servers[key] = stack.enter_context(Server(["-m", "service"], env, log, cpus=cpus))
        for key in order:
            seconds = servers[key].wait_ready(timeout=300)
            report.say(f"round {round_ + 1}/{options.rounds}: {key} ready in {seconds:.2f} s")
        for key in order:  # first answers; the stalled sink's queue fills
            done = runner(
                servers[key].url + "/predict", ROW, "application/json", 32, options.warmup
            )
            figures[key]["errors"] += done.errors
        before = {key: settled(servers[key], CONFIGS[key].drift) for key in order}
        for connections in LOAD_CONNECTIONS:
            for key in order:
                server = servers[key]
                cpu_before = server.cpu_seconds()
                result = runner(
                    server.url + "/predict", ROW, "application/json", connections, options.seconds
                )
                record(figures[key], f"c{connections}", result, cpu_before, server.cpu_seconds())
                results.counts[key].requests += result.requests
                report.say(
                    f"round {round_ + 1}/{options.rounds}, {key} @{connections}: "
                    f"{result.rps:,.0f} req/s, p50 {result.p50_ms:.2f} ms, "
                    f"p99 {result.p99_ms:.2f} ms"
                    + (f" ({result.errors} FAILED)" if result.errors else "")
                )
        for key in order:
            config, server, counts = CONFIGS[key], servers[key], results.counts[key]
            after = settled(server, config.drift)
            grown = after - before[key]
            counts.answered += grown.answered
            counts.lines += grown.lines
            counts.drift_rows += grown.drift_rows
            for reason, value in grown.drops.items():
                counts.drops[reason] = counts.drops.get(reason, 0.0) + value
            counts.lines_total += after.lines
            if config.drift:
                text = scrape(server)
                results.psi = {
                    labels.split('feature="', 1)[1].split('"', 1)[0]: value
                    for labels, value in samples(text, "model_feature_drift").items()
                    if 'feature="' in labels
                }
        for key in order:  # one at a time, timed: a stalled sink holds the shutdown up
            started = time.perf_counter()
            servers[key].stop()
            results.counts[key].stop_s.append(time.perf_counter() - started)
            if CONFIGS[key].log:
                results.counts[key].file_lines += file_lines(payloads[key])
    results.errors += sum(f["errors"] for f in figures.values())
    results.rounds.append(figures)


def measure(options: Options) -> Results:
    """Every round of this phase, in a temporary directory removed after."""
    results = Results(options, report.machine_info(options.generator))
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-monitoring-") as tmp, StalledSink() as sink:
        work = Path(tmp)
        artifacts = work / "artifacts"
        results.distributions = prepare_bundle(options.source, artifacts)
        for round_ in range(options.rounds):
            measure_round(options, results, work, artifacts, sink, round_)
        results.sink_connections, results.sink_bytes = sink.connections, sink.bytes
    results.machine["load_after"] = report.loadavg()
    results.seconds = time.monotonic() - started
    return results


# -- the report ---------------------------------------------------------------------------------
def _yes(met: bool | None, context: bool = False) -> str:
    if met is None:
        return "-"
    word = "yes" if met else "no"
    if context:
        return f"({word})"
    return word if met else f"**{word}**"


def _median(results: Results, key: str, figure: str) -> float | None:
    values = [r[key][figure] for r in results.rounds if r[key].get(figure) is not None]
    return statistics.median(values) if values else None


def _ratios(results: Results, on: str, off: str, figure: str) -> list[float]:
    return [
        r[on][figure] / r[off][figure]
        for r in results.rounds
        if r[on].get(figure) is not None and r[off].get(figure)
    ]


def _fmt(figure: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    if figure.startswith("rps"):
        return f"{value:,.0f}"
    if figure.startswith(("p50", "p99")):
        return f"{value:.2f} ms"
    if figure.startswith("cpu_us"):
        return f"{value:.0f} us"
    return f"{value:g}"


# (comparison label, figure, text, bound, higher is better, judged): the first row of each
# comparison is its goal, the others explain it.
ROWS: tuple[tuple[str, str, str, float | None, bool, bool], ...] = (
    ("15a", "rps_c32", f"req/s (32 connections) >= {LOG_RPS:g}x off's", LOG_RPS, True, True),
    ("15a", "rps_c1", f"req/s (1 connection) >= {LOG_RPS:g}x off's", LOG_RPS, True, False),
    (
        "15a",
        "cpu_us_c32",
        f"server CPU per request (32 connections) <= {1 / LOG_RPS:.2f}x off's",
        1 / LOG_RPS,
        False,
        False,
    ),
    ("15a", "p99_c1", "single-row p99 (1 connection), on vs off", None, False, False),
    (
        "15b",
        "rps_c32",
        f"req/s (32 connections) >= {DRIFT_RPS:g}x DRIFT_WINDOW=0's",
        DRIFT_RPS,
        True,
        True,
    ),
    (
        "15b",
        "rps_c1",
        f"req/s (1 connection) >= {DRIFT_RPS:g}x DRIFT_WINDOW=0's",
        DRIFT_RPS,
        True,
        False,
    ),
    (
        "15b",
        "cpu_us_c32",
        f"server CPU per request (32 connections) <= {1 / DRIFT_RPS:.2f}x DRIFT_WINDOW=0's",
        1 / DRIFT_RPS,
        False,
        False,
    ),
    (
        "15c",
        "p99_c1",
        f"single-row p99 (1 connection) <= {STALL_P99:g}x no sink's",
        STALL_P99,
        False,
        True,
    ),
    (
        "15c",
        "p99_c32",
        f"p99 (32 connections) <= {STALL_P99:g}x no sink's",
        STALL_P99,
        False,
        False,
    ),
    (
        "15c",
        "p50_c1",
        f"single-row p50 (1 connection) <= {STALL_P99:g}x no sink's",
        STALL_P99,
        False,
        False,
    ),
    ("15c", "rps_c32", "req/s (32 connections), stalled sink vs none", None, True, False),
)


def goals(results: Results) -> list[tuple[str, str, str, bool | None, bool]]:
    """(goal, measured, per round, met, context) for each row."""
    comparisons = {c.label: c for c in COMPARISONS}
    out = []
    for label, figure, text, bound, higher, judged in ROWS:
        comparison = comparisons[label]
        ratios = _ratios(results, comparison.on, comparison.off, figure)
        if not ratios:
            continue
        ratio = statistics.median(ratios)
        on = _median(results, comparison.on, figure)
        off = _median(results, comparison.off, figure)
        met = None if bound is None else ratio >= bound if higher else ratio <= bound
        title = f"{label}. {comparison.what}: {text}" if judged else f"({label}: {text})"
        out.append(
            (
                title,
                f"{ratio:.2f}x ({_fmt(figure, on)} vs {_fmt(figure, off)})",
                ", ".join(f"{r:.2f}x" for r in ratios),
                met,
                not judged,
            )
        )
    return out


def section(results: Results) -> str:
    """This phase's section of RESULTS.md, from its heading to a blank line."""
    options, machine = results.options, results.machine
    mode = "QUICK (short loads, one round: the figures mean little)" if options.quick else "full"
    out = [
        SECTION,
        "",
        f"Measured by `.venv/bin/{options.command}` (`make bench` runs it too); mode: {mode}; "
        f"{machine['date']}; wall time {results.seconds / 60:.1f} min; {len(results.rounds)} "
        f"round(s) of {options.seconds:g} s loads. Load generator: {machine['generator']}; "
        f"CPUs: {_pinning(options)}. Load average (1, 5, 15 min) before: "
        f"{machine['load_before']}; after: {machine.get('load_after', 'n/a')}. Bundle copied: "
        f"`{options.source}`; its training distributions: {results.distributions}.",
        "",
        "| goal | measured (median ratio: on vs off) | per round | met |",
        "| --- | --- | --- | --- |",
    ]
    rows = goals(results)
    for title, measured, per_round, met, context in rows:
        out.append(f"| {title} | {measured} | {per_round or '-'} | {_yes(met, context)} |")
    failed = [title for title, _, _, met, context in rows if met is False and not context]
    out += ["", ("Every goal holds." if not failed else "Not met: " + "; ".join(failed) + ".")]
    if results.errors:
        out += ["", f"**{results.errors} FAILED REQUESTS** during this phase."]
    out += _figures_table(results)
    out += _monitor_table(results)
    out += _how(results)
    return "\n".join(out) + "\n"


def _pinning(options: Options) -> str:
    if options.pin is None:
        return "not pinned"
    servers, generator = (",".join(map(str, sorted(c))) for c in options.pin)
    return f"servers on CPU {servers}, the load generator on CPU {generator}"


FIGURES = ("rps_c1", "p50_c1", "p99_c1", "cpu_us_c1", "rps_c32", "p50_c32", "p99_c32", "cpu_us_c32")


def _figures_table(results: Results) -> list[str]:
    if not results.rounds:
        return []
    out = [
        "",
        "### Each configuration: one Iris row a request, `POST /predict` (medians over "
        f"{len(results.rounds)} round(s))",
        "",
        "| configuration | req/s @1 | p50 @1 | p99 @1 | CPU/req @1 | req/s @32 | p50 @32 | "
        "p99 @32 | CPU/req @32 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key in ORDER:
        cells = [_fmt(f, _median(results, key, f)) for f in FIGURES]
        out.append(f"| `{key}`: {CONFIGS[key].title} | " + " | ".join(cells) + " |")
    return out


def _drops(drops: dict[str, float]) -> str:
    shown = {reason: value for reason, value in sorted(drops.items()) if value}
    if not shown:
        return "0"
    return ", ".join(f'{value:,.0f} "{reason}"' for reason, value in shown.items())


def _monitor_table(results: Results) -> list[str]:
    out = [
        "",
        "### What the monitor did (summed over rounds)",
        "",
        "| configuration | requests answered (timed loads): the load generator's / the "
        "service's | payload log lines written (timed loads) | dropped, by reason (timed loads) "
        "| `payload_log_lines_total` at the end / lines in its files (warm-up included) | drift "
        "`rows_seen` (timed loads) | SIGTERM to exit |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key in ORDER:
        counts, config = results.counts[key], CONFIGS[key]
        ends = f"{counts.lines_total:,.0f} / {counts.file_lines:,}" if config.log else "-"
        lines = f"{counts.lines:,.0f}" if config.log or counts.lines else "-"
        drops = _drops(counts.drops) if config.log or any(counts.drops.values()) else "-"
        rows = f"{counts.drift_rows:,}" if config.drift else "-"
        stop = " / ".join(f"{s:.1f} s" for s in counts.stop_s) if counts.stop_s else "n/a"
        out.append(
            f"| `{key}` | {counts.requests:,} / {counts.answered:,.0f} | {lines} | {drops} | "
            f"{ends} | {rows} | {stop} |"
        )
    stalled = results.counts["stalled"]
    psi = ", ".join(f"{name} {value:.2f}" for name, value in results.psi.items()) or "none"
    out += [
        "",
        f"The stalled sink accepted {results.sink_connections:,} connection(s) and read "
        f"{results.sink_bytes:,} bytes of events it never answered; the `stalled` server "
        f"dropped {_drops(stalled.drops)} payload records during its timed loads while writing "
        f"{stalled.lines:,.0f} lines to its file. `model_feature_drift` at the end of the last "
        f"round (one row repeated, far from training: every PSI high): {psi}. The service's count "
        'of answered requests (`inference_requests_total{status="200"}`) passes the load '
        "generator's by the requests in flight when each load ended (up to 32 at 32 "
        "connections), answered and logged but not counted by it. The drift tracker's "
        "`rows_seen` (`GET /models/iris/drift`) counts the rows it binned: of a batch the "
        "monitor's thread hands it, only the last DRIFT_WINDOW are (the older ones would "
        "leave the window at once), so at 32 connections it falls short of the rows answered.",
    ]
    return out


def _how(results: Results) -> list[str]:
    options = results.options
    return [
        "",
        "### How it is measured",
        "",
        "- Four `python -m service` processes a round, started fresh each round (the monitor's "
        "settings are read at start): LiteRT runtime, one worker, gRPC off, LOG_LEVEL=info (as "
        "the main benchmark's `litert` server), SHUTDOWN_TIMEOUT_SECONDS="
        f"{SHUTDOWN_TIMEOUT:g} in all (a stalled sink would hold the shutdown up for the whole "
        "drain time), the settings of the table above otherwise; `log` and `stalled` write "
        "their own payload log directory under a temporary directory.",
        f"- Each round: every server warmed up {options.warmup:g} s at 32 connections (which "
        "also fills the stalled sink's queue), then `POST /predict` "
        '`{"instances": [[5.1, 3.5, 1.4, 0.2]]}` at 1 connection on each server in turn, then '
        f"at 32; {options.seconds:g} s a load. Order `{', '.join(ORDER)}` in even rounds, "
        "reversed in odd ones, so that the configurations compared are neighbours. Ratios are "
        "taken within each round; the goals judge their median, requests/s at 32 connections "
        "(a saturated server, as goal 1) and p99 at 1 connection (one request at a time). CPU "
        "per request: the server process's user + system time over the load / requests. On "
        "this shared machine other work lands on the server's CPU now and then: requests/s "
        "and p99 move with it from load to load, CPU time per request much less, so it is "
        "the steadier figure of a cost.",
        "- The monitor's counters from `/metrics` (`payload_log_lines_total`, "
        "`payload_log_dropped_total{reason}`) and the drift tracker's `rows_seen` "
        f"(`GET /models/{MODEL}/drift`) after the warm-up and after the loads, each once two "
        "readings 0.2 s apart agree (the queue drained); the payload files' lines counted "
        "after the process stopped.",
        "- The stalled sink: a loopback socket in the benchmark's process that accepts every "
        "connection, reads what it is sent and never answers; the service's sender "
        "(`service/cloudevents.py`) waits its read timeout, retries, and the records it has no "
        "room for are dropped (`events queue full`).",
    ]


def with_section(text: str, new: str) -> str:
    """``text`` (a RESULTS.md) with this phase's section replaced by ``new``, or ``new``
    appended when it has none."""
    return report.replace_section(text, SECTION, new)


# -- running it ---------------------------------------------------------------------------------
def options_for_bench(config: Any, version_dir: Path) -> Options:
    """This phase's options inside ``python -m bench`` (its load generator, pinning and load
    length; quick, one round, with ``--smoke``)."""
    quick = bool(config.smoke)
    return Options(
        quick=quick,
        rounds=1 if quick else 5,
        seconds=config.seconds,
        warmup=config.warmup,
        generator=config.generator,
        source=version_dir,
        pin=config.pin,
        command=config.command,
    )


def parse_args(argv: list[str]) -> tuple[Options, Path | None, Path]:
    from bench.run import cpu_split  # bench.run imports this module

    parser = argparse.ArgumentParser(prog="python -m bench.monitoring", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1 s loads, one round")
    parser.add_argument("--rounds", type=int, help="rounds (default 5; quick 1)")
    parser.add_argument("--seconds", type=float, help="seconds per load (default 6; quick 1)")
    parser.add_argument("--load", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--pin", choices=["auto", "off"], default="auto")
    parser.add_argument(
        "--artifacts",
        type=Path,
        default=Path(os.environ.get("ARTIFACTS_DIR", "artifacts")),
        help="bundle root; the Iris model is trained there when it has no version (only read "
        "otherwise: the version measured is a copy in a temporary directory)",
    )
    parser.add_argument(
        "--out", type=Path, help="results file whose section is replaced (default "
        "bench/RESULTS.md; quick: stdout only)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    generator = args.load
    if generator == "auto":
        generator = "wrk" if load.wrk_path() else "python"
    elif generator == "wrk" and load.wrk_path() is None:
        parser.error("wrk is not installed (apt-get install -y wrk)")
    out = args.out if args.out is not None or args.quick else ROOT / "bench" / "RESULTS.md"
    options = Options(
        quick=args.quick,
        rounds=args.rounds or (1 if args.quick else 5),
        seconds=args.seconds or (1.0 if args.quick else 6.0),
        warmup=1.0 if args.quick else 2.0,
        generator=generator,
        source=Path(),
        pin=cpu_split() if args.pin == "auto" else None,
        command=" ".join(["python -m bench.monitoring", *argv]),
    )
    if not 1 <= options.rounds <= 20 or not 1 <= options.seconds <= 60:
        parser.error("--rounds must be 1-20 and --seconds 1-60")
    return options, out, args.artifacts.resolve()


def main(argv: list[str] | None = None) -> int:
    from bench.run import ensure_bundle  # bench.run imports this module

    options, out, artifacts = parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, report.stop_on_signal)
    if options.pin is not None:  # this process, and wrk started from it, on the load CPUs
        os.sched_setaffinity(0, options.pin[1])
    options.source = ensure_bundle(artifacts)
    results = measure(options)
    report.publish(section(results), out, SECTION)
    if results.errors:
        print(f"bench: {results.errors} requests failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
