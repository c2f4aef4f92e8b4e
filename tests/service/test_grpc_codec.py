"""service.grpc_api: the vendored protocol against tritonclient's, and the codec between gRPC
messages and V2 REST documents. Fast: no model, no server; tritonclient builds the messages."""

from __future__ import annotations

import math
import struct
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import orjson
import pytest
import tritonclient.grpc as triton
from google.protobuf import descriptor_pb2, descriptor_pool, json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from tritonclient.grpc import service_pb2 as triton_pb2
from tritonclient.grpc._utils import _get_inference_request

from service.errors import InvalidInput, ServiceError
from service.grpc_api import _generate
from service.grpc_api import grpc_predict_v2_pb2 as pb
from service.grpc_api import grpc_predict_v2_pb2_grpc as pb_grpc
from service.grpc_api.codec import (
    CONTENTS_FIELD,
    metadata_response,
    parameter_value,
    request_to_document,
    response_from_answer,
    server_metadata_response,
    set_parameter,
)
from service.protocols import v2

ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)


def infer_request(
    inputs: list[triton.InferInput],
    outputs: list[triton.InferRequestedOutput] | None = None,
    request_id: str = "",
    parameters: dict[str, Any] | None = None,
    **options: Any,
) -> triton_pb2.ModelInferRequest:
    """The request tritonclient.grpc's InferenceServerClient.infer sends."""
    settings: dict[str, Any] = {
        "sequence_id": 0,
        "sequence_start": False,
        "sequence_end": False,
        "priority": 0,
        "timeout": None,
        **options,
    }
    return _get_inference_request(
        model_name="iris",
        inputs=inputs,
        model_version="",
        request_id=request_id,
        outputs=outputs,
        parameters=parameters,
        **settings,
    )


def ours(message: Any) -> Any:
    """A tritonclient message through the wire into our class of the same name."""
    cls = getattr(pb, type(message).__name__)
    return cls.FromString(message.SerializeToString())


def theirs(message: Any) -> Any:
    cls = getattr(triton_pb2, type(message).__name__)
    return cls.FromString(message.SerializeToString())


