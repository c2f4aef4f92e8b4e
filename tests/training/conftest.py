"""Fixtures for the training tests: CLI runner, extra bundles, loading a bundle back."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import bundle
from tests.conftest import make_binary_csv, train

ROOT = Path(__file__).resolve().parents[2]


CLI = (sys.executable, "-m", "training")


def cli_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test process's environment without the CLI's own variables, plus ``extra``."""
    environment = {
        k: v for k, v in os.environ.items() if k not in ("ARTIFACTS_DIR", "ARTIFACT_SIGNING_KEY")
    }
    environment["TF_CPP_MIN_LOG_LEVEL"] = "3"
    environment.update(extra or {})
    return environment


@pytest.fixture
def run_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``python -m training ARGS`` from the project root; return the finished process."""

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 300):
        return subprocess.run(
            [*CLI, *args],
            cwd=ROOT,
            env=cli_environment(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    return run


@pytest.fixture
def binary_csv(tmp_path: Path) -> Path:
    """The same bytes the session ``binary_bundle`` was trained on (the generator is seeded)."""
    return make_binary_csv(tmp_path / "binary.csv")


@pytest.fixture(scope="session")
def iris_onehot_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Iris with one-hot labels and categorical cross-entropy, trained once (short run)."""
    return train(tmp_path_factory.mktemp("onehot"), encoding="onehot", epochs=30)


@dataclass
class Loaded:
    """A bundle read back the way a Keras consumer would."""

    model: object
    encoder: object
    metadata: bundle.Metadata


def load_bundle(directory: Path) -> Loaded:
    """Verify the manifest, then load model.keras (safe mode) and the fitted LabelEncoder."""
    import joblib
    import keras

    bundle.verify_manifest(directory)
    return Loaded(
        model=keras.saving.load_model(directory / bundle.MODEL_KERAS),
        encoder=joblib.load(directory / bundle.LABEL_ENCODER),
        metadata=bundle.read_metadata(directory),
    )


def class_probabilities(raw: np.ndarray) -> np.ndarray:
    """One probability per class: a single sigmoid unit is P(classes[1])."""
    raw = np.asarray(raw, dtype=np.float64)
    return np.concatenate([1.0 - raw, raw], axis=1) if raw.shape[1] == 1 else raw


def held_out_rows(metadata: bundle.Metadata, data_path: Path | None = None):
    """The held-out test rows (features, raw labels) of the run that made ``metadata``."""
    from training import data

    dataset = data.load_dataset(data_path, metadata.target, metadata.feature_names)
    assert dataset.sha256 == metadata.data_sha256, "not the data this bundle was trained on"
    parts = data.split(dataset.y, metadata.training["test_size"], metadata.training["seed"])
    return dataset.x[parts.test], dataset.y[parts.test]
