"""Shared fixtures: tiny real bundles trained once per session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# gRPC is on by default (GRPC_PORT=8081); tests that serve it choose a free port themselves.
os.environ.setdefault("GRPC_PORT", "0")


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


def make_typed_csv(path: Path, rows: int = 400, seed: int = 0) -> Path:
    """A churn-like table as users have them: a row counter and a name (both ID-like), numbers
    with blanks, text categories with blanks, a true/false column, and a yes/no target that
    depends on all of them. The first rows cover every category and a blank of each kind."""
    rng = np.random.default_rng(seed)
    plans = np.array(["basic", "plus", "pro"])
    regions = np.array(["north", "south", "east", "west"])
    plan = plans[rng.integers(0, 3, rows)]
    region = regions[rng.integers(0, 4, rows)]
    member = rng.random(rows) < 0.5
    age = rng.normal(45, 12, rows).round(0)
    spend = rng.gamma(2.0, 30.0, rows).round(2)
    score = (
        (plan == "basic") * 1.2
        - (plan == "pro") * 1.0
        + (region == "south") * 0.6
        - member * 1.0
        + (age - 45) / 20
        - (spend - 60) / 60
    )
    churned = np.where(score + rng.normal(0, 0.5, rows) > 0, "yes", "no")
    lines = ["id,name,age,plan,region,member,monthly_spend,churned"]
    for i in range(rows):
        cells = [
            str(i + 1),
            f"customer {i:05d}",
            "" if i % 11 == 3 else f"{age[i]:.0f}",
            "" if i % 17 == 5 else str(plan[i]),
            str(region[i]),
            "" if i % 23 == 7 else ("true" if member[i] else "false"),
            f"{spend[i]:.2f}",
            str(churned[i]),
        ]
        lines.append(",".join(cells))
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


@pytest.fixture(scope="session")
def typed_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The mixed table the session ``typed_bundle`` was trained on."""
    return make_typed_csv(tmp_path_factory.mktemp("typed") / "churn.csv")


@pytest.fixture(scope="session")
def typed_bundle(session_artifacts: Path, typed_csv: Path) -> Path:
    """A binary model on a mixed table (numbers, text, true/false, blanks, ID columns left
    out), trained once with default options: ``<artifacts>/churn/1``."""
    return train(session_artifacts, data=typed_csv, target="churned", name="churn", epochs=60)


FORMAT1_BUNDLE = Path(__file__).parent / "fixtures" / "format1" / "iris" / "1"


@pytest.fixture
def artifacts_copy(tmp_path: Path, iris_bundle: Path) -> Path:
    """A private artifacts directory holding a copy of the Iris bundle as version 1."""
    target = tmp_path / "artifacts" / "iris" / "1"
    shutil.copytree(iris_bundle, target)
    return tmp_path / "artifacts"
