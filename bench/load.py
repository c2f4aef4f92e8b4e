"""Load generators: wrk with a Lua script for the POST body, or a small asyncio fallback.

Both keep connections alive, run for a fixed time and report requests/s and latency percentiles.
The fallback exists so the smoke test runs where wrk is not installed; its figures are far below
wrk's and are not comparable.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# wrk calls done() once at the end; one JSON line is easier to read back than wrk's text report.
_LUA = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "{content_type}"
wrk.body = [==[{body}]==]

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {{"requests": %d, "duration_us": %d, "status_errors": %d, "socket_errors": %d, ' ..
    '"p50_us": %d, "p99_us": %d}}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass
class LoadResult:
    """One timed load: throughput, latency and failures."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx answers and socket errors

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def wrk_path() -> str | None:
    """The wrk binary, or None when it is not installed."""
    return shutil.which("wrk")


def run_wrk(
    url: str, body: bytes, content_type: str, connections: int, seconds: float, threads: int = 1
) -> LoadResult:
    """``wrk`` against ``url`` with ``connections`` keep-alive connections for ``seconds``."""
    if b"]==]" in body:
        raise ValueError("body cannot be embedded in the Lua script")
    wrk = wrk_path()
    if wrk is None:
        raise RuntimeError("wrk is not installed")
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(_LUA.format(content_type=content_type, body=body.decode()))
        command = [
            wrk,
            f"-t{min(threads, connections)}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url,
        ]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=seconds + 60, check=False
        )
    lines = [line for line in done.stdout.splitlines() if line.startswith("BENCH ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    data = json.loads(lines[-1][len("BENCH ") :])
    return LoadResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        errors=data["status_errors"] + data["socket_errors"],
    )


# -- the fallback -------------------------------------------------------------------------------
async def _connection(
    host: str, port: int, request: bytes, deadline: float, latencies: list[float]
) -> int:
    """Send ``request`` over one keep-alive connection until ``deadline``; returns the errors."""
    errors = 0
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            if not head.startswith((b"HTTP/1.1 2", b"HTTP/1.0 2")):
                errors += 1
    finally:
        writer.close()
    return errors


async def _python_load(
    host: str,
    port: int,
    path: str,
    body: bytes,
    content_type: str,
    connections: int,
    seconds: float,
) -> LoadResult:
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    latencies: list[float] = []
    start = time.perf_counter()
    deadline = start + seconds
    outcomes = await asyncio.gather(
        *(_connection(host, port, request, deadline, latencies) for _ in range(connections)),
        return_exceptions=True,
    )
    elapsed = time.perf_counter() - start
    errors = sum(o if isinstance(o, int) else 1 for o in outcomes)
    if not latencies:
        return LoadResult(0, elapsed, 0.0, 0.0, errors or 1)
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    return LoadResult(len(latencies), elapsed, cuts[49] * 1000, cuts[98] * 1000, errors)


def run_python(
    url: str, body: bytes, content_type: str, connections: int, seconds: float
) -> LoadResult:
    """The asyncio fallback with the same contract as :func:`run_wrk`."""
    rest = url.split("://", 1)[1]
    address, _, path = rest.partition("/")
    host, _, port = address.partition(":")
    return asyncio.run(
        _python_load(host, int(port), "/" + path, body, content_type, connections, seconds)
    )
