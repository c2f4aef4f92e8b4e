"""What a bundle answers outside the service: ``model.keras`` + ``label_encoder.joblib``.

The tests compare the service's answers with these, computed the way a notebook would: load the
model with Keras and the encoder with joblib, then ``inverse_transform(argmax(probabilities))``.
"""

from __future__ import annotations

import csv
import functools
import io
import shutil
from pathlib import Path
from typing import Any

import numpy as np

import bundle

IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
BINARY_FEATURES = ["a", "b", "c"]
# Outside the Iris training range on purpose: sepal_length far above, petal_length below.
OUT_OF_RANGE_ROW = [50.0, 3.5, -1.4, 0.2]


@functools.cache
def _load(version_dir: str) -> tuple[Any, Any]:
    import joblib
    import keras

    model = keras.saving.load_model(Path(version_dir) / bundle.MODEL_KERAS, compile=False)
    encoder = joblib.load(Path(version_dir) / bundle.LABEL_ENCODER)
    return model, encoder


def keras_inputs(metadata: bundle.Metadata, rows: Any) -> Any:
    """Rows of raw values (None for a blank) as ``model.keras`` takes them: for format 2, a dict
    of columns (floats with NaN, strings with "" for a blank, booleans as 0/1 floats); for
    format 1, one float matrix."""
    if metadata.format_version == 1:
        return np.asarray(rows, dtype=np.float32)
    columns = list(zip(*rows, strict=True))
    out = {}
    for spec, column in zip(metadata.features, columns, strict=True):
        if spec.kind == "categorical":
            out[spec.name] = np.array(["" if v is None else str(v) for v in column])
        else:
            out[spec.name] = np.array(
                [np.nan if v is None else float(v) for v in column], dtype=np.float32
            )
    return out


def reference(version_dir: Path, rows: Any) -> tuple[list[Any], np.ndarray]:
    """Labels and per-class probabilities ``[rows, classes]`` outside the service: model.keras
    called on raw values, labels decoded by the LabelEncoder (through the bundle's threshold
    for a binary model that has one)."""
    model, encoder = _load(str(version_dir))
    metadata = bundle.read_metadata(Path(version_dir))
    raw = np.asarray(model(keras_inputs(metadata, rows), training=False), dtype=np.float64)
    probabilities = np.concatenate([1 - raw, raw], axis=1) if raw.shape[1] == 1 else raw
    if metadata.threshold is not None:
        indices = (probabilities[:, 1] >= metadata.threshold).astype(int)
    else:
        indices = probabilities.argmax(axis=1)
    labels = encoder.inverse_transform(indices).tolist()
    return labels, probabilities


def iris_rows() -> list[list[float]]:
    """Every row of the Iris data set, then one row outside the training range."""
    from sklearn.datasets import load_iris

    return [*load_iris().data.round(1).tolist(), OUT_OF_RANGE_ROW]


def binary_rows(count: int = 60, seed: int = 1) -> list[list[float]]:
    """Rows like the binary model's training data (features a, b, c)."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(count, 3)).round(4).tolist()


def records(rows: list[list[float]], features: list[str]) -> list[dict[str, float]]:
    """Rows as records whose keys come in reverse feature order (order must not matter)."""
    return [dict(reversed(list(zip(features, row, strict=True)))) for row in rows]


def csv_body(rows: list[list[float]], features: list[str], order: list[str]) -> bytes:
    """A CSV body with a header row in ``order`` (a permutation of ``features``)."""
    index = [features.index(name) for name in order]
    lines = [",".join(order)] + [",".join(repr(row[i]) for i in index) for row in rows]
    return ("\n".join(lines) + "\n").encode()


def answered(predictions: list[dict[str, Any]], classes: list[str]) -> tuple[list, np.ndarray]:
    """Labels and probabilities ``[rows, classes]`` from a JSON answer."""
    labels = [p["label"] for p in predictions]
    probabilities = np.array([[p["probabilities"][c] for c in classes] for p in predictions])
    return labels, probabilities


def answered_csv(text: str, classes: list[str]) -> tuple[list, np.ndarray, list[str]]:
    """Labels, probabilities and the warnings column from a CSV answer."""
    table = list(csv.DictReader(io.StringIO(text)))
    labels = [row["label"] for row in table]
    probabilities = np.array([[float(row[f"prob_{c}"]) for c in classes] for row in table])
    return labels, probabilities, [row["warnings"] for row in table]


def copy_bundle(source: Path, artifacts: Path, name: str, version: int = 1) -> Path:
    """Publish a copy of ``source`` as ``artifacts/name/version``, atomically (stage, rename)."""
    model_dir = artifacts / name
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = model_dir / f"{bundle.TEMP_PREFIX}copy-{version}"
    shutil.copytree(source, staging)
    target = model_dir / str(version)
    staging.rename(target)
    return target
