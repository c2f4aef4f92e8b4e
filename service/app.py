"""The application factory: ``create_app(settings)`` builds the FastAPI app; nothing at import."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from service.api import admin, routes
from service.dataplane import Admission, DataPlane
from service.dispatch import ServiceApp
from service.errors import Overloaded, ServiceError
from service.http import JSONBytes
from service.monitor import Monitor
from service.observability.metrics import Metrics, ModelMetrics, get_metrics
from service.observability.middleware import RequestMiddleware
from service.openapi import customize
from service.process import prepare_worker
from service.repository import Repository
from service.settings import Settings
from service.shadow import ShadowScorer

if TYPE_CHECKING:
    from service.cloudevents import CloudEventsSink

log = logging.getLogger("service")


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONBytes:
    return JSONBytes({"error": message}, status_code=status, headers=headers)


async def _service_error(request: Request, exc: Exception) -> JSONBytes:
    assert isinstance(exc, ServiceError)
    headers = {"Retry-After": "1"} if isinstance(exc, Overloaded) else None
    return _error(exc.status_code, exc.message, headers)


async def _validation_error(request: Request, exc: Exception) -> JSONBytes:
    # FastAPI's default handler echoes the input back, which crashes on NaN; name the place only.
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "request"
    return _error(422, f"{where}: {first.get('msg', 'invalid')}")


async def _http_error(request: Request, exc: Exception) -> JSONBytes:
    assert isinstance(exc, StarletteHTTPException)
    message = exc.detail if isinstance(exc.detail, str) else "request failed"
    if exc.status_code == 404:
        message = f"no route {request.url.path[:200]!r}"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path[:200]!r}"
        # Starlette's Allow names the first matching route's methods only; a path served by
        # several routes (PUT and DELETE of a label) allows all of theirs.
        allowed = _allowed_methods(request)
        if allowed:
            return _error(405, message, {"Allow": ", ".join(allowed)})
    return _error(exc.status_code, message, getattr(exc, "headers", None))


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route answers on this path (asked of each route, included routers'
    too, through Starlette's own matching)."""
    allowed = []
    for method in ("DELETE", "GET", "HEAD", "PATCH", "POST", "PUT"):
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return allowed


def _event_sink(settings: Settings, sink: Metrics | None) -> CloudEventsSink | None:
    """The CloudEvents sender of PAYLOAD_LOG_URL, its drops counted with the payload log's."""
    if settings.payload_log_url is None:
        return None
    from service.cloudevents import CloudEventsSink

    def dropped(reason: str, count: int) -> None:
        if sink is not None:
            sink.payload_log_dropped.labels(f"events {reason}").inc(count)

    source = f"http://{socket.gethostname()}:{settings.port}"
    # At most 1,000 records waiting (a record holds its request's rows).
    return CloudEventsSink(settings.payload_log_url, source, queue_size=1000, on_dropped=dropped)


def _lifespan(settings: Settings, observed: bool, admission: Admission):
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        prepare_worker()
        events: dict[str, ModelMetrics] = {}

        def events_of(name: str) -> ModelMetrics | None:
            if not observed:
                return None
            return events.setdefault(name, ModelMetrics(name))

        repository = Repository(settings, events_of)
        sink = get_metrics() if observed else None
        shadow = ShadowScorer(sink)
        monitor = Monitor(settings, sink, _event_sink(settings, sink))
        app.state.plane = DataPlane(repository, settings, sink, admission, shadow, monitor)
        grpc_server = watcher = None
        try:
            await asyncio.to_thread(repository.load_initial)
            app.state.repository = repository
            shadow.start()
            monitor.start()
            grpc_server = await _start_grpc(app.state.plane, app.version)
            if settings.poll_seconds > 0:  # a pinned version is loaded once it appears
                watcher = asyncio.create_task(repository.watch())
            yield {}
        finally:
            if grpc_server is not None:
                await grpc_server.stop(settings.drain_seconds)
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            await shadow.stop()
            # The requests answered while draining are in the queue: log them, sync the file.
            await asyncio.to_thread(monitor.stop, settings.drain_seconds)
            repository.close()
            for model_events in events.values():
                model_events.close()

    return lifespan