def as_dict(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def features_input(rows: np.ndarray = ROWS) -> triton.InferInput:
    return triton.InferInput("features", list(rows.shape), "FP32").set_data_from_numpy(rows)


def bytes_input(name: str, values: list[Any]) -> triton.InferInput:
    array = np.array(values, dtype=np.object_)
    return triton.InferInput(name, [len(values)], "BYTES").set_data_from_numpy(array)


def typed_input(name: str, datatype: str, field: str, values: list[Any]) -> Any:
    tensor = pb.ModelInferRequest.InferInputTensor(
        name=name, datatype=datatype, shape=[len(values)]
    )
    getattr(tensor.contents, field).extend(values)
    return tensor


def document_of(*tensors: Any, raw: list[bytes] | None = None) -> tuple[dict[str, Any], bytes]:
    request = pb.ModelInferRequest(model_name="iris", inputs=tensors, raw_input_contents=raw or [])
    return request_to_document(request)


def refused(request: Any) -> str:
    with pytest.raises(InvalidInput) as caught:
        request_to_document(request)
    return caught.value.message


# -- the protocol: our stubs against tritonclient's -------------------------------------------
def _messages(descriptor: Descriptor) -> list[Descriptor]:
    found = [descriptor]
    for nested in descriptor.nested_types:
        found.extend(_messages(nested))
    return found


def _field(field: FieldDescriptor) -> tuple[Any, ...]:
    return (
        field.name,
        field.number,
        field.type,
        field.is_repeated,
        field.message_type.full_name if field.message_type else None,
        field.containing_oneof.name if field.containing_oneof else None,
    )


def test_every_message_matches_tritonclient_field_for_field() -> None:
    """Same names, numbers, types, labels and oneofs as Triton's grpc_service.proto: the wire
    format tritonclient.grpc speaks. Triton has more fields nowhere in these messages."""
    ours_messages = [
        m for top in pb.DESCRIPTOR.message_types_by_name.values() for m in _messages(top)
    ]
    assert len(ours_messages) > 20
    pool = triton_pb2.DESCRIPTOR.pool
    for message in ours_messages:
        reference = pool.FindMessageTypeByName(message.full_name)
        assert [_field(f) for f in message.fields] == [_field(f) for f in reference.fields], (
            message.full_name
        )
        assert message.GetOptions().map_entry == reference.GetOptions().map_entry


def test_the_service_is_triton_s_for_its_six_methods() -> None:
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == "inference.GRPCInferenceService"
    reference = triton_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    methods = {
        m.name: (m.input_type.full_name, m.output_type.full_name, m.client_streaming)
        for m in service.methods
    }
    assert set(methods) == {
        "ServerLive",
        "ServerReady",
        "ModelReady",
        "ServerMetadata",
        "ModelMetadata",
        "ModelInfer",
    }
    for name, signature in methods.items():
        method = reference.methods_by_name[name]
        assert signature == (
            method.input_type.full_name,
            method.output_type.full_name,
            method.client_streaming,
        )
    assert hasattr(pb_grpc, "add_GRPCInferenceServiceServicer_to_server")
    assert hasattr(pb_grpc, "GRPCInferenceServiceStub")


def test_our_stubs_and_tritonclient_s_share_a_process() -> None:
    """Both define inference.ModelInferRequest; ours live in a pool of their own (see
    service/grpc_api/_generate.py), so importing both does not fail with "duplicate symbol"."""
    assert pb.DESCRIPTOR.pool is not descriptor_pool.Default()
    assert triton_pb2.DESCRIPTOR.pool is descriptor_pool.Default()
    assert pb.DESCRIPTOR.name == "service/grpc_api/grpc_predict_v2.proto"


def test_the_committed_stubs_are_generated_from_the_proto(tmp_path: Path) -> None:
    """A .proto edited without `make proto` fails here (the descriptor, not the text, is
    compared: another grpcio-tools patch release writes other version numbers)."""
    stubs = _generate.generate(tmp_path)
    assert [s.name for s in stubs] == list(_generate.STUBS)
    generated = stubs[0].read_text()
    assert "_descriptor_pool.DescriptorPool().AddSerializedFile(" in generated
    committed = (_generate.ROOT / _generate.PACKAGE / _generate.STUBS[0]).read_text()
    serialized = [
        line
        for text in (generated, committed)
        for line in text.splitlines()
        if "AddSerialized" in line
    ]
    assert len(serialized) == 2 and serialized[0] == serialized[1]
    proto = descriptor_pb2.FileDescriptorProto.FromString(pb.DESCRIPTOR.serialized_pb)
    assert proto.package == "inference" and proto.syntax == "proto3"


def test_an_infer_request_survives_the_wire_both_ways() -> None:
    request = infer_request(
        [features_input(), bytes_input("plan", ["basic", "pré", ""])],
        [triton.InferRequestedOutput("label"), triton.InferRequestedOutput("probabilities")],
        request_id="r-1",
        parameters={"text": "x", "flag": True, "count": 7, "ratio": 0.5},
        priority=3,
        timeout=100,
    )
    request.model_version = "2"
    request.inputs[0].contents.fp32_contents.extend([1.5])  # every field, not what is sensible
    request.inputs[1].parameters["binary_data_size"].int64_param = 5
    mine = ours(request)
    assert as_dict(mine) == as_dict(request)
    assert theirs(mine) == request
    assert mine.SerializeToString(deterministic=True) == request.SerializeToString(
        deterministic=True
    )
    assert mine.raw_input_contents[0] == ROWS.tobytes()
    assert mine.parameters["priority"].uint64_param == 3


def test_infer_and_metadata_responses_survive_the_wire_both_ways() -> None:
    response = triton_pb2.ModelInferResponse(model_name="iris", model_version="1", id="r-1")
    tensor = response.outputs.add(name="probabilities", datatype="FP32", shape=[2, 3])
    tensor.parameters["note"].string_param = "x"
    tensor.parameters["big"].uint64_param = 2**64 - 1
    tensor.contents.bytes_contents.append(b"\x00\xff")
    response.parameters["ratio"].double_param = 0.25
    response.raw_output_contents.extend([b"\x01\x02", b""])
    mine = ours(response)
    assert as_dict(mine) == as_dict(response)
    assert theirs(mine) == response

    metadata = triton_pb2.ModelMetadataResponse(
        name="iris", versions=["2", "1"], platform="litert_tflite"
    )
    metadata.inputs.add(name="features", datatype="FP32", shape=[-1, 4])
    metadata.outputs.add(name="label", datatype="BYTES", shape=[-1])
    assert as_dict(ours(metadata)) == as_dict(metadata)
    assert theirs(ours(metadata)) == metadata

    for message in (
        triton_pb2.ServerLiveResponse(live=True),
        triton_pb2.ServerReadyResponse(ready=True),
        triton_pb2.ModelReadyRequest(name="iris", version="1"),
        triton_pb2.ModelReadyResponse(ready=True),
        triton_pb2.ModelMetadataRequest(name="iris", version="1"),
        triton_pb2.ServerMetadataResponse(name="n", version="v", extensions=["a", "b"]),
    ):
        assert theirs(ours(message)) == message
        assert as_dict(ours(message)) == as_dict(message)


# -- requests ---------------------------------------------------------------------------------
def test_raw_inputs_become_binary_tensor_data_in_input_order() -> None:
    request = infer_request(
        [features_input(), bytes_input("plan", ["basic", "pré", ""])],
        [triton.InferRequestedOutput("label")],
        request_id="r-1",
    )
    document, binary = request_to_document(ours(request))
    plan = struct.pack("<I", 5) + b"basic" + struct.pack("<I", 4) + "pré".encode() + bytes(4)
    assert document == {
        "id": "r-1",
        "parameters": {"binary_data_output": True},
        "inputs": [
            {
                "name": "features",
                "datatype": "FP32",
                "shape": [2, 4],
                "parameters": {"binary_data_size": 32},
            },
            {
                "name": "plan",
                "datatype": "BYTES",
                "shape": [3],
                "parameters": {"binary_data_size": len(plan)},
            },
        ],
        "outputs": [{"name": "label", "parameters": {"binary_data": True}}],
    }
    assert binary == ROWS.tobytes() + plan


def test_no_outputs_asks_every_output_as_binary_and_an_empty_id_is_left_out() -> None:
    document, _ = request_to_document(ours(infer_request([features_input()])))
    assert "outputs" not in document and "id" not in document
    assert document["parameters"] == {"binary_data_output": True}


def test_parameters_become_plain_values() -> None:
    request = infer_request(
        [features_input()],
        parameters={"text": "x", "flag": False, "count": -7, "ratio": 0.5},
        priority=2**63 + 1,
        timeout=100,
    )
    request.parameters["unset"].SetInParent()
    request.parameters["binary_data_output"].bool_param = False  # over gRPC: always binary
    document, _ = request_to_document(ours(request))
    assert document["parameters"] == {
        "text": "x",
        "flag": False,
        "count": -7,
        "ratio": 0.5,
        "priority": 2**63 + 1,
        "timeout": 100,
        "unset": None,
        "binary_data_output": True,
    }
    assert type(document["parameters"]["ratio"]) is float
    assert parameter_value(pb.InferParameter()) is None


def test_output_parameters_are_kept_but_binary_data_is_always_asked() -> None:
    label = triton.InferRequestedOutput("label")
    probabilities = triton.InferRequestedOutput("probabilities", class_count=2)
    request = infer_request([features_input()], [label, probabilities])
    request.outputs[0].parameters["binary_data"].bool_param = False
    document, _ = request_to_document(ours(request))
    assert document["outputs"] == [
        {"name": "label", "parameters": {"binary_data": True}},
        {"name": "probabilities", "parameters": {"classification": 2, "binary_data": True}},
    ]
    # The V2 parser answers as over REST: classification is refused, as REST refuses it.
    with pytest.raises(InvalidInput, match="classification extension is not supported"):
        v2._requested_outputs(document["outputs"], True)


def test_a_client_binary_data_size_is_dropped_for_raw_and_typed_data() -> None:
    request = infer_request([features_input()])
    request.inputs[0].parameters["binary_data_size"].int64_param = 1
    request.inputs[0].parameters["note"].string_param = "kept"
    document, binary = request_to_document(ours(request))
    assert document["inputs"][0]["parameters"] == {"note": "kept", "binary_data_size": 32}
    assert len(binary) == 32
    tensor = typed_input("age", "FP32", "fp32_contents", [1.0])
    tensor.parameters["binary_data_size"].int64_param = 4
    document, binary = document_of(tensor)
    assert document["inputs"][0] == {
        "name": "age",
        "datatype": "FP32",
        "shape": [1],
        "data": [1.0],
        "parameters": {},
    }
    assert binary == b""


@pytest.mark.parametrize(
    ("datatype", "values", "data"),
    [
        ("BOOL", [True, False], [True, False]),
        ("INT8", [-128, 127], [-128, 127]),
        ("INT16", [-5, 300], [-5, 300]),
        ("INT32", [-(2**31), 2**31 - 1], [-(2**31), 2**31 - 1]),
        ("INT64", [-(2**63), 2**63 - 1], [-(2**63), 2**63 - 1]),
        ("UINT8", [0, 255], [0, 255]),
        ("UINT16", [1, 65535], [1, 65535]),
        ("UINT32", [0, 2**32 - 1], [0, 2**32 - 1]),
        ("UINT64", [0, 2**64 - 1], [0, 2**64 - 1]),
        ("FP32", [1.5, -2.25], [1.5, -2.25]),
        ("FP64", [0.1, 1e300], [0.1, 1e300]),
        ("BYTES", [b"north", "pré".encode(), b""], ["north", "pré", ""]),
    ],
)
def test_typed_contents_become_a_flat_data_list(
    datatype: str, values: list[Any], data: list[Any]
) -> None:
    tensor = typed_input("x", datatype, CONTENTS_FIELD[datatype], values)
    tensor.shape[:] = [len(values), 1]
    document, binary = document_of(tensor)
    assert document["inputs"] == [
        {
            "name": "x",
            "datatype": datatype,
            "shape": [len(values), 1],
            "data": data,
            "parameters": {},
        }
    ]
    assert binary == b""
    assert [type(v) for v in document["inputs"][0]["data"]] == [type(v) for v in data]


def test_float_contents_nan_is_a_blank_and_infinity_is_kept_for_the_parser() -> None:
    tensor = typed_input("age", "FP32", "fp32_contents", [math.nan, math.inf, 1.0])
    document, _ = document_of(tensor)
    assert document["inputs"][0]["data"] == [None, math.inf, 1.0]
    tensor = typed_input("age", "FP64", "fp64_contents", [-math.inf, math.nan])
    assert document_of(tensor)[0]["inputs"][0]["data"] == [-math.inf, None]


def test_an_input_of_no_element_may_have_no_data() -> None:
    tensor = pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[0, 4])
    assert document_of(tensor)[0]["inputs"][0]["data"] == []


