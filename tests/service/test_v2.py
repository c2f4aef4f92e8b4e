"""The Open Inference Protocol (KServe V2) REST API, in-process: shapes, outputs, versions, errors."""

from __future__ import annotations

import json
import random
import shutil
import struct
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
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [6.7, 3.0, 5.2, 2.3], [50.0, 3.5, -1.4, 0.2]]


def infer_body(rows: list[list[Any]], datatype: str = "FP32", **extra: Any) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "features", "shape": [len(rows), 4], "datatype": datatype, "data": rows}
        ],
        **extra,
    }


def reference(client: TestClient, rows: list[list[Any]]) -> tuple[list[str], np.ndarray]:
    """Labels and probabilities from /predict for the same rows."""
    answer = client.post("/predict", json={"instances": rows})
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    labels = [str(p["label"]) for p in predictions]
    return labels, np.array([list(p["probabilities"].values()) for p in predictions])


def tensors(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in answer["outputs"]}


def make_client(artifacts: Path, **options: Any) -> TestClient:
    options.setdefault("model_runtime", "litert")
    return TestClient(create_app(Settings(artifacts_dir=artifacts, model_name="iris", **options)))


@pytest.fixture(scope="module")
def api(module_artifacts: Path) -> Iterator[TestClient]:
    """The LiteRT runtime: the protocol layer is the same for both runtimes. One app for the
    module: the tests that take it only send it requests (those that change what is served make
    their own)."""
    with make_client(module_artifacts) as client:
        yield client


# -- health and metadata ----------------------------------------------------------------------
def test_server_metadata_live_and_ready(api: TestClient) -> None:
    server = api.get("/v2").json()
    assert server["name"] == "keras-serve"
    assert isinstance(server["version"], str)
    assert "binary_tensor_data" in server["extensions"]
    assert api.get("/v2/health/live").json() == {"live": True}
    assert api.get("/v2/health/ready").json() == {"ready": True}
    assert api.get("/v2/models/iris/ready").json() == {"name": "iris", "ready": True}
    assert api.get("/v2/models/iris/versions/1/ready").json() == {"name": "iris", "ready": True}


def test_model_metadata_declares_one_input_and_two_outputs(api: TestClient) -> None:
    for path in ("/v2/models/iris", "/v2/models/iris/versions/1"):
        answer = api.get(path)
        assert answer.status_code == 200
        assert answer.json() == {
            "name": "iris",
            "versions": ["1"],
            "platform": "litert_tflite",
            "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}],
            "outputs": [
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
                {"name": "label", "datatype": "BYTES", "shape": [-1]},
            ],
        }


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/nope",
        "/v2/models/nope/ready",
        "/v2/models/iris/versions/2",
        "/v2/models/iris/versions/2/ready",
        "/v2/models/iris/versions/v1",
        "/v2/models/iris/versions/99999999999999999999999",
    ],
)
def test_unknown_model_or_version_is_404(api: TestClient, path: str) -> None:
    answer = api.get(path)
    assert answer.status_code == 404
    assert isinstance(answer.json()["error"], str)


def test_not_ready_without_a_model(tmp_path: Path) -> None:
    with make_client(tmp_path) as client:
        assert client.get("/v2/health/live").status_code == 200
        for answer in (
            client.get("/v2/health/ready"),
            client.get("/v2/models/iris"),
            client.get("/v2/models/iris/ready"),
            client.post("/v2/models/iris/infer", json=infer_body(ROWS)),
        ):
            assert answer.status_code == 503
            assert "no version" in answer.json()["error"]


