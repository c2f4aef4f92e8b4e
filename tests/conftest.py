"""Shared fixtures: tiny real bundles trained once per session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def make_binary_csv(path: Path, rows: int = 120, seed: int = 0) -> Path:
    """A separable two-class CSV with string labels, an extra column and shuffled column order."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 3))
    label = np.where(x[:, 0] + 0.5 * x[:, 1] > 0, "yes", "no")
    lines = ["note,b,label,a,c"]
    for i in range(rows):
        lines.append(f"row{i},{x[i, 1]:.5f},{label[i]},{x[i, 0]:.5f},{x[i, 2]:.5f}")
    path.write_text("\n".join(lines) + "\n")
    return path


def train(artifacts: Path, **options: object) -> Path:
    """Run a real training in-process and return the published version directory."""
    from training.pipeline import Options, run

    return run(Options(artifacts=artifacts, quiet=True, **options))  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def session_artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(scope="session")
def iris_bundle(session_artifacts: Path) -> Path:
    """The default Iris model, trained once: ``<artifacts>/iris/1``."""
    return train(session_artifacts)


@pytest.fixture(scope="session")
def binary_bundle(session_artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A binary model with string labels (one sigmoid unit), trained once."""
    csv = make_binary_csv(tmp_path_factory.mktemp("data") / "binary.csv")
    return train(
        session_artifacts,
        data=csv,
        target="label",
        features=["a", "b", "c"],
        name="binary",
        epochs=60,
    )


@pytest.fixture
def artifacts_copy(tmp_path: Path, iris_bundle: Path) -> Path:
    """A private artifacts directory holding a copy of the Iris bundle as version 1."""
    target = tmp_path / "artifacts" / "iris" / "1"
    shutil.copytree(iris_bundle, target)
    return tmp_path / "artifacts"