# -- request errors ---------------------------------------------------------------------------
def test_raw_contents_count_must_match_the_inputs() -> None:
    request = ours(infer_request([features_input(), bytes_input("plan", ["a", "b"])]))
    del request.raw_input_contents[1]
    assert refused(request) == (
        "raw_input_contents has 1 elements, but inputs has 2: send one per input, in the order "
        "of inputs"
    )


def test_raw_and_typed_data_do_not_mix() -> None:
    request = ours(infer_request([features_input(), bytes_input("age", ["a", "b"])]))
    request.inputs[1].contents.bytes_contents.extend([b"a", b"b"])
    assert refused(request).startswith(
        "inputs[1] (age) has contents, but the request has raw_input_contents"
    )


def test_contents_must_be_in_the_datatype_s_field() -> None:
    tensor = typed_input("age", "INT64", "fp32_contents", [1.0])
    request = pb.ModelInferRequest(inputs=[typed_input("a", "FP32", "fp32_contents", [1]), tensor])
    assert refused(request) == (
        "inputs[1] (age) has contents.fp32_contents, but datatype INT64 takes "
        "contents.int64_contents alone"
    )
    tensor = typed_input("age", "FP32", "fp32_contents", [1.0])
    tensor.contents.fp64_contents.append(1.0)
    assert "inputs[0] (age) has contents.fp64_contents" in refused(
        pb.ModelInferRequest(inputs=[tensor])
    )


