"""Typed features (numbers, text, true/false, blanks) through every protocol, on both runtimes.

The bundle is the session ``typed_bundle``, trained on a churn-like table. Every answer must be
what ``model.keras`` gives when called on the raw values (a dict of columns, as a Keras user
calls it), within 1e-5; blanks and unseen categories are answered with a warning naming the
feature; a blank where training saw none, or a value of the wrong kind, is refused naming it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

import bundle
from tests.service.reference import answered, answered_csv, copy_bundle, reference
from tests.service.typed_support import (
    CLASSES,
    TOLERANCE,
    TYPED_FEATURES,
    TYPED_ROWS,
    columns,
    csv_body,
    flagged,
    records,
    serve,
    triton_request,
    triton_result,
    v2_json_body,
    v2_outputs,
    warned_features,
)

pytestmark = pytest.mark.slow  # every test here serves a freshly trained bundle

CSV = {"content-type": "text/csv"}
INFER = "/v2/models/churn/infer"
TF = "/v1/models/churn"


@pytest.fixture
def typed_artifacts(tmp_path: Path, typed_bundle: Path) -> Path:
    """A private artifacts directory holding a copy of the typed bundle as ``churn/1``."""
    metadata = bundle.read_metadata(typed_bundle)
    assert metadata.feature_names == TYPED_FEATURES  # the rows below are in this order
    assert [f.kind for f in metadata.features] == [
        "numeric",
        "categorical",
        "categorical",
        "boolean",
        "numeric",
    ]
    assert [f.nullable for f in metadata.features] == [True, True, False, True, False]
    copy_bundle(typed_bundle, tmp_path / "artifacts", "churn")
    return tmp_path / "artifacts"


@pytest.fixture
def typed(typed_artifacts: Path, runtime: str) -> Iterator[TestClient]:
    with serve(typed_artifacts, "churn", runtime) as client:
        yield client


def assert_matches_keras(
    labels: list[Any], probabilities: np.ndarray, version_dir: Path, rows: list[list[Any]]
) -> None:
    expected_labels, expected = reference(version_dir, rows)
    assert [str(label) for label in labels] == expected_labels
    np.testing.assert_allclose(probabilities, expected, rtol=0, atol=TOLERANCE)


# -- every protocol answers what model.keras answers ------------------------------------------
@pytest.mark.parametrize("count", [3, len(TYPED_ROWS)], ids=["few rows", "many rows"])
def test_predict_json_rows_and_records_match_keras(
    typed: TestClient, typed_bundle: Path, count: int
) -> None:
    rows = TYPED_ROWS[:count]
    metadata = bundle.read_metadata(typed_bundle)
    for instances in (rows, records(rows)):
        response = typed.post("/predict", json={"instances": instances})
        assert response.status_code == 200, response.text
        predictions = response.json()["predictions"]
        labels, probabilities = answered(predictions, CLASSES)
        assert_matches_keras(labels, probabilities, typed_bundle, rows)
        warned = [warned_features(p["warnings"]) for p in predictions]
        assert warned == [flagged(metadata, row) for row in rows]


def test_predict_csv_in_json_and_csv_out_match_keras(typed: TestClient, typed_bundle: Path) -> None:
    metadata = bundle.read_metadata(typed_bundle)
    body = csv_body(TYPED_ROWS)  # empty cells for blanks, true/false, header in another order
    as_json = typed.post("/predict", content=body, headers=CSV)
    assert as_json.status_code == 200, as_json.text
    labels, probabilities = answered(as_json.json()["predictions"], CLASSES)
    assert_matches_keras(labels, probabilities, typed_bundle, TYPED_ROWS)

    as_csv = typed.post("/predict", content=body, headers={**CSV, "accept": "text/csv"})
    assert as_csv.status_code == 200, as_csv.text
    assert as_csv.headers["content-type"].startswith("text/csv")
    labels, probabilities, warnings = answered_csv(as_csv.text, CLASSES)
    assert_matches_keras(labels, probabilities, typed_bundle, TYPED_ROWS)
    assert warnings == [";".join(flagged(metadata, row)) for row in TYPED_ROWS]
    # JSON in, CSV out: the same answer.
    from_json = typed.post(
        "/predict", json={"instances": TYPED_ROWS}, headers={"accept": "text/csv"}
    )
    assert from_json.text == as_csv.text


def test_v2_json_data_one_input_per_feature_matches_keras(
    typed: TestClient, typed_bundle: Path
) -> None:
    response = typed.post(INFER, json=v2_json_body(TYPED_ROWS))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["model_name"], answer["model_version"], answer["id"]) == (
        "churn",
        "1",
        "typed-1",
    )
    labels, probabilities = v2_outputs(answer)
    assert_matches_keras(labels, probabilities, typed_bundle, TYPED_ROWS)


@pytest.mark.parametrize("member_datatype", ["FP32", "BOOL"])
def test_v2_binary_data_from_tritonclient_matches_keras(
    typed: TestClient, typed_bundle: Path, member_datatype: str
) -> None:
    rows = TYPED_ROWS
    if member_datatype == "BOOL":  # BOOL data has no blank: the rows with a member value
        rows = [row for row in TYPED_ROWS if row[3] is not None]
    body, headers = triton_request(rows, member_datatype)
    response = typed.post(INFER, content=body, headers=headers)
    assert response.status_code == 200, response.text
    result = triton_result(response.content, response.headers)
    assert result.get_response()["id"] == "typed-binary"
    labels = [v.decode() for v in result.as_numpy("label").tolist()]
    probabilities = result.as_numpy("probabilities")
    assert probabilities.dtype == np.float32 and probabilities.shape == (len(rows), 2)
    assert_matches_keras(labels, probabilities, typed_bundle, rows)


def test_tf_serving_instances_columns_and_classify_match_keras(
    typed: TestClient, typed_bundle: Path
) -> None:
    rows = TYPED_ROWS
    objects = typed.post(f"{TF}:predict", json={"instances": records(rows)})
    assert objects.status_code == 200, objects.text
    predictions = objects.json()["predictions"]
    assert_matches_keras(
        [p["label"] for p in predictions],
        np.array([p["probabilities"] for p in predictions]),
        typed_bundle,
        rows,
    )

    columnar = typed.post(f"{TF}:predict", json={"inputs": columns(rows)})
    assert columnar.status_code == 200, columnar.text
    outputs = columnar.json()["outputs"]
    assert_matches_keras(outputs["label"], np.array(outputs["probabilities"]), typed_bundle, rows)

    classify = typed.post(f"{TF}:classify", json={"examples": records(rows)})
    assert classify.status_code == 200, classify.text
    result = classify.json()["result"]
    assert all([pair[0] for pair in row] == CLASSES for row in result)
    scores = np.array([[pair[1] for pair in row] for row in result])
    np.testing.assert_allclose(scores, reference(typed_bundle, rows)[1], rtol=0, atol=TOLERANCE)

    # A feature given once for every example in context, as tf.Example lists ([v]).
    shared = [[*row[:2], "north", *row[3:]] for row in rows]
    examples = [{k: [v] for k, v in r.items() if k != "region"} for r in records(shared)]
    in_context = typed.post(
        f"{TF}:classify", json={"examples": examples, "context": {"region": ["north"]}}
    )
    assert in_context.status_code == 200, in_context.text
    scores = np.array([[pair[1] for pair in row] for row in in_context.json()["result"]])
    np.testing.assert_allclose(scores, reference(typed_bundle, shared)[1], rtol=0, atol=TOLERANCE)


# -- warnings, refusals -----------------------------------------------------------------------
def test_blanks_and_unseen_categories_are_answered_with_warnings(typed: TestClient) -> None:
    row = [None, "platinum", "mars", None, 42.0]
    answer = typed.post("/predict", json={"instances": [row]})
    assert answer.status_code == 200, answer.text
    warnings = answer.json()["predictions"][0]["warnings"]
    assert "age is blank" in warnings
    assert "member is blank" in warnings
    assert "plan='platinum' is a category not seen in training" in warnings
    assert "region='mars' is a category not seen in training" in warnings
    as_csv = typed.post("/predict", content=csv_body([row]), headers={**CSV, "accept": "text/csv"})
    assert as_csv.status_code == 200, as_csv.text
    assert answered_csv(as_csv.text, CLASSES)[2] == ["age;plan;region;member"]


# (feature, value) a request may not carry; the message must name the feature.
BLANK_NOT_IN_TRAINING = [("region", None), ("monthly_spend", None)]
WRONG_KIND = [
    ("age", "forty"),  # text for a number
    ("monthly_spend", True),  # a boolean for a number
    ("plan", {"name": "plus"}),  # an object for a category
    ("region", ["west", "east"]),  # an array for a category
    ("member", "maybe"),  # a text that is no boolean
    ("member", 2),  # a number that is no boolean
]


def with_value(feature: str, value: Any) -> list[Any]:
    row = list(TYPED_ROWS[0])
    row[TYPED_FEATURES.index(feature)] = value
    return row


def v2_body(row: list[Any]) -> dict[str, Any]:
    """One row as per-feature inputs with each kind's declared datatype."""
    declared = {"numeric": "FP32", "categorical": "BYTES", "boolean": "BOOL"}
    kinds = ["numeric", "categorical", "categorical", "boolean", "numeric"]
    return {
        "inputs": [
            {"name": name, "datatype": declared[kind], "shape": [1], "data": [value]}
            for name, kind, value in zip(TYPED_FEATURES, kinds, row, strict=True)
        ]
    }


