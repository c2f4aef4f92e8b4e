"""Liveness, readiness, the model card, the OpenAPI document, and a service with nothing to serve."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import bundle
from service.app import create_app
from service.settings import Settings
from tests.service.reference import copy_bundle

ROW = [5.1, 3.5, 1.4, 0.2]


@pytest.fixture
def empty_artifacts(tmp_path: Path) -> Path:
    return tmp_path / "artifacts"


def serve(artifacts: Path, **options: object) -> TestClient:
    return TestClient(create_app(Settings(artifacts_dir=artifacts, **options)))  # type: ignore[arg-type]


# -- a served model ----------------------------------------------------------------------------
@pytest.mark.slow
def test_healthz_and_readyz(client: TestClient, runtime: str) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "model": "iris",
        "version": 1,
        "runtime": runtime,
        "models": {"iris": 1},
    }


@pytest.mark.slow
def test_model_card(client: TestClient, runtime: str, iris_bundle: Path) -> None:
    response = client.get("/model")
    assert response.status_code == 200
    card = response.json()
    assert (card["name"], card["ready"], card["version"], card["runtime"]) == (
        "iris",
        True,
        1,
        runtime,
    )
    assert card["versions"] == [
        {"version": 1, "state": "serving", "reason": None, "loaded": True, "labels": []}
    ]

    metadata = card["metadata"]
    on_disk = json.loads((iris_bundle / bundle.METADATA).read_text())
    assert metadata["classes"] == ["setosa", "versicolor", "virginica"]
    assert [f["name"] for f in metadata["features"]] == [
        "sepal_length",
        "sepal_width",
        "petal_length",
        "petal_width",
    ]
    assert metadata["features"] == on_disk["features"]  # with min, max and mean
    assert (metadata["task"], metadata["encoding"], metadata["target"]) == (
        "multiclass",
        "sparse",
        "species",
    )
    assert metadata["data_sha256"] == on_disk["data_sha256"]
    assert {"tensorflow", "keras", "scikit-learn"} <= set(metadata["library_versions"])

    metrics = card["metrics"]
    on_disk_metrics = json.loads((iris_bundle / bundle.METRICS_JSON).read_text())
    assert metrics == on_disk_metrics
    assert 0.8 <= metrics["accuracy"] <= 1
    assert set(metrics["per_class"]) == {"setosa", "versicolor", "virginica"}
    confusion = metrics["confusion_matrix"]
    assert confusion["labels"] == ["setosa", "versicolor", "virginica"]
    assert [len(row) for row in confusion["matrix"]] == [3, 3, 3]
    assert sum(map(sum, confusion["matrix"])) == metrics["test_rows"]
    correct = sum(confusion["matrix"][i][i] for i in range(3))
    assert correct / metrics["test_rows"] == pytest.approx(metrics["accuracy"])


@pytest.mark.slow
def test_model_card_lists_a_rejected_version_with_its_reason(artifacts_copy: Path) -> None:
    broken = copy_bundle(artifacts_copy / "iris" / "1", artifacts_copy, "iris", version=2)
    tflite = broken / bundle.MODEL_TFLITE
    tflite.write_bytes(tflite.read_bytes()[:-100])  # the manifest still has the old digest
    with serve(artifacts_copy, model_runtime="litert") as client:
        card = client.get("/model").json()
        assert card["version"] == 1  # the highest valid version
        states = {v["version"]: v for v in card["versions"]}
        assert [v["version"] for v in card["versions"]] == [2, 1]
        assert states[1]["state"] == "serving"
        assert states[2]["state"] == "rejected"
        assert bundle.MODEL_TFLITE in states[2]["reason"]
        assert client.get("/readyz").json()["version"] == 1


# -- nothing valid to serve: the process runs, readiness and predictions say why ----------------
def test_no_model_directory_at_start(empty_artifacts: Path) -> None:
    """MODEL_NAME=* (the default) with nothing under ARTIFACTS_DIR: not ready, saying where."""
    with serve(empty_artifacts) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["error"] == (
            f"no model directory with a version found under {empty_artifacts}"
        )
        assert client.post("/predict", json={"instances": [[1, 2, 3, 4]]}).status_code == 503


def test_no_version_at_start(empty_artifacts: Path) -> None:
    with serve(empty_artifacts, model_name="iris") as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503
        reason = ready.json()["error"]
        assert "no version of model 'iris'" in reason
        assert str(empty_artifacts / "iris") in reason

        predict = client.post("/predict", json={"instances": [ROW]})
        assert predict.status_code == 503
        assert predict.json() == {"error": reason}

        card = client.get("/model").json()
        assert (card["ready"], card["version"], card["versions"]) == (False, None, [])
        assert card["reason"] == reason


def test_no_version_still_checks_the_request_first(empty_artifacts: Path) -> None:
    with serve(empty_artifacts) as client:
        response = client.post("/predict", content=b"<a/>", headers={"content-type": "text/xml"})
        assert response.status_code == 415


def test_no_version_of_another_model_name(empty_artifacts: Path) -> None:
    (empty_artifacts / "iris").mkdir(parents=True)
    with serve(empty_artifacts, model_name="churn") as client:
        assert "no version of model 'churn'" in client.get("/readyz").json()["error"]


@pytest.mark.slow
def test_only_a_rejected_version_at_start(artifacts_copy: Path) -> None:
    version = artifacts_copy / "iris" / "1"
    (version / bundle.MANIFEST).write_text("{not json")
    with serve(artifacts_copy) as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503
        reason = ready.json()["error"]
        assert "no valid version of model 'iris'" in reason
        assert "version 1" in reason
        assert bundle.MANIFEST in reason
        predict = client.post("/predict", json={"instances": [ROW]})
        assert (predict.status_code, predict.json()["error"]) == (503, reason)
        (status,) = client.get("/model").json()["versions"]
        assert status["version"] == 1
        assert status["state"] == "rejected"
        assert bundle.MANIFEST in status["reason"]


@pytest.mark.slow
def test_pinned_version_that_does_not_exist(artifacts_copy: Path) -> None:
    with serve(artifacts_copy, model_version=7) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert "version 7" in ready.json()["error"]
        assert client.post("/predict", json={"instances": [ROW]}).status_code == 503


@pytest.mark.slow
def test_pinned_version_is_served(artifacts_copy: Path) -> None:
    copy_bundle(artifacts_copy / "iris" / "1", artifacts_copy, "iris", version=2)
    with serve(artifacts_copy, model_version=1) as client:
        assert client.get("/readyz").json()["version"] == 1
        assert client.post("/predict", json={"instances": [ROW]}).json()["version"] == 1


# -- OpenAPI and /docs -------------------------------------------------------------------------
@pytest.mark.slow
def test_openapi_documents_predict_with_examples(client: TestClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    operation = schema["paths"]["/predict"]["post"]
    content = operation["requestBody"]["content"]
    examples = content["application/json"]["examples"]
    assert examples["rows"]["value"] == {"instances": [ROW]}
    assert set(examples["records"]["value"]["instances"][0]) == {
        "sepal_length",
        "sepal_width",
        "petal_length",
        "petal_width",
    }
    assert content["text/csv"]["example"].startswith("sepal_length,sepal_width,")

    # The examples are real requests: the service answers them.
    for example in examples.values():
        assert client.post("/predict", json=example["value"]).status_code == 200
    csv_example = content["text/csv"]["example"]
    answered = client.post("/predict", content=csv_example, headers={"content-type": "text/csv"})
    assert answered.status_code == 200

    responses = operation["responses"]
    assert {"200", "400", "401", "413", "415", "422", "503"} <= set(responses)
    ref = responses["200"]["content"]["application/json"]["schema"]["$ref"]
    predict_response = schema["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    example = predict_response["example"]
    assert set(example) == {"model", "version", "predictions"}
    assert set(example["predictions"][0]) >= {"label", "probabilities", "warnings"}
    assert "text/csv" in responses["200"]["content"]

    request = schema["components"]["schemas"]["PredictRequest"]
    assert "sepal_length" in json.dumps(request)  # names the served model's features


@pytest.mark.slow
def test_openapi_documents_the_health_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/healthz", "/readyz", "/model"} <= set(paths)
    assert "503" in paths["/readyz"]["get"]["responses"]


def test_openapi_and_docs_work_without_a_model(empty_artifacts: Path) -> None:
    with serve(empty_artifacts) as client:
        schema = client.get("/openapi.json")
        assert schema.status_code == 200
        assert "/predict" in schema.json()["paths"]
        docs = client.get("/docs")
        assert docs.status_code == 200
        assert "swagger-ui" in docs.text
        assert "/openapi.json" in docs.text