@pytest.mark.parametrize(
    ("datatype", "message"),
    [
        ("FP16", "inputs[0] (age): datatype 'FP16' has no contents field; send it raw"),
        ("BF16", "inputs[0] (age): datatype 'BF16' has no contents field; send it raw"),
        ("FLOAT", "inputs[0] (age): datatype 'FLOAT' has no contents field; send one of BOOL"),
    ],
)
def test_contents_for_a_datatype_without_a_field(datatype: str, message: str) -> None:
    tensor = typed_input("age", datatype, "fp32_contents", [1.0])
    assert refused(pb.ModelInferRequest(inputs=[tensor])).startswith(message)


def test_a_datatype_unknown_here_passes_raw_for_the_parser_to_judge() -> None:
    request = pb.ModelInferRequest(
        inputs=[pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP8", shape=[1])],
        raw_input_contents=[b"\x01"],
    )
    assert request_to_document(request)[0]["inputs"][0]["datatype"] == "FP8"


def test_an_input_needs_data() -> None:
    tensor = pb.ModelInferRequest.InferInputTensor(name="age", datatype="FP32", shape=[2])
    other = typed_input("plan", "BYTES", "bytes_contents", [b"a", b"b"])
    assert refused(pb.ModelInferRequest(inputs=[other, tensor])) == (
        "inputs[1] (age) has no data: send every input's data in raw_input_contents (one "
        "element per input, in the order of inputs) or in contents.fp32_contents"
    )
    scalar = pb.ModelInferRequest.InferInputTensor(name="age", datatype="FP32")
    assert "inputs[0] (age) has no data" in refused(pb.ModelInferRequest(inputs=[scalar]))


def test_bytes_contents_must_be_utf8() -> None:
    tensor = typed_input("plan", "BYTES", "bytes_contents", [b"ok", b"\xff\xfe"])
    assert refused(pb.ModelInferRequest(inputs=[tensor])) == (
        "inputs[0] (plan).contents.bytes_contents[1] is not UTF-8 text"
    )


def test_shared_memory_is_refused_as_over_rest() -> None:
    shared = triton.InferInput("age", [2], "FP32").set_shared_memory("region", 8)
    request = ours(infer_request([features_input(), shared]))
    assert refused(request) == (
        "inputs[1] (age): the shared-memory extension is not supported; send data"
    )


def test_a_long_name_is_cut_in_messages() -> None:
    tensor = typed_input("n" * 500, "BYTES", "bytes_contents", [b"\xff"])
    message = refused(pb.ModelInferRequest(inputs=[tensor]))
    assert message.startswith(f"inputs[0] ({'n' * 64}).contents")


# -- the document in the V2 parser, as service.protocols.v2 reads REST's ----------------------
def _numeric_model() -> Any:
    """What v2.read_document and v2.answer_parts use of a numeric 4-feature, 3-class model."""
    return SimpleNamespace(
        typed=None,
        numeric_only=True,
        n_features=4,
        feature_names=["sepal_length", "sepal_width", "petal_length", "petal_width"],
        version=3,
        labels=["setosa", "versicolor", "virginica"],
        label_indices=lambda p: np.asarray(p).argmax(axis=1),
    )


@pytest.mark.parametrize("through_json", [False, True])
def test_the_v2_parser_reads_the_document_as_the_rest_request(through_json: bool) -> None:
    model = _numeric_model()
    request = infer_request(
        [features_input()], [triton.InferRequestedOutput("label")], request_id="r-9"
    )
    document, binary = request_to_document(ours(request))
    if through_json:  # the same request over REST: the JSON header, then the binary data
        header = orjson.dumps(document)
        parsed = v2.parse_infer(header + binary, str(len(header)), model, 100)  # type: ignore[arg-type]
    else:
        parsed = v2.read_document(document, binary, model, 100)  # type: ignore[arg-type]
    np.testing.assert_array_equal(parsed.x, ROWS)
    assert parsed.id == "r-9"
    assert parsed.outputs == [("label", True)]
    no_outputs, _ = request_to_document(ours(infer_request([features_input()])))
    parsed = v2.read_document(no_outputs, binary, model, 100)  # type: ignore[arg-type]
    assert parsed.outputs == [("probabilities", True), ("label", True)]


def test_typed_fp32_contents_read_as_json_data() -> None:
    tensor = typed_input("features", "FP32", "fp32_contents", ROWS.ravel().tolist())
    tensor.shape[:] = [2, 4]
    document, binary = document_of(tensor)
    parsed = v2.read_document(document, binary, _numeric_model(), 100)  # type: ignore[arg-type]
    np.testing.assert_array_equal(parsed.x, ROWS)


# -- responses --------------------------------------------------------------------------------
def _rendered(outputs: list[tuple[str, bool]]) -> tuple[dict[str, Any], list[bytes], np.ndarray]:
    """What the V2 REST renderer answers for two rows."""
    probabilities = np.array([[0.9, 0.05, 0.05], [0.1, 0.2, 0.7]], dtype=np.float32)
    parsed = v2.InferRequest(x=ROWS, id="r-1", outputs=outputs)
    answer, chunks = v2.answer_parts("iris", _numeric_model(), parsed, probabilities)  # type: ignore[arg-type]
    return answer, chunks, probabilities


def test_a_response_is_read_by_tritonclient() -> None:
    answer, chunks, probabilities = _rendered([("probabilities", True), ("label", True)])
    response = response_from_answer(answer, chunks)
    assert (response.model_name, response.model_version, response.id) == ("iris", "3", "r-1")
    assert [dict(o.parameters) for o in response.outputs] == [{}, {}]  # REST framing dropped
    result = triton.InferResult(theirs(response))
    got = result.as_numpy("probabilities")
    assert got.dtype == np.float32 and got.shape == (2, 3)
    np.testing.assert_array_equal(got, probabilities)
    labels = result.as_numpy("label")
    assert labels.shape == (2,) and labels.tolist() == [b"setosa", b"virginica"]
    assert result.get_output("label").datatype == "BYTES"
    assert result.get_response().id == "r-1"


def test_a_response_of_one_output_keeps_its_order_and_other_parameters() -> None:
    answer, chunks, _ = _rendered([("label", True)])
    answer["outputs"][0]["parameters"]["note"] = "x"
    response = response_from_answer(answer, chunks)
    assert [o.name for o in response.outputs] == ["label"]
    assert parameter_value(response.outputs[0].parameters["note"]) == "x"
    assert triton.InferResult(theirs(response)).as_numpy("label").tolist() == [
        b"setosa",
        b"virginica",
    ]


def test_a_response_with_unframed_data_is_a_bug_not_a_client_error() -> None:
    answer, chunks, _ = _rendered([("probabilities", True), ("label", True)])
    with pytest.raises(ValueError, match="2 outputs, but 1 chunks"):
        response_from_answer(answer, chunks[:1])
    with pytest.raises(ValueError, match=r"outputs\[1\] \(label\): binary_data_size"):
        response_from_answer(answer, [chunks[0], chunks[1] + b"x"])
    answer, chunks, _ = _rendered([("probabilities", False)])
    with pytest.raises(ValueError, match="is not binary data"):
        response_from_answer(answer, [b""])


def test_metadata_responses_as_tritonclient_reads_them() -> None:
    model = SimpleNamespace(
        numeric_only=True, n_features=4, n_classes=3, runtime=SimpleNamespace(name="litert")
    )
    meta = v2.model_metadata("iris", model, [3, 2])  # type: ignore[arg-type]
    response = theirs(metadata_response(meta))
    assert as_dict(response) == {
        "name": "iris",
        "versions": ["3", "2"],
        "platform": "litert_tflite",
        "inputs": [{"name": "features", "datatype": "FP32", "shape": ["-1", "4"]}],
        "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": ["-1", "3"]},
            {"name": "label", "datatype": "BYTES", "shape": ["-1"]},
        ],
    }
    server = theirs(server_metadata_response(v2.server_metadata("0.1.0")))
    assert (server.name, server.version, list(server.extensions)) == (
        "keras-serve",
        "0.1.0",
        ["binary_tensor_data"],
    )


