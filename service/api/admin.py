"""Admin routes, mounted only when ADMIN_TOKEN is set: reload, rollback, labels and traffic.

``/admin/reload`` and ``/admin/rollback`` act on the default model; ``/admin/models/{name}/...``
on any. Label and traffic changes are written to the model's ``serving.json`` (atomically)
before they apply, so every replica's poll follows them; a refused change writes nothing."""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter, Depends, Request

import bundle
from service.api.endpoints import model_summary
from service.dataplane import DataPlane
from service.errors import InvalidInput, Unauthorized
from service.http import JSONBytes, check_bearer, content_kind, read_body
from service.inputs import load_json
from service.model import LoadedModel
from service.registry import Registry
from service.schemas import ErrorResponse

ADMIN_BODY_BYTES = 4096  # an admin body is a few small fields


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
        404: {"model": ErrorResponse, "description": "no such model, version or label"},
        409: {
            "model": ErrorResponse,
            "description": "the version was rejected, or nothing to roll back to",
        },
        422: {"model": ErrorResponse, "description": "the body names what is wrong"},
    },
)


def _served(registry: Registry, model: LoadedModel) -> dict[str, Any]:
    """What a reload or rollback made of the model. ``status`` is "loaded" when label stable
    decides what unversioned requests get: ``model`` answers only by its number then."""
    previous = registry.previous
    return {
        "status": "serving" if registry.served() is model else "loaded",
        "model": registry.name,
        "version": model.version,
        "runtime": model.runtime.name,
        "previous_version": previous.version if previous is not None else None,
        "labels": dict(sorted(registry.serving.labels.items())),
    }


def _registry(request: Request) -> Registry:
    """The model the path names, or the default model."""
    plane: DataPlane = request.app.state.plane
    return plane.registry(request.path_params.get("name"))


async def _document(request: Request, allowed: set[str], required: bool) -> dict[str, Any]:
    """A small JSON object body with only ``allowed`` keys ({} for an empty optional body)."""
    body = await read_body(request, ADMIN_BODY_BYTES, "the admin body limit")
    if not body.strip():
        if required:
            raise InvalidInput(f"a JSON object body is required, with {_keys(allowed)}")
        return {}
    content_kind(request, ("json",))
    document = load_json(body)
    if not isinstance(document, dict):
        raise InvalidInput(f"body must be a JSON object with {_keys(allowed)}")
    unknown = sorted(set(document) - allowed)
    if unknown:
        raise InvalidInput(f"unknown field {unknown[0][:64]!r}; the body takes {_keys(allowed)}")
    return document


def _keys(allowed: set[str]) -> str:
    return ", ".join(repr(k) for k in sorted(allowed))


def _version(document: dict[str, Any], key: str = "version", nullable: bool = False) -> int | None:
    version = document.get(key)
    if version is None and nullable:
        return None
    if type(version) is not int or version < 1:
        raise InvalidInput(f"{key} must be a positive integer" + (" or null" if nullable else ""))
    return version


def _label(request: Request) -> str:
    try:
        return bundle.check_label(request.path_params["label"])
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


@router.post("/reload", summary="Load the default model's highest valid version, or the one given")
@router.post(
    "/models/{name}/reload", summary="Load a model's highest valid version, or the one given"
)
async def reload(request: Request) -> JSONBytes:
    """Optional body ``{"version": N}``. Verifies before swapping; 409 with the reason if rejected."""
    document = await _document(request, {"version"}, required=False)
    version = _version(document) if "version" in document else None
    registry = _registry(request)
    # Loading takes seconds and waits for a poll's load in progress: never on the event loop.
    model = await anyio.to_thread.run_sync(registry.reload, version)
    return JSONBytes(_served(registry, model))


@router.post("/rollback", summary="Swap the default model back to its previous version")
@router.post("/models/{name}/rollback", summary="Swap a model back to its previous version")
async def rollback(request: Request) -> JSONBytes:
    """Serve the previously served version again (kept in memory, instant); 409 if there is
    none, or when label stable decides what unversioned requests get."""
    registry = _registry(request)
    # It takes a threading lock; a thread keeps even a brief wait off the event loop.
    model = await anyio.to_thread.run_sync(registry.rollback)
    return JSONBytes(_served(registry, model))


@router.put("/models/{name}/labels/{label}", summary="Point a label at a version")
async def set_label(request: Request) -> JSONBytes:
    """Body ``{"version": N}``: the version is verified and loaded (409 if it is rejected, 404
    if it is not on disk) before the label moves. ``stable`` takes unversioned requests;
    ``canary`` takes CANARY_PERCENT of them."""
    registry = _registry(request)
    label = _label(request)
    version = _version(await _document(request, {"version"}, required=True))
    await anyio.to_thread.run_sync(registry.set_label, label, version)
    return JSONBytes(model_summary(registry))


@router.delete("/models/{name}/labels/{label}", summary="Remove a label")
async def delete_label(request: Request) -> JSONBytes:
    """Without ``stable`` unversioned requests go to the newest version again."""
    registry = _registry(request)
    label = _label(request)
    await anyio.to_thread.run_sync(registry.delete_label, label)
    return JSONBytes(model_summary(registry))


TRAFFIC_FIELDS = {"canary_percent", "shadow_version", "shadow_percent"}


@router.put("/models/{name}/traffic", summary="Set the canary share and the shadow version")
async def set_traffic(request: Request) -> JSONBytes:
    """Body with any of ``canary_percent`` (0-100), ``shadow_version`` (N, or null for no
    shadow) and ``shadow_percent`` (0-100); fields left out keep their value."""
    registry = _registry(request)
    document = await _document(request, TRAFFIC_FIELDS, required=True)
    for key in ("canary_percent", "shadow_percent"):
        if key in document:
            value = document[key]
            if type(value) not in (int, float) or not 0 <= value <= 100:
                raise InvalidInput(f"{key} must be a number from 0 to 100")
    if "shadow_version" in document:
        _version(document, "shadow_version", nullable=True)
    await anyio.to_thread.run_sync(registry.set_traffic, document)
    return JSONBytes(model_summary(registry))
