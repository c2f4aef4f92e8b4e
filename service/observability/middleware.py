"""Pure ASGI middleware (no per-request task or body copy, unlike BaseHTTPMiddleware).

``RequestMiddleware``: the request id, the HTTP metrics and one access log line per request.
``OverloadMiddleware``: at most MAX_CONCURRENCY prediction requests in flight, each answered
within REQUEST_TIMEOUT_SECONDS; beyond either, a quick 503 with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
from starlette.routing import compile_path

from service.errors import Overloaded
from service.observability.logs import ACCESS_LOGGER, RequestContext, current_request
from service.observability.metrics import get_metrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REQUEST_ID_HEADER = b"x-request-id"
# A client's id is kept when it is 1-128 characters of these; anything else is replaced.
_VALID_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}").fullmatch
UNMATCHED_ROUTE = "unmatched"

access_log = logging.getLogger(ACCESS_LOGGER)


def request_id(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's ``X-Request-ID`` when it is safe to log and echo, else a new random one."""
    for name, value in headers:
        if name == REQUEST_ID_HEADER:
            if _VALID_REQUEST_ID(value):
                return value.decode("ascii")
            break
    return os.urandom(16).hex()


def route_templates(app: Any) -> list[tuple[re.Pattern[str], str]]:
    """Every route's path template and its regex, for requests answered before routing."""
    try:  # FastAPI >= 0.16x includes routers lazily; this lists their routes
        from fastapi.routing import iter_route_contexts

        routes: Any = iter_route_contexts(app.routes)
    except ImportError:
        routes = getattr(app, "routes", ())
    table = []
    for route in routes:
        template = getattr(route, "path_format", None)
        if template:
            table.append((compile_path(template)[0], template))
    return table


class RequestMiddleware:
    """Request id in and out, request count and latency by route and status, one access line."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.metrics = get_metrics()
        self._templates: list[tuple[re.Pattern[str], str]] | None = None

    def route_template(self, scope: Scope) -> str:
        """The matched route's path template (``/v2/models/{name}/infer``): bounded label values."""
        route = scope.get("route")
        if route is not None:
            return getattr(route, "path_format", None) or route.path
        # Answered before routing (an overload 503), or no route matched (404).
        if self._templates is None:
            self._templates = route_templates(scope.get("app"))
        path = scope["path"]
        for pattern, template in self._templates:
            if pattern.match(path):
                return template
        return UNMATCHED_ROUTE

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        context = RequestContext(request_id(scope["headers"]))
        token = current_request.set(context)
        id_header = (REQUEST_ID_HEADER, context.request_id.encode("ascii"))
        status = 500  # what the client gets if the app raises before answering

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            current_request.reset(token)
            seconds = time.perf_counter() - start
            route = self.route_template(scope)
            method = scope["method"]
            self.metrics.observe_request(route, method, status, seconds)
            if access_log.isEnabledFor(logging.INFO):
                version = context.model_version
                if version is None:
                    version = _served_version(scope)
                # makeRecord + handle: Logger.info would also walk the stack for the caller.
                access_log.handle(
                    access_log.makeRecord(
                        ACCESS_LOGGER,
                        logging.INFO,
                        "",
                        0,
                        "%s %s %d",
                        (method, route, status),
                        None,
                        extra={
                            "fields": {
                                "request_id": context.request_id,
                                "method": method,
                                "route": route,
                                "path": scope["path"][:200],
                                "status": status,
                                "duration_ms": round(seconds * 1000, 3),
                                "model_version": version,
                            }
                        },
                    )
                )


def _served_version(scope: Scope) -> int | None:
    registry = getattr(getattr(scope.get("app"), "state", None), "registry", None)
    model = getattr(registry, "current", None)
    return getattr(model, "version", None)


def is_prediction(scope: Scope) -> bool:
    """Prediction routes are the POST routes (``/predict``, V2 ``infer``, TF Serving
    ``:predict``) except ``/admin/*``; health, model card and ``/metrics`` are GET and exempt."""
    return scope["method"] == "POST" and not scope["path"].startswith("/admin/")


class OverloadMiddleware:
    """Admission control for prediction routes, per worker process."""

    def __init__(self, app: ASGIApp, max_concurrency: int, timeout_seconds: float) -> None:
        self.app = app
        self.max_concurrency = max_concurrency
        self.timeout_seconds = timeout_seconds
        self.in_flight = 0
        self.metrics = get_metrics()
        self._busy = Overloaded(
            f"{max_concurrency} prediction requests are in flight (MAX_CONCURRENCY); retry shortly"
        )
        self._slow = Overloaded(
            f"the prediction took longer than REQUEST_TIMEOUT_SECONDS={timeout_seconds:g}; "
            "retry shortly"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_prediction(scope):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_concurrency:
            self.metrics.overload.labels("concurrency").inc()
            await _refuse(send, self._busy)
            return
        self.in_flight += 1
        self.metrics.prediction_started()
        try:
            await self._within_deadline(scope, receive, send)
        finally:
            self.in_flight -= 1
            self.metrics.prediction_ended()

    async def _within_deadline(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None
        started = expired = False

        def expire() -> None:
            nonlocal expired
            if not started:  # an answer under way is left to finish
                expired = True
                task.cancel()

        async def send_unless_expired(message: Message) -> None:
            nonlocal started
            if expired:  # the app ignored the cancellation; the client gets the 503 instead
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        timer = asyncio.get_running_loop().call_later(self.timeout_seconds, expire)
        try:
            await self.app(scope, receive, send_unless_expired)
        except (asyncio.CancelledError, Exception):
            if not expired:  # once expired, whatever the app raises has no one to answer
                raise
        finally:
            timer.cancel()
        if expired:
            task.uncancel()  # our own cancellation, handled here
            self.metrics.overload.labels("timeout").inc()
            await _refuse(send, self._slow)


async def _refuse(send: Send, error: Overloaded) -> None:
    """503 ``{"error": ...}`` with ``Retry-After``, as the app's handler renders Overloaded."""
    body = orjson.dumps({"error": error.message})
    await send(
        {
            "type": "http.response.start",
            "status": error.status_code,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", b"1"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
