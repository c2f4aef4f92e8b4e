"""Real third-party clients against a real ``python -m service`` on 127.0.0.1.

``tritonclient.http`` (the Open Inference Protocol client of Triton, written for none of this
project) and the request bodies of TensorFlow Serving's REST documentation must get the same
labels and probabilities as ``/predict``, and a clean 4xx ``{"error": ...}`` when malformed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.support import ServerProcess

pytestmark = pytest.mark.slow

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
CLASSES = ["setosa", "versicolor", "virginica"]
OUT_OF_RANGE = [50.0, 3.5, -1.4, 0.2]


@pytest.fixture(scope="module")
def server(iris_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    artifacts = tmp_path_factory.mktemp("protocols")
    shutil.copytree(iris_bundle, artifacts / "iris" / "1")
    with ServerProcess(artifacts, log_path=artifacts / "server.log") as process:
        process.wait_for("/readyz")
        yield process


@pytest.fixture(scope="module")
def rows() -> list[list[float]]:
    """Every Iris row, then one outside the training range."""
    from sklearn.datasets import load_iris

    return [*load_iris().data.round(1).tolist(), OUT_OF_RANGE]


@pytest.fixture
def v2(server: ServerProcess) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(server.url.removeprefix("http://")) as client:
        yield client


def predict(server: ServerProcess, rows: list[list[float]]) -> tuple[list[str], np.ndarray]:
    """Labels and probabilities ``[rows, classes]`` from the service's own /predict."""
    answer = httpx.post(f"{server.url}/predict", json={"instances": rows}, timeout=30)
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    probabilities = [[p["probabilities"][c] for c in CLASSES] for p in predictions]
    return [str(p["label"]) for p in predictions], np.array(probabilities)


def as_text(labels: np.ndarray) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in labels.tolist()]


