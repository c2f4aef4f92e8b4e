"""Load on the Open Inference Protocol over gRPC: ModelInfer with one Iris row a call.

    python -m bench.grpc_load --target 127.0.0.1:8081 --model iris --concurrency 32 --seconds 10

N calls in flight for D seconds; prints requests/s and p50/p99 latency (``--json``: one JSON
object). The request is what tritonclient.grpc sends: input ``features``, FP32 ``[1, 4]``, as
``raw_input_contents``; no requested outputs (every output).

Two load generators, the same contract:

- ``h2load`` (nghttp2's HTTP/2 benchmark, in C; Debian package nghttp2-client), used when it is
  installed: it POSTs the gRPC frame (a 5-byte prefix, then the serialized request) to
  ``/inference.GRPCInferenceService/ModelInfer`` with ``content-type: application/grpc`` and
  ``te: trailers``, on ``--connections`` connections of N/connections streams each; latencies
  come from its per-request log. h2load knows HTTP, not gRPC: a call that fails has HTTP status
  200 and a grpc-status trailer it does not read. So one call through grpcio first checks the
  answer (and gives its size); an answer without a body (a gRPC error) shows in the bytes h2load
  received, which are checked against that size: the shortfall is reported as errors.
- ``python``: grpc.aio clients in 2 processes (a Python client on the event loop tops out well
  below a busy server; its figures are not comparable with h2load's).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc

from bench.load import LoadResult

SERVICE = "inference.GRPCInferenceService"
METHOD = f"/{SERVICE}/ModelInfer"
IRIS_ROW = (5.1, 3.5, 1.4, 0.2)
PROCESSES = 2  # the Python fallback's processes


@dataclass
class GrpcLoad:
    """One run: the result, the tool and the concurrency it ran at."""

    tool: str
    concurrency: int
    connections: int
    result: LoadResult

    def line(self, target: str) -> str:
        r = self.result
        return (
            f"gRPC ModelInfer {target} ({self.tool}, {self.concurrency} calls in flight on "
            f"{self.connections} connections, {r.seconds:.1f} s): {r.rps:,.0f} req/s, "
            f"p50 {r.p50_ms:.2f} ms, p99 {r.p99_ms:.2f} ms, {r.requests} calls, {r.errors} errors"
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "tool": self.tool,
            "concurrency": self.concurrency,
            "connections": self.connections,
            **asdict(self.result),
            "rps": self.result.rps,
        }


def infer_request(model: str, row: tuple[float, ...] = IRIS_ROW, version: str = "") -> bytes:
    """A serialized ModelInferRequest for one row, as tritonclient.grpc builds it."""
    from service.grpc_api import grpc_predict_v2_pb2 as pb

    request = pb.ModelInferRequest(model_name=model, model_version=version, id="bench")
    request.inputs.add(name="features", datatype="FP32", shape=[1, len(row)])
    request.raw_input_contents.append(struct.pack(f"<{len(row)}f", *row))
    return request.SerializeToString()


def grpc_frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message: not compressed, 4-byte big-endian length, the bytes."""
    return struct.pack(">BI", 0, len(message)) + message


