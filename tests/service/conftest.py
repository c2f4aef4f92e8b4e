"""Fixture chain for the service: tiny real bundle -> settings -> app -> client."""

from __future__ import annotations

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


# Local CloudEvents sinks (a recording HTTP server, and one that never answers), for the
# CloudEvents and monitoring tests.
from tests.service.sinks import serve as serve_sink  # noqa: E402, F401
from tests.service.sinks import stalled  # noqa: E402, F401
