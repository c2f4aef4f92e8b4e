"""Helpers shared by the model repository's tests: artifacts with several models and versions,
a TestClient on them, answers' versions, serving.json snapshots and metric samples."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient

import bundle
from service.app import create_app
from service.settings import Settings
from tests.service.publishing import publish

TOKEN = "repository-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SETOSA = [5.1, 3.5, 1.4, 0.2]
VERSICOLOR = [5.9, 3.0, 4.2, 1.5]
VIRGINICA = [6.7, 3.0, 5.2, 2.3]
ROW = {"instances": [SETOSA]}
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]

Client = TestClient | httpx.Client


def publish_copies(artifacts: Path, source: Path, **models: int) -> Path:
    """``count`` copies of ``source`` published as versions 1..count of each named model."""
    for name, count in models.items():
        for _ in range(count):
            publish(artifacts / name, source)
    return artifacts


def make_client(artifacts: Path, **options: Any) -> TestClient:
    """A TestClient on ``artifacts`` (every model by default, LiteRT); enter it to start."""
    settings = Settings(artifacts_dir=artifacts, model_runtime="litert", **options)
    return TestClient(create_app(settings))


def answered(client: Client, path: str, body: Any = ROW) -> int:
    """The version that answered a /predict-style request."""
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()["version"]


def v2_body(rows: list[list[float]]) -> dict[str, Any]:
    data = [value for row in rows for value in row]
    return {
        "inputs": [{"name": "features", "shape": [len(rows), 4], "datatype": "FP32", "data": data}]
    }


def v2_answered(client: Client, path: str) -> int:
    """The version a V2 infer answer names."""
    response = client.post(path, json=v2_body([SETOSA]))
    assert response.status_code == 200, response.text
    return int(response.json()["model_version"])


def summary(client: Client, name: str) -> dict[str, Any]:
    """GET /models/{name}: the model's card (labels, traffic, loaded versions...)."""
    response = client.get(f"/models/{name}")
    assert response.status_code == 200, response.text
    return response.json()


def serving_json(artifacts: Path, name: str) -> Path:
    return artifacts / name / bundle.SERVING


def read_serving(artifacts: Path, name: str) -> dict[str, Any]:
    return json.loads(serving_json(artifacts, name).read_text())


def serving_document(
    labels: dict[str, int] | None = None,
    canary_percent: float = 0.0,
    shadow_version: int | None = None,
    shadow_percent: float = 100.0,
) -> dict[str, Any]:
    """serving.json as the admin API writes it (every field, defaults included)."""
    return {
        "labels": labels or {},
        "canary_percent": canary_percent,
        "shadow_version": shadow_version,
        "shadow_percent": shadow_percent,
    }


def snapshot(path: Path) -> tuple[bytes, int, int] | None:
    """A file's bytes, mtime and inode, or None when it does not exist."""
    try:
        stat = os.stat(path)
        return path.read_bytes(), stat.st_mtime_ns, stat.st_ino
    except FileNotFoundError:
        return None


def staging_leftovers(model_dir: Path) -> list[str]:
    return sorted(p.name for p in model_dir.iterdir() if p.name.startswith(bundle.TEMP_PREFIX))