def _metadata(api_key: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {api_key}"),) if api_key else ()


def _identity(data: bytes) -> bytes:
    return data


def check_call(target: str, request: bytes, api_key: str | None, timeout: float = 30.0) -> bytes:
    """One ModelInfer through grpcio: the serialized answer, or SystemExit with the status."""
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(
            METHOD, request_serializer=_identity, response_deserializer=_identity
        )
        try:
            return call(request, timeout=timeout, metadata=_metadata(api_key))
        except grpc.RpcError as exc:
            raise SystemExit(
                f"ModelInfer on {target} failed: {exc.code().name}: {exc.details()}"  # type: ignore[attr-defined]
            ) from None


def _percentiles(latencies: list[float]) -> tuple[float, float]:
    """p50 and p99 of latencies in seconds, in milliseconds."""
    if not latencies:
        return 0.0, 0.0
    if len(latencies) == 1:
        return latencies[0] * 1000, latencies[0] * 1000
    cuts = statistics.quantiles(latencies, n=100)
    return cuts[49] * 1000, cuts[98] * 1000


# -- h2load -------------------------------------------------------------------------------------
def h2load_path() -> str | None:
    return shutil.which("h2load")


_REQUESTS = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored, (\d+) timeout"
)
_FINISHED = re.compile(r"finished in ([\d.]+)(us|ms|s), ([\d.]+) req/s")
_DATA = re.compile(r"\((\d+)\) data")
_UNIT = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def parse_h2load(stdout: str, log: str, answer_frame: int) -> LoadResult:
    """h2load's report and per-request log to a result. ``answer_frame``: the bytes of one good
    answer's DATA (5-byte prefix + message); a gRPC error has none."""
    requests = _REQUESTS.search(stdout)
    finished = _FINISHED.search(stdout)
    data = _DATA.search(stdout)
    if not (requests and finished and data):
        raise RuntimeError(f"cannot read h2load's report:\n{stdout[-2000:]}")
    done, succeeded, failed, errored, timeouts = (int(requests.group(i)) for i in (3, 4, 5, 6, 7))
    rate = float(finished.group(3))  # done / the measured duration
    seconds = done / rate if rate else float(finished.group(1)) * _UNIT[finished.group(2)]
    # Calls h2load counted as succeeded whose answer had no body: gRPC errors (trailers only).
    answered = int(data.group(1)) // answer_frame if answer_frame else succeeded
    grpc_errors = max(0, succeeded - answered)
    latencies = []
    for row in log.splitlines():
        cells = row.split("\t")
        if len(cells) >= 3 and cells[1] == "200":
            latencies.append(int(cells[2]) / 1e6)
    p50, p99 = _percentiles(latencies)
    return LoadResult(
        requests=succeeded - grpc_errors,
        seconds=seconds,
        p50_ms=p50,
        p99_ms=p99,
        errors=failed + errored + timeouts + grpc_errors,
    )


def run_h2load(
    target: str,
    request: bytes,
    answer: bytes,
    concurrency: int,
    connections: int,
    seconds: float,
    api_key: str | None = None,
    warm_up: float = 1.0,
    threads: int = 1,
) -> GrpcLoad:
    """h2load for ``seconds``, after a separate warm-up run of ``warm_up`` seconds whose figures
    are dropped (h2load's own --warm-up-time counts the warm-up's bytes in its traffic total,
    which would hide failed calls from the check on received bytes)."""
    h2load = h2load_path()
    if h2load is None:
        raise RuntimeError("h2load is not installed (Debian: apt-get install nghttp2-client)")
    streams = math.ceil(concurrency / connections)
    with tempfile.TemporaryDirectory(prefix="bench-grpc-") as tmp:
        body = Path(tmp) / "request.grpc"
        body.write_bytes(grpc_frame(request))
        log = Path(tmp) / "requests.log"
        command = [
            h2load,
            f"--clients={connections}",
            f"--threads={max(1, min(threads, connections))}",
            f"--max-concurrent-streams={streams}",
            f"--data={body}",
            "--header=content-type: application/grpc",
            "--header=te: trailers",
        ]
        for name, value in _metadata(api_key):
            command.append(f"--header={name}: {value}")
        url = f"http://{target}{METHOD}"
        if warm_up > 0:
            _h2load([*command, f"--duration={max(1, round(warm_up))}", url], warm_up)
        stdout = _h2load(
            [*command, f"--duration={max(1, round(seconds))}", f"--log-file={log}", url], seconds
        )
        result = parse_h2load(stdout, log.read_text(), len(grpc_frame(answer)))
    return GrpcLoad("h2load", streams * connections, connections, result)


def _h2load(command: list[str], seconds: float) -> str:
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"h2load failed ({done.returncode}): {(done.stderr or done.stdout)[-1000:]}"
        )
    return done.stdout


