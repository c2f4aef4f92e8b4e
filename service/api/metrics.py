"""``GET /metrics``: Prometheus exposition of the service's metrics (every worker's)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from service.observability.metrics import get_metrics

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
    summary="Prometheus metrics: requests, latency, predictions, batches, model version",
)
async def metrics(request: Request) -> Response:
    exporter = getattr(request.app.state, "registry_metrics", None)
    if exporter is not None:
        exporter.sync()  # the served version and reload counts, as of now
    body, content_type = get_metrics().render(request.headers.get("accept"))
    return Response(body, media_type=content_type)
