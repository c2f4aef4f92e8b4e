"""The benchmark: every server side by side, the same loads interleaved, medians of runs."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

import bundle
from bench import explain, grpc_load, large, load, monitoring, report, repository
from bench.servers import HOST, ROOT, Server
from service.schemas import IRIS_ROW

MODEL = "iris"
LARGE_ROWS = 10_000
CONNECTIONS = (1, 32)
# The protocol comparison: every protocol on the same LiteRT service, one row a request, this
# many connections (REST) or calls in flight (gRPC, on one HTTP/2 connection as a channel is).
PROTOCOL_CONNECTIONS = 32
GRPC_CONNECTIONS = 1


@dataclass(frozen=True)
class Protocol:
    """One way to ask the service for a prediction: a REST route, or gRPC when ``path`` is None
    (the keys and titles of bench/report.py's PROTOCOL_ROWS). ``ceiling``: gRPC on
    bench/grpc_ceiling.py's process (grpc.aio, a constant answer) instead of the service."""

    key: str
    path: str | None
    ceiling: bool = False


PROTOCOLS = [
    Protocol("predict", "/predict"),
    Protocol("v2", f"/v2/models/{MODEL}/infer"),
    Protocol("tfserving", f"/v1/models/{MODEL}:predict"),
    Protocol("grpc", None),
    Protocol("grpc_ceiling", None, ceiling=True),
]
PROTOCOL_TARGET = report.PROTOCOL_SERVER  # the server the protocols are compared on
# gRPC's ceiling, started with the servers of each run that compares the protocols.
GRPC_CEILING = ["-m", "bench.grpc_ceiling"]


@dataclass(frozen=True)
class Target:
    """One server under test: how to start it and what to measure on it."""

    key: str
    title: str
    module_args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    large: bool = False  # measure the 10,000-row requests (the service only)
    grpc: bool = True  # the service's app: serve gRPC (its default) on a free port of its own


# Measured after the loads, on the LiteRT service's bundle, each in its own RESULTS.md section.
PHASES = ("repository", "explain", "monitoring")
TARGETS = [
    Target(
        "ceiling",
        "ceiling: FastAPI, parse the body, constant answer",
        ["-m", "bench.serve", "bench.ceiling_app:create_app"],
        grpc=False,
    ),
    Target(
        "litert", "service, LiteRT runtime", ["-m", "service"], {"MODEL_RUNTIME": "litert"}, True
    ),
    Target(
        "litert-quiet",
        "service, LiteRT runtime, LOG_LEVEL=warning (no access log)",
        ["-m", "service"],
        {"MODEL_RUNTIME": "litert", "LOG_LEVEL": "warning"},
    ),
    Target(
        "litert-bare",
        "service, LiteRT runtime, without metrics, logs and limits (bench/bare_app.py)",
        ["-m", "bench.serve", "bench.bare_app:create_app"],
        {"MODEL_RUNTIME": "litert"},
    ),
    Target(
        "keras",
        "service, Keras runtime (adaptive batching)",
        ["-m", "service"],
        {"MODEL_RUNTIME": "keras"},
        True,
    ),
    Target(
        "unbatched",
        "service, Keras runtime, one compiled-graph call per request (no batching)",
        ["-m", "bench.serve", "bench.unbatched_app:create_app"],
        {"MODEL_RUNTIME": "keras"},
    ),
    Target(
        "eager",
        "service, Keras runtime, the model called directly, model(x), per request",
        ["-m", "bench.serve", "bench.unbatched_app:create_eager_app"],
        {"MODEL_RUNTIME": "keras"},
    ),
    Target(
        "tutorial",
        "tutorial FastAPI service, model.predict per request",
        ["-m", "bench.serve", "bench.tutorial_app:create_app"],
        grpc=False,
    ),
]


@dataclass
class Config:
    runs: int
    seconds: float
    warmup: float
    large_repeats: int
    generator: str  # "wrk" or "python"
    grpc_generator: str  # "h2load" or "python"
    artifacts: Path
    out: Path | None
    smoke: bool
    targets: list[Target]
    command: str
    pin: tuple[set[int], set[int]] | None = None  # (server CPUs, load generator CPUs)
    phases: tuple[str, ...] = ()  # the phases after the loads (PHASES), each its own section


def parse_args(argv: list[str]) -> Config:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="one short run, to check it works")
    parser.add_argument("--runs", type=int, help="runs to take the median of (default 3; smoke 1)")
    parser.add_argument("--seconds", type=float, help="seconds per load (default 6; smoke 1)")
    parser.add_argument(
        "--load",
        choices=["auto", "wrk", "python"],
        default="auto",
        help="load generator; auto uses wrk when installed, else a small asyncio client",
    )
    parser.add_argument(
        "--grpc-load",
        choices=["auto", "h2load", "python"],
        default="auto",
        help="gRPC load generator (bench/grpc_load.py); auto uses h2load when installed, else "
        "grpc.aio clients in Python",
    )
    parser.add_argument(
        "--artifacts",
        type=Path,
        default=Path(os.environ.get("ARTIFACTS_DIR", "artifacts")),
        help="bundle root; the Iris model is trained there when it has no version",
    )
    parser.add_argument(
        "--out", type=Path, help="results file (default bench/RESULTS.md; smoke: stdout only)"
    )
    parser.add_argument(
        "--pin",
        choices=["auto", "off"],
        default="auto",
        help="auto: with 2 or more CPUs, servers run on the last one and the load generator on "
        "the others (steadier figures); off: the scheduler places both",
    )
    parser.add_argument(
        "--only", help="comma-separated targets: " + ",".join(t.key for t in TARGETS)
    )
    parser.add_argument(
        "--phases",
        default=",".join(PHASES),
        help="comma-separated phases run after the loads (with the litert target), each writing "
        f"its own section: {', '.join(PHASES)} (default: all), or none",
    )
    args = parser.parse_args(argv)
    phases = [] if args.phases == "none" else [p.strip() for p in args.phases.split(",")]
    unknown = sorted(set(phases) - set(PHASES))
    if unknown:
        parser.error(f"--phases: unknown phase {unknown[0]!r}; choose from {', '.join(PHASES)}")
    if args.load == "auto":
        generator = "wrk" if load.wrk_path() else "python"
    else:
        generator = args.load
        if generator == "wrk" and load.wrk_path() is None:
            parser.error("wrk is not installed (apt-get install -y wrk)")
    grpc_generator = args.grpc_load
    if grpc_generator == "auto":
        grpc_generator = "h2load" if grpc_load.h2load_path() else "python"
    elif grpc_generator == "h2load" and grpc_load.h2load_path() is None:
        parser.error("h2load is not installed (apt-get install -y nghttp2-client)")
    targets = TARGETS
    if args.only:
        keys = args.only.split(",")
        unknown = [k for k in keys if k not in {t.key for t in TARGETS}]
        if unknown:
            parser.error(f"unknown target {unknown[0]!r}")
        targets = [t for t in TARGETS if t.key in keys]
    runs = args.runs or (1 if args.smoke else 3)
    seconds = args.seconds or (1.0 if args.smoke else 6.0)
    if not 1 <= runs <= 9 or not 1 <= seconds <= 60:
        parser.error("--runs must be 1-9 and --seconds 1-60")
    out = args.out
    if out is None and not args.smoke:
        out = ROOT / "bench" / "RESULTS.md"
    return Config(
        pin=cpu_split() if args.pin == "auto" else None,
        runs=runs,
        seconds=seconds,
        warmup=1.0 if args.smoke else 2.0,
        large_repeats=1 if args.smoke else 9,
        generator=generator,
        grpc_generator=grpc_generator,
        artifacts=args.artifacts.resolve(),
        out=out,
        smoke=args.smoke,
        phases=tuple(phases),
        targets=targets,
        command=" ".join(["python -m bench", *argv]),
    )


