"""Admin routes, mounted only when ADMIN_TOKEN is set: reload and rollback."""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter, Depends, Request

from service.errors import InvalidInput, Unauthorized
from service.http import JSONBytes, check_bearer, content_kind, read_body
from service.inputs import load_json
from service.model import LoadedModel
from service.registry import Registry
from service.schemas import ErrorResponse


def require_admin(request: Request) -> None:
    token = request.app.state.settings.admin_token
    if token is None or not token.get_secret_value():  # an empty token must not open the door
        raise Unauthorized("admin routes are disabled: ADMIN_TOKEN is empty")
    check_bearer(request, token, "admin routes (ADMIN_TOKEN)")


router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    dependencies=[Depends(require_admin)],
    responses={
        401: {"model": ErrorResponse, "description": "missing or wrong ADMIN_TOKEN"},
        404: {"model": ErrorResponse, "description": "no such version on disk"},
        409: {
            "model": ErrorResponse,
            "description": "the version was rejected, or nothing to roll back to",
        },
    },
)


def _served(registry: Registry, model: LoadedModel) -> dict[str, Any]:
    previous = registry.previous
    return {
        "status": "serving",
        "model": registry.settings.model_name,
        "version": model.version,
        "runtime": model.runtime.name,
        "previous_version": previous.version if previous is not None else None,
    }


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
    registry: Registry = request.app.state.registry
    # Loading takes seconds and waits for a poll's load in progress: never on the event loop.
    model = await anyio.to_thread.run_sync(registry.reload, version)
    return JSONBytes(_served(registry, model))


@router.post("/rollback", summary="Swap back to the previously served version (instant)")
async def rollback(request: Request) -> JSONBytes:
    """Serve the previously served version again (kept in memory); 409 if there is none."""
    registry: Registry = request.app.state.registry
    # It takes a threading lock; a thread keeps even a brief wait off the event loop.
    model = await anyio.to_thread.run_sync(registry.rollback)
    return JSONBytes(_served(registry, model))
