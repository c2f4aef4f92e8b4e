"""What the standard-protocol routes (V2, TF Serving) share: model lookup, media types, 400s."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from fastapi import Request

from service.errors import InvalidInput, NotFound, UnsupportedMediaType
from service.model import LoadedModel
from service.schemas import ErrorResponse

# The single input tensor both protocols declare: the Keras model's input layer name.
INPUT_NAME = "features"
OUTPUT_NAMES = ("probabilities", "label")

# Bodies above this are parsed and rendered on a worker thread (as /predict does).
OFFLOAD_BYTES = 64 * 1024

# Clients written for these protocols rarely say "application/json": tritonclient sends no
# Content-Type, its binary extension sends octet-stream, and `curl -d` sends form-urlencoded.
# The reference servers read the body as JSON whatever the header; so do we, CSV excepted.
_ACCEPTED_MEDIA = frozenset(
    {
        "",
        "application/json",
        "application/octet-stream",
        "application/x-www-form-urlencoded",
        "text/plain",
    }
)

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in {
        400: "malformed JSON, or a request that does not fit the model's signature",
        401: "missing or wrong bearer token (when API_KEY is set)",
        404: "unknown model name, or a version that is not loaded",
        413: "body larger than MAX_BODY_BYTES or more rows than MAX_BATCH_ROWS",
        415: "a Content-Type that is not JSON",
        503: "no verified model is loaded, or the service is overloaded",
    }.items()
}

LOOKUP_RESPONSES = {k: ERROR_RESPONSES[k] for k in (404, 503)}


def check_media(request: Request) -> None:
    """Read the body as JSON unless the client declared another format (415)."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media in _ACCEPTED_MEDIA or media.endswith("+json"):
        return
    raise UnsupportedMediaType(f"Content-Type must be application/json, got {media[:64]}")


def check_name(request: Request, name: str) -> str:
    """The served model's name, or 404 when the path names another model."""
    served: str = request.app.state.settings.model_name
    if name != served:
        raise NotFound(f"model {name[:64]!r} not found; this server serves {served!r}")
    return served


def lookup(request: Request, name: str, version: str | None) -> LoadedModel:
    """The loaded model the path asks for: the served one, or a loaded ``version`` (else 404)."""
    served = check_name(request, name)
    number = None
    if version is not None:
        if not (version.isascii() and version.isdigit()) or len(version) > 18:
            raise NotFound(f"version {version[:32]!r} of model {served!r} not found")
        number = int(version)
    return request.app.state.registry.get(number)


@contextlib.contextmanager
def bad_request() -> Iterator[None]:
    """Both protocols answer a request that does not fit the model with 400, not 422."""
    try:
        yield
    except InvalidInput as exc:
        if exc.status_code == 422:
            raise InvalidInput(exc.message, 400) from None
        raise


def unwrap_singletons(values: list[Any]) -> list[Any]:
    """``[5.1]`` (a one-value feature list, as tf.Example features are) to ``5.1``."""
    return [v[0] if type(v) is list and len(v) == 1 else v for v in values]