# -- inference --------------------------------------------------------------------------------
def test_infer_matches_predict_on_both_runtimes(client: TestClient) -> None:
    labels, probabilities = reference(client, ROWS)
    answer = client.post("/v2/models/iris/infer", json=infer_body(ROWS, id="req-7"))
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert (body["model_name"], body["model_version"], body["id"]) == ("iris", "1", "req-7")
    assert [t["name"] for t in body["outputs"]] == ["probabilities", "label"]
    out = tensors(body)
    assert out["probabilities"]["datatype"] == "FP32"
    assert out["probabilities"]["shape"] == [4, 3]
    got = np.array(out["probabilities"]["data"]).reshape(4, 3)
    np.testing.assert_allclose(got, probabilities, atol=1e-6)
    assert out["label"] == {"name": "label", "datatype": "BYTES", "shape": [4], "data": labels}
    assert labels[:3] == ["setosa", "versicolor", "virginica"]


def test_flat_and_nested_data_give_the_same_answer(api: TestClient) -> None:
    flat = [v for row in ROWS for v in row]
    answers = []
    for data in (ROWS, flat, [[row] for row in ROWS], [ROWS[:2], ROWS[2:]]):
        body = infer_body(ROWS)
        body["inputs"][0]["data"] = data
        answer = api.post("/v2/models/iris/infer", json=body)
        assert answer.status_code == 200, answer.text
        answers.append(answer.json()["outputs"])
    assert all(a == answers[0] for a in answers)


def test_an_id_is_made_when_the_request_has_none(api: TestClient) -> None:
    first = api.post("/v2/models/iris/infer", json=infer_body(ROWS)).json()["id"]
    second = api.post("/v2/models/iris/infer", json=infer_body(ROWS)).json()["id"]
    assert isinstance(first, str) and first and first != second


@pytest.mark.parametrize(
    "requested",
    [["label"], ["probabilities"], ["label", "probabilities"], ["label", "label"]],
)
def test_outputs_selects_and_orders_the_answer(api: TestClient, requested: list[str]) -> None:
    body = infer_body(ROWS, outputs=[{"name": n} for n in requested])
    answer = api.post("/v2/models/iris/infer", json=body)
    assert answer.status_code == 200, answer.text
    assert [t["name"] for t in answer.json()["outputs"]] == list(dict.fromkeys(requested))


def test_empty_outputs_and_request_parameters_answer_everything(api: TestClient) -> None:
    body = infer_body(ROWS, outputs=[], parameters={"priority": 0, "custom": "x"})
    answer = api.post("/v2/models/iris/infer", json=body)
    assert [t["name"] for t in answer.json()["outputs"]] == ["probabilities", "label"]


# Values every datatype can hold exactly, so every datatype must give the same answer.
WHOLE_ROWS = [[5, 3, 1, 0], [6, 3, 4, 1], [7, 3, 6, 2]]


@pytest.mark.parametrize(
    "datatype",
    [
        "FP32",
        "FP64",
        "FP16",
        "INT8",
        "INT16",
        "INT32",
        "INT64",
        "UINT8",
        "UINT16",
        "UINT32",
        "UINT64",
    ],
)
def test_float_and_integer_datatypes_are_accepted(api: TestClient, datatype: str) -> None:
    labels, probabilities = reference(api, WHOLE_ROWS)
    answer = api.post("/v2/models/iris/infer", json=infer_body(WHOLE_ROWS, datatype))
    assert answer.status_code == 200, answer.text
    out = tensors(answer.json())
    assert out["label"]["data"] == labels
    np.testing.assert_allclose(np.reshape(out["probabilities"]["data"], (3, 3)), probabilities)


def test_fp16_rounds_values_as_float16(api: TestClient) -> None:
    rows = [[5.1, 3.5, 1.4, 0.2]]
    rounded = np.array(rows, dtype=np.float16).astype(np.float64).tolist()
    _, probabilities = reference(api, rounded)
    answer = api.post("/v2/models/iris/infer", json=infer_body(rows, "FP16")).json()
    np.testing.assert_allclose(tensors(answer)["probabilities"]["data"], probabilities[0])


