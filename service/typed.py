"""Typed values (numbers, text, true/false, blanks) to the model core's matrix. No HTTP here.

Each feature's values arrive as one column (from JSON rows or records, CSV cells, or a protocol
tensor) and are encoded as ``bundle.columns`` says: NaN for a blank number, 1/0 for a boolean,
the vocabulary index for a category (0: unseen). Refusals name the row and feature and never
echo the value; answers that needed a judgement (a blank, an unseen category) carry a warning
naming the feature.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

import bundle
from bundle.columns import BLANK, UNSEEN_INDEX, category_of, parse_boolean, vocabulary_index
from service.errors import InvalidInput

# The largest magnitude accepted. Far beyond any training range, yet far enough below float32's
# 3.4e38 that the network cannot overflow: near that limit its probabilities come out NaN.
MAX_ABS_VALUE = 1e15

MissingValues = Literal["refuse", "impute"]
# Where a cell is, for messages: (row, feature) to "instances[3].age".
Locate = Callable[[int, int], str]
# Warnings by row: row index to [(feature, message)].
Notes = dict[int, list[tuple[str, str]]]

_KIND_NAMES = {
    str: "a string",
    bool: "a boolean",
    type(None): "null",
    list: "an array",
    dict: "an object",
}


def bounded_array(values: Any) -> np.ndarray | None:
    """JSON numbers (ints and floats only, rows or a column) as float64; None when one overflows,
    is not finite or is beyond ±MAX_ABS_VALUE, for the caller to name the cell at fault."""
    try:
        array = np.array(values, dtype=np.float64)
    except OverflowError:
        return None
    if not np.isfinite(array).all() or (array.size and np.abs(array).max() > MAX_ABS_VALUE):
        return None
    return array


def finite_number(value: float, where: str) -> float:
    """A JSON number as a float within ±MAX_ABS_VALUE, or InvalidInput naming ``where``."""
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise InvalidInput(f"{where} must be a finite number")
    if abs(number) > MAX_ABS_VALUE:
        raise InvalidInput(f"{where} is out of the accepted range, ±{MAX_ABS_VALUE:g}")
    return number


def kind_name(value: Any) -> str:
    return _KIND_NAMES.get(type(value), type(value).__name__)


@dataclass(frozen=True)
class Feature:
    """What the encoder needs of one feature."""

    name: str
    kind: bundle.columns.Kind
    blank_ok: bool  # nullable, or MISSING_VALUES=impute
    nullable: bool
    fill: float | None  # the imputed value of a blank number
    index: dict[str, int] | None  # categorical: category to core index (the blank one apart)
    blank_index: int = UNSEEN_INDEX  # categorical: the core index of a blank


@dataclass(frozen=True)
class TypedSchema:
    """A model's features as the encoder reads them."""

    features: tuple[Feature, ...]

    @classmethod
    def of(cls, specs: Sequence[bundle.FeatureStats], missing: MissingValues) -> TypedSchema:
        features = []
        for spec in specs:
            index = None
            blank_index = UNSEEN_INDEX
            if spec.kind == "categorical":
                index = vocabulary_index(spec.vocabulary or [])
                # A blank always goes the slow way, where it is noted (or refused).
                blank_index = index.pop(BLANK, UNSEEN_INDEX)
            features.append(
                Feature(
                    name=spec.name,
                    kind=spec.kind,
                    blank_ok=spec.nullable or missing == "impute",
                    nullable=spec.nullable,
                    fill=None if spec.kind == "categorical" else spec.fill,
                    index=index,
                    blank_index=blank_index,
                )
            )
        return cls(tuple(features))


def _blank(feature: Feature, i: int, j: int, locate: Locate, notes: Notes) -> None:
    """Note a blank cell, or refuse it when the feature takes none."""
    if not feature.blank_ok:
        raise InvalidInput(
            f"{locate(i, j)} is blank; the model saw no blanks in {feature.name!r} in training "
            "(send a value, or run the service with MISSING_VALUES=impute)"
        )
    if feature.nullable:
        message = f"{feature.name} is blank"
    elif feature.kind == "categorical":
        message = f"{feature.name} is blank; answered as a category not seen in training"
    else:
        message = f"{feature.name} is blank; imputed with the training median {feature.fill:.6g}"
    notes.setdefault(i, []).append((feature.name, message))


