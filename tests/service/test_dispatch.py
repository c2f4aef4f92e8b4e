"""``POST /predict`` answered directly (service/dispatch.py) answers exactly as through FastAPI."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

from service.app import create_app
from service.dispatch import ServiceApp
from service.settings import Settings

pytestmark = pytest.mark.slow  # each test serves the real tiny Iris bundle

ROW = [5.1, 3.5, 1.4, 0.2]
JSON = {"content-type": "application/json"}
AUTH = {"authorization": "Bearer k", **JSON}
CSV_BODY = "sepal_length,sepal_width,petal_length,petal_width\n5.1,3.5,1.4,0.2\n"

# Requests of every kind the route answers: an answer, each family of refusal, CSV both ways.
REQUESTS: list[tuple[str, dict[str, Any]]] = [
    ("rows", {"json": {"instances": [ROW, ROW]}, "headers": AUTH}),
    (
        "records and top_k",
        {
            "json": {
                "instances": [
                    dict(
                        zip(
                            ["sepal_length", "sepal_width", "petal_length", "petal_width"],
                            ROW,
                            strict=True,
                        )
                    )
                ],
                "top_k": 2,
            },
            "headers": AUTH,
        },
    ),
    (
        "csv in, csv out",
        {
            "content": CSV_BODY,
            "headers": {
                "authorization": "Bearer k",
                "content-type": "text/csv",
                "accept": "text/csv",
            },
        },
    ),
    ("wrong width", {"json": {"instances": [[1.0]]}, "headers": AUTH}),
    ("malformed", {"content": b"{", "headers": AUTH}),
    (
        "media type",
        {"content": b"x", "headers": {"authorization": "Bearer k", "content-type": "text/plain"}},
    ),
    ("too large", {"content": b"[" * 5000, "headers": AUTH}),
    ("no key", {"json": {"instances": [ROW]}, "headers": JSON}),
    ("bad top_k", {"json": {"instances": [ROW], "top_k": 9}, "headers": AUTH}),
]


def serve(artifacts: Path, **overrides: Any) -> TestClient:
    settings = Settings(
        artifacts_dir=artifacts,
        model_runtime="litert",
        api_key=SecretStr("k"),
        max_body_bytes=4096,
        **overrides,
    )
    return TestClient(create_app(settings), raise_server_exceptions=False)


@pytest.fixture
def direct_and_routed(artifacts_copy: Path) -> Iterator[tuple[TestClient, TestClient]]:
    with serve(artifacts_copy) as direct, serve(artifacts_copy) as routed:
        assert isinstance(routed.app, ServiceApp) and routed.app.hot_route is not None
        routed.app.hot_route = None  # every request through FastAPI's routing
        yield direct, routed


def comparable(response: Any) -> tuple[int, bytes, dict[str, str]]:
    headers = {k: v for k, v in response.headers.items() if k != "x-request-id"}
    return response.status_code, response.content, headers


@pytest.mark.parametrize(("case", "request_args"), REQUESTS, ids=[case for case, _ in REQUESTS])
def test_direct_answers_equal_routed_answers(
    direct_and_routed: tuple[TestClient, TestClient], case: str, request_args: dict[str, Any]
) -> None:
    direct, routed = direct_and_routed
    a = direct.post("/predict", **request_args)
    b = routed.post("/predict", **request_args)
    assert comparable(a) == comparable(b)
    assert "x-request-id" in a.headers and "x-request-id" in b.headers


def test_only_post_predict_is_answered_directly(
    direct_and_routed: tuple[TestClient, TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    direct, _ = direct_and_routed
    routed_paths: list[tuple[str, str]] = []
    original = FastAPI.__call__

    async def spy(self: FastAPI, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            routed_paths.append((scope["method"], scope["path"]))
        await original(self, scope, receive, send)

    monkeypatch.setattr(FastAPI, "__call__", spy)
    assert direct.post("/predict", json={"instances": [ROW]}, headers=AUTH).status_code == 200
    assert routed_paths == []  # FastAPI's stack never saw it
    assert direct.get("/predict").status_code == 405  # other methods: FastAPI, as always
    slash = direct.post(
        "/predict/", json={"instances": [ROW]}, headers=AUTH, follow_redirects=False
    )
    assert slash.status_code == 307  # FastAPI's redirect, as before
    assert direct.get("/healthz").status_code == 200
    assert routed_paths == [("GET", "/predict"), ("POST", "/predict/"), ("GET", "/healthz")]


def test_an_unexpected_error_is_a_500_counted_in_the_metrics(
    artifacts_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serve(artifacts_copy) as client:
        assert isinstance(client.app, ServiceApp)

        async def broken(request: Any) -> Any:
            raise RuntimeError("a bug")

        monkeypatch.setattr(client.app.hot_route, "endpoint", broken)
        answer = client.post("/predict", json={"instances": [ROW]}, headers=AUTH)
        assert answer.status_code == 500
        metrics = client.get("/metrics").text
    assert 'http_requests_total{method="POST",route="/predict",status="500"} 1.0' in metrics


def test_with_opentelemetry_on_every_request_is_routed(artifacts_copy: Path) -> None:
    app = create_app(Settings(artifacts_dir=artifacts_copy, otel_telemetry=True))
    assert app.hot_route is None
    with TestClient(app) as client:
        assert client.post("/predict", json={"instances": [ROW]}).status_code == 200
