"""The pages for people: the model page (``GET /``) and the API docs (``/docs``, ``/redoc``),
which load Swagger UI and ReDoc from the service itself (the ``fastapi-offline`` package's copy
of their files), never from a CDN: they work on a network with no way out."""

from __future__ import annotations

import asyncio
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

from service.api.endpoints import model_card_of
from service.errors import ServiceError
from service.page import render_missing, render_page, security_headers

DOCS_ASSETS = "/docs/assets"
REDOC_JS = "/docs/redoc.standalone.js"
_OAUTH2_REDIRECT = "/docs/oauth2-redirect"
# ReDoc's sidebar shows Redocly's logo from their CDN, which a network with no way out refuses
# (a failed request and a console error): an empty picture instead.
_REDOC_LOGO = b'"https://cdn.redoc.ly/redoc/logo-mini.svg"'
_NO_LOGO = b'"data:image/svg+xml,%3Csvg xmlns=%27http://www.w3.org/2000/svg%27/%3E"'


def _static() -> Traversable:
    return resources.files("fastapi_offline").joinpath("static")


@cache
def _redoc_script() -> bytes:
    return _static().joinpath("redoc.standalone.js").read_bytes().replace(_REDOC_LOGO, _NO_LOGO)


def mount_assets(app: FastAPI) -> None:
    """Serve the Swagger UI and ReDoc files under ``/docs/assets``."""
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(_static())), name="docs-assets")


async def model_page(request: Request) -> Response:
    """The model page: the card of the model ``?model=`` names (default: the default model, or
    the first served), its metrics, confusion matrix, features, versions, live counts and a
    form to try it. 404 naming the models for a model not served."""
    repository = request.app.state.plane.repository
    names = repository.names()
    asked = request.query_params.get("model")
    root = request.scope.get("root_path", "")
    try:
        if asked is not None:
            registry = repository.get(asked)
        else:
            registry = repository.default_or_none() or (
                repository.get(names[0]) if names else repository.default()
            )
    except ServiceError as error:  # 404: not served; 503: no model ready at all
        html = render_missing(error.message, names, root, ready=error.status_code == 404)
        return HTMLResponse(html, error.status_code, headers=security_headers())
    card = model_card_of(registry)
    api_key = request.app.state.settings.api_key is not None
    # A model with many classes or categories makes a big page: rendered off the event loop.
    html = await asyncio.to_thread(render_page, card, names, api_key, root)
    return HTMLResponse(html, 200 if card["ready"] else 503, headers=security_headers())


async def swagger_ui(request: Request) -> Response:
    root = request.scope.get("root_path", "")
    return get_swagger_ui_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} - Swagger UI",
        oauth2_redirect_url=f"{root}{_OAUTH2_REDIRECT}",
        swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
        swagger_ui_parameters=request.app.swagger_ui_parameters,
    )


async def swagger_ui_redirect(request: Request) -> Response:
    return get_swagger_ui_oauth2_redirect_html()


async def redoc(request: Request) -> Response:
    root = request.scope.get("root_path", "")
    return get_redoc_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=f"{root}{REDOC_JS}",
        redoc_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
        with_google_fonts=False,
    )


async def redoc_script(request: Request) -> Response:
    """ReDoc's script, its one outside address (a logo) replaced."""
    return Response(
        _redoc_script(),
        media_type="text/javascript",
        headers={"Cache-Control": "public, max-age=86400"},
    )
