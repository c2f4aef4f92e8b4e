"""``POST /predict`` with the real tiny bundles, on both runtimes: every input and output format.

The service's labels must be what ``model.keras`` + ``label_encoder.joblib`` give outside it, and
its probabilities within 1e-5 of theirs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

import bundle
from service.app import create_app
from service.settings import Settings
from tests.service.reference import (
    BINARY_FEATURES,
    IRIS_FEATURES,
    OUT_OF_RANGE_ROW,
    answered,
    answered_csv,
    binary_rows,
    copy_bundle,
    csv_body,
    iris_rows,
    records,
    reference,
)

pytestmark = pytest.mark.slow  # every test here serves a freshly trained bundle

CLASSES = ["setosa", "versicolor", "virginica"]
JSON = {"content-type": "application/json"}
CSV = {"content-type": "text/csv"}
TOLERANCE = 1e-5


def assert_matches_reference(
    labels: list, probabilities: np.ndarray, version_dir: Path, rows: list[list[float]]
) -> None:
    expected_labels, expected = reference(version_dir, rows)
    assert labels == expected_labels
    np.testing.assert_allclose(probabilities, expected, rtol=0, atol=TOLERANCE)


def expected_warnings(version_dir: Path, rows: list[list[float]]) -> list[str]:
    """The CSV warnings column: features outside the training split's range, from metadata."""
    features = bundle.read_metadata(version_dir).features
    return [
        ";".join(
            f.name
            for f, v in zip(features, row, strict=True)
            if not f.min <= np.float32(v) <= f.max
        )
        for row in rows
    ]


def test_json_rows_match_keras_and_encoder(client: TestClient, iris_bundle: Path) -> None:
    rows = iris_rows()
    response = client.post("/predict", json={"instances": rows})
    assert response.status_code == 200
    body = response.json()
    assert (body["model"], body["version"]) == ("iris", 1)
    assert len(body["predictions"]) == len(rows)
    for prediction in body["predictions"]:
        assert list(prediction["probabilities"]) == CLASSES  # every class, in encoder order
        assert sum(prediction["probabilities"].values()) == pytest.approx(1, abs=1e-5)
    labels, probabilities = answered(body["predictions"], CLASSES)
    assert_matches_reference(labels, probabilities, iris_bundle, rows)
    assert set(labels) == set(CLASSES)


def test_json_records_match_keras_and_encoder(client: TestClient, iris_bundle: Path) -> None:
    rows = iris_rows()
    response = client.post("/predict", json={"instances": records(rows, IRIS_FEATURES)})
    assert response.status_code == 200
    labels, probabilities = answered(response.json()["predictions"], CLASSES)
    assert_matches_reference(labels, probabilities, iris_bundle, rows)


def test_csv_with_header_in_another_order_matches(client: TestClient, iris_bundle: Path) -> None:
    rows = iris_rows()
    order = ["petal_width", "sepal_length", "petal_length", "sepal_width"]
    response = client.post("/predict", content=csv_body(rows, IRIS_FEATURES, order), headers=CSV)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    labels, probabilities = answered(response.json()["predictions"], CLASSES)
    assert_matches_reference(labels, probabilities, iris_bundle, rows)


def test_rows_records_and_csv_give_the_same_answer(client: TestClient) -> None:
    rows = iris_rows()[45:55]
    by_rows = client.post("/predict", json={"instances": rows}).json()
    by_records = client.post("/predict", json={"instances": records(rows, IRIS_FEATURES)}).json()
    by_csv = client.post(
        "/predict", content=csv_body(rows, IRIS_FEATURES, IRIS_FEATURES), headers=CSV
    ).json()
    assert by_rows == by_records == by_csv