def cpu_split() -> tuple[set[int], set[int]] | None:
    """The last allowed CPU for the servers and the others for the load generator; None with
    fewer than two CPUs or where affinity cannot be set."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    return {cpus[-1]}, set(cpus[:-1])


def ensure_bundle(artifacts: Path) -> Path:
    """The newest Iris version under ``artifacts``, trained first if there is none."""
    directory = bundle.model_dir(artifacts, MODEL)
    if not bundle.list_versions(directory):
        print(f"bench: no {MODEL} bundle under {artifacts}; training one", flush=True)
        subprocess.run(
            [sys.executable, "-m", "training", "--quiet", "--artifacts", str(artifacts)],
            cwd=ROOT,
            check=True,
            timeout=900,
        )
    return Path(directory) / str(max(bundle.list_versions(directory)))


def ensure_typed_bundle(artifacts: Path) -> Path:
    """The newest penguins version (text columns, blanks), trained first if there is none."""
    directory = bundle.model_dir(artifacts, large.TYPED_MODEL)
    if not bundle.list_versions(directory):
        print(f"bench: no {large.TYPED_MODEL} bundle under {artifacts}; training one", flush=True)
        with tempfile.TemporaryDirectory(prefix="bench-typed-") as tmp:
            csv = Path(tmp) / f"{large.TYPED_MODEL}.csv"
            large.penguins_frame().to_csv(csv, index=False)
            command = ["--quiet", "--artifacts", str(artifacts), "--data", str(csv)]
            subprocess.run(
                [sys.executable, "-m", "training", *command, "--target", "species"],
                cwd=ROOT,
                check=True,
                timeout=900,
            )
    return Path(directory) / str(max(bundle.list_versions(directory)))


@dataclass
class Bodies:
    single: bytes
    large_json: bytes
    large_csv: bytes
    typed_json: bytes = b""
    typed_csv: bytes = b""
    # The same single row in each protocol: REST bodies by protocol key, and the serialized
    # ModelInferRequest (raw FP32 tensor data, as tritonclient.grpc sends it).
    protocol: dict[str, bytes] = field(default_factory=dict)
    grpc_request: bytes = b""


def add_typed_bodies(bodies: Bodies, version_dir: Path) -> None:
    metadata = bundle.read_metadata(version_dir)
    records = large.typed_records(metadata, LARGE_ROWS)
    bodies.typed_json = large.json_body(records)  # type: ignore[arg-type]
    bodies.typed_csv = large.typed_csv_body(metadata.feature_names, records)


def make_bodies(version_dir: Path) -> Bodies:
    metadata = bundle.read_metadata(version_dir)
    rows = large.sample_rows(metadata, LARGE_ROWS)
    names = [f.name for f in metadata.features]
    single = IRIS_ROW if len(names) == len(IRIS_ROW) else [f.mean for f in metadata.features]
    v2 = {
        "inputs": [
            {"name": "features", "shape": [1, len(single)], "datatype": "FP32", "data": [single]}
        ]
    }
    return Bodies(
        single=large.json_body([single]),
        large_json=large.json_body(rows),
        large_csv=large.csv_body(names, rows),
        protocol={
            "predict": large.json_body([single]),
            "v2": orjson.dumps(v2),
            "tfserving": orjson.dumps({"instances": [single]}),
        },
        grpc_request=grpc_load.infer_request(MODEL, tuple(single)),
    )


def run_once(config: Config, bodies: Bodies, logs: Path, run: int) -> dict[str, dict[str, Any]]:
    """One run: start every server, warm each up, then load them in turn, load by load.

    Interleaving puts the servers compared seconds apart, not minutes, so drifting load from
    other work on the machine biases the ratios less; the order rotates from run to run.
    """
    shift = run % len(config.targets)
    order = config.targets[shift:] + config.targets[:shift]
    runner: Callable[..., load.LoadResult] = (
        load.run_wrk if config.generator == "wrk" else load.run_python
    )
    big = [
        ("json", bodies.large_json, {"Content-Type": "application/json"}),
        ("csv", bodies.large_csv, {"Content-Type": "text/csv", "Accept": "text/csv"}),
    ]
    figures: dict[str, dict[str, Any]] = {t.key: {"errors": 0} for t in order}
    servers: dict[str, Server] = {}
    with contextlib.ExitStack() as stack:
        for target in order:  # one at a time, so that each start is timed alone
            env = {"ARTIFACTS_DIR": str(config.artifacts), "MODEL_NAME": MODEL, **target.env}
            server = Server(
                target.module_args,
                env,
                logs / f"{target.key}-{run}.log",
                cpus=None if config.pin is None else config.pin[0],
                grpc=target.grpc,
            )
            stack.enter_context(server)
            servers[target.key] = server
            figures[target.key]["cold_s"] = server.wait_ready()
            figures[target.key]["rss_ready"] = server.rss_mb()
            report.say(
                f"run {run + 1}/{config.runs}: {target.key} ready in {figures[target.key]['cold_s']:.2f} s"
            )
        grpc_ceiling: Server | None = None
        if PROTOCOL_TARGET in servers:  # gRPC's ceiling, on the servers' CPU, no HTTP port
            grpc_ceiling = Server(
                GRPC_CEILING,
                {"ARTIFACTS_DIR": str(config.artifacts), "MODEL_NAME": MODEL},
                logs / f"grpc-ceiling-{run}.log",
                cpus=None if config.pin is None else config.pin[0],
                grpc=True,
                http=False,
            )
            stack.enter_context(grpc_ceiling)
            seconds = grpc_ceiling.wait_ready()
            report.say(f"run {run + 1}/{config.runs}: grpc-ceiling ready in {seconds:.2f} s")
        protocols: ProtocolLoads | None = None
        for target in order:
            server = servers[target.key]
            runner(server.url + "/predict", bodies.single, "application/json", 32, config.warmup)
            if target.key == PROTOCOL_TARGET:  # every protocol before the memory reading too
                assert grpc_ceiling is not None
                protocols = ProtocolLoads(config, bodies, server, grpc_ceiling)
                figures[target.key]["errors"] += protocols.warm_up()
            if target.large:  # one of each before the memory reading: it measures growth only
                for _, body, headers in big:
                    large.time_requests(HOST, server.port, body, headers, 1, LARGE_ROWS)
            figures[target.key]["rss_warm"] = server.rss_mb()
        for connections in CONNECTIONS:
            for target in order:
                server = servers[target.key]
                cpu_before = server.cpu_seconds()
                result = runner(
                    server.url + "/predict",
                    bodies.single,
                    "application/json",
                    connections,
                    config.seconds,
                )
                record(
                    figures[target.key], f"c{connections}", result, cpu_before, server.cpu_seconds()
                )
                report.say(
                    f"run {run + 1}/{config.runs}: {target.key} @{connections}: "
                    f"{result.rps:,.0f} req/s, p50 {result.p50_ms:.2f} ms"
                )
        if protocols is not None:  # after the other loads: they are compared among themselves
            protocols.measure(run, figures[PROTOCOL_TARGET])
        for target in order:
            server = servers[target.key]
            if target.large:
                for kind, body, headers in big:
                    figures[target.key][f"{kind}_rows_s"] = large.time_requests(
                        HOST, server.port, body, headers, config.large_repeats, LARGE_ROWS
                    )
            figures[target.key]["rss_end"] = server.rss_mb()
    if bodies.typed_json and "litert" in figures:
        # The same service on a model with text columns and blanks: the typed reading path.
        env = {
            "ARTIFACTS_DIR": str(config.artifacts),
            "MODEL_NAME": large.TYPED_MODEL,
            "MODEL_RUNTIME": "litert",
        }
        cpus = None if config.pin is None else config.pin[0]
        typed_log = logs / f"typed-{run}.log"
        with Server(["-m", "service"], env, typed_log, cpus=cpus, grpc=True) as server:
            server.wait_ready()
            typed = [
                ("typed_json", bodies.typed_json, {"Content-Type": "application/json"}),
                (
                    "typed_csv",
                    bodies.typed_csv,
                    {"Content-Type": "text/csv", "Accept": "text/csv"},
                ),
            ]
            for kind, body, headers in typed:
                figures["litert"][f"{kind}_rows_s"] = large.time_requests(
                    HOST, server.port, body, headers, config.large_repeats, LARGE_ROWS
                )
    for target in config.targets:
        report.say(
            f"run {run + 1}/{config.runs}: {target.key}: {report.one_line(figures[target.key])}"
        )
    return {t.key: figures[t.key] for t in config.targets}


class ProtocolLoads:
    """Every protocol on one server process, one Iris row a request at 32 connections (REST)
    or 32 calls in flight (gRPC): requests/s, latency and the server's CPU time per request;
    and gRPC's ceiling (bench/grpc_ceiling.py) in its own process, under the same gRPC load."""

    def __init__(self, config: Config, bodies: Bodies, server: Server, ceiling: Server) -> None:
        if server.grpc_target is None or ceiling.grpc_target is None:
            raise RuntimeError("the protocol comparison needs the servers to serve gRPC")
        self.config = config
        self.bodies = bodies
        self.server = server
        self.ceiling = ceiling
        self.rest: Callable[..., load.LoadResult] = (
            load.run_wrk if config.generator == "wrk" else load.run_python
        )
        # One call through grpcio on each: the answer must be right, and its size tells
        # h2load's failed calls (trailers only) from answered ones.
        self.grpc_answers = {
            target: grpc_load.check_call(target, bodies.grpc_request, None)
            for target in (server.grpc_target, ceiling.grpc_target)
        }

    def process(self, protocol: Protocol) -> Server:
        """The server process that answers ``protocol``."""
        return self.ceiling if protocol.ceiling else self.server

    def load(self, protocol: Protocol, seconds: float) -> tuple[load.LoadResult, str]:
        """One load; the gRPC load generator's description ("" for REST)."""
        if protocol.path is not None:
            body = self.bodies.protocol[protocol.key]
            url = self.server.url + protocol.path
            return self.rest(url, body, "application/json", PROTOCOL_CONNECTIONS, seconds), ""
        request = self.bodies.grpc_request
        target = self.process(protocol).grpc_target
        assert target is not None
        if self.config.grpc_generator == "h2load":
            done = grpc_load.run_h2load(
                target,
                request,
                self.grpc_answers[target],
                PROTOCOL_CONNECTIONS,
                GRPC_CONNECTIONS,
                seconds,
                warm_up=0,  # warm_up() below
            )
        else:
            done = grpc_load.run_python(
                target, request, PROTOCOL_CONNECTIONS, GRPC_CONNECTIONS, seconds
            )
        tool = (
            f"{done.tool}, {done.concurrency} calls in flight on {done.connections} connection(s)"
        )
        return done.result, tool

    def warm_up(self) -> int:
        """A short load of each protocol (first answers, gRPC's buffers): failed requests."""
        return sum(self.load(p, min(self.config.warmup, 1.0))[0].errors for p in PROTOCOLS)

    def measure(self, run: int, figures: dict[str, Any]) -> None:
        """One load of each protocol, in an order that rotates from run to run; the figures of
        gRPC's ceiling go with the service's, keyed ``grpc_ceiling``."""
        shift = run % len(PROTOCOLS)
        for protocol in PROTOCOLS[shift:] + PROTOCOLS[:shift]:
            key = protocol.key
            process = self.process(protocol)
            cpu_before = process.cpu_seconds()
            result, tool = self.load(protocol, self.config.seconds)
            record(figures, key, result, cpu_before, process.cpu_seconds())
            if tool:
                figures["grpc_tool"] = tool
            where = "grpc-ceiling" if protocol.ceiling else f"{PROTOCOL_TARGET} {key}"
            report.say(
                f"run {run + 1}/{self.config.runs}: {where} "
                f"@{PROTOCOL_CONNECTIONS}: {result.rps:,.0f} req/s, p50 {result.p50_ms:.2f} ms"
                + (f" ({result.errors} FAILED)" if result.errors else "")
            )


