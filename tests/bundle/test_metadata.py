"""metadata.json: schema, consistency rules, round trip, and what training writes into it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

import bundle
from bundle import (
    FORMAT_VERSION,
    BundleError,
    FeatureStats,
    Metadata,
    read_metadata,
    write_metadata,
)


def make_metadata(**overrides: object) -> Metadata:
    fields: dict[str, object] = {
        "name": "iris",
        "created_at": datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
        "features": [
            FeatureStats(name="a", min=0.0, max=2.0, mean=1.0),
            FeatureStats(name="b", min=-1.0, max=1.0, mean=0.0),
        ],
        "target": "label",
        "classes": ["x", "y", "z"],
        "task": "multiclass",
        "encoding": "sparse",
        "output_units": 3,
        "data_sha256": "0" * 64,
    }
    fields.update(overrides)
    return Metadata(**fields)  # type: ignore[arg-type]


def test_defaults() -> None:
    metadata = make_metadata()
    assert metadata.format_version == FORMAT_VERSION == 2
    assert metadata.version is None
    assert metadata.metrics == {}
    assert metadata.litert_max_abs_diff is None
    assert metadata.feature_names == ["a", "b"]


def test_write_then_read_round_trip(tmp_path: Path) -> None:
    metadata = make_metadata(
        version=4,
        metrics={"accuracy": 0.97, "macro_f1": 0.96},
        litert_max_abs_diff=1.2e-7,
        library_versions={"keras": "3.15.1"},
        training={"seed": 42, "test_size": 0.2, "loss": "sparse_categorical_crossentropy"},
    )
    write_metadata(tmp_path, metadata)
    assert (tmp_path / bundle.METADATA).read_text().endswith("\n")
    loaded = read_metadata(tmp_path)
    assert loaded == metadata
    assert loaded.created_at.tzinfo is not None


@pytest.mark.parametrize(
    "classes",
    [["no", "yes"], [0, 1], [False, True], [0.5, 1.5], ["1", 1], [-3, 10]],
    ids=["strings", "ints", "bools", "floats", "str-and-int", "negative"],
)
def test_class_labels_keep_their_json_types(tmp_path: Path, classes: list) -> None:
    write_metadata(tmp_path, make_metadata(classes=classes, task="binary", output_units=1))
    loaded = read_metadata(tmp_path).classes
    assert loaded == classes
    assert [type(c) for c in loaded] == [type(c) for c in classes]


@pytest.mark.parametrize(
    ("classes", "task", "encoding", "units"),
    [
        (["no", "yes"], "binary", "sparse", 1),
        (["no", "yes"], "binary", "onehot", 2),
        (["a", "b", "c"], "multiclass", "sparse", 3),
        (["a", "b", "c"], "multiclass", "onehot", 3),
    ],
)
def test_output_units_that_fit(classes: list, task: str, encoding: str, units: int) -> None:
    metadata = make_metadata(classes=classes, task=task, encoding=encoding, output_units=units)
    assert metadata.output_units == units


@pytest.mark.parametrize(
    ("classes", "task", "encoding", "units"),
    [
        (["no", "yes"], "binary", "sparse", 2),
        (["no", "yes"], "binary", "onehot", 1),
        (["a", "b", "c"], "multiclass", "sparse", 1),
        (["a", "b", "c"], "multiclass", "onehot", 4),
    ],
)
def test_output_units_that_do_not_fit(classes: list, task: str, encoding: str, units: int) -> None:
    with pytest.raises(ValueError, match=f"output_units {units} does not fit"):
        make_metadata(classes=classes, task=task, encoding=encoding, output_units=units)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"format_version": 3}, "format_version 3 is not 1 or 2"),
        ({"classes": ["x", "x", "y"]}, "classes repeat"),
        ({"classes": ["only"], "output_units": 1}, "at least 2"),
        ({"features": []}, "at least 1"),
        (
            {"features": [FeatureStats(name="a", min=0, max=1, mean=0)] * 2},
            "feature names repeat",
        ),
        ({"task": "regression"}, "binary"),
        ({"encoding": "ordinal"}, "sparse"),
        ({"output_units": 0}, "greater than or equal to 1"),
        ({"surprise": 1}, "Extra inputs are not permitted"),
    ],
    ids=[
        "format",
        "repeat",
        "one-class",
        "no-features",
        "dup-feature",
        "task",
        "encoding",
        "units",
        "extra",
    ],
)
def test_invalid_metadata_is_rejected(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_metadata(**overrides)


def test_read_missing(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"^metadata\.json is missing$"):
        read_metadata(tmp_path)


@pytest.mark.parametrize("content", [b"", b"{oops", b"\xff\xfe\xfa"], ids=["empty", "json", "utf8"])
def test_read_not_json(tmp_path: Path, content: bytes) -> None:
    (tmp_path / bundle.METADATA).write_bytes(content)
    with pytest.raises(BundleError, match=r"^metadata\.json is invalid: not valid JSON$"):
        read_metadata(tmp_path)


def test_read_schema_violation_names_the_fault(tmp_path: Path) -> None:
    document = json.loads(make_metadata().model_dump_json())
    document["output_units"] = 7
    (tmp_path / bundle.METADATA).write_text(json.dumps(document))
    with pytest.raises(BundleError, match=r"^metadata\.json is invalid: .*output_units 7"):
        read_metadata(tmp_path)


@pytest.mark.parametrize("field", ["name", "classes", "features", "data_sha256", "created_at"])
def test_read_missing_required_field(tmp_path: Path, field: str) -> None:
    document = json.loads(make_metadata().model_dump_json())
    del document[field]
    (tmp_path / bundle.METADATA).write_text(json.dumps(document))
    with pytest.raises(BundleError, match=r"metadata\.json is invalid: Field required"):
        read_metadata(tmp_path)


# --- what training writes ---------------------------------------------------------------


@pytest.mark.slow
def test_iris_bundle_metadata(iris_bundle: Path) -> None:
    from training import data

    metadata = read_metadata(iris_bundle)
    assert metadata.format_version == FORMAT_VERSION
    assert metadata.name == "iris"
    assert metadata.version == int(iris_bundle.name) == 1
    assert metadata.feature_names == data.IRIS_FEATURES
    assert metadata.target == data.IRIS_TARGET
    assert metadata.classes == ["setosa", "versicolor", "virginica"]
    assert metadata.task == "multiclass"
    assert metadata.encoding == "sparse"
    assert metadata.output_units == 3
    assert datetime.now(UTC) - metadata.created_at < timedelta(hours=1)
    assert set(metadata.metrics) == {"accuracy", "baseline_accuracy", "macro_f1"}
    assert metadata.metrics["baseline_accuracy"] == pytest.approx(10 / 30)  # 10 of each class
    assert [f.kind for f in metadata.features] == ["numeric"] * 4
    assert metadata.all_numeric
    assert metadata.threshold is None  # multiclass
    assert metadata.columns_left_out == {}
    assert {"python", "tensorflow", "keras", "scikit-learn", "numpy"} <= set(
        metadata.library_versions
    )
    assert metadata.training["seed"] == 42
    assert metadata.training["loss"] == "sparse_categorical_crossentropy"
    assert metadata.litert_max_abs_diff is not None
    assert 0.0 <= metadata.litert_max_abs_diff <= 1e-5


@pytest.mark.slow
def test_iris_bundle_records_data_fingerprint_and_training_split_statistics(
    iris_bundle: Path,
) -> None:
    from training import data

    metadata = read_metadata(iris_bundle)
    dataset = data.load_dataset(None, None, None)
    assert metadata.data_sha256 == dataset.sha256
    parts = data.split(dataset.y, metadata.training["test_size"], metadata.training["seed"])
    assert metadata.training["train_rows"] == len(parts.train)
    assert metadata.training["validation_rows"] == len(parts.validation)
    assert metadata.training["test_rows"] == len(parts.test)
    x_train = np.stack([c.values for c in dataset.columns], axis=1)[parts.train]
    for i, stats in enumerate(metadata.features):
        assert stats.median == pytest.approx(float(np.median(x_train[:, i])))
        assert (stats.nullable, stats.missing, stats.vocabulary) == (False, 0, None)
        assert stats.min <= stats.mean <= stats.max
        assert stats.min == pytest.approx(float(x_train[:, i].min()))
        assert stats.max == pytest.approx(float(x_train[:, i].max()))
        assert stats.mean == pytest.approx(float(np.mean(x_train[:, i])), rel=1e-5)


def test_a_deeply_nested_metadata_file_is_refused_with_a_reason(tmp_path: Path) -> None:
    (tmp_path / bundle.METADATA).write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(bundle.BundleError, match="nested too deeply"):
        bundle.read_metadata(tmp_path)
