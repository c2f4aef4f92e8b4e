"""The hot POST routes answered directly (service/dispatch.py) answer exactly as through FastAPI:
``/predict``, V2 ``infer`` and TF Serving ``:predict`` / ``:classify``, versioned or not."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

from service.app import create_app
from service.dispatch import ServiceApp
from service.settings import Settings

ROW = [5.1, 3.5, 1.4, 0.2]
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
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
                "instances": [dict(zip(FEATURES, ROW, strict=True))],
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
V2_INFER = {
    "id": "42",
    "inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": ROW}],
}
# The standard protocols' routes: (path, request), answers and refusals.
STANDARD: list[tuple[str, dict[str, Any]]] = [
    ("/v2/models/iris/infer", {"json": V2_INFER, "headers": AUTH}),
    ("/v2/models/iris/versions/1/infer", {"json": V2_INFER, "headers": AUTH}),
    ("/v2/models/iris/versions/7/infer", {"json": V2_INFER, "headers": AUTH}),
    ("/v2/models/other/infer", {"json": V2_INFER, "headers": AUTH}),
    (
        "/v2/models/iris/infer",
        {
            "json": {
                **V2_INFER,
                "outputs": [{"name": "label", "parameters": {"binary_data": True}}],
            },
            "headers": AUTH,
        },
    ),
    ("/v2/models/iris/infer", {"json": {"inputs": []}, "headers": AUTH}),
    (
        "/v2/models/iris/infer",
        {"content": b"x", "headers": {"authorization": "Bearer k", "content-type": "text/csv"}},
    ),
    ("/v1/models/iris:predict", {"json": {"instances": [ROW]}, "headers": AUTH}),
    (
        "/v1/models/iris/versions/1:predict",
        {"json": {"inputs": {"features": [ROW]}}, "headers": AUTH},
    ),
    ("/v1/models/iris:predict", {"json": {"instances": [[1.0]]}, "headers": AUTH}),
    (
        "/v1/models/iris:classify",
        {"json": {"examples": [dict(zip(FEATURES, ROW, strict=True))]}, "headers": AUTH},
    ),
    ("/v1/models/iris/versions/1:classify", {"json": {"examples": []}, "headers": AUTH}),
    ("/v1/models/iris:regress", {"json": {}, "headers": AUTH}),
    ("/v1/models/iris:predict", {"json": {"instances": [ROW]}, "headers": JSON}),
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


@contextmanager
def both_ways(artifacts: Path) -> Iterator[tuple[TestClient, TestClient]]:
    """Two apps on ``artifacts``: one answering the hot routes directly, one routing every
    request through FastAPI."""
    with serve(artifacts) as direct, serve(artifacts) as routed:
        assert isinstance(routed.app, ServiceApp) and len(routed.app.hot_routes) == 12
        routed.app.hot_routes = ()  # every request through FastAPI's routing
        yield direct, routed


@pytest.fixture
def direct_and_routed(artifacts_copy: Path) -> Iterator[tuple[TestClient, TestClient]]:
    with both_ways(artifacts_copy) as apps:
        yield apps


@pytest.fixture(scope="module")
def shared_direct_and_routed(module_artifacts: Path) -> Iterator[tuple[TestClient, TestClient]]:
    """The same pair for the comparisons below, which only send requests and compare answers."""
    with both_ways(module_artifacts) as apps:
        yield apps


def comparable(response: Any) -> tuple[int, bytes, dict[str, str]]:
    headers = {k: v for k, v in response.headers.items() if k != "x-request-id"}
    return response.status_code, response.content, headers


@pytest.mark.parametrize(("case", "request_args"), REQUESTS, ids=[case for case, _ in REQUESTS])
def test_direct_answers_equal_routed_answers(
    shared_direct_and_routed: tuple[TestClient, TestClient], case: str, request_args: dict[str, Any]
) -> None:
    direct, routed = shared_direct_and_routed
    a = direct.post("/predict", **request_args)
    b = routed.post("/predict", **request_args)
    assert comparable(a) == comparable(b)
    assert "x-request-id" in a.headers and "x-request-id" in b.headers


@pytest.mark.parametrize(
    ("path", "request_args"), STANDARD, ids=[f"{p} {i}" for i, (p, _) in enumerate(STANDARD)]
)
def test_standard_protocols_answer_alike_both_ways(
    shared_direct_and_routed: tuple[TestClient, TestClient], path: str, request_args: dict[str, Any]
) -> None:
    direct, routed = shared_direct_and_routed
    a = direct.post(path, **request_args)
    b = routed.post(path, **request_args)
    assert comparable(a) == comparable(b)


def test_the_hot_routes_skip_fastapi(
    direct_and_routed: tuple[TestClient, TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    direct, _ = direct_and_routed
    seen: list[str] = []
    original = FastAPI.__call__

    async def spy(self: FastAPI, scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["path"])
        await original(self, scope, receive, send)

    before = inference_counts(direct)
    monkeypatch.setattr(FastAPI, "__call__", spy)
    for path, request_args in STANDARD[:2] + STANDARD[7:9] + STANDARD[10:11]:
        assert direct.post(path, **request_args).status_code == 200
    assert seen == []
    monkeypatch.undo()
    after = inference_counts(direct)
    assert after[("v2", "200")] - before.get(("v2", "200"), 0) == 2
    assert after[("tfserving", "200")] - before.get(("tfserving", "200"), 0) == 3
    assert 'route="/v2/models/{name}/versions/{version}/infer"' in direct.get("/metrics").text


def inference_counts(client: TestClient) -> dict[tuple[str, str], float]:
    """``inference_requests_total`` by (protocol, status), as /metrics reports it now."""
    counts = {}
    for line in client.get("/metrics").text.splitlines():
        match = re.fullmatch(
            r'inference_requests_total\{model="\w*",protocol="(\w+)",status="(\d+)",'
            r'version="\d*"\} (\S+)',
            line,
        )
        if match:  # summed over models and versions
            key = (match[1], match[2])
            counts[key] = counts.get(key, 0.0) + float(match[3])
    return counts


def test_an_embedding_apps_middleware_sees_every_request(artifacts_copy: Path) -> None:
    """Middleware added with app.add_middleware is never skipped: every request is routed."""
    app = create_app(Settings(artifacts_dir=artifacts_copy, model_runtime="litert"))
    seen: list[tuple[str, str]] = []

    class Recorder:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                seen.append((scope["method"], scope["path"]))
            await self.inner(scope, receive, send)

    app.add_middleware(Recorder)
    with TestClient(app) as client:
        assert client.post("/predict", json={"instances": [ROW]}).status_code == 200
        assert client.post("/v2/models/iris/infer", json=V2_INFER).status_code == 200
        assert client.post("/v1/models/iris:predict", json={"instances": [ROW]}).status_code == 200
    assert seen == [
        ("POST", "/predict"),
        ("POST", "/v2/models/iris/infer"),
        ("POST", "/v1/models/iris:predict"),
    ]


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

        monkeypatch.setattr(client.app.hot_routes[0], "endpoint", broken)
        answer = client.post("/predict", json={"instances": [ROW]}, headers=AUTH)
        assert answer.status_code == 500
        metrics = client.get("/metrics").text
    assert 'http_requests_total{method="POST",route="/predict",status="500"} 1.0' in metrics


def test_with_opentelemetry_on_every_request_is_routed(artifacts_copy: Path) -> None:
    app = create_app(Settings(artifacts_dir=artifacts_copy, otel_telemetry=True))
    assert app.hot_routes == ()
    with TestClient(app) as client:
        assert client.post("/predict", json={"instances": [ROW]}).status_code == 200