@pytest.mark.parametrize(
    ("value", "field"),
    [
        (True, "bool_param"),
        (-(2**63), "int64_param"),
        (2**63 - 1, "int64_param"),
        (2**63, "uint64_param"),
        (0.5, "double_param"),
        ("x", "string_param"),
    ],
)
def test_plain_values_into_parameters_and_back(value: Any, field: str) -> None:
    parameter = pb.InferParameter()
    set_parameter(parameter, value)
    assert parameter.WhichOneof("parameter_choice") == field
    assert parameter_value(parameter) == value
    assert type(parameter_value(parameter)) is type(value)


def test_a_value_no_parameter_holds() -> None:
    with pytest.raises(ValueError, match=r"outputs\.parameters\.x is a list"):
        set_parameter(pb.InferParameter(), [1], "outputs.parameters.x")


# -- the server's fast path for the common request, against the general path -----------------
def _general(request: Any, model: Any, max_rows: int) -> v2.InferRequest:
    """What the server's codec does for any request: the document, read by the V2 parser."""
    if len(request.inputs) > model.n_features:
        v2.refuse_input_count(len(request.inputs), model)
    document, binary = request_to_document(request)
    return v2.read_document(document, binary, model, max_rows)


def _general_response(request: Any, model: Any, parsed: Any, probabilities: Any) -> Any:
    answer, chunks = v2.answer_parts(request.model_name, model, parsed, probabilities)
    return response_from_answer(answer, chunks)