# -- binary tensor data extension -------------------------------------------------------------
def binary_request(
    x: np.ndarray, datatype: str, outputs: list[dict[str, Any]] | None = None, **params: Any
) -> tuple[bytes, dict[str, str]]:
    raw = x.tobytes()
    header: dict[str, Any] = {
        "inputs": [
            {
                "name": "features",
                "shape": list(x.shape),
                "datatype": datatype,
                "parameters": {"binary_data_size": len(raw)},
            }
        ]
    }
    if outputs is not None:
        header["outputs"] = outputs
    if params:
        header["parameters"] = params
    encoded = orjson.dumps(header)
    return encoded + raw, {
        "Inference-Header-Content-Length": str(len(encoded)),
        "Content-Type": "application/octet-stream",
    }


def split_binary_answer(answer: Any) -> tuple[dict[str, Any], dict[str, bytes]]:
    size = int(answer.headers["inference-header-content-length"])
    header = orjson.loads(answer.content[:size])
    chunks, offset = {}, size
    for tensor in header["outputs"]:
        length = tensor.get("parameters", {}).get("binary_data_size")
        if length is not None:
            chunks[tensor["name"]] = answer.content[offset : offset + length]
            offset += length
    assert offset == len(answer.content)
    return header, chunks


def decode_bytes_tensor(raw: bytes) -> list[str]:
    out, offset = [], 0
    while offset < len(raw):
        (length,) = struct.unpack_from("<I", raw, offset)
        out.append(raw[offset + 4 : offset + 4 + length].decode())
        offset += 4 + length
    return out


