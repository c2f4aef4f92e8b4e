"""Admin reload and rollback over HTTP: bearer token, status codes, and what /model shows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr, ValidationError

from service.app import create_app
from service.registry import UNVERIFIED_REASON
from service.settings import Settings
from tests.service import publishing
from tests.service.publishing import publish

TOKEN = "s3cret-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ROW = {"instances": [[5.1, 3.5, 1.4, 0.2]]}


@pytest.fixture
def artifacts(tmp_path: Path, iris_bundle: Path) -> Path:
    """Versions 1 and 2 good, 3 with an encoder of other classes."""
    model_dir = tmp_path / "artifacts" / "iris"
    publish(model_dir, iris_bundle)
    publish(model_dir, iris_bundle)
    publish(model_dir, iris_bundle, publishing.other_classes)
    return tmp_path / "artifacts"


def make_client(artifacts: Path, **options: object) -> TestClient:
    settings = Settings(
        artifacts_dir=artifacts, model_name="iris", model_runtime="litert", **options
    )
    return TestClient(create_app(settings))


@pytest.fixture
def client(artifacts: Path) -> Iterator[TestClient]:
    with make_client(artifacts, admin_token=TOKEN) as test_client:
        yield test_client


def versions(client: TestClient) -> dict[int, tuple[str, str | None]]:
    card = client.get("/model").json()
    return {v["version"]: (v["state"], v["reason"]) for v in card["versions"]}


def served(client: TestClient) -> int:
    response = client.post("/predict", json=ROW)
    assert response.status_code == 200
    return response.json()["version"]


def test_admin_routes_are_absent_without_a_token(artifacts: Path) -> None:
    with make_client(artifacts) as client:
        for path in ("/admin/reload", "/admin/rollback"):
            response = client.post(path, headers=AUTH)
            assert response.status_code == 404
            assert "error" in response.json()


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ],
    ids=["missing", "wrong", "longer", "other-scheme", "no-scheme"],
)
@pytest.mark.parametrize("path", ["/admin/reload", "/admin/rollback"])
def test_a_missing_or_wrong_token_is_401(
    client: TestClient, headers: dict[str, str], path: str
) -> None:
    response = client.post(path, headers=headers)
    assert response.status_code == 401
    assert "ADMIN_TOKEN" in response.json()["error"]
    assert served(client) == 2  # nothing changed


def test_an_empty_admin_token_opens_nothing(artifacts: Path) -> None:
    with pytest.raises(ValidationError, match="ADMIN_TOKEN"):  # refused at start
        make_client(artifacts, admin_token="")
    settings = Settings(artifacts_dir=artifacts, model_name="iris", model_runtime="litert")
    empty = settings.model_copy(update={"admin_token": SecretStr("")})  # past the validation
    with TestClient(create_app(empty)) as client:
        for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer"}):
            assert client.post("/admin/reload", headers=headers).status_code == 401


def test_model_lists_every_version_with_its_state(client: TestClient) -> None:
    card = client.get("/model").json()
    assert card["version"] == 2
    assert versions(client) == {
        3: ("rejected", "label_encoder.joblib classes differ from metadata.json classes"),
        2: ("serving", None),
        1: ("available", UNVERIFIED_REASON),  # no polling: nothing verifies it
    }


def test_reload_a_version_then_roll_back(client: TestClient) -> None:
    response = client.post("/admin/reload", json={"version": 1}, headers=AUTH)
    assert response.status_code == 200
    assert response.json() == {
        "status": "serving",
        "model": "iris",
        "version": 1,
        "runtime": "litert",
        "previous_version": 2,
        "labels": {},
    }
    assert served(client) == 1
    assert versions(client)[2][0] == "available"
    response = client.post("/admin/rollback", headers=AUTH)
    assert response.status_code == 200
    assert response.json()["version"] == 2 and response.json()["previous_version"] == 1
    assert served(client) == 2
    card = client.get("/model").json()
    assert card["version"] == 2 and card["previous_version"] == 1


def test_reload_without_a_body_loads_the_highest_valid_version(
    client: TestClient, artifacts: Path, iris_bundle: Path
) -> None:
    publish(artifacts / "iris", iris_bundle)
    response = client.post("/admin/reload", headers=AUTH)
    assert response.status_code == 200
    assert response.json()["version"] == 4
    assert served(client) == 4
    assert client.post("/admin/reload", headers=AUTH).json()["version"] == 4  # nothing newer


def test_reload_of_a_broken_version_is_409_and_the_old_one_keeps_serving(
    client: TestClient,
) -> None:
    response = client.post("/admin/reload", json={"version": 3}, headers=AUTH)
    assert response.status_code == 409
    error = response.json()["error"]
    assert "version 3 was rejected" in error and "classes differ" in error
    assert "still serving version 2" in error
    # Without a version, the newest one is the target: its rejection is the answer.
    response = client.post("/admin/reload", headers=AUTH)
    assert response.status_code == 409
    assert "newer versions were rejected: version 3" in response.json()["error"]
    assert client.get("/readyz").status_code == 200
    assert served(client) == 2
    assert versions(client)[3][0] == "rejected"


def test_reload_of_an_unknown_version_is_404(client: TestClient) -> None:
    response = client.post("/admin/reload", json={"version": 42}, headers=AUTH)
    assert response.status_code == 404
    assert "version 42 of model 'iris' not found" in response.json()["error"]


@pytest.mark.parametrize(
    "body",
    [
        '{"version": "2"}',
        '{"version": 0}',
        '{"version": 1.5}',
        '{"ver": 2}',
        "[2]",
        '{"version": true}',
    ],
)
def test_reload_refuses_a_malformed_body(client: TestClient, body: str) -> None:
    response = client.post(
        "/admin/reload",
        content=body,
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert "version" in response.json()["error"]


def test_reload_needs_a_json_body(client: TestClient) -> None:
    response = client.post(
        "/admin/reload", content="version=2", headers={**AUTH, "Content-Type": "text/plain"}
    )
    assert response.status_code == 415


def test_rollback_with_nothing_to_roll_back_to_is_409(client: TestClient) -> None:
    response = client.post("/admin/rollback", headers=AUTH)
    assert response.status_code == 409
    assert response.json() == {"error": "model 'iris' has no previous version to roll back to"}
    assert served(client) == 2


def test_an_oversized_admin_body_names_the_admin_limit(client: TestClient) -> None:
    """An admin body has its own 4 KiB limit, not MAX_BODY_BYTES: the 413 says which."""
    body = b'{"version": 1, "pad": "' + b"x" * 5000 + b'"}'
    response = client.post(
        "/admin/reload", content=body, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json() == {
        "error": f"body of {len(body)} bytes exceeds the admin body limit=4096"
    }