def refusals(client: TestClient, feature: str, value: Any) -> dict[str, Any]:
    """The answer of every route to one row carrying ``value`` for ``feature``."""
    row = with_value(feature, value)
    record = records([row])[0]
    answers = {
        "predict rows": client.post("/predict", json={"instances": [row]}),
        "predict records": client.post("/predict", json={"instances": [record]}),
        "v2": client.post(INFER, json=v2_body(row)),
        "tf instances": client.post(f"{TF}:predict", json={"instances": [record]}),
        "tf columns": client.post(f"{TF}:predict", json={"inputs": columns([row])}),
        "tf classify": client.post(f"{TF}:classify", json={"examples": [record]}),
    }
    if not isinstance(value, dict | list) and value is not True:
        answers["predict csv"] = client.post("/predict", content=csv_body([row]), headers=CSV)
    return answers


@pytest.mark.parametrize(
    ("feature", "value"),
    BLANK_NOT_IN_TRAINING + WRONG_KIND,
    ids=[f"{f}={v!r}" for f, v in BLANK_NOT_IN_TRAINING + WRONG_KIND],
)
def test_refusals_name_the_feature_with_each_protocols_status(
    typed: TestClient, feature: str, value: Any
) -> None:
    for route, answer in refusals(typed, feature, value).items():
        expected = 422 if route.startswith("predict") else 400  # V2, TF Serving: 400
        assert answer.status_code == expected, (route, answer.text)
        error = answer.json()["error"]
        assert feature in error, (route, error)
        if isinstance(value, str):
            assert value not in error, (route, error)  # never echoed