# -- tritonclient -----------------------------------------------------------------------------
def test_tritonclient_health_and_metadata(v2: triton.InferenceServerClient) -> None:
    assert v2.is_server_live()
    assert v2.is_server_ready()
    assert v2.is_model_ready("iris")
    assert v2.is_model_ready("iris", "1")
    assert not v2.is_model_ready("half")
    assert not v2.is_model_ready("iris", "2")
    assert "binary_tensor_data" in v2.get_server_metadata()["extensions"]
    metadata = v2.get_model_metadata("iris")
    assert metadata["name"] == "iris"
    assert metadata["versions"] == ["1"]
    assert metadata["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}]
    assert metadata["outputs"] == [
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
        {"name": "label", "datatype": "BYTES", "shape": [-1]},
    ]
    assert v2.get_model_metadata("iris", "1") == metadata


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_tritonclient_infer_matches_predict(
    server: ServerProcess,
    v2: triton.InferenceServerClient,
    rows: list[list[float]],
    binary: bool,
) -> None:
    labels, probabilities = predict(server, rows)
    x = np.array(rows, dtype=np.float32)
    tensor = triton.InferInput("features", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    outputs = [
        triton.InferRequestedOutput("probabilities", binary_data=binary),
        triton.InferRequestedOutput("label", binary_data=binary),
    ]
    result = v2.infer("iris", [tensor], outputs=outputs, request_id="check-1")
    response = result.get_response()
    assert (response["model_name"], response["model_version"]) == ("iris", "1")
    assert response["id"] == "check-1"
    assert as_text(result.as_numpy("label")) == labels
    got = result.as_numpy("probabilities")
    assert got.dtype == np.float32 and got.shape == (len(rows), 3)
    np.testing.assert_allclose(got, probabilities, atol=1e-6)


def test_tritonclient_defaults_and_version(
    server: ServerProcess, v2: triton.InferenceServerClient, rows: list[list[float]]
) -> None:
    """With the client's defaults (binary data both ways, no outputs named) and a version."""
    labels, probabilities = predict(server, rows)
    x = np.array(rows, dtype=np.float32)
    tensor = triton.InferInput("features", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    result = v2.infer("iris", [tensor])
    assert as_text(result.as_numpy("label")) == labels
    np.testing.assert_allclose(result.as_numpy("probabilities"), probabilities, atol=1e-6)
    result = v2.infer(
        "iris", [tensor], model_version="1", outputs=[triton.InferRequestedOutput("label")]
    )
    assert as_text(result.as_numpy("label")) == labels
    assert result.as_numpy("probabilities") is None


@pytest.mark.parametrize(
    ("numpy_type", "datatype"), [(np.float64, "FP64"), (np.int32, "INT32"), (np.uint8, "UINT8")]
)
def test_tritonclient_other_datatypes(
    server: ServerProcess, v2: triton.InferenceServerClient, numpy_type: Any, datatype: str
) -> None:
    whole = [[5, 3, 1, 0], [6, 3, 4, 1], [7, 3, 6, 2]]
    labels, probabilities = predict(server, whole)
    x = np.array(whole, dtype=numpy_type)
    for binary in (False, True):
        tensor = triton.InferInput("features", list(x.shape), datatype)
        tensor.set_data_from_numpy(x, binary_data=binary)
        result = v2.infer("iris", [tensor])
        assert as_text(result.as_numpy("label")) == labels
        np.testing.assert_allclose(result.as_numpy("probabilities"), probabilities, atol=1e-6)


def _infer_error(v2: triton.InferenceServerClient, *args: Any, **kwargs: Any) -> tuple[int, str]:
    with pytest.raises(InferenceServerException) as caught:
        v2.infer(*args, **kwargs)
    return int(caught.value.status()), caught.value.message()


def test_tritonclient_errors(v2: triton.InferenceServerClient) -> None:
    x = np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)
    good = triton.InferInput("features", [1, 4], "FP32").set_data_from_numpy(x)
    status, message = _infer_error(v2, "half", [good])
    assert status == 404 and "half" in message
    status, message = _infer_error(v2, "iris", [good], model_version="2")
    assert status == 404 and "version 2" in message
    narrow = triton.InferInput("features", [1, 3], "FP32")
    narrow.set_data_from_numpy(x[:, :3].copy(), binary_data=False)
    status, message = _infer_error(v2, "iris", [narrow])
    assert status == 400 and "shape" in message
    flags = triton.InferInput("features", [1, 4], "BOOL")
    flags.set_data_from_numpy(np.ones((1, 4), dtype=bool), binary_data=False)
    status, message = _infer_error(v2, "iris", [flags])
    assert status == 400 and "BOOL" in message
    words = triton.InferInput("features", [1, 4], "BYTES")
    words.set_data_from_numpy(np.array([["a", "b", "c", "d"]], dtype=object))
    status, message = _infer_error(v2, "iris", [words])
    assert status == 400 and "BYTES" in message
    renamed = triton.InferInput("input0", [1, 4], "FP32").set_data_from_numpy(x)
    status, message = _infer_error(v2, "iris", [renamed])
    assert status == 400 and "input0" in message
    status, message = _infer_error(v2, "iris", [])
    assert status == 400 and "inputs" in message
    status, message = _infer_error(
        v2, "iris", [good], outputs=[triton.InferRequestedOutput("logits")]
    )
    assert status == 400 and "logits" in message


# -- TensorFlow Serving's documented requests -------------------------------------------------
def tf_serving(server: ServerProcess, path: str, body: Any | None = None) -> httpx.Response:
    """As the documentation's `curl -d '<json>'` sends it (a form Content-Type, JSON inside)."""
    if body is None:
        return httpx.get(server.url + path, timeout=30)
    return httpx.post(
        server.url + path,
        content=json.dumps(body),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=30,
    )


def test_tf_serving_model_status_and_metadata(server: ServerProcess) -> None:
    status = tf_serving(server, "/v1/models/iris")
    assert status.status_code == 200
    assert status.json() == {
        "model_version_status": [
            {
                "version": "1",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    assert tf_serving(server, "/v1/models/iris/versions/1").json() == status.json()
    metadata = tf_serving(server, "/v1/models/iris/metadata").json()
    signature = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert list(signature["inputs"]) == ["features"]
    assert set(signature["outputs"]) == {"probabilities", "label"}


def test_tf_serving_documented_requests(server: ServerProcess, rows: list[list[float]]) -> None:
    labels, probabilities = predict(server, rows)
    named = [dict(zip(FEATURES, row, strict=True)) for row in rows]

    # Row format, one named input: "instances" is the list of input values.
    answer = tf_serving(server, "/v1/models/iris:predict", {"instances": rows})
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    assert [p["label"] for p in predictions] == labels
    np.testing.assert_allclose([p["probabilities"] for p in predictions], probabilities, atol=1e-6)

    # Row format with named instances, and with the optional signature_name.
    for body in (
        {"instances": named},
        {"signature_name": "serving_default", "instances": [{"features": r} for r in rows]},
    ):
        answer = tf_serving(server, "/v1/models/iris/versions/1:predict", body)
        assert answer.status_code == 200, answer.text
        assert [p["label"] for p in answer.json()["predictions"]] == labels

    # Columnar format: "inputs" maps input names to tensors; "outputs" maps output names.
    for inputs in (
        {"features": rows},
        {f: [row[j] for row in rows] for j, f in enumerate(FEATURES)},
        rows,
    ):
        answer = tf_serving(server, "/v1/models/iris:predict", {"inputs": inputs})
        assert answer.status_code == 200, answer.text
        outputs = answer.json()["outputs"]
        assert outputs["label"] == labels
        np.testing.assert_allclose(outputs["probabilities"], probabilities, atol=1e-6)

    # Classify: a list of Example objects by feature name, answered [[label, score], ...] each.
    answer = tf_serving(server, "/v1/models/iris:classify", {"examples": named})
    assert answer.status_code == 200, answer.text
    result = answer.json()["result"]
    assert [[pair[0] for pair in example] for example in result] == [CLASSES] * len(rows)
    scores = [[pair[1] for pair in example] for example in result]
    np.testing.assert_allclose(scores, probabilities, atol=1e-6)

    # The documentation's error example: an unknown model answers 404 with {"error": ...}.
    answer = tf_serving(server, "/v1/models/half:predict", {"instances": [1.0, 5.0]})
    assert answer.status_code == 404
    assert answer.json()["error"]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_as_the_documentation_runs_it(server: ServerProcess) -> None:
    body = '{"instances": [[5.1, 3.5, 1.4, 0.2]]}'
    url = f"{server.url}/v1/models/iris:predict"
    done = subprocess.run(
        ["curl", "-s", "-d", body, "-X", "POST", url], capture_output=True, timeout=30, check=True
    )
    assert json.loads(done.stdout)["predictions"][0]["label"] == "setosa"


# -- malformed requests against the real server -----------------------------------------------
def _v2(tensor: dict[str, Any]) -> str:
    base = {"name": "features", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}
    return json.dumps({"inputs": [{**base, **tensor}]})


MALFORMED = [
    ("/v2/models/iris/infer", _v2({"shape": [1, 3]})),
    ("/v2/models/iris/infer", _v2({"shape": [4]})),
    ("/v2/models/iris/infer", _v2({"datatype": "BOOL", "data": [True, False, True, True]})),
    ("/v2/models/iris/infer", _v2({"datatype": "BYTES", "data": ["a", "b", "c", "d"]})),
    ("/v2/models/iris/infer", _v2({"data": [5.1, 3.5, 1.4]})),
    ("/v2/models/iris/infer", _v2({"data": [5.1, 3.5, 1.4, "x"]})),
    ("/v2/models/iris/infer", json.dumps({"outputs": [{"name": "label"}]})),
    ("/v2/models/iris/infer", json.dumps({"inputs": []})),
    ("/v2/models/iris/infer", '{"inputs": [{"name": "features",'),
    ("/v2/models/iris/infer", "[]"),
    ("/v2/models/half/infer", _v2({})),
    ("/v2/models/iris/versions/9/infer", _v2({})),
    ("/v1/models/iris:predict", json.dumps({"instances": [[5.1, 3.5, 1.4]]})),
    ("/v1/models/iris:predict", json.dumps({"inputs": {"features": [[5.1]]}})),
    (
        "/v1/models/iris:predict",
        json.dumps({"instances": [[1, 2, 3, 4]], "inputs": [[1, 2, 3, 4]]}),
    ),
    ("/v1/models/iris:predict", json.dumps({})),
    ("/v1/models/iris:predict", "{'instances': [[1, 2, 3, 4]]}"),
    ("/v1/models/iris:classify", json.dumps({"examples": [{"sepal_length": 5.1}]})),
    ("/v1/models/iris:classify", json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]})),
    ("/v1/models/half:predict", json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]})),
    ("/v1/models/iris/versions/9:predict", json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]})),
]


