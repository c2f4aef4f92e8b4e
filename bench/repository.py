"""The model repository's costs (issue 14): memory per loaded version, shadow scoring's cost on
the hot path, and the canary's share.

``python -m bench.repository [--quick]`` runs it alone (full: replaces its section of
bench/RESULTS.md; ``--quick``: prints it); ``python -m bench`` runs it after the other loads
(quickly with ``--smoke``) and appends the same section. Three measurements, each on real
``python -m service`` processes over copies of the Iris bundle in a temporary artifacts
directory (the one given is only read):

- memory: K copies of the bundle published as versions 1..K, MODEL_VERSIONS=all; once every
  version is loaded and answered a few predictions, the process's VmRSS; the slope of a linear
  fit over K is the cost of one more loaded version;
- shadow: two versions, label stable=1; the single-row ``POST /predict`` loads of the main
  benchmark (wrk, or its asyncio client) with ``shadow_version=2, shadow_percent=100`` and with
  ``shadow_version=null`` in turn on the same process, the order alternating from round to
  round; ratios are taken within each round; ``/metrics`` shows the shadow really scored;
- canary: label canary=2, and for each share 1,000 unversioned ``POST /predict``, counting the
  answers' ``version``.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench import load, report
from bench.servers import HOST, ROOT, Server

MODEL = "iris"
SECTION = "## Model repository (issue 14)"
ADMIN_TOKEN = "bench-repository-admin"  # the servers are on loopback, for this run only
ROW = b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}'
JSON = {"Content-Type": "application/json"}

# The goals.
RSS_PER_VERSION_MB = 5.0  # each extra loaded version of an Iris-sized model costs at most this
SHADOW_P50 = 1.2  # shadowing 100% of traffic: single-row p50 at most this times no shadow's
SHADOW_RPS = 0.85  # and requests/s at least this times no shadow's
CANARY_POINTS = 3.0  # the canary's share within this many percentage points of the setting
CANARY_PERCENTS = (5, 10, 50)
CANARY_REQUESTS = 1000

COUNTS = (1, 5, 10, 20)  # versions loaded at once, for the memory fit
QUICK_COUNTS = (1, 3, 5)
WARM_PREDICTIONS = 5  # per version, before the memory reading
LOAD_CONNECTIONS = (1, 32)  # as bench/run.py: p50 at 1 connection, requests/s at 32


@dataclass
class Options:
    quick: bool
    rounds: int  # shadow rounds (each: every load with and without the shadow)
    memory_rounds: int  # memory readings per version count (and runtime)
    seconds: float
    warmup: float
    counts: tuple[int, ...]
    runtimes: tuple[str, ...]
    generator: str  # "wrk" or "python"
    source: Path  # the Iris version directory copied
    pin: tuple[set[int], set[int]] | None = None  # (server CPUs, load generator CPUs)
    command: str = "python -m bench.repository"


@dataclass
class Results:
    options: Options
    machine: dict[str, str] = field(default_factory=dict)
    # runtime -> version count -> readings: {"rss": MB, "ready_s": s (start to all loaded)}
    memory: dict[str, dict[int, list[dict[str, float]]]] = field(default_factory=dict)
    # per round: {"off": figures, "on": figures} (bench.run.record's keys)
    shadow: list[dict[str, dict[str, Any]]] = field(default_factory=list)
    shadow_rows_on: float = 0.0  # rows the shadow scored during the shadowed loads
    shadow_requests_on: int = 0  # requests answered during them (the load generator's count)
    shadow_rows_off: float = 0.0  # rows scored during the loads without a shadow: must be 0
    shadow_agree: float = 0.0  # rows on which both versions gave the same label (whole run)
    shadow_total: float = 0.0  # rows the shadow scored (whole run, warm-up included)
    shadow_dropped: float = 0.0  # model_shadow_dropped_total at the end
    canary: dict[int, tuple[int, int]] = field(default_factory=dict)  # percent -> (canary, all)
    errors: int = 0
    seconds: float = 0.0


# -- servers ------------------------------------------------------------------------------------
def publish(source: Path, artifacts: Path, versions: int) -> Path:
    """``versions`` copies of the version directory ``source`` as versions 1..N of the model."""
    model_dir = artifacts / MODEL
    model_dir.mkdir(parents=True, exist_ok=True)
    for version in range(1, versions + 1):
        shutil.copytree(source, model_dir / str(version))
    return artifacts


def _request(
    server: Server, method: str, path: str, body: bytes | None = None, admin: bool = False
) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(HOST, server.port, timeout=60)
    headers = dict(JSON) if body is not None else {}
    if admin:
        headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
    try:
        connection.request(method, path, body, headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _admin(server: Server, path: str, document: dict[str, Any]) -> None:
    status, answer = _request(server, "PUT", path, orjson.dumps(document), admin=True)
    if status != 200:
        raise RuntimeError(f"PUT {path} answered {status}: {answer[:300]!r}")


def wait_loaded(server: Server, versions: int, timeout: float = 300.0) -> None:
    """Until ``GET /models/iris`` lists ``versions`` loaded versions."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, answer = _request(server, "GET", f"/models/{MODEL}")
        if status == 200 and len(orjson.loads(answer)["loaded_versions"]) >= versions:
            return
        time.sleep(0.02)
    raise TimeoutError(f"{versions} versions not loaded within {timeout} s: {server.log()}")


