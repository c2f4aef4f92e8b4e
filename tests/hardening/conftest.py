"""Real service processes for the hostile-input and schemathesis tests: one serving the Iris
bundle, one serving the typed (mixed table) bundle."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ServerProcess

TOKEN = "hardening-token"  # both API_KEY and ADMIN_TOKEN: every route needs it
# Explanations as cheap as they go (a few coalitions' rows each): the fuzzers send hundreds, and
# their cost is the explainer's, not the input handling the hardening tests are about.
EXPLAIN_EVALUATIONS = 64
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="session")
def hardening_artifacts(tmp_path_factory: pytest.TempPathFactory, iris_bundle: Path) -> Path:
    """A private artifacts directory holding a copy of the Iris bundle as version 1."""
    root = tmp_path_factory.mktemp("hardening") / "artifacts"
    shutil.copytree(iris_bundle, root / "iris" / "1")
    return root


@pytest.fixture(scope="session")
def server(hardening_artifacts: Path) -> Iterator[ServerProcess]:
    """``python -m service`` on the Iris bundle, with API_KEY and ADMIN_TOKEN set."""
    log = hardening_artifacts.parent / "server.log"
    process = ServerProcess(
        hardening_artifacts,
        log_path=log,
        api_key=TOKEN,
        admin_token=TOKEN,
        explain_evaluations=EXPLAIN_EVALUATIONS,
    )
    process.start(wait="/readyz")
    yield process
    process.stop()


@pytest.fixture(scope="session")
def typed_artifacts(tmp_path_factory: pytest.TempPathFactory, typed_bundle: Path) -> Path:
    """A private artifacts directory holding a copy of the typed bundle as ``churn/1``."""
    root = tmp_path_factory.mktemp("hardening-typed") / "artifacts"
    shutil.copytree(typed_bundle, root / "churn" / "1")
    return root


@pytest.fixture(scope="session")
def typed_server(typed_artifacts: Path) -> Iterator[ServerProcess]:
    """``python -m service`` on the typed bundle (numbers, text, true/false, blanks)."""
    log = typed_artifacts.parent / "server.log"
    process = ServerProcess(
        typed_artifacts,
        log_path=log,
        model_name="churn",
        api_key=TOKEN,
        admin_token=TOKEN,
        explain_evaluations=EXPLAIN_EVALUATIONS,
    )
    process.start(wait="/readyz")
    yield process
    process.stop()
