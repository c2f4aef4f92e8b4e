"""HTTP helpers shared by the routes: body limits, content types, bearer tokens, JSON answers."""

from __future__ import annotations

import hmac
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response
from pydantic import SecretStr

from service.errors import MalformedBody, PayloadTooLarge, Unauthorized, UnsupportedMediaType


class JSONBytes(Response):
    """A JSON answer serialized with orjson (several times faster than json.dumps)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes (chunked too)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise MalformedBody("Content-Length is not a number")
        if int(declared) > limit:
            raise PayloadTooLarge(f"body of {declared} bytes exceeds MAX_BODY_BYTES={limit}")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body exceeds MAX_BODY_BYTES={limit}")
        chunks.append(chunk)
    return b"".join(chunks)


def content_kind(request: Request, allowed: tuple[str, ...] = ("json", "csv")) -> str:
    """``json`` or ``csv`` from the Content-Type header; 415 for anything else."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if "json" in allowed and (media == "application/json" or media.endswith("+json")):
        return "json"
    if "csv" in allowed and media in ("text/csv", "application/csv"):
        return "csv"
    wanted = " or ".join({"json": "application/json", "csv": "text/csv"}[k] for k in allowed)
    shown = media[:64] if media else "missing"
    raise UnsupportedMediaType(f"Content-Type must be {wanted}, got {shown}")


def wants_csv(request: Request) -> bool:
    """True when the client asks for a CSV answer."""
    accept = request.headers.get("accept", "")
    return "text/csv" in accept and "application/json" not in accept


def check_bearer(request: Request, secret: SecretStr | None, what: str) -> None:
    """Require ``Authorization: Bearer <secret>`` when a secret is set (constant-time compare)."""
    if secret is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    expected = secret.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
        raise Unauthorized(f"missing or wrong bearer token for {what}")