def metric_sum(text: str, name: str, **labels: str) -> float:
    """The sum of a Prometheus family's samples ``name{...}`` with the given labels."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def scrape(server: Server) -> str:
    status, answer = _request(server, "GET", "/metrics")
    if status != 200:
        raise RuntimeError(f"/metrics answered {status}")
    return answer.decode()


# -- memory -------------------------------------------------------------------------------------
def measure_memory(options: Options, results: Results, work: Path) -> None:
    """VmRSS with 1..K versions loaded, for each runtime; the order of the counts alternates
    (ascending, descending) from round to round."""
    roots = {k: publish(options.source, work / f"versions-{k}", k) for k in options.counts}
    cpus = None if options.pin is None else options.pin[0]
    for runtime in options.runtimes:
        readings = results.memory.setdefault(runtime, {k: [] for k in options.counts})
        for round_ in range(options.memory_rounds):
            counts = options.counts if round_ % 2 == 0 else options.counts[::-1]
            for k in counts:
                env = {
                    "ARTIFACTS_DIR": str(roots[k]),
                    "MODEL_NAME": MODEL,
                    "MODEL_VERSIONS": "all",
                    "MODEL_RUNTIME": runtime,
                }
                log = work / f"memory-{runtime}-{k}-{round_}.log"
                with Server(["-m", "service"], env, log, cpus=cpus) as server:
                    server.wait_ready(timeout=300)
                    wait_loaded(server, k)
                    ready_s = time.perf_counter() - server.started
                    for version in range(1, k + 1):
                        path = f"/models/{MODEL}/versions/{version}/predict"
                        for _ in range(WARM_PREDICTIONS):
                            status, _answer = _request(server, "POST", path, ROW)
                            results.errors += status != 200
                    time.sleep(0.2)
                    rss = server.rss_mb()
                if rss is None:
                    raise RuntimeError("cannot read the server's VmRSS (/proc)")
                readings[k].append({"rss": rss, "ready_s": ready_s})
                report.say(f"memory {runtime}: {k} version(s) loaded: RSS {rss:.1f} MB")


def rss_fit(readings: dict[int, list[dict[str, float]]]) -> tuple[float, float] | None:
    """Slope (MB per version) and intercept of the least-squares line through the median RSS
    of each version count."""
    counts = sorted(k for k, rows in readings.items() if rows)
    if len(counts) < 2:
        return None
    medians = [statistics.median(r["rss"] for r in readings[k]) for k in counts]
    slope, intercept = statistics.linear_regression(counts, medians)
    return slope, intercept


def round_slopes(readings: dict[int, list[dict[str, float]]]) -> list[float]:
    """The fit's slope within each round alone."""
    counts = sorted(readings)
    rounds = min((len(readings[k]) for k in counts), default=0)
    if len(counts) < 2:
        return []
    return [
        statistics.linear_regression(counts, [readings[k][i]["rss"] for k in counts])[0]
        for i in range(rounds)
    ]


