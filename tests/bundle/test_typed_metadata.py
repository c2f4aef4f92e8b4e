"""metadata.json format 2 (typed features, threshold, columns left out) and format 1 still read."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

import bundle
from bundle import BundleError, FeatureStats, Metadata, read_metadata, write_metadata
from tests.conftest import FORMAT1_BUNDLE


def typed_features() -> list[FeatureStats]:
    return [
        FeatureStats(name="age", min=18, max=90, mean=45.5, median=44, nullable=True, missing=3),
        FeatureStats(name="plan", kind="categorical", vocabulary=["", "basic", "pro"]),
        FeatureStats(
            name="member",
            kind="boolean",
            min=0,
            max=1,
            mean=0.4,
            median=0,
            vocabulary=["false", "true"],
        ),
    ]


def make_typed(**overrides: object) -> Metadata:
    fields: dict[str, object] = {
        "name": "churn",
        "created_at": datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
        "features": typed_features(),
        "target": "churned",
        "classes": ["no", "yes"],
        "task": "binary",
        "encoding": "sparse",
        "output_units": 1,
        "data_sha256": "0" * 64,
    }
    fields.update(overrides)
    return Metadata(**fields)  # type: ignore[arg-type]


# --- format 1, as the previous code published it -------------------------------------------------


def test_format1_fixture_still_validates() -> None:
    metadata = read_metadata(FORMAT1_BUNDLE)
    assert metadata.format_version == 1
    assert metadata.feature_names == [
        "sepal_length",
        "sepal_width",
        "petal_length",
        "petal_width",
    ]
    assert all(f.kind == "numeric" and not f.nullable for f in metadata.features)
    assert all(f.median is None and f.vocabulary is None for f in metadata.features)
    assert metadata.all_numeric
    assert metadata.threshold is None
    assert metadata.columns_left_out == {}
    # Without a median, a blank would be imputed with the mean.
    assert metadata.features[0].fill == metadata.features[0].mean
    assert metadata.reference is not None
    assert all(isinstance(v, float) for row in metadata.reference.inputs for v in row)


def test_format1_fixture_round_trips_unchanged(tmp_path: Path) -> None:
    shutil.copy(FORMAT1_BUNDLE / bundle.METADATA, tmp_path / bundle.METADATA)
    metadata = read_metadata(tmp_path)
    write_metadata(tmp_path, metadata)
    assert read_metadata(tmp_path) == metadata
    assert json.loads((tmp_path / bundle.METADATA).read_text())["format_version"] == 1


@pytest.mark.parametrize(
    "change",
    [
        {"kind": "categorical", "vocabulary": ["a", "b"], "min": None, "max": None, "mean": None},
        {"nullable": True},
    ],
    ids=["categorical", "nullable"],
)
def test_format1_with_typed_features_is_refused(tmp_path: Path, change: dict) -> None:
    document = json.loads((FORMAT1_BUNDLE / bundle.METADATA).read_text())
    document["features"][0].update(change)
    (tmp_path / bundle.METADATA).write_text(json.dumps(document))
    with pytest.raises(BundleError, match="format 1 has numeric features without blanks only"):
        read_metadata(tmp_path)


# --- format 2 ------------------------------------------------------------------------------------


def test_format2_round_trip(tmp_path: Path) -> None:
    metadata = make_typed(
        threshold=0.35,
        columns_left_out={"id": "its integers just count the rows", "name": "--exclude"},
        training={"class_weight": "balanced", "rows_dropped_blank_target": 4},
    )
    assert metadata.format_version == bundle.FORMAT_VERSION == 2
    assert not metadata.all_numeric
    write_metadata(tmp_path, metadata)
    loaded = read_metadata(tmp_path)
    assert loaded == metadata
    assert [f.kind for f in loaded.features] == ["numeric", "categorical", "boolean"]
    assert loaded.features[0].fill == 44  # the median, not the mean
    assert loaded.features[1].vocabulary == ["", "basic", "pro"]
    assert loaded.threshold == 0.35


def test_all_numeric_needs_no_blanks() -> None:
    plain = FeatureStats(name="a", min=0, max=1, mean=0.5)
    assert make_typed(features=[plain]).all_numeric
    nullable = plain.model_copy(update={"nullable": True})
    assert not make_typed(features=[nullable]).all_numeric


@pytest.mark.parametrize(
    ("feature", "message"),
    [
        ({"name": "plan", "kind": "categorical"}, "categorical feature 'plan' has no vocabulary"),
        (
            {"name": "plan", "kind": "categorical", "vocabulary": []},
            "categorical feature 'plan' has no vocabulary",
        ),
        (
            {"name": "plan", "kind": "categorical", "vocabulary": ["a", "b", "a"]},
            "vocabulary of 'plan' repeats a category",
        ),
        ({"name": "age", "min": 0, "max": 1}, "numeric feature 'age' needs min, max and mean"),
        (
            {"name": "m", "kind": "boolean", "min": 0, "max": 1, "mean": 0.5, "vocabulary": ["n"]},
            "boolean feature 'm' has vocabulary false, true",
        ),
        ({"name": "x", "kind": "text", "min": 0, "max": 1, "mean": 0}, "Input should be"),
        ({"name": "x", "min": 0, "max": 1, "mean": 0, "missing": -1}, "greater than or equal"),
        ({"name": "", "min": 0, "max": 1, "mean": 0}, "at least 1 character"),
    ],
    ids=[
        "no-vocabulary",
        "empty-vocabulary",
        "repeated-category",
        "numeric-no-mean",
        "boolean-vocabulary",
        "unknown-kind",
        "negative-missing",
        "empty-name",
    ],
)
def test_invalid_features_are_refused(feature: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FeatureStats(**feature)


def test_invalid_feature_in_a_file_names_the_fault(tmp_path: Path) -> None:
    document = json.loads(make_typed().model_dump_json())
    document["features"][1]["vocabulary"] = ["basic", "basic"]
    (tmp_path / bundle.METADATA).write_text(json.dumps(document))
    with pytest.raises(BundleError, match=r"^metadata\.json is invalid: .*repeats a category"):
        read_metadata(tmp_path)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"classes": ["a", "b", "c"], "task": "multiclass", "output_units": 3, "threshold": 0.4},
            "a threshold applies to binary targets only",
        ),
        ({"threshold": 0.0}, "greater than 0"),
        ({"threshold": 1.0}, "less than 1"),
        ({"format_version": 0}, "format_version 0 is not 1 or 2"),
    ],
    ids=["threshold-multiclass", "threshold-zero", "threshold-one", "format-0"],
)
def test_invalid_format2_metadata_is_refused(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_typed(**overrides)


def test_threshold_on_multiclass_in_a_file_is_refused(tmp_path: Path) -> None:
    document = json.loads(make_typed().model_dump_json())
    document.update(classes=["a", "b", "c"], task="multiclass", output_units=3, threshold=0.5)
    (tmp_path / bundle.METADATA).write_text(json.dumps(document))
    with pytest.raises(BundleError, match="threshold applies to binary targets only"):
        read_metadata(tmp_path)


def test_reference_rows_carry_raw_values() -> None:
    reference = bundle.Reference(
        inputs=[[44.0, "basic", True], [None, "\x00unseen", None]],
        probabilities=[[0.2, 0.8], [0.6, 0.4]],
    )
    metadata = make_typed(reference=reference)
    loaded = Metadata.model_validate_json(metadata.model_dump_json())
    assert loaded.reference is not None
    assert loaded.reference.inputs == [[44.0, "basic", True], [None, "\x00unseen", None]]
    assert type(loaded.reference.inputs[0][2]) is bool
    with pytest.raises(ValueError, match="differ in length"):
        bundle.Reference(inputs=[[1.0]], probabilities=[[0.5, 0.5], [0.1, 0.9]])
