"""API_KEY: prediction routes need the bearer token; health routes stay open."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings

KEY = "s3cret-key-for-tests"
ROW = [5.1, 3.5, 1.4, 0.2]


def keyed_client(artifacts: Path) -> TestClient:
    return TestClient(create_app(Settings(artifacts_dir=artifacts, api_key=KEY)))


@pytest.fixture
def keyed(artifacts_copy: Path) -> Iterator[TestClient]:
    with keyed_client(artifacts_copy) as client:
        yield client


def predict(client: TestClient, **headers: str):
    return client.post("/predict", json={"instances": [ROW]}, headers=headers)


@pytest.mark.slow
@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Bearer wrong",
        f"Bearer {KEY}x",
        f"Bearer {KEY[:-1]}",
        f"Basic {KEY}",
        KEY,
        f"Token {KEY}",
    ],
    ids=[
        "none",
        "empty",
        "scheme-only",
        "scheme-space",
        "wrong",
        "longer",
        "shorter",
        "basic",
        "bare-key",
        "other-scheme",
    ],
)
def test_prediction_without_the_right_bearer_is_401(
    keyed: TestClient, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"authorization": authorization}
    response = predict(keyed, **headers)
    assert response.status_code == 401
    assert response.json() == {
        "error": "missing or wrong bearer token for this prediction route (API_KEY)"
    }
    assert KEY not in response.text


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_prediction_with_the_right_bearer_is_200(keyed: TestClient, scheme: str) -> None:
    response = predict(keyed, authorization=f"{scheme} {KEY}")
    assert response.status_code == 200
    assert response.json()["predictions"][0]["label"] == "setosa"


@pytest.mark.slow
def test_csv_prediction_needs_the_key_too(keyed: TestClient) -> None:
    body = "sepal_length,sepal_width,petal_length,petal_width\n5.1,3.5,1.4,0.2\n"
    headers = {"content-type": "text/csv"}
    assert keyed.post("/predict", content=body, headers=headers).status_code == 401
    headers["authorization"] = f"Bearer {KEY}"
    assert keyed.post("/predict", content=body, headers=headers).status_code == 200


@pytest.mark.slow
def test_the_key_is_checked_before_the_body(keyed: TestClient) -> None:
    """An unauthenticated caller learns nothing about the body's faults."""
    response = keyed.post("/predict", content=b"{", headers={"content-type": "text/xml"})
    assert response.status_code == 401


@pytest.mark.slow
@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/model", "/openapi.json", "/docs"])
def test_health_routes_stay_open(keyed: TestClient, path: str) -> None:
    assert keyed.get(path).status_code == 200


def test_health_routes_stay_open_when_not_ready(tmp_path: Path) -> None:
    with keyed_client(tmp_path) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 503  # not ready, but not 401
        assert predict(client).status_code == 401


@pytest.mark.slow
def test_without_api_key_no_token_is_needed(client: TestClient) -> None:
    assert predict(client).status_code == 200
    assert predict(client, authorization="Bearer anything").status_code == 200
