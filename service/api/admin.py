"""Admin routes, mounted only when ADMIN_TOKEN is set: reload and rollback."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Depends, Request

from service.errors import InvalidInput
from service.http import JSONBytes, check_bearer, content_kind, read_body
from service.inputs import load_json
from service.schemas import ErrorResponse


def require_admin(request: Request) -> None:
    check_bearer(request, request.app.state.settings.admin_token, "admin routes (ADMIN_TOKEN)")


router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    dependencies=[Depends(require_admin)],
    responses={
        401: {"model": ErrorResponse, "description": "missing or wrong ADMIN_TOKEN"},
        409: {
            "model": ErrorResponse,
            "description": "the version was rejected, or nothing to roll back to",
        },
    },
)


def _served(model: object) -> dict:
    return {"status": "serving", "version": model.version, "runtime": model.runtime.name}  # type: ignore[attr-defined]


@router.post("/reload", summary="Load the highest valid version, or the one given")
async def reload(request: Request) -> JSONBytes:
    """Optional body ``{"version": N}``. Verifies before swapping; 409 with the reason if rejected."""
    body = await read_body(request, 4096)
    version = None
    if body.strip():
        content_kind(request, ("json",))
        document = load_json(body)
        if not isinstance(document, dict) or set(document) - {"version"}:
            raise InvalidInput('body must be {"version": N} or empty')
        version = document.get("version")
        if version is not None and (type(version) is not int or version < 1):
            raise InvalidInput("version must be a positive integer")
    registry = request.app.state.registry
    model = await anyio.to_thread.run_sync(registry.reload, version)
    return JSONBytes(_served(model))


@router.post("/rollback", summary="Swap back to the previously served version (instant)")
async def rollback(request: Request) -> JSONBytes:
    model = request.app.state.registry.rollback()
    return JSONBytes(_served(model))