def _fp32_request(
    values: list[float], shape: list[int], request_id: str = "r-1", **extra: Any
) -> Any:
    request = pb.ModelInferRequest(model_name="iris", id=request_id)
    request.inputs.add(name="features", datatype="FP32", shape=shape)
    request.raw_input_contents.append(struct.pack(f"<{len(values)}f", *values))
    for key, value in extra.items():
        extra_setters[key](request, value)
    return pb.ModelInferRequest.FromString(request.SerializeToString())


extra_setters: dict[str, Any] = {
    "name": lambda r, v: setattr(r.inputs[0], "name", v),
    "datatype": lambda r, v: setattr(r.inputs[0], "datatype", v),
    "raw": lambda r, v: r.raw_input_contents.__setitem__(0, v),
    "more_raw": lambda r, v: r.raw_input_contents.append(v),
    "input_parameter": lambda r, v: set_parameter(r.inputs[0].parameters[v[0]], v[1]),
    "parameter": lambda r, v: set_parameter(r.parameters[v[0]], v[1]),
    "output": lambda r, v: r.outputs.add(name=v),
    "output_parameter": lambda r, v: set_parameter(r.outputs[0].parameters[v[0]], v[1]),
    "contents": lambda r, v: r.inputs[0].contents.fp32_contents.extend(v),
    "second_input": lambda r, v: r.inputs.add(name=v, datatype="FP32", shape=[1, 4]),
}

