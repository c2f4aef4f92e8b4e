"""A stand-in for a loaded typed model, for fuzzing the parsers without training or a runtime.

Its features are those of the session ``typed_bundle`` (tests/conftest.py: make_typed_csv):
numbers with and without blanks, categories with and without blanks, a nullable true/false.
The parsers read only the names, kinds, vocabularies and limits, all of which are here.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

import bundle
from service import inputs
from service.typed import MAX_ABS_VALUE, MissingValues, TypedSchema

IGNORED = frozenset({"churned", "id"})
FEATURES: list[bundle.FeatureStats] = [
    bundle.FeatureStats(
        name="age", kind="numeric", min=7, max=72, mean=43.6, median=44, nullable=True, missing=23
    ),
    bundle.FeatureStats(
        name="plan",
        kind="categorical",
        vocabulary=["", "basic", "plus", "pro"],
        nullable=True,
        missing=17,
    ),
    bundle.FeatureStats(
        name="region", kind="categorical", vocabulary=["east", "north", "south", "west"]
    ),
    bundle.FeatureStats(
        name="member",
        kind="boolean",
        min=0,
        max=1,
        mean=0.49,
        median=0,
        nullable=True,
        missing=9,
        vocabulary=["false", "true"],
    ),
    bundle.FeatureStats(name="monthly_spend", kind="numeric", min=0.76, max=221.71, mean=64.9),
]
NAMES = [f.name for f in FEATURES]
MAX_ROWS = 64
N_CLASSES = 2


def typed_model(missing: MissingValues = "refuse") -> Any:
    """What ``service.protocols.v2`` and ``service.protocols.tfserving`` read of a ``LoadedModel``."""
    codec = TypedSchema.of(FEATURES, missing)
    return SimpleNamespace(
        feature_names=NAMES,
        n_features=len(NAMES),
        n_classes=N_CLASSES,
        numeric_only=False,
        typed=codec,
        codec=codec,
        # The table's target and an ID column left out: records and headers may carry them.
        ignored_columns=IGNORED,
        metadata=SimpleNamespace(features=FEATURES),
    )


def schema(model: Any) -> inputs.Schema:
    return inputs.Schema(NAMES, MAX_ROWS, N_CLASSES, model.typed, model.ignored_columns)


def check_matrix(x: np.ndarray, model: Any, notes: Any = None) -> None:
    """The promises a parsed typed request keeps for the model core: float32 [rows, features],
    each column encoded as its kind says, a blank only where the feature takes one, and warnings
    that name a feature of a row that exists."""
    assert x.dtype == np.float32 and x.ndim == 2, (x.dtype, x.shape)
    rows = x.shape[0]
    assert x.shape[1] == len(NAMES) and 1 <= rows <= MAX_ROWS, x.shape
    for j, feature in enumerate(model.codec.features):
        column = x[:, j]
        blank = np.isnan(column)
        assert feature.blank_ok or not blank.any(), (feature.name, "a blank where none is taken")
        if feature.kind == "categorical":
            assert not blank.any(), feature.name  # a blank is a category (its own index)
            categories = len(FEATURES[j].vocabulary or [])  # index i + 1; 0: unseen
            assert np.isin(column, np.arange(categories + 1)).all(), feature.name
        elif feature.kind == "boolean":
            assert np.isin(column[~blank], (0.0, 1.0)).all(), feature.name
        else:
            values = column[~blank]
            assert np.isfinite(values).all() and (np.abs(values) <= MAX_ABS_VALUE).all()
    for row, messages in (notes or {}).items():
        assert type(row) is int and 0 <= row < rows, row
        for name, message in messages:
            assert name in NAMES and type(message) is str and len(message) < 300, message
