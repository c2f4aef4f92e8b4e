"""Fixtures for the training tests: CLI runner, extra bundles, loading a bundle back."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bundle
from bundle import columns
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
        model=keras.saving.load_model(directory / bundle.MODEL_KERAS, safe_mode=True),
        encoder=joblib.load(directory / bundle.LABEL_ENCODER),
        metadata=bundle.read_metadata(directory),
    )


def class_probabilities(raw: np.ndarray) -> np.ndarray:
    """One probability per class: a single sigmoid unit is P(classes[1])."""
    raw = np.asarray(raw, dtype=np.float64)
    return np.concatenate([1.0 - raw, raw], axis=1) if raw.shape[1] == 1 else raw


def raw_columns(frame: pd.DataFrame, specs: list[bundle.FeatureStats]) -> dict[str, np.ndarray]:
    """Table cells as a Keras user passes them to model.keras: float32 with NaN for a blank
    number, 0/1 for true/false, strings with "" for a blank text."""
    out: dict[str, np.ndarray] = {}
    for spec in specs:
        column = frame[spec.name]
        if spec.kind == "categorical":
            keys = [columns.category_of(v) for v in column.tolist()]
            out[spec.name] = np.array([columns.BLANK if k is None else k for k in keys], dtype=str)
        elif spec.kind == "boolean":
            flags = [columns.parse_boolean(v) if isinstance(v, str) else v for v in column.tolist()]
            out[spec.name] = np.array(
                [np.nan if f is None or f != f else float(f) for f in flags], dtype=np.float32
            )
        else:
            text = column.astype(object).map(
                lambda v: np.nan if isinstance(v, str) and columns.is_missing_text(v) else v
            )
            out[spec.name] = pd.to_numeric(text).to_numpy(dtype=np.float32, na_value=np.nan)
    return out


def encode_columns(raw: dict[str, np.ndarray], specs: list[bundle.FeatureStats]) -> np.ndarray:
    """The raw columns as the core's matrix, through ``bundle.columns`` alone (the oracle for
    model.tflite, independent of the training code)."""
    parts = []
    for spec in specs:
        values = raw[spec.name]
        if spec.kind == "categorical":
            assert spec.vocabulary is not None
            keys = [columns.category_of(v) or columns.BLANK for v in values.tolist()]
            parts.append(columns.encode_categories(keys, spec.vocabulary))
        else:
            parts.append(values.astype(np.float32))
    return np.stack(parts, axis=1).astype(np.float32)


@dataclass
class HeldOut:
    """The held-out test rows of a run: raw columns for model.keras, the encoded matrix for
    model.tflite, and the raw labels."""

    raw: dict[str, np.ndarray]
    encoded: np.ndarray
    y: np.ndarray


def held_out_rows(metadata: bundle.Metadata, data_path: Path | None = None) -> HeldOut:
    """The held-out test rows of the run that made ``metadata``."""
    from training import data

    choices = data.Choices(features=metadata.feature_names)
    dataset = data.load_dataset(data_path, metadata.target, choices)
    assert dataset.sha256 == metadata.data_sha256, "not the data this bundle was trained on"
    parts = data.split(dataset.y, metadata.training["test_size"], metadata.training["seed"])
    if data_path is None:
        frame = data.load_iris_frame()
    else:
        frame, _ = data.read_csv(data_path)
        frame = frame[frame[metadata.target].map(lambda v: not columns.is_missing_text(v))]
    test = frame.iloc[parts.test].reset_index(drop=True)
    raw = raw_columns(test, metadata.features)
    return HeldOut(raw, encode_columns(raw, metadata.features), dataset.y[parts.test])