ROW = [5.1, 3.5, 1.4, 0.2]
FAST_CASES: dict[str, tuple[list[float], list[int], dict[str, Any]]] = {
    "one row": (ROW, [1, 4], {}),
    "two rows": (ROWS.ravel().tolist(), [2, 4], {}),
    "nine rows (numpy checks)": (ROW * 9, [9, 4], {}),
    "negative and zero": ([-0.0, 0.0, -3.25, 1e-30], [1, 4], {}),
    "at the limit": ([1e15, -1e15, 9.9e14, 0], [1, 4], {}),
}
FALLBACK_CASES: dict[str, tuple[list[float], list[int], dict[str, Any]]] = {
    "nan": ([math.nan, 1, 2, 3], [1, 4], {}),
    "inf": ([1, math.inf, 2, 3], [1, 4], {}),
    "-inf in row 9": ([*ROW * 8, 1, 2, 3, -math.inf], [9, 4], {}),
    "nan in row 9": ([*ROW * 8, 1, 2, math.nan, 4], [9, 4], {}),
    "huge": ([1, 2, 3e16, 4], [1, 4], {}),
    "huge in row 9": ([*ROW * 8, 1, 2, 3, 2e15], [9, 4], {}),
    "max float32": ([1, 2, 3, 3.4e38], [1, 4], {}),
    "three columns": ([1, 2, 3], [1, 3], {}),
    "five columns": ([1, 2, 3, 4, 5], [1, 5], {}),
    "one dimension": (ROW, [4], {}),
    "three dimensions": (ROW, [1, 1, 4], {}),
    "no rows": ([], [0, 4], {}),
    "more rows than data": (ROW, [2, 4], {}),
    "less data than rows": (ROW * 2, [1, 4], {}),
    "too many rows": (ROW * 101, [101, 4], {}),
    "negative dimension": (ROW, [-1, 4], {}),
    "short raw": (ROW, [1, 4], {"raw": b"\0" * 15}),
    "fp64": (ROW, [1, 4], {"datatype": "FP64"}),
    "fp16": (ROW, [1, 4], {"datatype": "FP16"}),
    "int32": (ROW, [1, 4], {"datatype": "INT32"}),
    "bytes datatype": (ROW, [1, 4], {"datatype": "BYTES"}),
    "another name": (ROW, [1, 4], {"name": "petal_length"}),
    "two raw": (ROW, [1, 4], {"more_raw": b"\0" * 16}),
    "second input": (ROW, [1, 4], {"second_input": "features"}),
    "client binary_data_size": (ROW, [1, 4], {"input_parameter": ("binary_data_size", 16)}),
    "shared memory": (ROW, [1, 4], {"input_parameter": ("shared_memory_region", "r")}),
    "input parameter": (ROW, [1, 4], {"input_parameter": ("x", 1)}),
    "binary_data_output false": (ROW, [1, 4], {"parameter": ("binary_data_output", False)}),
    "request parameter": (ROW, [1, 4], {"parameter": ("priority", 1)}),
    "label asked": (ROW, [1, 4], {"output": "label"}),
    "probabilities asked": (ROW, [1, 4], {"output": "probabilities"}),
    "unknown output": (ROW, [1, 4], {"output": "logits"}),
    "output as json": (
        ROW,
        [1, 4],
        {"output": "label", "output_parameter": ("binary_data", False)},
    ),
    "classification": (
        ROW,
        [1, 4],
        {"output": "label", "output_parameter": ("classification", 2)},
    ),
    "raw and contents": (ROW, [1, 4], {"contents": ROW}),
}


def _outcome(decode: Any, request: Any, model: Any) -> Any:
    try:
        parsed = decode(request, model, 100)
    except ServiceError as exc:  # InvalidInput, PayloadTooLarge
        return type(exc), exc.status_code, exc.message
    return parsed


