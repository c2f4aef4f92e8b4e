"""Typed features: how a raw value (a number, a text, true/false or a blank) becomes one column
of the matrix the model's core takes. Training and the service both encode through this module.

The core takes one float32 column per feature, in feature order:

- numeric: the value, NaN for a blank (the core imputes the training median);
- boolean: 1.0 for true, 0.0 for false, NaN for a blank (imputed likewise);
- categorical: the category's index in the vocabulary plus one; 0 for a category training did
  not see (the out-of-vocabulary bucket). A blank is the category ``""`` (:data:`BLANK`), which
  is in the vocabulary when training saw blanks, and unseen otherwise.

``model.keras`` does the same inside the model (a ``StringLookup`` per categorical feature), so
a Keras user passes raw values: floats with NaN, strings, and 0/1 floats for booleans.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np

Kind = Literal["numeric", "categorical", "boolean"]
KINDS: tuple[Kind, ...] = ("numeric", "categorical", "boolean")

# The category a blank text cell becomes.
BLANK = ""
# Index of a category the vocabulary does not hold.
UNSEEN_INDEX = 0

# Cells read as blank, in a training CSV and at serving: pandas' default missing-value markers
# (https://pandas.pydata.org/docs/reference/api/pandas.read_csv.html, na_values) and "?", which
# UCI tables use. Compared after stripping surrounding whitespace, so "  " is blank too.
MISSING_TOKENS = frozenset(
    {
        "",
        "#N/A",
        "#N/A N/A",
        "#NA",
        "-1.#IND",
        "-1.#QNAN",
        "-NaN",
        "-nan",
        "1.#IND",
        "1.#QNAN",
        "<NA>",
        "N/A",
        "NA",
        "NULL",
        "NaN",
        "None",
        "n/a",
        "nan",
        "null",
        "?",
    }
)
# Text cells of a boolean column (compared case-insensitively).
TRUE_TOKENS = frozenset({"true"})
FALSE_TOKENS = frozenset({"false"})
BOOLEAN_VOCABULARY = ["false", "true"]


def is_missing_text(text: str) -> bool:
    """True for a cell that means "no value"."""
    return text.strip() in MISSING_TOKENS


def parse_boolean(text: str) -> bool | None:
    """``true``/``false`` in any case to a bool; None for anything else."""
    lowered = text.strip().lower()
    if lowered in TRUE_TOKENS:
        return True
    if lowered in FALSE_TOKENS:
        return False
    return None


def category_of(value: Any) -> str | None:
    """A categorical value as its vocabulary key: text stripped, whole numbers without a
    fraction (``415`` and ``415.0`` are ``"415"``), true/false in lower case; None if blank."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        return None if text in MISSING_TOKENS else text
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)
    return None


def vocabulary_index(vocabulary: Sequence[str]) -> dict[str, int]:
    """Category to the index the core takes (its position plus one; 0 is unseen)."""
    return {category: i + 1 for i, category in enumerate(vocabulary)}


def encode_categories(values: Iterable[str], vocabulary: Sequence[str]) -> np.ndarray:
    """Vocabulary keys (blank as :data:`BLANK`) to the core's float32 column."""
    index = vocabulary_index(vocabulary)
    return np.fromiter((index.get(v, UNSEEN_INDEX) for v in values), dtype=np.float32)
