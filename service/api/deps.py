"""What routes take from the app: the registry and the settings, set by the lifespan."""

from __future__ import annotations

from fastapi import Request

from service.http import check_bearer
from service.registry import Registry
from service.settings import Settings


def registry(request: Request) -> Registry:
    return request.app.state.registry


def settings(request: Request) -> Settings:
    return request.app.state.settings


def check_api_key(request: Request) -> None:
    """Prediction routes need ``Authorization: Bearer $API_KEY`` when API_KEY is set."""
    check_bearer(request, request.app.state.settings.api_key, "this prediction route (API_KEY)")


async def require_api_key(request: Request) -> None:
    """:func:`check_api_key` as a dependency.

    ``async`` on purpose: FastAPI runs a plain ``def`` dependency on its thread pool, a thread
    hop that cost more than the rest of a single-row prediction.
    """
    check_api_key(request)
