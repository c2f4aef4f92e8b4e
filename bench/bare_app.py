"""The service without its observability layer, to show what that layer costs per request.

Same app, data plane and runtime, built with ``create_app(observed=False)``: no request
middleware (request ids, Prometheus HTTP metrics, the access log, the concurrency limit and
timeout) and no metrics from the data plane or the registry. Diagnostic only: the service is
never run like this.
"""

from __future__ import annotations

from service.app import create_app as create_service_app
from service.dispatch import ServiceApp


def create_app() -> ServiceApp:
    """The service as :func:`service.app.create_app` builds it, minus the observability layer."""
    return create_service_app(observed=False)