def test_csv_in_csv_out(client: TestClient, iris_bundle: Path) -> None:
    rows = iris_rows()
    order = ["sepal_width", "petal_width", "petal_length", "sepal_length"]
    response = client.post(
        "/predict",
        content=csv_body(rows, IRIS_FEATURES, order),
        headers={**CSV, "accept": "text/csv"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["x-model-version"] == "1"
    assert response.text.splitlines()[0] == (
        "label,prob_setosa,prob_versicolor,prob_virginica,warnings"
    )
    labels, probabilities, warnings = answered_csv(response.text, CLASSES)
    assert_matches_reference(labels, probabilities, iris_bundle, rows)
    assert warnings == expected_warnings(iris_bundle, rows)
    assert warnings[-1] == "sepal_length;petal_length"  # the out-of-range row comes last


def test_json_in_csv_out(client: TestClient, iris_bundle: Path) -> None:
    rows = iris_rows()[:20]
    response = client.post("/predict", json={"instances": rows}, headers={"accept": "text/csv"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    labels, probabilities, _ = answered_csv(response.text, CLASSES)
    assert_matches_reference(labels, probabilities, iris_bundle, rows)


def test_accepting_json_and_csv_answers_json(client: TestClient) -> None:
    response = client.post(
        "/predict",
        json={"instances": [OUT_OF_RANGE_ROW]},
        headers={"accept": "application/json, text/csv"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json()["predictions"][0]["label"] in CLASSES


@pytest.mark.parametrize("k", [1, 2, 3])
def test_top_k_lists_the_k_most_probable_classes(client: TestClient, k: int) -> None:
    rows = iris_rows()[::10]
    response = client.post("/predict", json={"instances": rows, "top_k": k})
    assert response.status_code == 200
    for prediction in response.json()["predictions"]:
        top = prediction["top_k"]
        assert len(top) == k
        assert top[0]["label"] == prediction["label"]
        ranked = sorted(prediction["probabilities"].items(), key=lambda item: -item[1])[:k]
        assert [(t["label"], t["probability"]) for t in top] == ranked
        assert len(prediction["probabilities"]) == 3  # top_k adds a list; every class stays


def test_top_k_with_records(client: TestClient) -> None:
    body = {"instances": records(iris_rows()[:3], IRIS_FEATURES), "top_k": 2}
    predictions = client.post("/predict", json=body).json()["predictions"]
    assert [len(p["top_k"]) for p in predictions] == [2, 2, 2]


def test_without_top_k_there_is_no_top_k_field(client: TestClient) -> None:
    predictions = client.post("/predict", json={"instances": iris_rows()[:2]}).json()
    assert all("top_k" not in p for p in predictions["predictions"])


def training_range(version_dir: Path, feature: str) -> str:
    stats = next(f for f in bundle.read_metadata(version_dir).features if f.name == feature)
    return f"[{np.float32(stats.min):.6g}, {np.float32(stats.max):.6g}]"


def test_warnings_name_features_outside_the_training_range(
    client: TestClient, iris_bundle: Path
) -> None:
    inside = bundle.read_metadata(iris_bundle).features
    inside_row = [f.mean for f in inside]
    response = client.post("/predict", json={"instances": [inside_row, OUT_OF_RANGE_ROW]})
    assert response.status_code == 200
    first, second = response.json()["predictions"]
    assert first["warnings"] == []
    assert second["warnings"] == [
        "sepal_length=50 is above the training range "
        + training_range(iris_bundle, "sepal_length"),
        "petal_length=-1.4 is below the training range "
        + training_range(iris_bundle, "petal_length"),
    ]
    assert second["label"] in CLASSES  # a warning, not a refusal


def test_warnings_in_records_and_csv(client: TestClient) -> None:
    row = [4.0, 4.5, 1.4, 0.2]  # sepal_length below, sepal_width above
    by_records = client.post("/predict", json={"instances": records([row], IRIS_FEATURES)})
    warnings = by_records.json()["predictions"][0]["warnings"]
    assert [w.split("=")[0] for w in warnings] == ["sepal_length", "sepal_width"]
    by_csv = client.post(
        "/predict",
        content=csv_body([row], IRIS_FEATURES, list(reversed(IRIS_FEATURES))),
        headers={**CSV, "accept": "text/csv"},
    )
    assert answered_csv(by_csv.text, CLASSES)[2] == ["sepal_length;sepal_width"]


def test_integers_are_numbers(client: TestClient, iris_bundle: Path) -> None:
    response = client.post("/predict", json={"instances": [[5, 3, 2, 0]]})
    assert response.status_code == 200
    assert response.json()["predictions"][0]["warnings"] == [
        "petal_width=0 is below the training range " + training_range(iris_bundle, "petal_width")
    ]


def test_json_content_type_with_charset(client: TestClient) -> None:
    response = client.post(
        "/predict",
        content=b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}',
        headers={"content-type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 200
    assert response.json()["predictions"][0]["label"] == "setosa"


def test_csv_with_crlf_bom_and_spaces(client: TestClient) -> None:
    body = (
        b"\xef\xbb\xbf petal_width , sepal_length,petal_length,sepal_width\r\n0.2, 5.1 ,1.4,3.5\r\n"
    )
    response = client.post("/predict", content=body, headers={"content-type": "text/csv"})
    assert response.status_code == 200
    assert response.json()["predictions"][0]["label"] == "setosa"


def test_large_request_is_answered_in_order(client: TestClient, iris_bundle: Path) -> None:
    """Past the size where parsing moves off the event loop, the rows keep their order."""
    rows = iris_rows() * 20
    response = client.post("/predict", json={"instances": rows})
    assert response.status_code == 200
    labels, probabilities = answered(response.json()["predictions"], CLASSES)
    assert_matches_reference(labels, probabilities, iris_bundle, rows)


# -- a binary model: one sigmoid unit, string labels -------------------------------------------
@pytest.fixture
def binary_client(tmp_path: Path, binary_bundle: Path, runtime: str) -> Iterator[TestClient]:
    artifacts = tmp_path / "artifacts"
    copy_bundle(binary_bundle, artifacts, "binary")
    settings = Settings(artifacts_dir=artifacts, model_name="binary", model_runtime=runtime)
    with TestClient(create_app(settings)) as client:
        yield client


def test_binary_model_answers_both_classes(binary_client: TestClient, binary_bundle: Path) -> None:
    rows = binary_rows()
    response = binary_client.post("/predict", json={"instances": rows, "top_k": 2})
    assert response.status_code == 200
    body = response.json()
    assert (body["model"], body["version"]) == ("binary", 1)
    for prediction in body["predictions"]:
        assert list(prediction["probabilities"]) == ["no", "yes"]
        assert sum(prediction["probabilities"].values()) == pytest.approx(1, abs=1e-6)
        assert prediction["top_k"][0]["label"] == prediction["label"]
    labels, probabilities = answered(body["predictions"], ["no", "yes"])
    assert set(labels) == {"no", "yes"}
    assert_matches_reference(labels, probabilities, binary_bundle, rows)


def test_binary_model_records_and_csv(binary_client: TestClient, binary_bundle: Path) -> None:
    rows = binary_rows(20, seed=2)
    by_records = binary_client.post("/predict", json={"instances": records(rows, BINARY_FEATURES)})
    labels, probabilities = answered(by_records.json()["predictions"], ["no", "yes"])
    assert_matches_reference(labels, probabilities, binary_bundle, rows)
    by_csv = binary_client.post(
        "/predict",
        content=csv_body(rows, BINARY_FEATURES, ["c", "a", "b"]),
        headers={**CSV, "accept": "text/csv"},
    )
    assert by_csv.text.splitlines()[0] == "label,prob_no,prob_yes,warnings"
    labels, probabilities, _ = answered_csv(by_csv.text, ["no", "yes"])
    assert_matches_reference(labels, probabilities, binary_bundle, rows)


def test_binary_model_names_its_own_features(binary_client: TestClient) -> None:
    response = binary_client.post("/predict", json={"instances": [[0.1, 0.2, 0.3, 0.4]]})
    assert response.status_code == 422
    assert response.json()["error"] == "instances[0] has 4 values; the model takes 3: a, b, c"
