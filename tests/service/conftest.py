"""Fixture chain for the service: tiny real bundle -> settings -> app -> client."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings


@pytest.fixture(params=["litert", "keras"])
def runtime(request: pytest.FixtureRequest) -> str:
    """Both runtimes; tests that take this fixture run once per runtime."""
    return request.param


@pytest.fixture
def settings(artifacts_copy: Path, runtime: str) -> Settings:
    return Settings(artifacts_dir=artifacts_copy, model_name="iris", model_runtime=runtime)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def module_artifacts(tmp_path_factory: pytest.TempPathFactory, iris_bundle: Path) -> Path:
    """A private artifacts directory holding a copy of ``iris_bundle`` as version 1, for the apps
    a module shares among tests that only send them requests (an app per test costs ~50 ms on
    LiteRT, ~200 ms on Keras: its routes, its model loaded and checked)."""
    root = tmp_path_factory.mktemp("module-artifacts") / "artifacts"
    shutil.copytree(iris_bundle, root / "iris" / "1")
    return root


# Local CloudEvents sinks (a recording HTTP server, and one that never answers), for the
# CloudEvents and monitoring tests.
from tests.service.sinks import serve as serve_sink  # noqa: E402, F401
from tests.service.sinks import stalled  # noqa: E402, F401


@pytest.fixture(scope="module", params=["litert", "keras"])
def module_client(request: pytest.FixtureRequest, module_artifacts: Path) -> Iterator[TestClient]:
    """``client``, but one app per runtime for a whole module: for modules whose tests only send
    requests (and read /metrics as differences)."""
    settings = Settings(
        artifacts_dir=module_artifacts, model_name="iris", model_runtime=request.param
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client
