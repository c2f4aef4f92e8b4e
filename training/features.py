"""Feature specs fitted on the training split, and the table encoded the way the service encodes.

A spec (``bundle.FeatureStats``) records a feature's kind, range, mean, the median a blank is
imputed with, whether training saw blanks, and a categorical feature's vocabulary.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

import bundle
from bundle.columns import BLANK, BOOLEAN_VOCABULARY, encode_categories
from training.data import Column, Dataset

# A category seen fewer times than this in the training split goes to the unseen bucket, so that
# the bucket is trained on rare categories and answers unseen ones sensibly.
MIN_CATEGORY_COUNT = 2
MAX_VOCABULARY = 1000


def vocabulary(values: np.ndarray) -> list[str]:
    """The categories kept for a feature: frequent enough, at most MAX_VOCABULARY, and the blank
    when training saw one; sorted."""
    counts = Counter(values.tolist())
    frequent = [c for c, n in counts.most_common(MAX_VOCABULARY) if n >= MIN_CATEGORY_COUNT]
    if len(frequent) < 2:  # a tiny table: keep what there is rather than nothing
        frequent = [c for c, _ in counts.most_common(MAX_VOCABULARY)]
    if BLANK in counts and BLANK not in frequent:
        # A blank seen in training is its own category, however rare (bundle.columns).
        frequent.append(BLANK)
    return sorted(frequent)


def fit_spec(column: Column, train: np.ndarray) -> bundle.FeatureStats:
    """The spec of one feature from its training-split values."""
    nullable = bool(column.missing.any())
    values = column.values[train]
    missing = int(column.missing[train].sum())
    if column.kind == "categorical":
        return bundle.FeatureStats(
            name=column.name,
            kind="categorical",
            nullable=nullable,
            missing=missing,
            vocabulary=vocabulary(values),
        )
    present = values[~np.isnan(values)]
    if not len(present):  # every training-split cell is blank: fall back to the whole column
        present = column.values[~column.missing]
    low, high, mean = float(present.min()), float(present.max()), float(present.mean())
    if column.kind == "boolean":
        median = 1.0 if mean >= 0.5 else 0.0  # the most common value
    else:
        median = float(np.median(present))
    return bundle.FeatureStats(
        name=column.name,
        kind=column.kind,
        min=low,
        max=high,
        mean=mean,
        median=median,
        nullable=nullable,
        missing=missing,
        vocabulary=BOOLEAN_VOCABULARY if column.kind == "boolean" else None,
    )


def fit_specs(dataset: Dataset, train: np.ndarray) -> list[bundle.FeatureStats]:
    return [fit_spec(column, train) for column in dataset.columns]


def encode(dataset: Dataset, specs: list[bundle.FeatureStats]) -> np.ndarray:
    """The whole table as the core's float32 matrix ``[rows, features]`` (bundle.columns)."""
    out = np.empty((dataset.rows, len(specs)), dtype=np.float32)
    for j, (column, spec) in enumerate(zip(dataset.columns, specs, strict=True)):
        if spec.kind == "categorical":
            assert spec.vocabulary is not None
            out[:, j] = encode_categories(column.values.tolist(), spec.vocabulary)
        else:
            out[:, j] = column.values
    return out


def raw_inputs(dataset: Dataset, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Rows as ``model.keras`` takes them: a dict of columns, floats with NaN, strings."""
    out: dict[str, np.ndarray] = {}
    for column in dataset.columns:
        values = column.values[rows]
        out[column.name] = (
            values.astype(str) if column.kind == "categorical" else values.astype(np.float32)
        )
    return out


def raw_rows(dataset: Dataset, rows: np.ndarray) -> list[list[Any]]:
    """Rows as a JSON client sends them: numbers, strings, true/false, null for blanks."""
    out = []
    for i in rows.tolist():
        row: list[Any] = []
        for column in dataset.columns:
            value = column.values[i]
            if column.kind == "categorical":
                row.append(None if value == BLANK else str(value))
            elif np.isnan(value):
                row.append(None)
            elif column.kind == "boolean":
                row.append(bool(value))
            else:
                row.append(float(value))
        out.append(row)
    return out