@pytest.mark.parametrize(
    ("dtype", "datatype"), [("<f4", "FP32"), ("<f8", "FP64"), ("<i4", "INT32")]
)
def test_binary_inputs_and_outputs(api: TestClient, dtype: str, datatype: str) -> None:
    labels, probabilities = reference(api, WHOLE_ROWS)
    body, headers = binary_request(
        np.array(WHOLE_ROWS, dtype=dtype), datatype, binary_data_output=True
    )
    answer = api.post("/v2/models/iris/infer", content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/octet-stream"
    header, chunks = split_binary_answer(answer)
    assert [t["name"] for t in header["outputs"]] == ["probabilities", "label"]
    assert all("data" not in t for t in header["outputs"])
    got = np.frombuffer(chunks["probabilities"], dtype="<f4").reshape(3, 3)
    np.testing.assert_allclose(got, probabilities, atol=1e-6)
    assert decode_bytes_tensor(chunks["label"]) == labels


def test_binary_output_can_be_chosen_per_output(api: TestClient) -> None:
    body = infer_body(
        ROWS,
        outputs=[{"name": "label", "parameters": {"binary_data": True}}, {"name": "probabilities"}],
    )
    header, chunks = split_binary_answer(api.post("/v2/models/iris/infer", json=body))
    out = tensors(header)
    assert out["label"]["parameters"]["binary_data_size"] == len(chunks["label"])
    assert len(out["probabilities"]["data"]) == 12
    assert decode_bytes_tensor(chunks["label"])[:3] == ["setosa", "versicolor", "virginica"]


def test_binary_data_output_false_on_an_output_overrides_the_request(api: TestClient) -> None:
    body = infer_body(
        ROWS,
        outputs=[{"name": "label", "parameters": {"binary_data": False}}],
        parameters={"binary_data_output": True},
    )
    answer = api.post("/v2/models/iris/infer", json=body)
    assert answer.headers["content-type"] == "application/json"
    assert len(answer.json()["outputs"][0]["data"]) == 4


# -- versions ---------------------------------------------------------------------------------
def test_version_path_serves_a_loaded_version(artifacts_copy: Path) -> None:
    shutil.copytree(artifacts_copy / "iris" / "1", artifacts_copy / "iris" / "2")
    with make_client(artifacts_copy) as client:
        assert client.get("/v2/models/iris").json()["versions"] == ["2"]
        registry = client.app.state.repository.models["iris"]  # type: ignore[attr-defined]
        registry.reload(1)  # 1 is served, 2 is kept loaded as the previous version
        assert client.get("/v2/models/iris").json()["versions"] == ["2", "1"]
        for version in ("1", "2"):
            path = f"/v2/models/iris/versions/{version}"
            assert client.get(path).json()["name"] == "iris"
            answer = client.post(f"{path}/infer", json=infer_body(ROWS))
            assert answer.status_code == 200, answer.text
            assert answer.json()["model_version"] == version
        assert (
            client.post("/v2/models/iris/infer", json=infer_body(ROWS)).json()["model_version"]
            == "1"
        )
        answer = client.post("/v2/models/iris/versions/3/infer", json=infer_body(ROWS))
        assert answer.status_code == 404
        assert "version 3" in answer.json()["error"]


# -- errors -----------------------------------------------------------------------------------
def _input(**changes: Any) -> dict[str, Any]:
    tensor = {"name": "features", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}
    tensor.update(changes)
    return {"inputs": [{k: v for k, v in tensor.items() if v is not ...}]}


MALFORMED: dict[str, tuple[Any, int, str]] = {
    # name: (body, status, a word the message must contain)
    "shape of three features": (_input(shape=[1, 3], data=[1, 2, 3]), 400, "shape"),
    "shape of one dimension": (_input(shape=[4]), 400, "shape"),
    "shape of three dimensions": (_input(shape=[1, 4, 1]), 400, "shape"),
    "shape with no rows": (_input(shape=[0, 4], data=[]), 400, "rows"),
    "negative shape": (_input(shape=[-1, 4]), 400, "shape"),
    "shape not a list": (_input(shape="1,4"), 400, "shape"),
    "datatype BOOL": (_input(datatype="BOOL", data=[True, False, True, False]), 400, "BOOL"),
    "datatype BYTES": (_input(datatype="BYTES", data=["a", "b", "c", "d"]), 400, "BYTES"),
    "datatype BF16": (_input(datatype="BF16"), 400, "BF16"),
    "datatype lower case": (_input(datatype="fp32"), 400, "datatype"),
    "datatype not a string": (_input(datatype=["FP32"]), 400, "datatype"),
    "too few values": (_input(data=[5.1, 3.5, 1.4]), 400, "3 values"),
    "too many values": (_input(data=[5.1, 3.5, 1.4, 0.2, 1.0]), 400, "5 values"),
    "ragged rows": (_input(shape=[2, 4], data=[[1, 2, 3], [4, 5, 6, 7]]), 400, "7 values"),
    "data not a list": (_input(data=5.1), 400, "data"),
    "string in data": (_input(data=[5.1, "3.5", 1.4, 0.2]), 400, "string"),
    "null in data": (_input(data=[5.1, None, 1.4, 0.2]), 400, "null"),
    "boolean in FP32 data": (_input(data=[5.1, True, 1.4, 0.2]), 400, "boolean"),
    "object in data": (_input(data=[5.1, {"x": 1}, 1.4, 0.2]), 400, "object"),
    "float in INT32 data": (_input(datatype="INT32", data=[5, 3.5, 1, 0]), 400, "integer"),
    "out of INT8 range": (_input(datatype="INT8", data=[5, 300, 1, 0]), 400, "range"),
    "negative UINT8": (_input(datatype="UINT8", data=[5, -3, 1, 0]), 400, "range"),
    "out of range": (_input(data=[5.1, 1e39, 1.4, 0.2]), 400, "range"),
    "out of FP16 range": (_input(datatype="FP16", data=[5.1, 1e5, 1.4, 0.2]), 400, "FP16"),
    "missing data": (_input(data=...), 400, "data"),
    "missing shape": (_input(shape=...), 400, "shape"),
    "missing datatype": (_input(datatype=...), 400, "datatype"),
    "missing name": (_input(name=...), 400, "name"),
    "wrong input name": (_input(name="input0"), 400, "input0"),
    "missing inputs": ({"id": "1"}, 400, "inputs"),
    "empty inputs": ({"inputs": []}, 400, "inputs"),
    "two inputs": ({"inputs": _input()["inputs"] * 2}, 400, "2 tensors"),
    "inputs not a list": ({"inputs": _input()["inputs"][0]}, 400, "inputs"),
    "input not an object": ({"inputs": [[5.1, 3.5, 1.4, 0.2]]}, 400, "inputs[0]"),
    "id not a string": ({**_input(), "id": 42}, 400, "id"),
    "parameters not an object": ({**_input(), "parameters": [1]}, 400, "parameters"),
    "binary_data_output not a bool": (
        {**_input(), "parameters": {"binary_data_output": "yes"}},
        400,
        "binary_data_output",
    ),
    "unknown output": ({**_input(), "outputs": [{"name": "logits"}]}, 400, "logits"),
    "output without a name": ({**_input(), "outputs": [{}]}, 400, "outputs[0]"),
    "outputs not a list": ({**_input(), "outputs": {"name": "label"}}, 400, "outputs"),
    "classification extension": (
        {**_input(), "outputs": [{"name": "label", "parameters": {"classification": 2}}]},
        400,
        "classification",
    ),
    "shared memory": (
        _input(data=..., parameters={"shared_memory_region": "r", "shared_memory_byte_size": 16}),
        400,
        "shared-memory",
    ),
    "binary size without binary data": (
        _input(data=..., parameters={"binary_data_size": 16}),
        400,
        "binary_data_size",
    ),
    "both data and binary size": (_input(parameters={"binary_data_size": 16}), 400, "both"),
    "body is an array": ([_input()], 400, "object"),
    "body is null": (None, 400, "object"),
}


@pytest.mark.parametrize("case", MALFORMED, ids=list(MALFORMED))
def test_malformed_requests_answer_400_with_an_error(api: TestClient, case: str) -> None:
    body, status, word = MALFORMED[case]
    answer = api.post("/v2/models/iris/infer", content=orjson.dumps(body))
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert word.lower() in answer.json()["error"].lower()


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"  ",
        b"{",
        b'{"inputs": [}',
        b"\xff\xfe",
        b'{"inputs": NaN}',
        b'{"id": "1", "id": "2"}',
    ],
    ids=["empty", "blank", "truncated", "broken", "not utf-8", "NaN", "duplicate key"],
)
def test_wrong_json_answers_400(api: TestClient, raw: bytes) -> None:
    answer = api.post("/v2/models/iris/infer", content=raw)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]