# -- shadow and canary --------------------------------------------------------------------------
@contextlib.contextmanager
def two_versions(options: Options, work: Path) -> Iterator[Server]:
    """A LiteRT service (its defaults, as the main benchmark's ``litert`` server) with two
    loaded versions, label stable=1 and the admin API on."""
    root = publish(options.source, work / "two-versions", 2)
    env = {
        "ARTIFACTS_DIR": str(root),
        "MODEL_NAME": MODEL,
        "MODEL_VERSIONS": "all",
        "MODEL_RUNTIME": "litert",
        "ADMIN_TOKEN": ADMIN_TOKEN,
    }
    cpus = None if options.pin is None else options.pin[0]
    with Server(["-m", "service"], env, work / "two-versions.log", cpus=cpus) as server:
        server.wait_ready()
        wait_loaded(server, 2)
        _admin(server, f"/admin/models/{MODEL}/labels/stable", {"version": 1})
        yield server


def _shadow_setting(on: bool) -> dict[str, Any]:
    return {"shadow_version": 2, "shadow_percent": 100} if on else {"shadow_version": None}


def measure_shadow(options: Options, results: Results, server: Server) -> None:
    """The single-row loads with and without a shadow, adjacent, the order alternating."""
    from bench.run import record  # bench.run imports this module

    runner: Callable[..., load.LoadResult] = (
        load.run_wrk if options.generator == "wrk" else load.run_python
    )
    url = server.url + "/predict"
    traffic = f"/admin/models/{MODEL}/traffic"
    for on in (False, True):  # first answers, the shadow scorer's first batches
        _admin(server, traffic, _shadow_setting(on))
        runner(url, ROW, "application/json", 32, options.warmup)
    time.sleep(0.2)
    rows_before = metric_sum(scrape(server), "model_shadow_predictions_total", model=MODEL)
    for round_ in range(options.rounds):
        order = ("off", "on") if round_ % 2 == 0 else ("on", "off")
        figures: dict[str, dict[str, Any]] = {key: {"errors": 0} for key in order}
        for connections in LOAD_CONNECTIONS:
            for key in order:
                _admin(server, traffic, _shadow_setting(key == "on"))
                cpu_before = server.cpu_seconds()
                result = runner(url, ROW, "application/json", connections, options.seconds)
                cpu_after = server.cpu_seconds()
                record(figures[key], f"c{connections}", result, cpu_before, cpu_after)
                time.sleep(0.1)  # the last answers' shadow batch (2 ms after them)
                rows = metric_sum(scrape(server), "model_shadow_predictions_total", model=MODEL)
                if key == "on":
                    results.shadow_rows_on += rows - rows_before
                    results.shadow_requests_on += result.requests
                else:
                    results.shadow_rows_off += rows - rows_before
                rows_before = rows
                report.say(
                    f"shadow round {round_ + 1}/{options.rounds}, shadow {key} @{connections}: "
                    f"{result.rps:,.0f} req/s, p50 {result.p50_ms:.2f} ms"
                    + (f" ({result.errors} FAILED)" if result.errors else "")
                )
        results.errors += sum(f["errors"] for f in figures.values())
        results.shadow.append(figures)
    _admin(server, traffic, _shadow_setting(False))
    text = scrape(server)
    results.shadow_agree = metric_sum(text, "model_shadow_predictions_total", agree="true")
    results.shadow_total = metric_sum(text, "model_shadow_predictions_total", model=MODEL)
    results.shadow_dropped = metric_sum(text, "model_shadow_dropped_total", model=MODEL)


