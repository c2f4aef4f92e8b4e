"""The ASGI entry point: the request middleware outermost, ``POST /predict`` straight to its endpoint.

A request through FastAPI crosses about a dozen layers before its endpoint runs (error and
exception middleware, the body-limit and telemetry middleware, the exit-stack middleware, the
router's matching, the route's exception wrapper), ~25 us a request here: more than the
prediction itself. The hot route needs none of them: its endpoint takes the ``Request``, reads
the body under its own limit and returns a ``Response``, and its errors are rendered by the
same exception handlers the app registers. Everything else (other routes, ``HEAD /predict``,
an app under a root path, OpenTelemetry on) goes through FastAPI as usual, and the route stays
registered there, so the OpenAPI document is unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]


class ServiceApp(FastAPI):
    """FastAPI with an outermost request layer and a direct path for one hot POST route."""

    # Set by the factory: the layer every request goes through (metrics, logs, limits),
    # built around :meth:`dispatch`; and the route answered directly, if any.
    request_layer: ASGIApp | None = None
    hot_route: BaseRoute | None = None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        layer = self.request_layer
        if layer is None:
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self  # as Starlette sets it: the request layer reads the app's state
        await layer(scope, receive, send)

    async def dispatch(self, scope: Scope, receive: Any, send: Any) -> None:
        """The hot route's requests to its endpoint, everything else to FastAPI."""
        route = self.hot_route
        if (
            route is not None
            and scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] == route.path  # type: ignore[attr-defined]
        ):
            await self._answer_directly(route, scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    async def _answer_directly(
        self, route: BaseRoute, scope: Scope, receive: Any, send: Any
    ) -> None:
        scope["route"] = route  # as the router sets it: metrics label requests by template
        request = Request(scope, receive, send)
        try:
            response: Response = await route.endpoint(request)  # type: ignore[attr-defined]
        except Exception as exc:
            handler = self._handler_for(exc)
            if handler is None:  # uvicorn logs it and answers 500, as behind FastAPI
                raise
            response = await handler(request, exc)
        await response(scope, receive, send)

    def _handler_for(self, exc: Exception) -> Callable[..., Awaitable[Response]] | None:
        """The exception handler the app registered for ``exc``'s class or nearest base."""
        for cls in type(exc).__mro__:
            handler = self.exception_handlers.get(cls)
            if handler is not None:
                return handler  # type: ignore[return-value]
        return None