def test_non_finite_data_is_refused(api: TestClient) -> None:
    raw = b'{"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": [5.1, Infinity, 1.4, 0.2]}]}'
    answer = api.post("/v2/models/iris/infer", content=raw)
    assert answer.status_code == 400
    assert "Infinity" in answer.json()["error"]


@pytest.mark.parametrize(
    ("header_length", "word"),
    [
        ("abc", "not a number"),
        ("-1", "not a number"),
        ("100000", "but the body has"),
        ("10", "JSON"),
    ],
)
def test_bad_binary_header_length_answers_400(
    api: TestClient, header_length: str, word: str
) -> None:
    body, headers = binary_request(np.array(WHOLE_ROWS, dtype="<f4"), "FP32")
    headers["Inference-Header-Content-Length"] = header_length
    answer = api.post("/v2/models/iris/infer", content=body, headers=headers)
    assert answer.status_code == 400, answer.text
    assert word in answer.json()["error"]


@pytest.mark.parametrize("cut", [-1, 1])
def test_binary_size_mismatch_answers_400(api: TestClient, cut: int) -> None:
    body, headers = binary_request(np.array(WHOLE_ROWS, dtype="<f4"), "FP32")
    body = body[:-1] if cut < 0 else body + b"\0"
    answer = api.post("/v2/models/iris/infer", content=body, headers=headers)
    assert answer.status_code == 400
    assert "binary" in answer.json()["error"]


