"""How the app is put together for speed: route order, FastAPI telemetry, request ids."""

from __future__ import annotations

import re

from service import Settings, create_app
from service.observability.middleware import RequestIds

GENERATED = re.compile(r"[0-9a-f]{32}")


def test_predict_is_matched_first() -> None:
    """Routes are matched in order; FastAPI adds its documentation routes before the app's."""
    app = create_app(Settings())
    paths = [getattr(route, "path", None) for route in app.router.routes]
    assert paths[0] == "/predict"
    assert {"/openapi.json", "/docs", "/redoc"} <= set(paths)  # still served, after it


def test_fastapi_telemetry_is_off_unless_asked_for() -> None:
    off = create_app(Settings())._telemetry
    assert not (off["tracing"] or off["metrics"] or off["logs"] or off["operation_spans"])
    on = create_app(Settings(otel_telemetry=True))._telemetry
    assert on["tracing"] and on["metrics"] and on["logs"]


def test_generated_request_ids_are_unique_and_safe() -> None:
    ids = RequestIds()
    made = [ids([]) for _ in range(1000)]
    assert len(set(made)) == 1000
    assert all(GENERATED.fullmatch(i) for i in made)
    other = RequestIds()([])  # another process (worker) draws another prefix
    assert other[:16] != made[0][:16]


def test_a_valid_client_request_id_is_kept() -> None:
    ids = RequestIds()
    assert ids([(b"host", b"x"), (b"x-request-id", b"abc-1.2:3_Z")]) == "abc-1.2:3_Z"
    assert GENERATED.fullmatch(ids([(b"x-request-id", b"bad id")]))
