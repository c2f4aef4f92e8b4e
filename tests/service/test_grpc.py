"""The Open Inference Protocol over gRPC, driven by an unchanged ``tritonclient.grpc`` against a
real ``python -m service`` process: the same answers as V2 REST, status codes for errors, the
standard health service, metrics and access lines, and SIGTERM draining calls in flight."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.service.typed_support import TYPED_FEATURES, TYPED_ROWS
from tests.support import ServerProcess, free_port, wait_until

pytestmark = pytest.mark.slow

KEY = "grpc-secret"
AUTH = {"authorization": f"Bearer {KEY}"}
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3], [50.0, 3.5, -1.4, 0.2]]


class GrpcServer(ServerProcess):
    """The service with gRPC on a free port of its own."""

    def __init__(self, artifacts: Path, **env: object) -> None:
        self.grpc_port = free_port()
        super().__init__(artifacts, artifacts / "server.log", grpc_port=self.grpc_port, **env)
        self.target = f"127.0.0.1:{self.grpc_port}"


@contextlib.contextmanager
def _serve(bundle: Path, root: Path, name: str, **env: object) -> Iterator[GrpcServer]:
    shutil.copytree(bundle, root / name / "1")
    with GrpcServer(root, model_name=name, **env) as server:
        server.wait_for("/readyz")
        yield server


@pytest.fixture(scope="module")
def iris(iris_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcServer]:
    root = tmp_path_factory.mktemp("grpc-iris")
    with _serve(iris_bundle, root, "iris", api_key=KEY, max_batch_rows=50) as server:
        yield server


@pytest.fixture(scope="module")
def churn(typed_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcServer]:
    with _serve(typed_bundle, tmp_path_factory.mktemp("grpc-churn"), "churn") as server:
        yield server


def _fp32(rows: list[list[float]], protocol: Any) -> Any:
    tensor = protocol.InferInput("features", [len(rows), 4], "FP32")
    tensor.set_data_from_numpy(np.array(rows, dtype=np.float32))
    return tensor


def _error(call: Any) -> tuple[str, str]:
    with pytest.raises(InferenceServerException) as caught:
        call()
    return str(caught.value.status()), caught.value.message()


# -- the inference service ----------------------------------------------------------------------
def test_health_and_metadata_as_rest_answers_them(iris: GrpcServer) -> None:
    client = tgrpc.InferenceServerClient(iris.target)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("iris") and client.is_model_ready("iris", "1")
    rest = httpx.get(f"{iris.url}/v2/models/iris").json()
    metadata = client.get_model_metadata("iris", as_json=True)
    assert metadata["name"] == rest["name"] and metadata["versions"] == rest["versions"]
    assert metadata["platform"] == rest["platform"]
    for kind in ("inputs", "outputs"):
        assert [{**t, "shape": [int(d) for d in t["shape"]]} for t in metadata[kind]] == rest[kind]
    server = client.get_server_metadata(as_json=True)
    assert server == {k: v for k, v in httpx.get(f"{iris.url}/v2").json().items()}
    assert _error(lambda: client.is_model_ready("other"))[0] == "StatusCode.NOT_FOUND"
    status, message = _error(lambda: client.get_model_metadata("iris", "7"))
    assert status == "StatusCode.NOT_FOUND" and "version 7" in message


def test_infer_answers_exactly_what_v2_rest_answers(iris: GrpcServer) -> None:
    client = tgrpc.InferenceServerClient(iris.target)
    outputs = [tgrpc.InferRequestedOutput("probabilities"), tgrpc.InferRequestedOutput("label")]
    answer = client.infer(
        "iris", [_fp32(ROWS, tgrpc)], outputs=outputs, request_id="r-1", headers=AUTH
    )
    with thttp.InferenceServerClient(iris.url.removeprefix("http://")) as rest:
        expected = rest.infer("iris", [_fp32(ROWS, thttp)], headers=dict(AUTH))  # it adds to it
    assert answer.get_response().id == "r-1"
    assert answer.get_response().model_version == "1"
    got = answer.as_numpy("probabilities")
    assert got.dtype == np.float32 and got.shape == (len(ROWS), 3)
    assert np.array_equal(got, expected.as_numpy("probabilities"))
    assert answer.as_numpy("label").tolist() == expected.as_numpy("label").tolist()
    # No outputs named: both; a version by number; one output only.
    both = client.infer("iris", [_fp32(ROWS[:1], tgrpc)], model_version="1", headers=AUTH)
    assert both.as_numpy("label").tolist() == [b"setosa"]
    one = client.infer(
        "iris", [_fp32(ROWS[:1], tgrpc)], outputs=outputs[1:], headers=AUTH
    ).get_response()
    assert [o.name for o in one.outputs] == ["label"]


def test_errors_are_status_codes_with_the_rest_message(iris: GrpcServer) -> None:
    client = tgrpc.InferenceServerClient(iris.target)
    rows = [_fp32(ROWS, tgrpc)]
    status, message = _error(lambda: client.infer("iris", rows))
    assert status == "StatusCode.UNAUTHENTICATED" and "API_KEY" in message
    wrong = {"authorization": "Bearer nope"}
    assert _error(lambda: client.infer("iris", rows, headers=wrong))[0] == (
        "StatusCode.UNAUTHENTICATED"
    )
    status, message = _error(lambda: client.infer("other", rows, headers=AUTH))
    assert status == "StatusCode.NOT_FOUND" and "'other'" in message
    assert _error(lambda: client.infer("iris", rows, model_version="7", headers=AUTH))[0] == (
        "StatusCode.NOT_FOUND"
    )
    narrow = tgrpc.InferInput("features", [1, 3], "FP32")
    narrow.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32))
    status, message = _error(lambda: client.infer("iris", [narrow], headers=AUTH))
    rest = httpx.post(
        f"{iris.url}/v2/models/iris/infer",
        json={
            "inputs": [{"name": "features", "shape": [1, 3], "datatype": "FP32", "data": [0, 0, 0]}]
        },
        headers=AUTH,
    )
    assert rest.status_code == 400
    assert status == "StatusCode.INVALID_ARGUMENT"
    assert message == rest.json()["error"].replace("data", "data", 1)
    status, message = _error(lambda: client.infer("iris", [_fp32(ROWS * 20, tgrpc)], headers=AUTH))
    assert status == "StatusCode.RESOURCE_EXHAUSTED" and "limit is 50" in message


def test_a_message_over_max_body_bytes_is_refused(iris_bundle: Path, tmp_path: Path) -> None:
    with _serve(iris_bundle, tmp_path, "iris", max_body_bytes=2048) as server:
        client = tgrpc.InferenceServerClient(server.target)
        status, _ = _error(lambda: client.infer("iris", [_fp32(ROWS * 40, tgrpc)]))
        assert status == "StatusCode.RESOURCE_EXHAUSTED"
        assert client.infer("iris", [_fp32(ROWS, tgrpc)]).as_numpy("label").shape == (4,)


def test_many_inputs_are_refused_before_they_are_read(iris: GrpcServer) -> None:
    request = [tgrpc.InferInput(f"x{i}", [1], "FP32") for i in range(20_000)]
    for tensor in request:
        tensor.set_data_from_numpy(np.zeros(1, dtype=np.float32))
    client = tgrpc.InferenceServerClient(iris.target)
    status, message = _error(lambda: client.infer("iris", request, headers=AUTH))
    assert status == "StatusCode.INVALID_ARGUMENT"
    assert message.startswith("inputs has 20000 tensors; the model takes one input per feature")


def test_a_grpc_port_another_program_holds_stops_the_start(
    iris_bundle: Path, tmp_path: Path
) -> None:
    """Even with SO_REUSEPORT set by the holder (as the workers of another service set it)."""
    shutil.copytree(iris_bundle, tmp_path / "iris" / "1")
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        for workers in (1, 2):
            server = ServerProcess(
                tmp_path,
                tmp_path / "server.log",
                grpc_port=holder.getsockname()[1],
                workers=workers,
            )
            server.start(wait=None)
            assert server.process is not None and server.process.wait(60) == 2
            lines = [line for line in server.log().splitlines() if line.strip()]
            assert lines[-1].startswith("error: cannot listen for gRPC on 127.0.0.1:"), lines
            assert "GRPC_PORT" in lines[-1]
    finally:
        holder.close()


def test_typed_features_answer_as_rest(churn: GrpcServer) -> None:
    """One BYTES, BOOL or FP32 input per feature, blanks as empty text and NaN."""

    def inputs(protocol: Any) -> list[Any]:
        tensors = []
        for j, name in enumerate(TYPED_FEATURES):
            values = [row[j] for row in TYPED_ROWS]
            if name in ("plan", "region"):
                array = np.array([(v or "").encode() for v in values], dtype=np.object_)
                datatype = "BYTES"
            else:  # numbers and the boolean member as FP32, a blank as NaN
                array = np.array([np.nan if v is None else float(v) for v in values], np.float32)
                datatype = "FP32"
            tensor = protocol.InferInput(name, [len(values)], datatype)
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        return tensors

    answer = tgrpc.InferenceServerClient(churn.target).infer("churn", inputs(tgrpc))
    with thttp.InferenceServerClient(churn.url.removeprefix("http://")) as rest:
        expected = rest.infer("churn", inputs(thttp))
    assert np.array_equal(answer.as_numpy("probabilities"), expected.as_numpy("probabilities"))
    assert answer.as_numpy("label").tolist() == expected.as_numpy("label").tolist()


# -- health, metrics, logs ----------------------------------------------------------------------
def test_the_standard_health_service_needs_no_key(iris: GrpcServer) -> None:
    with grpc.insecure_channel(iris.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService"):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as caught:
            health.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=10)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()


def test_metrics_and_access_lines_name_the_protocol(iris: GrpcServer) -> None:
    client = tgrpc.InferenceServerClient(iris.target)
    client.infer("iris", [_fp32(ROWS, tgrpc)], headers={**AUTH, "x-request-id": "grpc-line-1"})
    metrics = httpx.get(f"{iris.url}/metrics").text
    assert (
        'inference_requests_total{model="iris",protocol="grpc",status="200",version="1"}' in metrics
    )
    assert 'grpc_requests_total{code="OK",method="ModelInfer"}' in metrics
    assert 'grpc_requests_total{code="UNAUTHENTICATED",method="ModelInfer"}' in metrics
    assert 'model_predictions_total{label="setosa",model="iris",version="1"}' in metrics
    lines = [json.loads(x) for x in iris.log().splitlines() if "grpc-line-1" in x]
    assert lines and lines[-1]["route"] == "/inference.GRPCInferenceService/ModelInfer"
    assert lines[-1]["status"] == 200 and lines[-1]["model_version"] == 1


# -- shutdown -----------------------------------------------------------------------------------
def test_sigterm_drains_grpc_calls_in_flight(iris_bundle: Path, tmp_path: Path) -> None:
    """Calls that wait in the Keras batcher (BATCH_WAIT_MS) when SIGTERM comes are answered;
    a call made once the drain began is refused; the process exits 0."""
    shutil.copytree(iris_bundle, tmp_path / "iris" / "1")
    server = GrpcServer(
        tmp_path, model_runtime="keras", batch_wait_ms=1000, shutdown_timeout_seconds=20
    )
    server.start(wait="/readyz", timeout=120)
    try:
        results: list[Any] = []

        def call() -> None:
            try:
                answer = tgrpc.InferenceServerClient(server.target).infer(
                    "iris", [_fp32(ROWS[:3], tgrpc)]
                )
                results.append(answer.as_numpy("label").tolist())
            except InferenceServerException as exc:
                results.append(str(exc.status()))

        threads = [threading.Thread(target=call) for _ in range(4)]
        for thread in threads:
            thread.start()
        wait_until(
            lambda: "http_predictions_in_flight 4.0" in httpx.get(f"{server.url}/metrics").text,
            "the four calls in flight",
        )
        channel = grpc.insecure_channel(server.target)
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        wait_until(lambda: "draining gRPC" in server.log(), "the drain logged")
        late = _error(
            lambda: tgrpc.InferenceServerClient(server.target).infer("iris", [_fp32(ROWS, tgrpc)])
        )
        # An open Watch stream hears NOT_SERVING, then ends (it must not hold the drain).
        assert [answer.status for answer in watch] == [health_pb2.HealthCheckResponse.NOT_SERVING]
        channel.close()
        for thread in threads:
            thread.join(60)
        assert server.process.wait(60) == 0
    finally:
        server.stop()
    assert results == [[b"setosa", b"versicolor", b"virginica"]] * 4
    assert late[0] == "StatusCode.UNAVAILABLE"
