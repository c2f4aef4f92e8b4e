"""The request middleware: one pure ASGI layer (no per-request task or body copy, unlike
BaseHTTPMiddleware) for everything the service does around a request.

Every request: the request id in and out, count and latency by route and status, one access
log line. Prediction requests: at most MAX_CONCURRENCY in flight, each answered within
REQUEST_TIMEOUT_SECONDS; beyond either, a quick 503 with ``Retry-After``.

One layer instead of two saves a coroutine and a ``send`` wrapper per request, and the timeout
needs no timer per request: one watchdog timer, armed for the oldest prediction's deadline,
cancels the predictions past theirs.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
from starlette.routing import compile_path

from service.dataplane import Admission
from service.errors import Overloaded, ServiceError
from service.observability.logs import AccessLog, RequestContext, current_request
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
# The watchdog treats deadlines this close as passed: timers fire to the millisecond.
_DEADLINE_SLACK = 0.001


def new_request_id(given: str | None) -> str:
    """``given`` (a gRPC call's ``x-request-id``) when it is safe to log and echo, else a new one."""
    if given is not None and given.isascii() and _VALID_REQUEST_ID(given.encode()):
        return given
    return os.urandom(16).hex()


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


def is_prediction(scope: Scope) -> bool:
    """Prediction routes are the POST routes (``/predict``, V2 ``infer``, TF Serving
    ``:predict``) except ``/admin/*``; health, model card and ``/metrics`` are GET and exempt."""
    return scope["method"] == "POST" and not scope["path"].startswith("/admin/")


class _Exchange:
    """One request being answered: what its ``send`` wrapper, the watchdog and the access
    line share."""

    __slots__ = ("deadline", "expired", "id_header", "send", "started", "status", "task")

    def __init__(self, send: Send, id_header: tuple[bytes, bytes]) -> None:
        self.send = send
        self.id_header = id_header
        self.status = 500  # what the client gets if the app raises before answering
        self.started = False
        self.expired = False
        self.task: asyncio.Task[Any] | None = None
        self.deadline = 0.0

    async def send_with_id(self, message: Message) -> None:
        if self.expired:  # the app ignored the cancellation; the client gets the 503 instead
            return
        if message["type"] == "http.response.start":
            self.started = True
            self.status = message["status"]
            message["headers"] = [*message.get("headers", ()), self.id_header]
        await self.send(message)

    def expire(self) -> None:
        if not self.started and self.task is not None:  # an answer under way may finish
            self.expired = True
            self.task.cancel()

    async def refuse(self, error: ServiceError) -> None:
        """``{"error": ...}`` with the error's status, as the app's handler renders it
        (``Retry-After`` for an overload)."""
        body = orjson.dumps({"error": error.message})
        self.status = error.status_code
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            self.id_header,
        ]
        if isinstance(error, Overloaded):
            headers.append((b"retry-after", b"1"))
        if error.status_code == 408:  # the rest of a late body is never read: close at once
            headers.append((b"connection", b"close"))
        start = {"type": "http.response.start", "status": error.status_code, "headers": headers}
        await self.send(start)
        await self.send({"type": "http.response.body", "body": body})


class _Replay:
    """An ASGI ``receive`` giving the messages already read, then the server's own."""

    __slots__ = ("messages", "receive")

    def __init__(self, messages: list[Message], receive: Receive) -> None:
        self.messages = messages
        self.receive = receive

    async def __call__(self) -> Message:
        if self.messages:
            return self.messages.pop(0)
        return await self.receive()


