"""Load the training table (embedded Iris or a CSV), validate it and split it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from training.errors import TrainingError

IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
IRIS_TARGET = "species"


@dataclass(frozen=True)
class Dataset:
    """Validated features and raw target labels, with a fingerprint of the source."""

    features: list[str]
    target: str
    x: np.ndarray  # float32 [rows, features]
    y: np.ndarray  # raw labels [rows]
    sha256: str


@dataclass(frozen=True)
class Split:
    """Row indices of the stratified train/validation/test split."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray


def load_iris_frame() -> pd.DataFrame:
    """The Iris data set shipped with scikit-learn, with snake_case column names."""
    from sklearn.datasets import load_iris

    iris = load_iris()
    frame = pd.DataFrame(iris.data, columns=IRIS_FEATURES)
    frame[IRIS_TARGET] = np.asarray(iris.target_names)[iris.target]
    return frame


def read_csv(path: Path) -> tuple[pd.DataFrame, str]:
    """Read a CSV file and return it with the sha256 of its bytes."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise TrainingError(f"data file not found: {path}") from None
    except IsADirectoryError:
        raise TrainingError(f"data file is a directory: {path}") from None
    except OSError as exc:
        raise TrainingError(f"cannot read data file {path}: {exc.strerror}") from None
    if not raw.strip():
        raise TrainingError(f"data file is empty: {path}")
    try:
        frame = pd.read_csv(Path(path))
    except pd.errors.EmptyDataError:
        raise TrainingError(f"data file is empty: {path}") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrainingError(f"cannot parse {path} as CSV: {first}") from None
    return frame, hashlib.sha256(raw).hexdigest()


def select(frame: pd.DataFrame, target: str, features: list[str] | None, sha256: str) -> Dataset:
    """Pick the target and numeric feature columns, rejecting what cannot be trained on."""
    columns = [str(c) for c in frame.columns]
    frame.columns = columns
    if len(set(columns)) != len(columns):
        duplicated = sorted({c for c in columns if columns.count(c) > 1})
        raise TrainingError(f"duplicate column name: {duplicated[0]}")
    if frame.empty:
        raise TrainingError("data has a header but no rows")
    if target not in columns:
        raise TrainingError(
            f"target column {target!r} not found; columns are: {', '.join(columns)}"
        )
    if features is None:
        features = [c for c in columns if c != target]
    else:
        missing = [f for f in features if f not in columns]
        if missing:
            raise TrainingError(f"feature column {missing[0]!r} not found")
        if target in features:
            raise TrainingError(f"target column {target!r} is also listed as a feature")
        if len(set(features)) != len(features):
            raise TrainingError("a feature is listed twice in --features")
    if not features:
        raise TrainingError("no feature columns: the data has only the target column")
    for name in features:
        column = frame[name]
        if column.dtype == bool or not pd.api.types.is_numeric_dtype(column):
            raise TrainingError(f"feature column {name!r} is not numeric")
        if column.isna().any():
            raise TrainingError(
                f"feature column {name!r} has {int(column.isna().sum())} missing values"
            )
        if not np.isfinite(column.to_numpy(dtype=np.float64)).all():
            raise TrainingError(f"feature column {name!r} has infinite values")
    labels = frame[target]
    if labels.isna().any():
        raise TrainingError(
            f"target column {target!r} has {int(labels.isna().sum())} missing values"
        )
    return Dataset(
        features=list(features),
        target=target,
        x=frame[features].to_numpy(dtype=np.float32),
        y=labels.to_numpy(),
        sha256=sha256,
    )


def load_dataset(path: Path | None, target: str | None, features: list[str] | None) -> Dataset:
    """Load the CSV at ``path``, or the embedded Iris data when ``path`` is None."""
    if path is None:
        frame = load_iris_frame()
        digest = hashlib.sha256(frame.to_csv(index=False).encode()).hexdigest()
        return select(frame, target or IRIS_TARGET, features, digest)
    if not target:
        raise TrainingError("--target is required with --data")
    frame, digest = read_csv(path)
    return select(frame, target, features, digest)


def split(y: np.ndarray, test_size: float, seed: int) -> Split:
    """Stratified split: ``test_size`` for test, the same share of the rest for validation."""
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise TrainingError(f"the target has a single class ('{classes[0]}'); need at least two")
    # Each class needs a row in each of the three parts.
    needed = max(3, int(np.ceil(1 / min(test_size, 1 - test_size))) + 1)
    for label, count in zip(classes, counts, strict=True):
        if count < needed:
            raise TrainingError(
                f"class '{label}' has {count} rows; each class needs at least {needed} for the split"
            )
    rows = np.arange(len(y))
    try:
        rest, test = train_test_split(rows, test_size=test_size, stratify=y, random_state=seed)
        train, validation = train_test_split(
            rest, test_size=test_size, stratify=y[rest], random_state=seed
        )
    except ValueError as exc:
        raise TrainingError(f"cannot split the data: {exc}") from None
    return Split(train=np.sort(train), validation=np.sort(validation), test=np.sort(test))
