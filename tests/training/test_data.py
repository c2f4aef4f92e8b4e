"""Loading, validating and splitting the training table (no TensorFlow involved)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import make_binary_csv
from training import TrainingError, data


def _frame(**columns: list) -> pd.DataFrame:
    return pd.DataFrame(columns)


def _select(frame: pd.DataFrame, target: str = "label", features: list[str] | None = None):
    return data.select(frame, target, data.Choices(features=features), "digest")


def _matrix(dataset: data.Dataset) -> np.ndarray:
    """The numeric feature columns side by side."""
    assert all(c.kind == "numeric" for c in dataset.columns)
    return np.stack([c.values for c in dataset.columns], axis=1)


# --- the embedded Iris data ------------------------------------------------------------------


def test_iris_default() -> None:
    dataset = data.load_dataset(None, None, None)
    assert dataset.features == data.IRIS_FEATURES
    assert dataset.target == data.IRIS_TARGET == "species"
    assert [c.kind for c in dataset.columns] == ["numeric"] * 4
    assert _matrix(dataset).shape == (150, 4)
    assert dataset.rows == 150
    assert (dataset.left_out, dataset.dropped_rows, dataset.notes) == ({}, 0, [])
    labels, counts = np.unique(dataset.y, return_counts=True)
    assert labels.tolist() == ["setosa", "versicolor", "virginica"]
    assert counts.tolist() == [50, 50, 50]
    frame = data.load_iris_frame()
    assert dataset.sha256 == hashlib.sha256(frame.to_csv(index=False).encode()).hexdigest()
    assert data.load_dataset(None, None, None).sha256 == dataset.sha256


def test_iris_with_picked_features() -> None:
    choices = data.Choices(features=["petal_width", "sepal_length"])
    dataset = data.load_dataset(None, None, choices)
    frame = data.load_iris_frame()
    assert dataset.features == ["petal_width", "sepal_length"]
    np.testing.assert_array_equal(
        _matrix(dataset), frame[["petal_width", "sepal_length"]].to_numpy(dtype=np.float64)
    )


# --- reading a CSV ------------------------------------------------------------------------------


def test_read_csv_fingerprints_the_bytes(tmp_path: Path) -> None:
    path = make_binary_csv(tmp_path / "b.csv")
    frame, digest = data.read_csv(path)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert list(frame.columns) == ["note", "b", "label", "a", "c"]
    assert len(frame) == 120


def test_csv_with_string_labels_extra_column_and_another_order(tmp_path: Path) -> None:
    path = make_binary_csv(tmp_path / "b.csv")
    dataset = data.load_dataset(path, "label", data.Choices(features=["a", "b", "c"]))
    frame = pd.read_csv(path)
    assert dataset.features == ["a", "b", "c"]
    x = _matrix(dataset)
    np.testing.assert_array_equal(x, frame[["a", "b", "c"]].to_numpy(dtype=np.float64))
    assert set(dataset.y.tolist()) == {"no", "yes"}
    assert dataset.y.tolist() == frame["label"].tolist()
    # The labels really follow column "a" (and "b"), not the file's column order.
    assert ((x[:, 0] + 0.5 * x[:, 1] > 0) == (dataset.y == "yes")).mean() > 0.95


def test_csv_extra_text_id_column_is_left_out_without_features(tmp_path: Path) -> None:
    """A text column whose values are all distinct (row0, row1, ...) is an ID, not a feature."""
    path = make_binary_csv(tmp_path / "b.csv")
    dataset = data.load_dataset(path, "label", None)
    assert dataset.features == ["b", "a", "c"]
    assert list(dataset.left_out) == ["note"]
    assert "distinct" in dataset.left_out["note"]
    assert any("left out column 'note'" in note for note in dataset.notes)


def test_csv_all_other_columns_are_features_by_default(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("z,label,y\n1,a,2\n3,b,4\n")
    dataset = data.load_dataset(path, "label", None)
    assert dataset.features == ["z", "y"]
    assert _matrix(dataset).tolist() == [[1.0, 2.0], [3.0, 4.0]]


def test_numeric_labels_stay_numbers(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("x,label\n0.5,0\n1.5,1\n2.5,1\n")
    dataset = data.load_dataset(path, "label", None)
    assert dataset.y.tolist() == [0, 1, 1]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "data file not found"),
        (b"", "data file is empty"),
        (b"  \n\n \t\n", "data file is empty"),
        (b"x,label\n", "data has a header but no rows"),
        (b"x,label\n1,a\n2,b,3,4\n", "cannot parse .* as CSV: Error tokenizing data"),
    ],
    ids=["missing", "zero-bytes", "blank", "header-only", "ragged"],
)
def test_bad_files(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "data.csv"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(TrainingError, match=message) as caught:
        data.load_dataset(path, "label", None)
    assert "\n" not in str(caught.value)


def test_windows_1252_file_is_read_with_a_note(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    rows = [f"{x},{colour},{label}" for x, colour, label in [(1, "rosé", "a"), (2, "crème", "b")]]
    path.write_bytes(("x,colour,label\n" + "\n".join(rows * 3) + "\n").encode("cp1252"))
    dataset = data.load_dataset(path, "label", None)
    colour = next(c for c in dataset.columns if c.name == "colour")
    assert sorted(set(colour.values.tolist())) == ["crème", "rosé"]
    assert "data.csv is not UTF-8; read it as Windows-1252 (cp1252)" in dataset.notes


@pytest.mark.parametrize("delimiter", [";", "\t", "|"])
def test_semicolon_tab_and_pipe_separated_files(tmp_path: Path, delimiter: str) -> None:
    path = tmp_path / "data.csv"
    lines = ["x;colour;label", "1,5;red;a", "2,5;blue;b", "1,5;red;a"]  # decimal commas: text
    path.write_text("\n".join(line.replace(";", delimiter) for line in lines) + "\n")
    dataset = data.load_dataset(path, "label", None)
    assert dataset.features == ["x", "colour"]
    assert dataset.y.tolist() == ["a", "b", "a"]
    assert f"data.csv separates its columns with {delimiter!r}" in dataset.notes


def test_a_comma_in_the_header_keeps_the_comma(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("x,note;more,label\n5,a;b,p\n7,c;d,q\n5,a;b,p\n")
    dataset = data.load_dataset(path, "label", None)
    assert dataset.features == ["x", "note;more"]
    assert not any("separates" in note for note in dataset.notes)


def test_data_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="data file is a directory"):
        data.load_dataset(tmp_path, "label", None)


def test_target_is_required_with_data(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="--target is required with --data"):
        data.load_dataset(tmp_path / "never-read.csv", None, None)


# --- selecting columns ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "target", "features", "message"),
    [
        (_frame(x=[1.0], label=["a"]), "species", None, "target column 'species' not found"),
        (
            _frame(x=[1.0], label=["a"]),
            "label",
            ["x", "w"],
            "--features names unknown column 'w'",
        ),
        (
            _frame(x=[1.0], label=["a"]),
            "label",
            ["x", "label"],
            "target column 'label' is also listed in --features",
        ),
        (_frame(x=[1.0], label=["a"]), "label", ["x", "x"], "listed twice in --features"),
        (_frame(x=[1.0], label=["a"]), "label", [], "no feature columns"),
        (_frame(label=["a"]), "label", None, "no feature columns"),
        (_frame(x=[np.nan, np.nan], label=["a", "b"]), "label", None, "'x' has no values"),
        (_frame(x=["", "NA"], label=["a", "b"]), "label", None, "'x' has no values"),
        (_frame(x=[1.0, np.inf], label=["a", "b"]), "label", None, "'x' has infinite values"),
        (_frame(x=[1.0, 2.0], label=[None, " "]), "label", None, "'label' has no values"),
        (_frame(x=[], label=[]), "label", None, "header but no rows"),
    ],
    ids=[
        "no-target",
        "no-feature",
        "target-as-feature",
        "feature-twice",
        "empty-features",
        "only-target",
        "nan-feature",
        "blank-text-feature",
        "inf-feature",
        "blank-target",
        "no-rows",
    ],
)
def test_select_rejects(
    frame: pd.DataFrame, target: str, features: list | None, message: str
) -> None:
    with pytest.raises(TrainingError, match=message):
        data.select(frame, target, data.Choices(features=features), "digest")


def test_select_rejects_duplicate_column_names() -> None:
    frame = pd.DataFrame([[1.0, 2.0, "a"]], columns=["x", "x", "label"])
    with pytest.raises(TrainingError, match="duplicate column name: 'x'"):
        _select(frame)


def test_missing_target_lists_the_columns() -> None:
    with pytest.raises(TrainingError, match=r"columns are: x, y, label$"):
        _select(_frame(x=[1.0], y=[2.0], label=["a"]), target="species")


def test_integer_features_become_floats() -> None:
    dataset = _select(_frame(x=[1, 5, 3], label=["a", "b", "a"]))
    (column,) = dataset.columns
    assert column.kind == "numeric"
    assert column.values.dtype == np.float64
    assert column.values.tolist() == [1.0, 5.0, 3.0]
    assert dataset.sha256 == "digest"


# --- splitting -------------------------------------------------------------------------------------


def _labels(counts: dict[str, int]) -> np.ndarray:
    return np.array([label for label, n in counts.items() for _ in range(n)], dtype=object)


def test_split_is_stratified_disjoint_and_complete() -> None:
    y = data.load_dataset(None, None, None).y
    parts = data.split(y, 0.2, seed=42)
    assert (len(parts.train), len(parts.validation), len(parts.test)) == (96, 24, 30)
    everything = np.concatenate([parts.train, parts.validation, parts.test])
    assert sorted(everything.tolist()) == list(range(150))
    for part in (parts.train, parts.validation, parts.test):
        assert part.tolist() == sorted(part.tolist())
        _, counts = np.unique(y[part], return_counts=True)
        assert counts.max() - counts.min() <= 1  # balanced classes stay balanced


def test_split_depends_on_the_seed_only() -> None:
    y = data.load_dataset(None, None, None).y
    a, b, c = data.split(y, 0.2, 1), data.split(y, 0.2, 1), data.split(y, 0.2, 2)
    assert a.test.tolist() == b.test.tolist()
    assert a.train.tolist() == b.train.tolist()
    assert a.test.tolist() != c.test.tolist()


def test_split_gives_every_class_a_row_in_every_part_at_the_minimum() -> None:
    y = _labels({"a": 30, "b": 6})
    parts = data.split(y, 0.2, 0)
    for part in (parts.train, parts.validation, parts.test):
        assert set(y[part].tolist()) == {"a", "b"}


def test_split_rejects_a_single_class() -> None:
    with pytest.raises(TrainingError, match=r"single class \('only'\)"):
        data.split(_labels({"only": 20}), 0.2, 0)


@pytest.mark.parametrize(("test_size", "needed"), [(0.2, 6), (0.1, 11), (0.4, 4)])
def test_split_rejects_a_class_with_too_few_rows(test_size: float, needed: int) -> None:
    y = _labels({"big": 60, "small": needed - 1})
    with pytest.raises(TrainingError, match=f"class 'small' has {needed - 1} rows; .*{needed}"):
        data.split(y, test_size, 0)
    parts = data.split(_labels({"big": 60, "small": needed}), test_size, 0)
    assert len(parts.test) > 0
