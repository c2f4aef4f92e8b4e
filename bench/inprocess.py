"""CPU per single-row ``POST /predict`` in one process, driving each app's ASGI callable directly.

No server, no sockets, no load generator: what the app itself costs a request, with the noise of
a shared machine mostly gone. Each app runs in its own process, the processes take turns, and
the best round of each is reported (plus the median).

usage: python -m bench.inprocess [--rounds N] [--requests N] [--artifacts DIR]
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging.config
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.large import json_body

VARIANTS = {
    "ceiling": "the ceiling app (FastAPI, parse the body, constant answer)",
    "bare": "the service without its request layer (bench/bare_app.py)",
    "quiet": "the service, LOG_LEVEL=warning (no access line)",
    "full": "the service as it runs by default (access line written to a file)",
}
BODY = json_body([[5.1, 3.5, 1.4, 0.2]])


# The module whose create_app() each variant serves.
MODULES = {
    "ceiling": "bench.ceiling_app",
    "bare": "bench.bare_app",
    "quiet": "service.app",
    "full": "service.app",
}


async def _measure(app, requests: int) -> float:
    """Seconds of CPU per request over ``requests`` requests, after a warm-up."""
    message = {"type": "http.request", "body": BODY, "more_body": False}
    statuses: list[int] = []

    async def receive() -> dict:
        return message

    async def send(event: dict) -> None:
        if event["type"] == "http.response.start":
            statuses.append(event["status"])

    headers = [
        (b"host", b"127.0.0.1"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(BODY)).encode()),
    ]
    async with app.router.lifespan_context(app) as state:
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 5000), "scheme": "http",
            "method": "POST", "root_path": "", "path": "/predict", "raw_path": b"/predict",
            "query_string": b"", "headers": headers, "state": dict(state or {}),
        }  # fmt: skip
        for _ in range(1000):
            await app(dict(scope), receive, send)
        start = time.process_time()
        for _ in range(requests):
            await app(dict(scope), receive, send)
        seconds = (time.process_time() - start) / requests
    if set(statuses) != {200}:
        raise RuntimeError(f"answers other than 200: {sorted(set(statuses))}")
    return seconds


def _child(variant: str, requests: int, log_path: str) -> None:
    """One round in this process: print the CPU microseconds per request."""
    if variant == "quiet":
        os.environ["LOG_LEVEL"] = "warning"
    from service.__main__ import freeze_imports, runtime_modules
    from service.observability.logs import log_config
    from service.settings import Settings

    with open(log_path, "a") as log:  # the access lines go to a file, as a server's stdout
        os.dup2(log.fileno(), 1)
    sys.stdout = os.fdopen(1, "w", closefd=False)
    logging.config.dictConfig(log_config(Settings().log_level))
    # Imports frozen out of garbage collection before the app is built, as python -m service
    # and bench.serve do.
    freeze_imports([MODULES[variant], *runtime_modules(Settings())], 1)
    app = importlib.import_module(MODULES[variant]).create_app()
    import uvloop

    seconds = uvloop.run(_measure(app, requests))
    print(json.dumps({"us": seconds * 1e6}), file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.inprocess", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--artifacts", default=os.environ.get("ARTIFACTS_DIR", "artifacts"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--log", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.requests, args.log)
        return 0
    env = {
        **os.environ,
        "ARTIFACTS_DIR": str(Path(args.artifacts).resolve()),
        "MODEL_NAME": "iris",  # the model /predict answers, whatever else the directory holds
        "MODEL_RUNTIME": "litert",
    }
    env.pop("LOG_LEVEL", None)
    figures: dict[str, list[float]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="bench-inprocess-") as tmp:
        log = Path(tmp) / "stdout.log"  # the access lines of a round, deleted after it
        for _ in range(args.rounds):
            for variant in VARIANTS:  # in turn, so that drifting load touches all alike
                us = _round(variant, args.requests, env, log)
                if us is None:
                    return 1
                figures[variant].append(us)
    print(
        f"CPU per single-row POST /predict, in process ({args.rounds} rounds of {args.requests:,}):"
    )
    for variant, title in VARIANTS.items():
        values = figures[variant]
        best, median = min(values), statistics.median(values)
        print(f"  {variant:8s} best {best:6.1f} us  median {median:6.1f} us  {title}")
    return 0


def _round(variant: str, requests: int, env: dict[str, str], log: Path) -> float | None:
    """One round of ``variant`` in a new process: CPU microseconds per request (None: failed)."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.inprocess", "--child", variant,
         "--requests", str(requests), "--log", str(log)],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    log.unlink(missing_ok=True)
    lines = [line for line in done.stderr.splitlines() if line.startswith('{"us"')]
    if done.returncode != 0 or not lines:
        print(done.stderr[-2000:], file=sys.stderr)
        return None
    return json.loads(lines[-1])["us"]


if __name__ == "__main__":
    sys.exit(main())
