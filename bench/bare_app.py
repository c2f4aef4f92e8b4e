"""The service without its observability layer, to show what that layer costs per request.

Same app and runtime; no middleware (request ids, Prometheus HTTP metrics, the access log, the
concurrency limit and timeout) and no per-prediction metrics. Diagnostic only: the service is
never run like this.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

import service.model
from service.app import create_app as create_service_app


def _skip(*args: Any) -> None:
    return None


def create_app() -> FastAPI:
    """The service as :func:`service.app.create_app` builds it, minus the observability layer."""
    for name in ("observe_prediction", "observe_batch"):
        if not hasattr(service.model, name):
            raise RuntimeError(f"service.model.{name} is gone: update bench/bare_app.py")
        setattr(service.model, name, _skip)
    app = create_service_app()
    if app.request_layer is None:
        raise RuntimeError("the service has no request layer: update bench/bare_app.py")
    app.request_layer = app.dispatch  # the request layer gone; /predict still answered directly
    return app