# -- the Python fallback ------------------------------------------------------------------------
async def _calls(
    target: str,
    request: bytes,
    concurrency: int,
    channels: int,
    seconds: float,
    api_key: str | None,
) -> tuple[list[float], int, float]:
    metadata = _metadata(api_key)
    opened = [grpc.aio.insecure_channel(target) for _ in range(channels)]
    stubs = [
        c.unary_unary(METHOD, request_serializer=_identity, response_deserializer=_identity)
        for c in opened
    ]
    latencies: list[float] = []
    errors = 0

    async def caller(stub: grpc.aio.UnaryUnaryMultiCallable) -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            try:
                await stub(request, timeout=10, metadata=metadata)
            except grpc.RpcError:
                errors += 1
                continue
            latencies.append(time.perf_counter() - start)

    try:
        for c in opened:
            await c.channel_ready()
        start = time.perf_counter()
        deadline = start + seconds
        await asyncio.gather(*(caller(stubs[i % channels]) for i in range(concurrency)))
        elapsed = time.perf_counter() - start
    finally:
        for c in opened:
            await c.close()
    return latencies, errors, elapsed


def _process(
    target: str,
    request: bytes,
    concurrency: int,
    channels: int,
    seconds: float,
    api_key: str | None,
    barrier: multiprocessing.synchronize.Barrier,
    results: multiprocessing.Queue,
) -> None:
    barrier.wait()
    results.put(asyncio.run(_calls(target, request, concurrency, channels, seconds, api_key)))


def run_python(
    target: str,
    request: bytes,
    concurrency: int,
    connections: int,
    seconds: float,
    api_key: str | None = None,
    processes: int = PROCESSES,
) -> GrpcLoad:
    """grpc.aio callers in ``processes`` processes (spawned: gRPC does not survive a fork)."""
    processes = max(1, min(processes, concurrency))
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes)
    results: multiprocessing.Queue = context.Queue()
    shares = [concurrency // processes + (i < concurrency % processes) for i in range(processes)]
    channels = [max(1, connections * share // concurrency) for share in shares]
    workers = [
        context.Process(
            target=_process,
            args=(target, request, share, chans, seconds, api_key, barrier, results),
        )
        for share, chans in zip(shares, channels, strict=True)
    ]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=seconds + 120) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
    latencies = [x for lat, _, _ in outcomes for x in lat]
    errors = sum(e for _, e, _ in outcomes)
    elapsed = max(t for _, _, t in outcomes)
    p50, p99 = _percentiles(latencies)
    result = LoadResult(len(latencies), elapsed, p50, p99, errors)
    return GrpcLoad(f"python grpc.aio x{processes}", concurrency, sum(channels), result)


# -- the command --------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.grpc_load", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--target", default="127.0.0.1:8081", help="host:port of the gRPC server")
    parser.add_argument("--model", default="iris")
    parser.add_argument("--model-version", default="", help="empty: the server's choice")
    parser.add_argument("--concurrency", type=int, default=32, help="calls in flight")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--connections",
        type=int,
        default=1,
        help="HTTP/2 connections the calls share (a gRPC client's channel is one)",
    )
    parser.add_argument("--tool", choices=("auto", "h2load", "python"), default="auto")
    parser.add_argument("--api-key", default=None, help="sent as authorization: Bearer KEY")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.concurrency < 1 or args.connections < 1 or args.seconds <= 0:
        parser.error("--concurrency, --connections and --seconds must be positive")
    connections = min(args.connections, args.concurrency)

    request = infer_request(args.model, version=args.model_version)
    answer = check_call(args.target, request, args.api_key)
    tool = args.tool
    if tool == "auto":
        tool = "h2load" if h2load_path() else "python"
        if tool == "python" and not args.json:
            print(
                "h2load not installed (Debian: apt-get install nghttp2-client): "
                "using the slower Python client",
                file=sys.stderr,
            )
    if tool == "h2load":
        run = run_h2load(
            args.target, request, answer, args.concurrency, connections, args.seconds, args.api_key
        )
    else:
        run = run_python(
            args.target, request, args.concurrency, connections, args.seconds, args.api_key
        )
    print(json.dumps(run.as_dict()) if args.json else run.line(args.target), flush=True)
    check_call(args.target, request, args.api_key)  # still answering after the load
    return 1 if run.result.errors else 0


if __name__ == "__main__":
    sys.exit(main())
