"""The training run end to end, in-process: accuracy, encodings, bundle contents, LiteRT, seeds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import bundle
from tests.conftest import make_binary_csv, train
from tests.training.conftest import class_probabilities, held_out_rows, load_bundle
from training import TrainingError
from training.pipeline import Options, run

DESIGN_FILES = [
    bundle.MODEL_KERAS,
    bundle.LABEL_ENCODER,
    bundle.MODEL_TFLITE,
    bundle.METADATA,
    bundle.MANIFEST,
    bundle.METRICS_JSON,
    bundle.CONFUSION_MATRIX_PNG,
]
IRIS_CLASSES = ["setosa", "versicolor", "virginica"]


def _metrics(directory: Path) -> dict:
    return json.loads((directory / bundle.METRICS_JSON).read_text())


def _leftovers(artifacts: Path) -> list[str]:
    """Staging directories anywhere below the artifacts directory."""
    return [p.name for p in artifacts.rglob(f"{bundle.TEMP_PREFIX}*")]


def _head_activation(model) -> str:
    """The activation of the last layer of the core model inside model.keras."""
    return model.get_layer(bundle.CORE_LAYER).layers[-1].get_config()["activation"]


def _decode(directory: Path, data_path: Path | None = None):
    """Predict the held-out rows with model.keras and decode through label_encoder.joblib."""
    loaded = load_bundle(directory)
    held_out = held_out_rows(loaded.metadata, data_path)
    probabilities = class_probabilities(loaded.model.predict(held_out.raw, verbose=0))
    labels = loaded.encoder.inverse_transform(probabilities.argmax(axis=1))
    return loaded, probabilities, labels, held_out.y


# --- Iris, the default run -------------------------------------------------------------------


@pytest.mark.slow
def test_iris_reaches_90_percent_and_publishes_every_file(default_iris_bundle: Path) -> None:
    assert default_iris_bundle.name == "1"
    assert default_iris_bundle.parent.name == "iris"
    for name in DESIGN_FILES:
        assert (default_iris_bundle / name).is_file(), name
        assert (default_iris_bundle / name).stat().st_size > 0, name
    assert sorted(bundle.verify_manifest(default_iris_bundle)) == sorted(
        set(DESIGN_FILES) - {bundle.MANIFEST}
    )
    metrics = _metrics(default_iris_bundle)
    metadata = bundle.read_metadata(default_iris_bundle)
    assert metrics["accuracy"] >= 0.9
    assert metadata.metrics["accuracy"] == metrics["accuracy"]
    assert metadata.metrics["macro_f1"] == pytest.approx(metrics["macro_f1"])
    assert metrics["test_rows"] == metadata.training["test_rows"] == 30
    assert _leftovers(default_iris_bundle.parent) == []


@pytest.mark.slow
def test_iris_report_is_consistent(default_iris_bundle: Path) -> None:
    metrics = _metrics(default_iris_bundle)
    assert list(metrics["per_class"]) == IRIS_CLASSES
    assert sum(row["support"] for row in metrics["per_class"].values()) == metrics["test_rows"]
    for row in metrics["per_class"].values():
        for key in ("precision", "recall", "f1"):
            assert 0.0 <= row[key] <= 1.0
    confusion = metrics["confusion_matrix"]
    assert confusion["labels"] == IRIS_CLASSES
    matrix = np.asarray(confusion["matrix"])
    assert matrix.shape == (3, 3)
    assert matrix.sum() == metrics["test_rows"]
    assert np.trace(matrix) / matrix.sum() == pytest.approx(metrics["accuracy"])
    assert matrix.sum(axis=1).tolist() == [r["support"] for r in metrics["per_class"].values()]
    png = (default_iris_bundle / bundle.CONFUSION_MATRIX_PNG).read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")


@pytest.mark.slow
def test_sparse_labels_decode_through_the_fitted_encoder(default_iris_bundle: Path) -> None:
    loaded, probabilities, labels, y_test = _decode(default_iris_bundle)
    assert loaded.metadata.encoding == "sparse"
    assert loaded.metadata.training["loss"] == "sparse_categorical_crossentropy"
    assert loaded.encoder.classes_.tolist() == loaded.metadata.classes == IRIS_CLASSES
    assert loaded.model.output_shape == (None, 3)
    assert probabilities.shape == (len(y_test), 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert set(labels.tolist()) <= set(loaded.metadata.classes)
    accuracy = float(np.mean(labels == y_test))
    assert accuracy == pytest.approx(loaded.metadata.metrics["accuracy"])
    assert accuracy >= 0.9


@pytest.mark.slow
def test_onehot_labels_decode_through_the_fitted_encoder(iris_onehot_bundle: Path) -> None:
    loaded, probabilities, labels, y_test = _decode(iris_onehot_bundle)
    assert loaded.metadata.encoding == "onehot"
    assert loaded.metadata.task == "multiclass"
    assert loaded.metadata.output_units == 3
    assert loaded.metadata.training["loss"] == "categorical_crossentropy"
    assert loaded.model.output_shape == (None, 3)
    assert _head_activation(loaded.model) == "softmax"
    assert loaded.encoder.classes_.tolist() == loaded.metadata.classes == IRIS_CLASSES
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert set(labels.tolist()) <= set(IRIS_CLASSES)
    accuracy = float(np.mean(labels == y_test))
    assert accuracy == pytest.approx(loaded.metadata.metrics["accuracy"])
    assert accuracy >= 0.8  # a short run, but far above chance (1/3)


# --- binary targets, string labels, extra and reordered columns --------------------------------


@pytest.mark.slow
def test_binary_target_gets_one_sigmoid_unit(binary_bundle: Path, binary_csv: Path) -> None:
    loaded, probabilities, labels, y_test = _decode(binary_bundle, binary_csv)
    metadata = loaded.metadata
    assert binary_bundle.parent.name == "binary"
    assert metadata.task == "binary"
    assert metadata.encoding == "sparse"
    assert metadata.output_units == 1
    assert metadata.classes == ["no", "yes"]
    assert metadata.training["loss"] == "binary_crossentropy"
    assert loaded.encoder.classes_.tolist() == ["no", "yes"]
    assert loaded.model.output_shape == (None, 1)
    assert _head_activation(loaded.model) == "sigmoid"
    assert ((probabilities >= 0) & (probabilities <= 1)).all()
    assert set(labels.tolist()) <= {"no", "yes"}
    accuracy = float(np.mean(labels == y_test))
    assert accuracy == pytest.approx(metadata.metrics["accuracy"])
    assert accuracy >= 0.9  # the classes are linearly separable


@pytest.mark.slow
def test_binary_bundle_features_follow_the_named_columns(binary_bundle: Path, binary_csv: Path):
    """The CSV lists note,b,label,a,c; --features a,b,c must pick by name, not by position."""
    from training import data

    metadata = bundle.read_metadata(binary_bundle)
    assert metadata.feature_names == ["a", "b", "c"]
    assert metadata.target == "label"
    frame, digest = data.read_csv(binary_csv)
    assert metadata.data_sha256 == digest
    parts = data.split(frame["label"].to_numpy(), 0.2, 42)
    train_rows = frame.iloc[parts.train]
    for stats in metadata.features:
        column = train_rows[stats.name].to_numpy(dtype=np.float32)
        assert stats.min == pytest.approx(float(column.min()))
        assert stats.max == pytest.approx(float(column.max()))
        assert stats.mean == pytest.approx(float(column.mean()), rel=1e-4, abs=1e-6)


@pytest.mark.slow
def test_binary_with_onehot_gets_two_softmax_units(tmp_path: Path, binary_csv: Path) -> None:
    published = train(
        tmp_path / "artifacts",
        data=binary_csv,
        target="label",
        features=["c", "a", "b"],
        encoding="onehot",
        epochs=5,
    )
    loaded, probabilities, labels, y_test = _decode(published, binary_csv)
    assert loaded.metadata.name == "binary"  # the CSV file's stem
    assert loaded.metadata.feature_names == ["c", "a", "b"]
    assert loaded.metadata.task == "binary"
    assert loaded.metadata.encoding == "onehot"
    assert loaded.metadata.output_units == 2
    assert loaded.metadata.training["loss"] == "categorical_crossentropy"
    assert loaded.model.output_shape == (None, 2)
    assert _head_activation(loaded.model) == "softmax"
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert set(labels.tolist()) <= {"no", "yes"}
    assert float(np.mean(labels == y_test)) == pytest.approx(loaded.metadata.metrics["accuracy"])


@pytest.mark.slow
def test_numeric_labels_decode_to_numbers(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(90, 2))
    label = np.digitize(x[:, 0], [-0.5, 0.5]) * 10 + 5  # 5, 15, 25
    path = tmp_path / "numbers.csv"
    path.write_text(
        "x0,x1,grade\n"
        + "".join(f"{a:.4f},{b:.4f},{g}\n" for (a, b), g in zip(x, label, strict=True))
    )
    published = train(tmp_path / "artifacts", data=path, target="grade", epochs=5)
    loaded, _, labels, y_test = _decode(published, path)
    assert loaded.metadata.classes == [5, 15, 25]
    assert all(type(c) is int for c in loaded.metadata.classes)
    assert loaded.encoder.classes_.tolist() == [5, 15, 25]
    assert set(labels.tolist()) <= {5, 15, 25}
    assert float(np.mean(labels == y_test)) == pytest.approx(loaded.metadata.metrics["accuracy"])


# --- versions and atomic publishing -------------------------------------------------------------


@pytest.mark.slow
def test_versions_increase_and_failed_runs_consume_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    artifacts = tmp_path / "artifacts"
    first = train(artifacts, epochs=3)
    assert first == artifacts / "iris" / "1"

    # Bad input: nothing is written at all.
    with pytest.raises(TrainingError, match="data file not found"):
        train(artifacts, data=tmp_path / "missing.csv", target="species", name="iris")

    # A failure after the model is built (here: the LiteRT check) removes the staging directory.
    from training import export

    def refuse(*_args: object, **_kwargs: object) -> float:
        raise TrainingError("LiteRT export differs from the Keras model")

    monkeypatch.setattr(export, "check_equivalence", refuse)
    with pytest.raises(TrainingError, match="LiteRT export differs"):
        train(artifacts, epochs=3)
    monkeypatch.undo()
    assert bundle.list_versions(artifacts / "iris") == [1]
    assert _leftovers(artifacts) == []

    second = train(artifacts, epochs=3)
    assert second == artifacts / "iris" / "2"
    assert bundle.list_versions(artifacts / "iris") == [1, 2]
    for version, directory in ((1, first), (2, second)):
        assert bundle.read_metadata(directory).version == version
        bundle.verify_manifest(directory)
    assert _leftovers(artifacts) == []


@pytest.mark.slow
def test_unexpected_crash_leaves_no_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from training import evaluate

    def crash(*_args: object, **_kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(evaluate, "save", crash)
    artifacts = tmp_path / "artifacts"
    with pytest.raises(OSError, match="No space left"):
        train(artifacts, epochs=3)
    assert bundle.list_versions(artifacts / "iris") == []
    assert _leftovers(artifacts) == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"name": "../escape"}, "model name '../escape'"),
        ({"name": ".hidden"}, "model name"),
        ({"test_size": 0.5}, "--test-size must be between 0 and 0.5"),
        ({"test_size": 0.0}, "--test-size"),
        ({"epochs": 0}, "--epochs must be at least 1"),
        ({"target": "colour"}, "target column 'colour' not found"),
        ({"features": ["petal_width", "stem"]}, "--features names unknown column 'stem'"),
        ({"threshold": "0.3"}, "--threshold applies to a binary target; this one has 3 classes"),
        ({"threshold": "0.5"}, "--threshold applies to a binary target"),
        ({"class_weight": "heavy"}, "--class-weight must be auto, balanced or none"),
    ],
)
def test_bad_options_write_nothing(tmp_path: Path, options: dict, message: str) -> None:
    artifacts = tmp_path / "artifacts"
    with pytest.raises(TrainingError, match=message):
        run(Options(artifacts=artifacts, quiet=True, **options))
    assert not artifacts.exists()


@pytest.mark.slow
def test_signed_bundle(tmp_path: Path) -> None:
    published = train(tmp_path / "artifacts", epochs=3, signing_key="training-key")
    document = json.loads((published / bundle.MANIFEST).read_text())
    assert document["signature"]["algorithm"] == "hmac-sha256"
    assert sorted(bundle.verify_manifest(published, signing_key="training-key")) == sorted(
        set(DESIGN_FILES) - {bundle.MANIFEST}
    )
    with pytest.raises(bundle.BundleError, match="signature does not match"):
        bundle.verify_manifest(published, signing_key="another-key")


@pytest.mark.slow
def test_progress_and_report_unless_quiet(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    published = run(Options(artifacts=tmp_path / "artifacts", epochs=3, quiet=False))
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[-1] == str(published)
    assert "training iris on 96 rows, 4 features (4 numeric), 3 classes" in out
    assert "Epoch 1/3" in out and "Epoch 3/3" in out
    assert "test accuracy" in out
    assert "confusion matrix (rows: true, columns: predicted)" in out
    assert "LiteRT export matches Keras" in out


@pytest.mark.slow
def test_quiet_run_prints_only_the_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    published = run(Options(artifacts=tmp_path / "artifacts", epochs=3, quiet=True))
    assert capsys.readouterr().out == f"{published}\n"


# --- LiteRT ----------------------------------------------------------------------------------------


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


@pytest.mark.slow
@pytest.mark.parametrize("which", ["iris_bundle", "iris_onehot_bundle", "binary_bundle"])
def test_litert_agrees_with_keras_on_the_test_split(
    which: str, request: pytest.FixtureRequest, binary_csv: Path
) -> None:
    directory: Path = request.getfixturevalue(which)
    loaded = load_bundle(directory)
    assert loaded.metadata.litert_max_abs_diff is not None
    assert 0.0 <= loaded.metadata.litert_max_abs_diff <= 1e-5

    held_out = held_out_rows(loaded.metadata, binary_csv if which == "binary_bundle" else None)
    x_test = held_out.encoded
    expected = np.asarray(loaded.model.predict(held_out.raw, verbose=0))
    actual = _litert(directory / bundle.MODEL_TFLITE, x_test)
    assert actual.shape == expected.shape == (len(x_test), loaded.metadata.output_units)
    assert float(np.max(np.abs(actual - expected))) <= 1e-5
    assert (actual.argmax(axis=1) == expected.argmax(axis=1)).all()
    # One row at a time (the service's usual batch) agrees as well.
    single = np.concatenate(
        [_litert(directory / bundle.MODEL_TFLITE, x_test[i : i + 1]) for i in range(3)]
    )
    np.testing.assert_allclose(single, expected[:3], atol=1e-5, rtol=0)


# --- reproducibility -------------------------------------------------------------------------------


@pytest.mark.slow
def test_same_seed_gives_the_same_model(tmp_path: Path) -> None:
    first = train(tmp_path / "a", seed=7, epochs=5)
    second = train(tmp_path / "b", seed=7, epochs=5)
    other = train(tmp_path / "c", seed=8, epochs=5)

    assert _metrics(first) == _metrics(second)
    assert (first / bundle.CONFUSION_MATRIX_PNG).read_bytes() == (
        second / bundle.CONFUSION_MATRIX_PNG
    ).read_bytes()
    meta_a, meta_b = bundle.read_metadata(first), bundle.read_metadata(second)
    assert meta_a.metrics == meta_b.metrics
    assert meta_a.features == meta_b.features
    assert meta_a.training == meta_b.training

    a, b, c = load_bundle(first), load_bundle(second), load_bundle(other)
    weights_a, weights_b = a.model.get_weights(), b.model.get_weights()
    assert len(weights_a) == len(weights_b)
    for wa, wb in zip(weights_a, weights_b, strict=True):
        np.testing.assert_array_equal(wa, wb)
    held_out = held_out_rows(a.metadata)
    x = held_out.encoded
    np.testing.assert_array_equal(
        a.model.predict(held_out.raw, verbose=0), b.model.predict(held_out.raw, verbose=0)
    )
    np.testing.assert_array_equal(
        _litert(first / bundle.MODEL_TFLITE, x), _litert(second / bundle.MODEL_TFLITE, x)
    )
    # The seed matters: another seed trains other weights.
    assert not all(
        np.array_equal(wa, wc) for wa, wc in zip(weights_a, c.model.get_weights(), strict=True)
    )


def test_binary_csv_fixture_is_the_session_data(tmp_path: Path, binary_csv: Path) -> None:
    """held_out_rows relies on make_binary_csv being deterministic."""
    again = make_binary_csv(tmp_path / "again.csv")
    assert again.read_bytes() == binary_csv.read_bytes()