def record(
    figures: dict[str, Any],
    suffix: str,
    result: load.LoadResult,
    cpu_before: float | None,
    cpu_after: float | None,
) -> None:
    """One load's requests/s, p50, p99 and the server's CPU time per request, keyed
    ``<figure>_<suffix>``; its errors added to the count."""
    if cpu_before is not None and cpu_after is not None and result.requests:
        figures[f"cpu_us_{suffix}"] = (cpu_after - cpu_before) / result.requests * 1e6
    figures[f"rps_{suffix}"] = result.rps
    figures[f"p50_{suffix}"] = result.p50_ms
    figures[f"p99_{suffix}"] = result.p99_ms
    figures["errors"] += result.errors


def main(argv: list[str] | None = None) -> int:
    config = parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, report.stop_on_signal)
    if config.pin is not None:  # this process, and wrk started from it, on the load CPUs
        os.sched_setaffinity(0, config.pin[1])
    version_dir = ensure_bundle(config.artifacts)
    bodies = make_bodies(version_dir)
    if any(t.key == "litert" for t in config.targets):
        add_typed_bodies(bodies, ensure_typed_bundle(config.artifacts))
    if config.generator == "python":
        report.say("load generator: the asyncio client (wrk not installed, or --load python);")
        report.say("its figures are far below wrk's and not comparable with them")
    if any(t.key == PROTOCOL_TARGET for t in config.targets):
        if config.grpc_generator == "h2load":
            report.say("gRPC load generator: h2load (bench/grpc_load.py)")
        else:
            report.say("gRPC load generator: grpc.aio clients in Python (h2load not installed, or ")
            report.say("--grpc-load python); its figures are far below h2load's, not comparable")
    machine = report.machine_info(config.generator, config.grpc_generator)
    started = time.monotonic()
    runs: list[dict[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="bench-logs-") as tmp:
        for run in range(config.runs):
            runs.append(run_once(config, bodies, Path(tmp), run))
    machine["load_after"] = report.loadavg()
    text = report.render(config, machine, version_dir, runs, time.monotonic() - started)
    repository_results = None
    explain_results = None
    monitoring_results = None
    if any(t.key == "litert" for t in config.targets):  # each phase writes its own section
        if "repository" in config.phases:  # issue 14
            options = repository.options_for_bench(config, version_dir)
            repository_results = repository.measure(options)
            text = repository.with_section(text, repository.section(repository_results))
        if "explain" in config.phases:  # issue 17
            explain_results = explain.measure(explain.options_for_bench(config, version_dir))
            text = explain.with_section(text, explain.section(explain_results))
        if "monitoring" in config.phases:  # issue 15
            options = monitoring.options_for_bench(config, version_dir)
            monitoring_results = monitoring.measure(options)
            text = monitoring.with_section(text, monitoring.section(monitoring_results))
    if config.out is not None:
        config.out.write_text(text)
        print(f"bench: wrote {config.out}")
    else:
        print(text)
    failed = sum(f.get("errors", 0) for figures in runs for f in figures.values())
    failed += repository_results.errors if repository_results is not None else 0
    failed += explain_results.errors if explain_results is not None else 0
    failed += monitoring_results.errors if monitoring_results is not None else 0
    if failed:
        print(f"bench: {failed} requests failed during the loads", file=sys.stderr)
        return 1
    return 0