class RequestMiddleware:
    """Request ids, HTTP metrics, access lines; admission control for prediction routes."""

    def __init__(
        self,
        app: ASGIApp,
        admission: Admission,
        timeout_seconds: float,
        max_body_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        self.app = app
        self.admission = admission  # shared with the other transports (gRPC)
        max_concurrency = admission.limit
        self.timeout_seconds = timeout_seconds
        self.metrics = get_metrics()
        self.access_log = AccessLog()
        self._templates: list[tuple[re.Pattern[str], str]] | None = None
        self._busy = Overloaded(
            f"{max_concurrency} prediction requests are in flight (MAX_CONCURRENCY); retry shortly"
        )
        self._slow = Overloaded(
            f"the prediction took longer than REQUEST_TIMEOUT_SECONDS={timeout_seconds:g}; "
            "retry shortly"
        )
        self._slow_body = ServiceError(
            f"the request body did not arrive within REQUEST_TIMEOUT_SECONDS={timeout_seconds:g}",
            408,
        )
        self.max_body_bytes = max_body_bytes
        # Predictions in flight, oldest first (all deadlines are arrival + the same timeout).
        self._deadlines: dict[_Exchange, None] = {}
        self._watchdog: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

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
        exchange = _Exchange(send, (REQUEST_ID_HEADER, context.request_id.encode("ascii")))
        admitted = False
        admission = self.admission
        try:
            if not is_prediction(scope):
                await self.app(scope, receive, exchange.send_with_id)
                return
            # The deadline runs from arrival, through the body, to the answer. The body is
            # read before the request takes a slot: a client sending it slowly (or not at all)
            # holds its own connection until the deadline, never one of the MAX_CONCURRENCY
            # slots predictions need.
            self._watch(exchange, start + self.timeout_seconds)
            try:
                message = await receive()
                if message.get("more_body", False):
                    replay = await self._read_rest(message, receive)
                else:  # the whole body in one message: most requests
                    replay = _Replay([message], receive)
            except asyncio.CancelledError:
                if not exchange.expired:
                    raise
                exchange.task.uncancel()  # the watchdog's cancellation, handled here
                self.metrics.overload.labels("slow body").inc()
                await exchange.refuse(self._slow_body)
                return
            if admission.in_flight >= admission.limit:
                self._deadlines.pop(exchange, None)
                self.metrics.overload.labels("concurrency").inc()
                await exchange.refuse(self._busy)
            else:  # inline, not a method: a coroutine less per prediction
                admitted = True
                admission.in_flight += 1
                self.metrics.prediction_started()
                try:
                    await self.app(scope, replay, exchange.send_with_id)
                except (asyncio.CancelledError, Exception):
                    if not exchange.expired:  # once expired, no one is left to answer
                        raise
                finally:
                    self._deadlines.pop(exchange, None)  # (the watchdog removes the expired)
                if exchange.expired:
                    exchange.task.uncancel()  # the watchdog's cancellation, handled here
                    self.metrics.overload.labels("timeout").inc()
                    await exchange.refuse(self._slow)
        finally:
            if admitted:
                admission.in_flight -= 1
                self.metrics.prediction_ended()
            current_request.reset(token)
            seconds = time.perf_counter() - start
            route = self.route_template(scope)
            method = scope["method"]
            status = exchange.status
            self.metrics.observe_request(route, method, status, seconds)
            if self.access_log.enabled():
                name, version = context.model_name, context.model_version
                if name is None:  # no model asked for: the default model's served version
                    name, version = _served_model(scope)
                self.access_log.write(
                    context.request_id, method, route, scope["path"], status, seconds, version, name
                )

    async def _read_rest(self, message: Message, receive: Receive) -> _Replay:
        """The rest of a body sent in several messages, read to the end, to be replayed to the
        app. Past MAX_BODY_BYTES it stops reading: the endpoint's own read refuses it (413)."""
        messages = [message]
        size = len(message.get("body", b""))
        arriving = self.metrics.bodies_arriving
        arriving.inc()
        try:
            while message.get("more_body", False) and size <= self.max_body_bytes:
                message = await receive()
                messages.append(message)
                if message["type"] != "http.request":  # the client went away
                    break
                size += len(message.get("body", b""))
        finally:
            arriving.dec()
        return _Replay(messages, receive)

    # -- the timeout watchdog ------------------------------------------------------------------
    def _watch(self, exchange: _Exchange, deadline: float) -> None:
        """Cancel the request's task if it is not answering by ``deadline``."""
        loop = asyncio.get_running_loop()
        exchange.task = asyncio.current_task(loop)
        exchange.deadline = deadline
        if loop is not self._loop:  # a new event loop (tests run one app in several)
            self._loop, self._deadlines, self._watchdog = loop, {}, None
        self._deadlines[exchange] = None
        if self._watchdog is None:
            self._watchdog = loop.call_later(self.timeout_seconds, self._expire_overdue)

    def _expire_overdue(self) -> None:
        """Cancel the predictions past their deadline; wait for the next oldest one's."""
        self._watchdog = None
        now = time.perf_counter()
        deadlines = self._deadlines
        while deadlines:
            oldest = next(iter(deadlines))
            if oldest.deadline - now > _DEADLINE_SLACK:
                assert self._loop is not None
                self._watchdog = self._loop.call_later(oldest.deadline - now, self._expire_overdue)
                return
            del deadlines[oldest]
            oldest.expire()


def _served_model(scope: Scope) -> tuple[str | None, int | None]:
    """The default model's name and served version, for a request no model answered."""
    repository = getattr(getattr(scope.get("app"), "state", None), "repository", None)
    registry = repository.default_or_none() if repository is not None else None
    model = registry.served() if registry is not None else None
    return (model.name, model.version) if model is not None else (None, None)