def _numeric(values: Sequence[Any], feature: Feature, j: int, locate: Locate, notes: Notes):
    if set(map(type, values)) <= {int, float}:
        column = bounded_array(values)
        if column is not None:
            return column
    column = np.empty(len(values), dtype=np.float64)
    for i, value in enumerate(values):
        kind = type(value)
        if kind is float or kind is int:
            column[i] = finite_number(value, locate(i, j))
        elif value is None or (kind is str and category_of(value) is None):
            _blank(feature, i, j, locate, notes)
            column[i] = math.nan
        else:
            raise InvalidInput(f"{locate(i, j)} must be a number, not {kind_name(value)}")
    return column


_BOOLEAN_NUMBERS = {0: 0.0, 1: 1.0}


def _boolean(values: Sequence[Any], feature: Feature, j: int, locate: Locate, notes: Notes):
    column = np.empty(len(values), dtype=np.float64)
    for i, value in enumerate(values):
        kind = type(value)
        if kind is bool:
            column[i] = 1.0 if value else 0.0
            continue
        flag = None
        if kind is str:
            if category_of(value) is None:
                _blank(feature, i, j, locate, notes)
                column[i] = math.nan
                continue
            flag = parse_boolean(value)
            if flag is None and value.strip() in ("0", "1"):
                flag = value.strip() == "1"
        elif (kind is int or kind is float) and value in _BOOLEAN_NUMBERS:
            flag = value == 1
        elif value is None:
            _blank(feature, i, j, locate, notes)
            column[i] = math.nan
            continue
        if flag is None:
            raise InvalidInput(f"{locate(i, j)} must be true or false, not {kind_name(value)}")
        column[i] = 1.0 if flag else 0.0
    return column


def _categorical(values: Sequence[Any], feature: Feature, j: int, locate: Locate, notes: Notes):
    index = feature.index
    assert index is not None
    try:
        found = list(map(index.get, values))  # the common case: the exact category
    except TypeError:  # an object or an array cannot be looked up; refused below
        found = [index.get(v) if type(v) is str else None for v in values]
    if None not in found:
        return np.array(found, dtype=np.float64)
    blank_index = feature.blank_index
    for i, position in enumerate(found):
        if position is not None:
            continue
        value = values[i]
        kind = type(value)
        if kind not in (str, int, float, bool, type(None)):
            raise InvalidInput(f"{locate(i, j)} must be a text or a number, not {kind_name(value)}")
        if kind is float and not math.isfinite(value):
            raise InvalidInput(f"{locate(i, j)} must be a text or a finite number")
        key = category_of(value)
        if key is None:
            _blank(feature, i, j, locate, notes)
            found[i] = blank_index
            continue
        position = index.get(key)
        if position is None:
            shown = key if len(key) <= 40 else key[:37] + "..."
            notes.setdefault(i, []).append(
                (feature.name, f"{feature.name}={shown!r} is a category not seen in training")
            )
            position = UNSEEN_INDEX
        found[i] = position
    return np.array(found, dtype=np.float64)


_ENCODERS = {"numeric": _numeric, "boolean": _boolean, "categorical": _categorical}


def encode(
    columns: Sequence[Sequence[Any]], schema: TypedSchema, locate: Locate
) -> tuple[np.ndarray, Notes]:
    """One sequence of values per feature (in feature order) to the core's float32 matrix and
    the warnings by row."""
    rows = len(columns[0]) if columns else 0
    matrix = np.empty((rows, len(schema.features)), dtype=np.float32)
    notes: Notes = {}
    for j, (feature, values) in enumerate(zip(schema.features, columns, strict=True)):
        matrix[:, j] = _ENCODERS[feature.kind](values, feature, j, locate, notes)
    return matrix, notes


def encode_csv_cells(
    columns: Sequence[Sequence[str]], schema: TypedSchema, locate: Locate
) -> tuple[np.ndarray, Notes]:
    """Like :func:`encode` for CSV text cells: numbers are parsed first (a blank cell is blank,
    a cell that is no number is refused)."""
    typed: list[Sequence[Any]] = []
    for j, (feature, cells) in enumerate(zip(schema.features, columns, strict=True)):
        if feature.kind != "numeric":
            typed.append(cells)
            continue
        numbers: list[Any] = []
        for i, cell in enumerate(cells):
            if category_of(cell) is None:
                numbers.append(None)
                continue
            text = cell.strip()
            if "\n" in cell or "\r" in cell:  # a quoted line break, which float() would skip
                raise InvalidInput(
                    f"{locate(i, j)} holds a line break inside quotes; a number is written on "
                    "one line"
                )
            try:
                if "_" in text or not text.isascii():
                    raise ValueError(text)
                numbers.append(float(text))
            except ValueError:
                raise InvalidInput(f"{locate(i, j)} is not a number") from None
        typed.append(numbers)
    return encode(typed, schema, locate)