async def _start_grpc(plane: DataPlane, version: str) -> Any:
    """The gRPC server on GRPC_PORT (None when 0), draining from the moment SIGTERM arrives.

    uvicorn drains HTTP connections first and runs the lifespan shutdown after; gRPC calls
    drain at the same time, through a SIGTERM handler chained before uvicorn's (installed
    only in the main thread, where signals are delivered: not under a test client)."""
    if not plane.settings.grpc_port:
        return None
    from service.grpc_api.server import GrpcServer  # grpcio is imported only when it is used

    server = GrpcServer(plane, version)
    await server.start()
    if threading.current_thread() is threading.main_thread():
        loop = asyncio.get_running_loop()
        previous = signal.getsignal(signal.SIGTERM)

        def on_sigterm(signum: int, frame: Any) -> None:
            loop.call_soon_threadsafe(server.begin_drain, plane.settings.drain_seconds)
            if callable(previous):
                previous(signum, frame)
            elif previous == signal.SIG_DFL:  # no server handles it: end as the signal would
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.raise_signal(signal.SIGTERM)

        signal.signal(signal.SIGTERM, on_sigterm)

        def restore() -> None:
            if signal.getsignal(signal.SIGTERM) is on_sigterm:
                signal.signal(signal.SIGTERM, previous)

        server.on_stop = restore
    return server


def _openapi_for_model(app: FastAPI, base: Any) -> Any:
    """OpenAPI whose request schema names the served model's features (cached per version)."""

    def openapi() -> dict[str, Any]:
        repository = getattr(app.state, "repository", None)
        registry = repository.default_or_none() if repository is not None else None
        model = registry.served() if registry is not None else None
        key = (model.name, model.version) if model else None
        if getattr(app.state, "openapi_key", "unset") == key:
            return app.openapi_schema  # type: ignore[return-value]
        app.openapi_schema = None
        schema = base()
        customize(schema, model, app.state.settings)
        app.openapi_schema = schema
        app.state.openapi_key = key
        return schema

    return openapi


def _telemetry(settings: Settings) -> dict[str, bool]:
    """FastAPI's OpenTelemetry options: its defaults when OTEL_TELEMETRY is on, else all off
    (with a warning when the environment looks set up for OpenTelemetry)."""
    if settings.otel_telemetry:
        return {}
    asked = opentelemetry_variable(os.environ)
    if asked is not None:
        log.warning(
            "%s is set but OTEL_TELEMETRY is off: FastAPI records no OpenTelemetry spans, "
            "metrics or logs; set OTEL_TELEMETRY=true to turn them on",
            asked,
        )
    return {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}


def opentelemetry_variable(environ: Mapping[str, str]) -> str | None:
    """The first variable that configures OpenTelemetry (``OTEL_*``, FastAPI's auto-configure),
    OTEL_TELEMETRY itself aside; None when there is none."""
    for name in sorted(environ):
        upper = name.upper()
        if upper == "FASTAPI_OTEL_AUTO_CONFIGURE" and environ[name].lower() == "true":
            return name
        if upper.startswith("OTEL_") and upper != "OTEL_TELEMETRY":
            return name
    return None


def create_app(settings: Settings | None = None, observed: bool = True) -> ServiceApp:
    """Build the service for ``settings`` (default: read from the environment).

    ``observed=False`` leaves out metrics, request ids, access lines and the concurrency limit
    and timeout: only the benchmark uses it, to show what they cost.
    """
    settings = settings or Settings()
    logging.getLogger("service").setLevel(settings.log_level.upper())
    app = ServiceApp(
        title="Keras classifier service",
        summary="Decoded labels and per-class probabilities from a verified Keras bundle.",
        version="0.1.0",
        lifespan=_lifespan(settings, observed, admission := Admission(settings.max_concurrency)),
        telemetry=_telemetry(settings),
        # The route table serves /docs and /redoc with their files from the service itself.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    hot = routes.add_routes(app)
    if settings.admin_token is not None:
        app.include_router(admin.router)
    app.openapi = _openapi_for_model(app, app.openapi)  # type: ignore[method-assign]
    # Requests are matched in order, and FastAPI adds its documentation routes first.
    app.router.routes.sort(key=lambda route: route not in hot)
    # FastAPI's telemetry observes the requests it routes: with it on, every route is routed.
    app.hot_routes = () if settings.otel_telemetry else tuple(hot)
    if observed:
        app.request_layer = RequestMiddleware(
            app.dispatch,
            admission,
            timeout_seconds=settings.request_timeout_seconds,
            max_body_bytes=settings.max_body_bytes,
        )
    return app
