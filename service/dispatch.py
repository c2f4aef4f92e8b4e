"""The ASGI entry point: the request middleware outermost, inference POSTs straight to their endpoints.

A request through FastAPI crosses about a dozen layers before its endpoint runs (error and
exception middleware, the body-limit and telemetry middleware, the exit-stack middleware, the
router's matching, the route's exception wrapper), ~25 us a request here: more than the
prediction itself. The hot routes (``/predict``, V2 ``infer``, TF Serving ``:predict`` and
``:classify``) need none of them: each endpoint takes the ``Request``, reads the body under its
own limit and returns a ``Response``, and its errors are rendered by the same exception
handlers the app registers. Everything else (other routes, an app under a root path,
OpenTelemetry on) goes through FastAPI as usual, and the routes stay registered there, so the
OpenAPI document is unchanged. So does every request once an embedding application has added
middleware of its own (``app.add_middleware``): the direct path never skips it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]


class ServiceApp(FastAPI):
    """FastAPI with an outermost request layer and a direct path for the hot POST routes."""

    # Set by the factory: the layer every request goes through (metrics, logs, limits),
    # built around :meth:`dispatch`; and the routes answered directly.
    request_layer: ASGIApp | None = None
    hot_routes: tuple[Route, ...] = ()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        scope["app"] = self  # as Starlette sets it: the request layer reads the app's state
        await (self.request_layer or self.dispatch)(scope, receive, send)

    async def dispatch(self, scope: Scope, receive: Any, send: Any) -> None:
        """The hot routes' requests to their endpoints, everything else to FastAPI."""
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and not scope.get("root_path")
            and not self.user_middleware  # an embedding app's middleware must see every request
        ):
            path = scope["path"]
            for route in self.hot_routes:
                match = route.path_regex.match(path)
                if match is not None:
                    # As the router sets them (every hot path parameter is a plain string).
                    scope["route"] = route  # metrics label requests by template
                    scope["path_params"] = match.groupdict()
                    await self._answer_directly(route, scope, receive, send)
                    return
        await super().__call__(scope, receive, send)

    async def _answer_directly(self, route: Route, scope: Scope, receive: Any, send: Any) -> None:
        request = Request(scope, receive, send)
        try:
            response: Response = await route.endpoint(request)
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
