"""Liveness, readiness and the model card."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from service.http import JSONBytes
from service.schemas import ErrorResponse, HealthResponse, ReadyResponse

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthResponse, summary="Liveness: the process answers")
async def healthz() -> JSONBytes:
    return JSONBytes({"status": "ok"})


@router.get(
    "/readyz",
    response_model=ReadyResponse,
    responses={503: {"model": ErrorResponse, "description": "no verified model is loaded"}},
    summary="Readiness: a verified model is loaded",
)
async def readyz(request: Request) -> JSONBytes:
    model = request.app.state.registry.require()
    return JSONBytes(
        {
            "status": "ready",
            "model": model.name,
            "version": model.version,
            "runtime": model.runtime.name,
        }
    )


@router.get("/model", summary="The model card: metadata, test metrics, versions")
async def model_card(request: Request) -> JSONBytes:
    """Metadata, test metrics and confusion matrix of the served version, and every version found."""
    registry = request.app.state.registry
    model = registry.current
    card: dict[str, Any] = {
        "name": registry.settings.model_name,
        "ready": model is not None,
        "version": model.version if model else None,
        "runtime": model.runtime.name if model else None,
        "previous_version": registry.previous.version if registry.previous else None,
        "versions": [
            {"version": s.version, "state": s.state, "reason": s.reason}
            for s in registry.statuses()
        ],
    }
    if model is None:
        card["reason"] = registry.not_ready_reason()
    else:
        card["metadata"] = model.metadata.model_dump(mode="json")
        card["metrics"] = model.report
        card["threshold"] = model.threshold
        card["missing_values"] = registry.settings.missing_values
        card["features"] = [
            feature.model_dump(exclude_none=True, exclude={"mean", "missing"})
            for feature in model.metadata.features
        ]
    return JSONBytes(card)