def test_binary_size_that_does_not_fit_the_shape_answers_400(api: TestClient) -> None:
    x = np.array(WHOLE_ROWS, dtype="<f4")
    body, headers = binary_request(x[:, :3].copy(), "FP32")  # 3 columns of bytes, shape says 4
    header = orjson.loads(body[: int(headers["Inference-Header-Content-Length"])])
    header["inputs"][0]["shape"] = [3, 4]
    header["inputs"][0]["parameters"]["binary_data_size"] = 36
    encoded = orjson.dumps(header)
    headers["Inference-Header-Content-Length"] = str(len(encoded))
    answer = api.post(
        "/v2/models/iris/infer", content=encoded + x[:, :3].tobytes(), headers=headers
    )
    assert answer.status_code == 400
    assert "needs 48" in answer.json()["error"]


def test_non_finite_binary_data_answers_400(api: TestClient) -> None:
    x = np.array(WHOLE_ROWS, dtype="<f4")
    x[1, 2] = np.nan
    body, headers = binary_request(x, "FP32")
    answer = api.post("/v2/models/iris/infer", content=body, headers=headers)
    assert answer.status_code == 400
    assert "petal_length" in answer.json()["error"]


def test_unknown_model_and_version_on_infer_are_404(api: TestClient) -> None:
    for path in ("/v2/models/nope/infer", "/v2/models/iris/versions/7/infer"):
        answer = api.post(path, json=infer_body(ROWS))
        assert answer.status_code == 404
        assert answer.json()["error"]


def test_limits_answer_413(artifacts_copy: Path) -> None:
    with make_client(artifacts_copy, max_batch_rows=3, max_body_bytes=2048) as client:
        answer = client.post("/v2/models/iris/infer", json=infer_body(ROWS))
        assert answer.status_code == 413
        assert "limit is 3" in answer.json()["error"]
        answer = client.post("/v2/models/iris/infer", content=b" " * 4096)
        assert answer.status_code == 413
        assert "MAX_BODY_BYTES" in answer.json()["error"]


def test_content_types(api: TestClient) -> None:
    raw = orjson.dumps(infer_body(ROWS))
    for media in (None, "application/json", "application/x-www-form-urlencoded", "text/plain"):
        headers = {"Content-Type": media} if media else {}
        assert api.post("/v2/models/iris/infer", content=raw, headers=headers).status_code == 200
    answer = api.post("/v2/models/iris/infer", content=raw, headers={"Content-Type": "text/csv"})
    assert answer.status_code == 415
    assert answer.json()["error"]


def test_api_key_guards_inference_only(artifacts_copy: Path) -> None:
    with make_client(artifacts_copy, api_key="s3cret") as client:
        assert client.post("/v2/models/iris/infer", json=infer_body(ROWS)).status_code == 401
        good = {"Authorization": "Bearer s3cret"}
        answer = client.post("/v2/models/iris/infer", json=infer_body(ROWS), headers=good)
        assert answer.status_code == 200
        answer = client.post(
            "/v2/models/iris/versions/1/infer", json=infer_body(ROWS), headers=good
        )
        assert answer.status_code == 200
        assert client.post("/v2/models/iris/versions/1/infer", json=infer_body(ROWS)).json()[
            "error"
        ]
        for path in ("/v2", "/v2/health/ready", "/v2/models/iris", "/v2/models/iris/ready"):
            assert client.get(path).status_code == 200