def _same(request: Any, model: Any) -> Any:
    """The server's codec and the general path agree: the same error, or the same matrix, id,
    outputs, and byte for byte the same response."""
    from service.grpc_api.server import INFER

    fast = _outcome(INFER.decode, request, model)
    general = _outcome(_general, request, model)
    if isinstance(general, tuple):
        assert fast == general
        return None
    assert isinstance(fast, v2.InferRequest)
    assert fast.x.dtype == general.x.dtype == np.float32
    assert fast.x.shape == general.x.shape
    assert fast.x.tobytes() == general.x.tobytes()
    assert fast.x.flags.writeable and fast.x.flags.c_contiguous
    assert fast.outputs == general.outputs
    if request.id:
        assert fast.id == general.id == request.id
    else:  # a fresh uuid4 each, as the general path gives
        assert len(fast.id) == 36 and fast.id.count("-") == 4
        fast.id = general.id
    rows = len(general.x)
    probabilities = np.linspace(0.05, 0.9, rows * 3, dtype=np.float32).reshape(rows, 3)
    for p in (probabilities, probabilities.astype(np.float64), probabilities.tolist()):
        ours_ = INFER.encode(request, model, fast, p).SerializeToString()
        assert ours_ == _general_response(request, model, general, p).SerializeToString()
    return fast


@pytest.mark.parametrize("case", list(FAST_CASES))
def test_the_common_request_takes_the_fast_path_and_answers_as_the_general_one(case: str) -> None:
    from service.grpc_api.server import INFER

    values, shape, extra = FAST_CASES[case]
    model = _numeric_model()
    for request_id in ("r-1", ""):
        request = _fp32_request(values, shape, request_id, **extra)
        assert INFER._common_matrix(request, model, 100) is not None
        assert _same(request, model) is not None


@pytest.mark.parametrize("case", list(FALLBACK_CASES))
def test_any_other_request_takes_the_general_path(case: str) -> None:
    from service.grpc_api.server import INFER

    values, shape, extra = FALLBACK_CASES[case]
    model = _numeric_model()
    request = _fp32_request(values, shape, **extra)
    assert INFER._common_matrix(request, model, 100) is None
    _same(request, model)


def test_the_fast_path_needs_a_numeric_model_not_named_features() -> None:
    from service.grpc_api.server import INFER

    request = _fp32_request(ROW, [1, 4])
    for changes in ({"numeric_only": False}, {"feature_names": ["features", "b", "c", "d"]}):
        model = _numeric_model()
        for key, value in changes.items():
            setattr(model, key, value)
        assert INFER._common_matrix(request, model, 100) is None
    one = _numeric_model()
    one.n_features, one.feature_names = 1, ["x"]
    _same(_fp32_request([2.5], [1, 1]), one)
    _same(_fp32_request(ROW, [1, 4]), one)


def test_the_answer_of_every_output_asked_is_the_general_one() -> None:
    from service.grpc_api.server import INFER

    model = _numeric_model()
    request = _fp32_request(ROW, [1, 4])
    probabilities = np.array([[0.2, 0.3, 0.5]], dtype=np.float32)
    for outputs in (
        [("probabilities", True), ("label", True)],
        [("label", True), ("probabilities", True)],
        [("label", True)],
        [("probabilities", True)],
        [("label", False), ("probabilities", True)],  # never over gRPC: the general path's bug
    ):
        parsed = v2.InferRequest(x=ROWS[:1], id="r-2", outputs=outputs)
        try:
            expected: Any = _general_response(request, model, parsed, probabilities)
        except ValueError as exc:
            with pytest.raises(ValueError, match=str(exc)):
                INFER.encode(request, model, parsed, probabilities)
            continue
        answer = INFER.encode(request, model, parsed, probabilities)
        assert answer.SerializeToString() == expected.SerializeToString()


@pytest.mark.parametrize("batcher", [None, object()])
def test_the_timeout_gets_its_deadline_only_for_a_model_with_a_batcher(batcher: Any) -> None:
    from service.grpc_api.server import TimedInfer

    set_to: list[float] = []
    timeout = SimpleNamespace(reschedule=set_to.append)
    model = _numeric_model()
    model.batcher = batcher
    parsed = TimedInfer(timeout, 12.5).decode(_fp32_request(ROW, [1, 4]), model, 100)  # type: ignore[arg-type]
    np.testing.assert_array_equal(parsed.x, np.array([ROW], dtype=np.float32))
    assert set_to == ([] if batcher is None else [12.5])
