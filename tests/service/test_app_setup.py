"""How the app is put together: route order, FastAPI telemetry, request ids."""

from __future__ import annotations

import logging
import re

import pytest

from service.app import create_app, opentelemetry_variable
from service.observability.middleware import request_id
from service.settings import Settings

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


def test_a_warning_when_opentelemetry_is_configured_but_off(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    assert opentelemetry_variable({"OTEL_TELEMETRY": "false", "PATH": "/bin"}) is None
    assert opentelemetry_variable({"FASTAPI_OTEL_AUTO_CONFIGURE": "false"}) is None
    assert (
        opentelemetry_variable({"FASTAPI_OTEL_AUTO_CONFIGURE": "True"})
        == "FASTAPI_OTEL_AUTO_CONFIGURE"
    )
    monkeypatch.setenv("OTEL_SERVICE_NAME", "iris")
    with caplog.at_level(logging.WARNING, logger="service"):
        create_app(Settings())
    assert "OTEL_SERVICE_NAME is set but OTEL_TELEMETRY is off" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="service"):
        create_app(Settings(otel_telemetry=True))
    assert "OTEL_TELEMETRY" not in caplog.text


def test_generated_request_ids_are_unique_and_safe() -> None:
    made = [request_id([]) for _ in range(1000)]
    assert len(set(made)) == 1000
    assert all(GENERATED.fullmatch(i) for i in made)


def test_a_valid_client_request_id_is_kept() -> None:
    assert request_id([(b"host", b"x"), (b"x-request-id", b"abc-1.2:3_Z")]) == "abc-1.2:3_Z"
    assert GENERATED.fullmatch(request_id([(b"x-request-id", b"bad id")]))