@pytest.mark.parametrize(("feature", "value"), BLANK_NOT_IN_TRAINING)
def test_missing_values_impute_answers_a_blank_with_a_warning(
    typed_artifacts: Path, typed_bundle: Path, runtime: str, feature: str, value: Any
) -> None:
    row = with_value(feature, value)
    with serve(typed_artifacts, "churn", runtime, missing_values="impute") as client:
        answers = refusals(client, feature, value)
        assert {route: a.status_code for route, a in answers.items()} == dict.fromkeys(answers, 200)
        prediction = answers["predict rows"].json()["predictions"][0]
        assert any(w.startswith(f"{feature} is blank") for w in prediction["warnings"])
        labels, probabilities = answered([prediction], CLASSES)
        # model.keras imputes the same way: the median for NaN, the unseen bucket for "".
        assert_matches_keras(labels, probabilities, typed_bundle, [row])
        as_csv = client.post(
            "/predict", content=csv_body([row]), headers={**CSV, "accept": "text/csv"}
        )
        assert answered_csv(as_csv.text, CLASSES)[2] == [feature]
        assert client.get("/model").json()["missing_values"] == "impute"


def test_v2_single_features_tensor_is_refused_for_a_typed_model(typed: TestClient) -> None:
    body = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 5], "data": [1] * 5}]}
    answer = typed.post(INFER, json=body)
    assert answer.status_code == 400
    assert "one input per feature" in answer.json()["error"]


ODD_VALUES: list[Any] = [
    None,
    "",
    " ",
    "x",
    "nan",
    "true",
    "1",
    1,
    2,
    1.5,
    True,
    {},
    {"a": 1},
    [],
    ["x"],
    [[1]],
    10**400,
    1e300,
    "1e400",
    "\u0665",
]


def test_odd_values_in_any_feature_never_answer_500(typed: TestClient) -> None:
    """Every route, every feature, values of every JSON kind: 200, or a 4xx naming the feature."""
    for feature in TYPED_FEATURES:
        for value in ODD_VALUES:
            answers = refusals(typed, feature, value)
            row = with_value(feature, value)
            for datatype in ("FP16", "FP64", "INT64", "BYTES", "BOOL"):
                body = v2_body(row)
                body["inputs"][TYPED_FEATURES.index(feature)]["datatype"] = datatype
                answers[f"v2 {datatype}"] = typed.post(INFER, json=body)
            for route, answer in answers.items():
                case = (feature, value, route, answer.status_code, answer.text[:200])
                assert answer.status_code in (200, 400, 422), case
                if answer.status_code != 200:
                    assert feature in answer.json()["error"], case
                elif isinstance(value, dict):
                    raise AssertionError(f"an object was answered: {case}")
