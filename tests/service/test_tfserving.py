"""TensorFlow Serving's REST API, in-process: status, metadata, :predict, :classify, errors."""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [6.7, 3.0, 5.2, 2.3]]
CLASSES = ["setosa", "versicolor", "virginica"]


def records(rows: list[list[float]]) -> list[dict[str, float]]:
    return [dict(zip(FEATURES, row, strict=True)) for row in rows]


def reference(client: TestClient, rows: list[list[float]]) -> tuple[list[str], np.ndarray]:
    """Labels and probabilities from /predict for the same rows."""
    answer = client.post("/predict", json={"instances": rows})
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    labels = [str(p["label"]) for p in predictions]
    return labels, np.array([[p["probabilities"][c] for c in CLASSES] for p in predictions])


def make_client(artifacts: Path, **options: Any) -> TestClient:
    options.setdefault("model_runtime", "litert")
    return TestClient(create_app(Settings(artifacts_dir=artifacts, model_name="iris", **options)))


@pytest.fixture(scope="module")
def api(module_artifacts: Path) -> Iterator[TestClient]:
    """One app for the module: the tests that take it only send it requests (those that change
    what is served make their own)."""
    with make_client(module_artifacts) as client:
        yield client


# -- status and metadata ----------------------------------------------------------------------
def test_model_status(api: TestClient) -> None:
    expected = {
        "model_version_status": [
            {
                "version": "1",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    assert api.get("/v1/models/iris").json() == expected
    assert api.get("/v1/models/iris/versions/1").json() == expected


def test_model_metadata_names_the_input_and_both_outputs(api: TestClient) -> None:
    for path in ("/v1/models/iris/metadata", "/v1/models/iris/versions/1/metadata"):
        body = api.get(path).json()
        assert body["model_spec"] == {"name": "iris", "signature_name": "", "version": "1"}
        signature = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
        assert signature["method_name"] == "tensorflow/serving/predict"
        (name, tensor), *_ = signature["inputs"].items()
        assert name == "features" and tensor["dtype"] == "DT_FLOAT"
        assert [d["size"] for d in tensor["tensor_shape"]["dim"]] == ["-1", "4"]
        outputs = signature["outputs"]
        assert set(outputs) == {"probabilities", "label"}
        assert outputs["probabilities"]["dtype"] == "DT_FLOAT"
        dims = outputs["probabilities"]["tensor_shape"]["dim"]
        assert [d["size"] for d in dims] == ["-1", "3"]
        assert outputs["label"]["dtype"] == "DT_STRING"


@pytest.mark.parametrize(
    "path",
    [
        "/v1/models/half",
        "/v1/models/half/metadata",
        "/v1/models/iris/versions/2",
        "/v1/models/iris/versions/2/metadata",
        "/v1/models/iris/versions/latest",
    ],
)
def test_unknown_model_or_version_is_404(api: TestClient, path: str) -> None:
    answer = api.get(path)
    assert answer.status_code == 404
    assert isinstance(answer.json()["error"], str)


def test_status_lists_the_loaded_previous_version(artifacts_copy: Path) -> None:
    shutil.copytree(artifacts_copy / "iris" / "1", artifacts_copy / "iris" / "2")
    with make_client(artifacts_copy) as client:
        client.app.state.repository.models["iris"].reload(1)  # type: ignore[attr-defined]
        versions = client.get("/v1/models/iris").json()["model_version_status"]
        assert [v["version"] for v in versions] == ["1", "2"]
        for version in ("1", "2"):
            answer = client.post(
                f"/v1/models/iris/versions/{version}:predict", json={"instances": ROWS}
            )
            assert answer.status_code == 200, answer.text
            assert (
                client.get(f"/v1/models/iris/versions/{version}/metadata").json()["model_spec"][
                    "version"
                ]
                == version
            )
        answer = client.post("/v1/models/iris/versions/3:predict", json={"instances": ROWS})
        assert answer.status_code == 404


# -- predict ----------------------------------------------------------------------------------
def test_row_format_matches_predict_on_both_runtimes(client: TestClient) -> None:
    labels, probabilities = reference(client, ROWS)
    answer = client.post("/v1/models/iris:predict", json={"instances": ROWS})
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    assert [set(p) for p in predictions] == [{"probabilities", "label"}] * 3
    assert [p["label"] for p in predictions] == labels == CLASSES
    got = np.array([p["probabilities"] for p in predictions])
    np.testing.assert_allclose(got, probabilities, atol=1e-6)


@pytest.mark.parametrize(
    "body",
    [
        {"instances": ROWS},
        {"instances": records(ROWS)},
        {"instances": [{"features": row} for row in ROWS]},
        {"signature_name": "serving_default", "instances": ROWS},
    ],
    ids=["rows", "named features", "named input", "signature"],
)
def test_row_formats(api: TestClient, body: dict[str, Any]) -> None:
    labels, probabilities = reference(api, ROWS)
    answer = api.post("/v1/models/iris:predict", json=body)
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    assert [p["label"] for p in predictions] == labels
    np.testing.assert_allclose([p["probabilities"] for p in predictions], probabilities)


@pytest.mark.parametrize(
    "inputs",
    [
        ROWS,
        {"features": ROWS},
        {f: [row[j] for row in ROWS] for j, f in enumerate(FEATURES)},
        {f: [[row[j]] for row in ROWS] for j, f in enumerate(FEATURES)},
    ],
    ids=["tensor", "named input", "feature columns", "feature columns [N, 1]"],
)
def test_columnar_formats(api: TestClient, inputs: Any) -> None:
    labels, probabilities = reference(api, ROWS)
    answer = api.post("/v1/models/iris:predict", json={"inputs": inputs})
    assert answer.status_code == 200, answer.text
    outputs = answer.json()["outputs"]
    assert set(outputs) == {"probabilities", "label"}
    assert outputs["label"] == labels
    np.testing.assert_allclose(outputs["probabilities"], probabilities)


# -- classify ---------------------------------------------------------------------------------
def test_classify_scores_every_class(client: TestClient) -> None:
    labels, probabilities = reference(client, ROWS)
    answer = client.post("/v1/models/iris:classify", json={"examples": records(ROWS)})
    assert answer.status_code == 200, answer.text
    result = answer.json()["result"]
    assert len(result) == 3
    for per_example, expected, label in zip(result, probabilities, labels, strict=True):
        assert [pair[0] for pair in per_example] == CLASSES
        np.testing.assert_allclose([pair[1] for pair in per_example], expected, atol=1e-6)
        assert max(per_example, key=lambda pair: pair[1])[0] == label


def test_classify_with_context_and_feature_lists(api: TestClient) -> None:
    body = {
        "signature_name": "tensorflow/serving/classify",
        "context": {"sepal_width": 3.0, "petal_width": [2.3]},
        "examples": [
            {"sepal_length": 6.7, "petal_length": [5.2]},
            {"sepal_length": 5.1, "petal_length": 1.4},
        ],
    }
    answer = api.post("/v1/models/iris/versions/1:classify", json=body)
    assert answer.status_code == 200, answer.text
    _, probabilities = reference(api, [[6.7, 3.0, 5.2, 2.3], [5.1, 3.0, 1.4, 2.3]])
    scores = [[pair[1] for pair in example] for example in answer.json()["result"]]
    np.testing.assert_allclose(scores, probabilities)


# -- routing of the colon verbs ---------------------------------------------------------------
def test_colon_verbs_route_to_their_handlers(api: TestClient) -> None:
    documented = api.get("/openapi.json").json()["paths"]
    assert {"/v1/models/{name}:predict", "/v1/models/{name}:classify"} <= set(documented)
    assert api.post("/v1/models/iris:predict", json={"instances": ROWS}).status_code == 200
    assert api.post("/v1/models/iris:classify", json={"examples": records(ROWS)}).status_code == 200
    # %3A is the same path once decoded.
    assert api.post("/v1/models/iris%3Apredict", json={"instances": ROWS}).status_code == 200
    regress = api.post("/v1/models/iris:regress", json={"examples": records(ROWS)})
    assert regress.status_code == 400
    assert "classify" in regress.json()["error"]
    # KServe V1's verb, beside TF Serving's (tests/service/test_explain_api.py).
    assert api.post("/v1/models/iris:explain", json={"instances": ROWS}).status_code == 200
    for method, path in [
        ("POST", "/v1/models/iris:score"),
        ("POST", "/v1/models/iris"),
        ("GET", "/v1/models/iris:predict"),
        ("POST", "/v1/models/half:predict"),
    ]:
        answer = api.request(method, path, json={"instances": ROWS})
        assert 400 <= answer.status_code < 500, (method, path)
        assert answer.json()["error"]


def test_curl_form_content_type_is_read_as_json(api: TestClient) -> None:
    # `curl -d '{...}'` sends Content-Type: application/x-www-form-urlencoded.
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    raw = orjson.dumps({"instances": ROWS})
    assert api.post("/v1/models/iris:predict", content=raw, headers=headers).status_code == 200
    answer = api.post("/v1/models/iris:predict", content=raw, headers={"Content-Type": "text/csv"})
    assert answer.status_code == 415


# -- errors -----------------------------------------------------------------------------------
MALFORMED: dict[str, tuple[str, Any, str]] = {
    # name: (verb, body, a word the message must contain)
    "both formats": ("predict", {"instances": ROWS, "inputs": ROWS}, "exactly one"),
    "neither format": ("predict", {"signature_name": "serving_default"}, "exactly one"),
    "row of three values": ("predict", {"instances": [[5.1, 3.5, 1.4]]}, "3 values"),
    "flat row": ("predict", {"instances": [5.1, 3.5, 1.4, 0.2]}, "instances[0]"),
    "empty instances": ("predict", {"instances": []}, "empty"),
    "instances not a list": ("predict", {"instances": {"a": 1}}, "array"),
    "string value": ("predict", {"instances": [[5.1, "x", 1.4, 0.2]]}, "string"),
    "boolean value": ("predict", {"instances": [[5.1, True, 1.4, 0.2]]}, "boolean"),
    "unknown feature": (
        "predict",
        {"instances": [{**records(ROWS)[0], "colour": 1}]},
        "colour",
    ),
    "missing feature": (
        "predict",
        {"instances": [{"sepal_length": 1, "sepal_width": 2, "petal_length": 3}]},
        "petal_width",
    ),
    "mixed rows and records": ("predict", {"instances": [records(ROWS)[0], ROWS[0]]}, "mixing"),
    "named input mixed": (
        "predict",
        {"instances": [{"features": ROWS[0]}, {"x": ROWS[0]}]},
        "instances[1]",
    ),
    "unknown signature": ("predict", {"signature_name": "other", "instances": ROWS}, "other"),
    "columns of different lengths": (
        "predict",
        {"inputs": {**{f: [1.0, 2.0] for f in FEATURES}, "petal_width": [1.0]}},
        "petal_width",
    ),
    "unknown column": ("predict", {"inputs": {"x": [1.0]}}, "'x'"),
    "missing column": (
        "predict",
        {"inputs": {f: [1.0] for f in FEATURES[:3]}},
        "petal_width",
    ),
    "column not a list": ("predict", {"inputs": {f: 1.0 for f in FEATURES}}, "array"),
    "empty columns": ("predict", {"inputs": {f: [] for f in FEATURES}}, "no rows"),
    "columnar tensor of one row": ("predict", {"inputs": [5.1, 3.5, 1.4, 0.2]}, "inputs[0]"),
    "body is an array": ("predict", [ROWS], "object"),
    "missing examples": ("classify", {"instances": ROWS}, "examples"),
    "examples not a list": ("classify", {"examples": records(ROWS)[0]}, "examples"),
    "empty examples": ("classify", {"examples": []}, "empty"),
    "example not an object": ("classify", {"examples": [ROWS[0]]}, "examples[0]"),
    "example missing a feature": (
        "classify",
        {"examples": [{"sepal_length": 1, "sepal_width": 2, "petal_length": 3}]},
        "petal_width",
    ),
    "context clash": (
        "classify",
        {"context": {"sepal_length": 1.0}, "examples": records(ROWS)},
        "sepal_length",
    ),
    "context not an object": ("classify", {"context": [1], "examples": records(ROWS)}, "context"),
    "feature list of two values": (
        "classify",
        {"examples": [{**records(ROWS)[0], "sepal_length": [1.0, 2.0]}]},
        "array",
    ),
}


@pytest.mark.parametrize("case", MALFORMED, ids=list(MALFORMED))
def test_malformed_requests_answer_400_with_an_error(api: TestClient, case: str) -> None:
    verb, body, word = MALFORMED[case]
    answer = api.post(f"/v1/models/iris:{verb}", content=orjson.dumps(body))
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert word.lower() in answer.json()["error"].lower()


@pytest.mark.parametrize("verb", ["predict", "classify"])
@pytest.mark.parametrize(
    "raw", [b"", b"{", b"[1,", b'{"instances": [[NaN, 1, 2, 3]]}', b"\x00"], ids=str
)
def test_wrong_json_answers_400(api: TestClient, verb: str, raw: bytes) -> None:
    answer = api.post(f"/v1/models/iris:{verb}", content=raw)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]


def test_limits_answer_413(artifacts_copy: Path) -> None:
    with make_client(artifacts_copy, max_batch_rows=2, max_body_bytes=2048) as client:
        for verb, body in [
            ("predict", {"instances": ROWS}),
            ("predict", {"instances": [{"features": r} for r in ROWS]}),
            ("predict", {"inputs": {"features": ROWS}}),
            ("predict", {"inputs": {f: [1.0, 2.0, 3.0] for f in FEATURES}}),
            ("classify", {"examples": records(ROWS)}),
        ]:
            answer = client.post(f"/v1/models/iris:{verb}", json=body)
            assert answer.status_code == 413, (verb, body)
            assert "limit is 2" in answer.json()["error"]
        answer = client.post("/v1/models/iris:predict", content=b" " * 4096)
        assert answer.status_code == 413


def test_api_key_guards_predict_and_classify_only(artifacts_copy: Path) -> None:
    with make_client(artifacts_copy, api_key="s3cret") as client:
        good = {"Authorization": "Bearer s3cret"}
        for path, body in [
            ("/v1/models/iris:predict", {"instances": ROWS}),
            ("/v1/models/iris/versions/1:predict", {"instances": ROWS}),
            ("/v1/models/iris:classify", {"examples": records(ROWS)}),
            ("/v1/models/iris/versions/1:classify", {"examples": records(ROWS)}),
        ]:
            assert client.post(path, json=body).status_code == 401
            assert client.post(path, json=body, headers=good).status_code == 200
        assert client.get("/v1/models/iris").status_code == 200
        assert client.get("/v1/models/iris/metadata").status_code == 200


def test_random_malformed_requests_never_answer_5xx(api: TestClient) -> None:
    rng = random.Random(5)
    pool: list[Any] = [
        None, True, 0, -1, 2**70, 1.5, 1e300, "", "x", [], {}, [[]], [None], [1, 2, 3, 4],
        {"features": [1, 2, 3, 4]}, {"sepal_length": [1.0]}, "serving_default",
    ]  # fmt: skip

    def mutate(document: Any) -> Any:
        if isinstance(document, dict) and document and rng.random() < 0.7:
            key = rng.choice(list(document))
            if rng.random() < 0.2:
                return {k: v for k, v in document.items() if k != key}
            return {**document, key: mutate(document[key])}
        if isinstance(document, list) and document and rng.random() < 0.7:
            i = rng.randrange(len(document))
            return [*document[:i], mutate(document[i]), *document[i + 1 :]]
        return rng.choice(pool)

    valid = [
        ("predict", {"instances": ROWS}),
        ("predict", {"instances": records(ROWS)}),
        ("predict", {"inputs": {f: [1.0, 2.0] for f in FEATURES}}),
        ("classify", {"context": {"sepal_width": 3.0}, "examples": records(ROWS)}),
    ]
    statuses = set()
    for _ in range(300):
        verb, body = rng.choice(valid)
        for _ in range(rng.randint(1, 3)):
            body = mutate(body)
        answer = api.post(f"/v1/models/iris:{verb}", content=json.dumps(body).encode())
        statuses.add(answer.status_code)
        assert answer.status_code < 500, (verb, body, answer.text)
        if answer.status_code != 200:
            assert isinstance(answer.json()["error"], str)
    assert statuses >= {200, 400}


# -- another data set: two classes, three features, string labels -----------------------------
@pytest.mark.slow  # trains a second model
def test_binary_classifier(binary_bundle: Path) -> None:
    settings = Settings(
        artifacts_dir=binary_bundle.parent.parent, model_name="binary", model_runtime="litert"
    )
    rows = [[0.5, 0.1, -0.3], [-1.2, 0.4, 0.9]]
    with TestClient(create_app(settings)) as client:
        predicted = client.post("/predict", json={"instances": rows}).json()["predictions"]
        answer = client.post("/v1/models/binary:predict", json={"instances": rows}).json()
        assert [p["label"] for p in answer["predictions"]] == [p["label"] for p in predicted]
        examples = [dict(zip(["a", "b", "c"], row, strict=True)) for row in rows]
        result = client.post("/v1/models/binary:classify", json={"examples": examples}).json()
        for per_example, p in zip(result["result"], predicted, strict=True):
            assert [pair[0] for pair in per_example] == ["no", "yes"]
            np.testing.assert_allclose(
                [pair[1] for pair in per_example],
                [p["probabilities"]["no"], p["probabilities"]["yes"]],
                atol=1e-6,
            )
        meta = client.get("/v1/models/binary/metadata").json()
        outputs = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]["outputs"]
        dims = outputs["probabilities"]["tensor_shape"]["dim"]
        assert [d["size"] for d in dims] == ["-1", "2"]


def test_large_requests_are_answered(api: TestClient) -> None:
    rng = np.random.default_rng(0)
    rows = rng.uniform([4, 2, 1, 0], [8, 4.5, 7, 2.5], size=(3000, 4)).round(2).tolist()
    labels, probabilities = reference(api, rows)
    predictions = api.post("/v1/models/iris:predict", json={"instances": rows}).json()
    assert [p["label"] for p in predictions["predictions"]] == labels
    result = api.post("/v1/models/iris:classify", json={"examples": records(rows)}).json()
    np.testing.assert_allclose([[s for _, s in e] for e in result["result"]], probabilities)