def measure_canary(options: Options, results: Results, server: Server) -> None:
    """For each share, 1,000 unversioned requests on one keep-alive connection: how many the
    canary (version 2) answered."""
    traffic = f"/admin/models/{MODEL}/traffic"
    _admin(server, f"/admin/models/{MODEL}/labels/canary", {"version": 2})
    for percent in CANARY_PERCENTS:
        _admin(server, traffic, {"canary_percent": percent, "shadow_version": None})
        versions: dict[int, int] = {}
        connection = http.client.HTTPConnection(HOST, server.port, timeout=60)
        try:
            for _ in range(CANARY_REQUESTS):
                connection.request("POST", "/predict", ROW, JSON)
                response = connection.getresponse()
                answer = response.read()
                if response.status != 200:
                    results.errors += 1
                    continue
                version = orjson.loads(answer)["version"]
                versions[version] = versions.get(version, 0) + 1
        finally:
            connection.close()
        unknown = set(versions) - {1, 2}
        if unknown:
            raise RuntimeError(f"unversioned requests answered by version(s) {sorted(unknown)}")
        results.canary[percent] = (versions.get(2, 0), sum(versions.values()))
        report.say(f"canary {percent}%: {versions.get(2, 0)} of {sum(versions.values())} answers")
    _admin(server, traffic, {"canary_percent": 0})


def measure(options: Options) -> Results:
    """Every measurement of this phase, in a temporary directory removed after."""
    results = Results(options, report.machine_info(options.generator))
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-repository-") as tmp:
        work = Path(tmp)
        measure_memory(options, results, work)
        with two_versions(options, work) as server:
            measure_shadow(options, results, server)
            measure_canary(options, results, server)
    results.machine["load_after"] = report.loadavg()
    results.seconds = time.monotonic() - started
    return results


# -- the report ---------------------------------------------------------------------------------
def _yes(met: bool, context: bool = False) -> str:
    word = "yes" if met else "no"
    if context:
        return f"({word})"
    return word if met else f"**{word}**"


def _median(rounds: list[dict[str, dict[str, Any]]], key: str, figure: str) -> float | None:
    values = [r[key][figure] for r in rounds if r[key].get(figure) is not None]
    return statistics.median(values) if values else None


def _ratios(rounds: list[dict[str, dict[str, Any]]], figure: str) -> list[float]:
    return [
        r["on"][figure] / r["off"][figure]
        for r in rounds
        if r["on"].get(figure) is not None and r["off"].get(figure)
    ]


