"""``python -m service``: run uvicorn on the app factory with settings from the environment."""

from __future__ import annotations

import contextlib
import gc
import importlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from types import FrameType
from typing import Any

import uvicorn
from pydantic import ValidationError

from service.observability.logs import log_config
from service.observability.metrics import MULTIPROC_DIR_ENV, prepare_multiprocess_dir
from service.protocol import HTTP_PROTOCOL
from service.settings import Settings


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's settings for this service; the benchmark runs its reference apps with these too."""
    return {
        "host": settings.host,
        "port": settings.port,
        "workers": settings.workers,
        "loop": "uvloop",
        # httptools with limits on header size, header count, header time and open
        # connections (service/protocol.py); by import path, so that each worker imports it.
        "http": HTTP_PROTOCOL,
        "log_level": settings.log_level,
        "access_log": False,
        "log_config": log_config(settings.log_level),
        "timeout_graceful_shutdown": settings.drain_seconds,
        "server_header": False,
        # With WORKERS > 1 a worker answers the supervisor's pings only once it has imported the
        # app; on a busy machine that takes longer than uvicorn's 5 s and the worker is killed.
        "timeout_worker_healthcheck": 30,
    }


def _metrics_dir(settings: Settings) -> str | None:
    """Several workers share their metrics through files: the operator's directory (emptied
    of a previous run's files) or a temporary one, returned to be removed at exit."""
    given = os.environ.get(MULTIPROC_DIR_ENV)
    if given:
        prepare_multiprocess_dir(given)
        return None
    if settings.workers > 1:
        os.environ[MULTIPROC_DIR_ENV] = made = tempfile.mkdtemp(prefix="service-metrics-")
        return made
    return None


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    # uvicorn handles SIGTERM (drains, then runs the lifespan shutdown) and then raises it again
    # for the previous handler: this one. A drained shutdown exits with code 0, and at once: the
    # interpreter's own teardown (unloading native libraries) takes another 0.5 s.
    logging.shutdown()
    os._exit(0)


def runtime_modules(settings: Settings) -> list[str]:
    """The modules the model runtime will import (TensorFlow's logs are set before keras)."""
    from service import runtimes

    if settings.model_runtime == "keras" or not runtimes.litert_available():
        return ["service.runtimes.keras", "keras"]
    return ["service.runtimes.litert"]


def freeze_imports(modules: list[str], workers: int = 1) -> None:
    """Import what the worker will run, then exempt those objects from garbage collection.

    The imports leave ~70,000 long-lived objects (420,000 with TensorFlow) that every full
    collection walks: a 50 ms pause (300 ms with TensorFlow) every few thousand requests, ~5 us
    a request on average. Module objects are never garbage, so freezing them is safe; the model
    is loaded later and stays collectable. With several workers, each imports afresh: nothing
    to do in the supervisor.
    """
    if workers != 1:
        return
    for module in modules:
        with contextlib.suppress(ImportError):  # a missing runtime is reported at model load
            importlib.import_module(module)
    gc.collect()
    gc.freeze()


def grpc_port_problem(settings: Settings) -> str | None:
    """Why GRPC_PORT cannot be had (another program listens on it), or None.

    Checked once, before any worker starts: workers share the port (SO_REUSEPORT), so a worker's
    own bind would also succeed beside another program that set SO_REUSEPORT."""
    host, port = settings.host, settings.grpc_port
    if not port:
        return None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as exc:
            return (
                f"cannot listen for gRPC on {host}:{port} ({exc.strerror}); set GRPC_PORT to a "
                "free port, or 0 to turn gRPC off"
            )
    return None


def settings_problem(error: ValidationError) -> str:
    """One line naming each environment variable that Settings refused, and why. Values are
    never shown: API_KEY, ADMIN_TOKEN and ARTIFACT_SIGNING_KEY are secrets."""
    parts = []
    for item in error.errors(include_url=False, include_input=False, include_context=False):
        name = ".".join(str(part) for part in item["loc"]).upper() or "settings"
        message = " ".join(str(item["msg"]).removeprefix("Value error, ").split())
        parts.append(f"{name}: {message}")
    return "; ".join(parts)


def read_settings() -> Settings | str:
    """Settings from the environment, or the line saying which variables are wrong.

    Their warnings (a key's trailing newline removed) are held back here: the app reads the
    settings again once logging is set up, and logs them as JSON lines, once per worker."""
    held = logging.getLogger("service.settings")
    held.disabled = True
    try:
        return Settings()
    except ValidationError as exc:
        return settings_problem(exc)
    finally:
        held.disabled = False


def main() -> int:
    settings = read_settings()
    if isinstance(settings, str):
        print(f"error: {settings}", file=sys.stderr)
        return 2
    problem = grpc_port_problem(settings)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    made = _metrics_dir(settings)
    freeze_imports(["service.app", *runtime_modules(settings)], settings.workers)
    signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        uvicorn.run("service.app:create_app", factory=True, **server_options(settings))
    finally:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