def test_malformed_requests_answer_4xx_with_an_error(server: ServerProcess) -> None:
    for path, body in MALFORMED:
        answer = httpx.post(server.url + path, content=body, timeout=30)
        assert 400 <= answer.status_code < 500, (path, body, answer.status_code, answer.text)
        assert isinstance(answer.json()["error"], str), (path, body)
        expected = 404 if "half" in path or "/versions/9" in path else 400
        assert answer.status_code == expected, (path, body, answer.text)


# -- the Keras model's own answer -------------------------------------------------------------
def test_protocols_agree_with_the_keras_model(
    server: ServerProcess, iris_bundle: Path, rows: list[list[float]]
) -> None:
    """The served LiteRT model against ``model.keras`` + ``label_encoder.joblib`` directly."""
    import joblib
    import keras

    iris = rows[:-1]  # the training distribution; far outside it the runtimes may differ more
    model = keras.saving.load_model(iris_bundle / "model.keras", compile=False)
    encoder = joblib.load(iris_bundle / "label_encoder.joblib")
    # model.keras takes raw values by feature name (format 2), as keras.io's examples call it.
    columns = dict(zip(FEATURES, np.array(iris, dtype=np.float32).T, strict=True))
    expected = np.asarray(model.predict(columns, verbose=0))
    expected_labels = [str(c) for c in encoder.inverse_transform(expected.argmax(axis=1))]

    x = np.array(iris, dtype=np.float32)
    with triton.InferenceServerClient(server.url.removeprefix("http://")) as client:
        tensor = triton.InferInput("features", list(x.shape), "FP32").set_data_from_numpy(x)
        result = client.infer("iris", [tensor])
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected, atol=1e-4)
    assert as_text(result.as_numpy("label")) == expected_labels
    answer = tf_serving(server, "/v1/models/iris:predict", {"instances": iris}).json()
    assert [p["label"] for p in answer["predictions"]] == expected_labels