def _fmt(figure: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    if figure.startswith("rps"):
        return f"{value:,.0f}"
    if figure.startswith("p50") or figure.startswith("p99"):
        return f"{value:.2f} ms"
    if figure.startswith("cpu_us"):
        return f"{value:.0f} us"
    return f"{value:g}"


def memory_verdict(results: Results, runtime: str) -> tuple[float, float] | None:
    readings = results.memory.get(runtime)
    return rss_fit(readings) if readings else None


def shadow_ratio(results: Results, figure: str) -> float | None:
    ratios = _ratios(results.shadow, figure)
    return statistics.median(ratios) if ratios else None


def goals(results: Results) -> list[tuple[str, str, str, bool, bool]]:
    """(goal, measured, per round, met, context) for each goal."""
    out = []
    options = results.options
    counts = ", ".join(map(str, options.counts))
    for i, runtime in enumerate(options.runtimes):
        fit = memory_verdict(results, runtime)
        if fit is None:
            continue
        slopes = round_slopes(results.memory[runtime])
        title = (
            f"14a. each extra loaded version of an Iris-sized model costs <= "
            f"{RSS_PER_VERSION_MB:g} MB RSS (MODEL_VERSIONS=all, {runtime} runtime)"
        )
        if i:
            title = f"(14a for the {runtime} runtime)"
        out.append(
            (
                title,
                f"{fit[0]:+.2f} MB/version (linear fit over {counts} versions)",
                ", ".join(f"{s:+.2f}" for s in slopes),
                fit[0] <= RSS_PER_VERSION_MB,
                bool(i),
            )
        )
    for figure, text, bound, higher in (
        (
            "p50_c1",
            f"single-row p50 (1 connection) <= {SHADOW_P50:g}x no shadow's",
            SHADOW_P50,
            False,
        ),
        ("rps_c32", f"req/s (32 connections) >= {SHADOW_RPS:g}x no shadow's", SHADOW_RPS, True),
        ("rps_c1", f"req/s (1 connection) >= {SHADOW_RPS:g}x no shadow's", SHADOW_RPS, True),
        ("p50_c32", f"p50 (32 connections) <= {SHADOW_P50:g}x no shadow's", SHADOW_P50, False),
        (
            "cpu_us_c32",
            f"server CPU time per request (32 connections) <= {SHADOW_P50:g}x no shadow's",
            SHADOW_P50,
            False,
        ),
    ):
        ratio = shadow_ratio(results, figure)
        if ratio is None:
            continue
        context = figure not in ("p50_c1", "rps_c32")
        label = "14b" if figure == "p50_c1" else "14c" if figure == "rps_c32" else ""
        title = (
            f"{label}. shadow scoring of 100% of traffic: {text}" if label else f"(shadow: {text})"
        )
        on, off = _median(results.shadow, "on", figure), _median(results.shadow, "off", figure)
        out.append(
            (
                title,
                f"{ratio:.2f}x ({_fmt(figure, on)} vs {_fmt(figure, off)})",
                ", ".join(f"{r:.2f}x" for r in _ratios(results.shadow, figure)),
                ratio >= bound if higher else ratio <= bound,
                context,
            )
        )
    for percent, (canary, total) in results.canary.items():
        share = 100 * canary / total if total else 0.0
        out.append(
            (
                f"14d. canary_percent {percent}: share of {total:,} unversioned requests within "
                f"{CANARY_POINTS:g} points",
                f"{share:.1f}% ({canary} of {total}; {share - percent:+.1f} points)",
                "",
                total > 0 and abs(share - percent) <= CANARY_POINTS,
                False,
            )
        )
    return out


def section(results: Results) -> str:
    """This phase's section of RESULTS.md, from its heading to a blank line."""
    options, machine = results.options, results.machine
    mode = "QUICK (short loads, fewer rounds: the figures mean little)" if options.quick else "full"
    out = [
        SECTION,
        "",
        f"Measured by `.venv/bin/{options.command}` (`make bench` runs it too); mode: {mode}; "
        f"{machine['date']}; wall time {results.seconds / 60:.1f} min. Load generator: "
        f"{machine['generator']}; CPUs: {_pinning(options)}. Load average (1, 5, 15 min) "
        f"before: {machine['load_before']}; after: {machine.get('load_after', 'n/a')}. Bundle "
        f"copied: `{options.source}`.",
        "",
        "| goal | measured | per round | met |",
        "| --- | --- | --- | --- |",
    ]
    rows = goals(results)
    for title, measured, per_round, met, context in rows:
        out.append(f"| {title} | {measured} | {per_round or '-'} | {_yes(met, context)} |")
    failed = [title for title, _, _, met, context in rows if not met and not context]
    out += [
        "",
        ("Every goal holds." if not failed else "Not met: " + "; ".join(failed) + "."),
    ]
    if results.errors:
        out += ["", f"**{results.errors} FAILED REQUESTS** during this phase."]
    out += _memory_table(results)
    out += _shadow_table(results)
    out += _canary_table(results)
    out += _how(results)
    return "\n".join(out) + "\n"


def _pinning(options: Options) -> str:
    if options.pin is None:
        return "not pinned"
    servers, generator = (",".join(map(str, sorted(c))) for c in options.pin)
    return f"servers on CPU {servers}, the load generator on CPU {generator}"


def _memory_table(results: Results) -> list[str]:
    counts = results.options.counts
    out = [
        "",
        "### Resident memory by loaded versions (VmRSS after warm-up predictions; medians)",
        "",
        "| runtime | "
        + " | ".join(f"{k} version(s)" for k in counts)
        + " | slope | start to all loaded |",
        "| --- | " + " | ".join("---" for _ in counts) + " | --- | --- |",
    ]
    for runtime, readings in results.memory.items():
        cells = []
        for k in counts:
            rows = readings.get(k) or []
            cells.append(f"{statistics.median(r['rss'] for r in rows):.1f} MB" if rows else "n/a")
        fit = rss_fit(readings)
        slope = f"{fit[0]:+.2f} MB/version (intercept {fit[1]:.1f} MB)" if fit else "n/a"
        ready = " / ".join(
            f"{statistics.median(r['ready_s'] for r in readings[k]):.2f} s"
            for k in counts
            if readings.get(k)
        )
        out.append(f"| {runtime} | " + " | ".join(cells) + f" | {slope} | {ready} |")
    return out


def _shadow_table(results: Results) -> list[str]:
    if not results.shadow:
        return []
    figures = ("rps_c1", "p50_c1", "p99_c1", "rps_c32", "p50_c32", "p99_c32", "cpu_us_c32")
    out = [
        "",
        "### Shadow scoring: one Iris row a request, `POST /predict` (medians over "
        f"{len(results.shadow)} round(s))",
        "",
        "| configuration | req/s @1 | p50 @1 | p99 @1 | req/s @32 | p50 @32 | p99 @32 | CPU/req @32 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key, title in (
        ("off", "label stable=1, `shadow_version: null`"),
        ("on", "label stable=1, `shadow_version: 2, shadow_percent: 100`"),
    ):
        cells = [_fmt(f, _median(results.shadow, key, f)) for f in figures]
        out.append(f"| {title} | " + " | ".join(cells) + " |")
    requests, rows = results.shadow_requests_on, results.shadow_rows_on
    share = f" ({rows / requests:.3f} per answered request)" if requests else ""
    out += [
        "",
        f"The shadow ran: `model_shadow_predictions_total` grew by {rows:,.0f} rows during the "
        f"shadowed loads, which answered {requests:,} requests{share}; by "
        f"{results.shadow_rows_off:,.0f} during the loads without a shadow. Both versions "
        f"(copies of one bundle) gave the same label on {results.shadow_agree:,.0f} of the "
        f"{results.shadow_total:,.0f} rows shadowed in all (warm-up included). "
        f"`model_shadow_dropped_total`: {results.shadow_dropped:,.0f}.",
    ]
    return out


def _canary_table(results: Results) -> list[str]:
    if not results.canary:
        return []
    out = [
        "",
        "### Canary share (labels stable=1, canary=2)",
        "",
        "| canary_percent | answered by the canary | share | off by |",
        "| --- | --- | --- | --- |",
    ]
    for percent, (canary, total) in results.canary.items():
        share = 100 * canary / total if total else 0.0
        out.append(
            f"| {percent} | {canary} of {total} | {share:.1f}% | {share - percent:+.1f} points |"
        )
    return out


def _how(results: Results) -> list[str]:
    options = results.options
    return [
        "",
        "### How it is measured",
        "",
        f"- Memory: for K in {', '.join(map(str, options.counts))}, K copies of the Iris version "
        "directory published as versions 1..K under a temporary ARTIFACTS_DIR; `python -m "
        "service` with MODEL_VERSIONS=all, GRPC_PORT=0, one worker, its other settings default; "
        f"after `/readyz` 200 and `GET /models/{MODEL}` listing K loaded versions, "
        f"{WARM_PREDICTIONS} predictions to each version (`/models/{MODEL}/versions/{{v}}/predict`), "
        "then VmRSS from /proc/<pid>/status. A fresh process for every reading; "
        f"{options.memory_rounds} reading(s) per K and runtime, the order of the K alternating "
        "(ascending, descending). The slope of the least-squares line through the median RSS of "
        "each K is the cost of one more loaded version ('per round': the slope within each "
        "round). Start to all loaded: from spawning to the K-th version listed.",
        "- Shadow: one LiteRT service process (the defaults, LOG_LEVEL=info, as the main "
        "benchmark's `litert` server) with versions 1 and 2 (copies of the bundle), "
        "MODEL_VERSIONS=all, label stable=1. Each round loads `POST /predict` "
        '`{"instances": [[5.1, 3.5, 1.4, 0.2]]}` at 1 connection, then at 32, each time once '
        'with `PUT /admin/models/iris/traffic` `{"shadow_version": null}` and once with '
        '`{"shadow_version": 2, "shadow_percent": 100}`, back to back, the order alternating '
        f"from round to round; {options.seconds:g} s per load after a {options.warmup:g} s "
        "warm-up of each setting at 32 connections; the load generator is the main benchmark's "
        "(`bench/load.py`). Ratios (shadow / none) are taken within each round; the goal's "
        "figure is their median. p50 is judged at 1 connection (one request at a time, as goal "
        "2), requests/s at 32 (a saturated server, as goal 1). `/metrics` is read after every "
        "load (0.1 s after, for the last batch the scorer gathers).",
        f"- Canary: on the same process afterwards, label canary=2; for each canary_percent, "
        f"{CANARY_REQUESTS:,} unversioned `POST /predict` one after another on one keep-alive "
        "connection, counting the answers' `version`. The router sends the canary its share "
        "by an even credit pattern from a random phase (`service.registry.Registry.route`), "
        "not by a coin toss, so the count is within one request of the setting.",
    ]


def with_section(text: str, new: str) -> str:
    """``text`` (a RESULTS.md) with its repository section replaced by ``new``, or ``new``
    appended when it has none."""
    return report.replace_section(text, SECTION, new)


# -- running it ---------------------------------------------------------------------------------
def options_for_bench(config: Any, version_dir: Path) -> Options:
    """This phase's options inside ``python -m bench`` (its load generator, pinning and
    load length; quick with ``--smoke``)."""
    quick = bool(config.smoke)
    return Options(
        quick=quick,
        rounds=1 if quick else 5,
        memory_rounds=1 if quick else 2,
        seconds=config.seconds,
        warmup=config.warmup,
        counts=QUICK_COUNTS if quick else COUNTS,
        runtimes=("litert",) if quick else ("litert", "keras"),
        generator=config.generator,
        source=version_dir,
        pin=config.pin,
        command=config.command,
    )


def parse_args(argv: list[str]) -> tuple[Options, Path | None, Path]:
    from bench.run import cpu_split  # bench.run imports this module

    parser = argparse.ArgumentParser(prog="python -m bench.repository", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short loads, one round, K=1,3,5")
    parser.add_argument("--rounds", type=int, help="shadow rounds (default 5; quick 1)")
    parser.add_argument("--memory-rounds", type=int, help="RSS readings per K (default 2)")
    parser.add_argument("--seconds", type=float, help="seconds per load (default 6; quick 1)")
    parser.add_argument("--counts", help="versions loaded at once (default 1,5,10,20)")
    parser.add_argument(
        "--runtimes", help="litert,keras (default both; quick: litert)", default=None
    )
    parser.add_argument("--load", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--pin", choices=["auto", "off"], default="auto")
    parser.add_argument(
        "--artifacts",
        type=Path,
        default=Path(os.environ.get("ARTIFACTS_DIR", "artifacts")),
        help="bundle root; the Iris model is trained there when it has no version (only read "
        "otherwise: the versions measured are copies in a temporary directory)",
    )
    parser.add_argument(
        "--out", type=Path, help="results file whose section is replaced (default "
        "bench/RESULTS.md; quick: stdout only)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    quick = args.quick
    generator = args.load
    if generator == "auto":
        generator = "wrk" if load.wrk_path() else "python"
    elif generator == "wrk" and load.wrk_path() is None:
        parser.error("wrk is not installed (apt-get install -y wrk)")
    counts = (
        tuple(sorted({int(c) for c in args.counts.split(",")}))
        if args.counts
        else QUICK_COUNTS
        if quick
        else COUNTS
    )
    if len(counts) < 2 or counts[0] < 1 or counts[-1] > 100:
        parser.error("--counts needs two or more counts from 1 to 100")
    runtimes = tuple(args.runtimes.split(",")) if args.runtimes else ("litert",) if quick else ("litert", "keras")  # fmt: skip
    if not set(runtimes) <= {"litert", "keras"}:
        parser.error("--runtimes takes litert and keras")
    out = args.out if args.out is not None or quick else ROOT / "bench" / "RESULTS.md"
    options = Options(
        quick=quick,
        rounds=args.rounds or (1 if quick else 5),
        memory_rounds=args.memory_rounds or (1 if quick else 2),
        seconds=args.seconds or (1.0 if quick else 6.0),
        warmup=1.0 if quick else 2.0,
        counts=counts,
        runtimes=runtimes,
        generator=generator,
        source=Path(),
        pin=cpu_split() if args.pin == "auto" else None,
        command=" ".join(["python -m bench.repository", *argv]),
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