def _mutations(document: Any, rng: random.Random) -> Any:
    """One random change somewhere in a JSON document: a value replaced or a key dropped."""
    pool: list[Any] = [
        None, True, False, 0, -1, 1, 2**70, -(2**70), 1.5, 1e308, "", "x", "FP32", "BYTES",
        [], {}, [[]], [None], [-1, 4], [1, 4], {"name": "label"}, {"binary_data": True},
        {"binary_data_size": 4}, ["features"], [[1, 2, 3, 4]],
    ]  # fmt: skip
    if isinstance(document, dict) and document and rng.random() < 0.7:
        key = rng.choice(list(document))
        if rng.random() < 0.2:
            return {k: v for k, v in document.items() if k != key}
        return {**document, key: _mutations(document[key], rng)}
    if isinstance(document, list) and document and rng.random() < 0.7:
        i = rng.randrange(len(document))
        return [*document[:i], _mutations(document[i], rng), *document[i + 1 :]]
    return rng.choice(pool)


def test_random_malformed_requests_never_answer_5xx(api: TestClient) -> None:
    rng = random.Random(4)
    valid = infer_body(
        ROWS[:2],
        id="x",
        outputs=[
            {"name": "label"},
            {"name": "probabilities", "parameters": {"binary_data": False}},
        ],
        parameters={"binary_data_output": False},
    )
    statuses = set()
    for _ in range(400):
        body = valid
        for _ in range(rng.randint(1, 3)):
            body = _mutations(body, rng)
        answer = api.post("/v2/models/iris/infer", content=json.dumps(body).encode())
        statuses.add(answer.status_code)
        assert answer.status_code < 500, (body, answer.text)
        if answer.status_code != 200:
            assert isinstance(answer.json()["error"], str)
    assert statuses >= {200, 400}


# -- another data set: two classes, three features, string labels -----------------------------
@pytest.mark.slow  # trains a second model
def test_binary_classifier_metadata_and_inference(binary_bundle: Path) -> None:
    artifacts = binary_bundle.parent.parent
    settings = Settings(artifacts_dir=artifacts, model_name="binary", model_runtime="litert")
    rows = [[0.5, 0.1, -0.3], [-1.2, 0.4, 0.9], [2.0, -1.0, 0.0]]
    with TestClient(create_app(settings)) as client:
        meta = client.get("/v2/models/binary").json()
        assert meta["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 3]}]
        assert meta["outputs"][0] == {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]}
        predicted = client.post("/predict", json={"instances": rows}).json()["predictions"]
        body = {"inputs": [{"name": "features", "shape": [3, 3], "datatype": "FP64", "data": rows}]}
        answer = client.post("/v2/models/binary/infer", json=body)
        assert answer.status_code == 200, answer.text
        out = tensors(answer.json())
        assert out["label"]["data"] == [p["label"] for p in predicted]
        assert set(out["label"]["data"]) <= {"no", "yes"}
        np.testing.assert_allclose(
            np.reshape(out["probabilities"]["data"], (3, 2)),
            [[p["probabilities"]["no"], p["probabilities"]["yes"]] for p in predicted],
            atol=1e-6,
        )
        assert client.post("/v2/models/iris/infer", json=body).status_code == 404


def test_large_requests_are_parsed_off_the_event_loop_and_answered(api: TestClient) -> None:
    rng = np.random.default_rng(0)
    x = (rng.uniform([4, 2, 1, 0], [8, 4.5, 7, 2.5], size=(5000, 4))).astype(np.float32)
    rows = x.tolist()
    labels, probabilities = reference(api, rows)
    answer = api.post("/v2/models/iris/infer", json=infer_body(rows))
    assert answer.status_code == 200
    out = tensors(answer.json())
    assert out["label"]["data"] == labels
    np.testing.assert_allclose(np.reshape(out["probabilities"]["data"], (5000, 3)), probabilities)
    body, headers = binary_request(x, "FP32", binary_data_output=True)
    _, chunks = split_binary_answer(
        api.post("/v2/models/iris/infer", content=body, headers=headers)
    )
    assert decode_bytes_tensor(chunks["label"]) == labels
