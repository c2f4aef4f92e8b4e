"""bundle.columns: blanks, true/false, category keys and the core's encoding of categories."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bundle import columns


@pytest.mark.parametrize(
    "text",
    ["", " ", "\t \n", "NA", " NA ", "?", "nan", "NaN", "null", "NULL", "None", "n/a", "#N/A"],
)
def test_missing_markers_are_blank(text: str) -> None:
    assert columns.is_missing_text(text)
    assert columns.category_of(text) is None


@pytest.mark.parametrize("text", ["0", "na ", "NA?", "none at all", "-", "false", "N.A."])
def test_ordinary_text_is_not_blank(text: str) -> None:
    assert not columns.is_missing_text(text)
    assert columns.category_of(text) == text.strip()


def test_na_spelled_otherwise_is_a_category() -> None:
    # Only the listed spellings are blanks: "na" in lower case is a value (pandas does the same).
    assert not columns.is_missing_text("na")
    assert columns.category_of(" na ") == "na"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        (" True ", True),
        ("tRuE", True),
        ("false", False),
        ("FALSE", False),
        ("\tFalse", False),
        ("yes", None),
        ("1", None),
        ("0", None),
        ("t", None),
        ("", None),
        ("truely", None),
    ],
)
def test_parse_boolean(text: str, expected: bool | None) -> None:
    assert columns.parse_boolean(text) is expected


@pytest.mark.parametrize(
    ("value", "key"),
    [
        ("  north ", "north"),
        ("02134", "02134"),  # a code keeps its leading zero
        ("415.0", "415.0"),  # text is never reinterpreted
        (415, "415"),
        (415.0, "415"),
        (-3.0, "-3"),
        (2.5, "2.5"),
        (True, "true"),
        (False, "false"),
        (float(2**53), repr(float(2**53))),
        (None, None),
        (math.nan, None),
        (np.nan, None),
        (b"bytes", None),
        ([1], None),
    ],
)
def test_category_of(value: object, key: str | None) -> None:
    assert columns.category_of(value) == key


def test_category_of_bool_is_not_an_integer() -> None:
    # bool is an int subclass: True must not become "1".
    assert columns.category_of(True) != columns.category_of(1)


def test_vocabulary_index_starts_at_one() -> None:
    assert columns.vocabulary_index(["a", "b", "c"]) == {"a": 1, "b": 2, "c": 3}
    assert columns.UNSEEN_INDEX == 0


def test_encode_categories_known_unseen_and_blank() -> None:
    vocabulary = ["", "basic", "pro"]  # training saw blanks
    encoded = columns.encode_categories(["pro", "basic", "", "gold", "Pro"], vocabulary)
    assert encoded.dtype == np.float32
    assert encoded.tolist() == [3.0, 2.0, 1.0, 0.0, 0.0]  # lookups are case-sensitive


def test_encode_categories_blank_unseen_when_training_had_none() -> None:
    encoded = columns.encode_categories([columns.BLANK, "b"], ["a", "b"])
    assert encoded.tolist() == [0.0, 2.0]


def test_encode_categories_empty_and_generator() -> None:
    assert columns.encode_categories([], ["a"]).shape == (0,)
    encoded = columns.encode_categories((v for v in ["a", "a"]), ["a"])
    assert encoded.tolist() == [1.0, 1.0]


def test_boolean_vocabulary_is_false_then_true() -> None:
    # The core takes a boolean as 0.0/1.0: the vocabulary order is that index.
    assert columns.BOOLEAN_VOCABULARY == ["false", "true"]
    assert columns.KINDS == ("numeric", "categorical", "boolean")
