"""The Open Inference Protocol's gRPC messages to and from the V2 REST documents.

gRPC answers what V2 REST answers because a ModelInfer request becomes the very document (and
binary tensor data) that the same request would be over REST, and the REST answer becomes the
ModelInferResponse. No server code here, and no numpy: conversions only.

Requests (:func:`request_to_document`):

- An input whose data is in ``raw_input_contents[i]`` (what tritonclient sends) becomes
  ``parameters.binary_data_size = len(raw)``, its bytes appended to the binary part in input
  order: Triton's binary tensor data extension, with the same layout (little-endian, BYTES as a
  4-byte little-endian length then the bytes of each element). Sizes are the parser's to check.
- An input with typed ``contents`` becomes ``data``, a flat list from the one field its datatype
  takes (``fp32_contents`` for FP32, ``int_contents`` for INT8/16/32, ...): ``bytes_contents``
  decoded as UTF-8 (refused when not), a float NaN as ``None`` (a blank, as NaN reads in binary
  data), infinities kept (the parser refuses them, as it refuses 1e309 in JSON). FP16 and BF16
  have no contents field: raw data only.
- Refused with :class:`~service.errors.InvalidInput` naming the input ("inputs[1] (age) ..."):
  raw and typed data in one request, a raw_input_contents count other than the inputs', contents
  in a field the datatype does not take (or in several fields), contents for a datatype that has
  no field, an input with no data at all (unless its shape holds no element), the shared-memory
  extension (as REST refuses it).
- An input's ``binary_data_size`` parameter sent by the client is dropped, for raw and typed data
  alike: it belongs to REST's framing (KServe's Python client sets it by default); over gRPC the
  message framing gives each tensor's size, and the document's binary_data_size is always ours.
  Every other parameter is kept, as a plain value (bool, int, str, float; None for an
  InferParameter with no value set), for the parser to accept or refuse as over REST.
- Outputs always come back as binary data: each requested output gets
  ``parameters.binary_data = true`` (over whatever the client set), and the document's
  ``parameters.binary_data_output`` is true (over whatever the client set), which covers a
  request that names no outputs (every output then).
- An empty ``id`` (proto3's "not set") is left out, so the answer's id is the one REST gives a
  request without one. The model name and version are not in the document (REST has them in the
  path): read them from the request.

The document is Python objects for the V2 parser and may hold float infinities, which
``orjson.dumps`` would write as null: hand it over as objects, not through JSON.
"""

from __future__ import annotations

import math
from typing import Any

from service.errors import InvalidInput
from service.grpc_api.grpc_predict_v2_pb2 import (
    InferParameter,
    InferTensorContents,
    ModelInferRequest,
    ModelInferResponse,
    ModelMetadataResponse,
    ServerMetadataResponse,
)

# The contents field each datatype takes (FP16, BF16: none, raw data only).
CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
CONTENTS_FIELDS = tuple(f.name for f in InferTensorContents.DESCRIPTOR.fields)
_FLOAT_FIELDS = frozenset({"fp32_contents", "fp64_contents"})
_INT64_MAX = 2**63 - 1


# -- parameters -------------------------------------------------------------------------------
def parameter_value(parameter: InferParameter) -> bool | int | str | float | None:
    """An InferParameter's value as a plain Python value (None when none of the oneof is set)."""
    choice = parameter.WhichOneof("parameter_choice")
    return None if choice is None else getattr(parameter, choice)


def parameters_dict(parameters: Any) -> dict[str, Any]:
    """A ``map<string, InferParameter>`` as a dict of plain values."""
    return {key: parameter_value(value) for key, value in parameters.items()}


def set_parameter(parameter: InferParameter, value: Any, where: str = "parameter") -> None:
    """A plain value into an InferParameter (the reverse of :func:`parameter_value`)."""
    if type(value) is bool:
        parameter.bool_param = value
    elif type(value) is int:
        if value > _INT64_MAX:
            parameter.uint64_param = value
        else:
            parameter.int64_param = value
    elif type(value) is float:
        parameter.double_param = value
    elif type(value) is str:
        parameter.string_param = value
    else:
        raise ValueError(f"{where} is a {type(value).__name__}; an InferParameter holds none")


# -- requests ---------------------------------------------------------------------------------
def _where(index: int, name: str) -> str:
    return f"inputs[{index}] ({name[:64]})"


def _has_contents(tensor: ModelInferRequest.InferInputTensor) -> bool:
    contents = tensor.contents
    return any(len(getattr(contents, field)) for field in CONTENTS_FIELDS)


def _elements(shape: list[int]) -> int:
    return math.prod(shape) if all(d >= 0 for d in shape) else -1


def _contents_data(tensor: ModelInferRequest.InferInputTensor, where: str) -> list[Any]:
    """Typed contents to the flat ``data`` list of the REST document."""
    contents = tensor.contents
    given = [field for field in CONTENTS_FIELDS if len(getattr(contents, field))]
    datatype = tensor.datatype
    field = CONTENTS_FIELD.get(datatype)
    if not given:
        if _elements(list(tensor.shape)) == 0:
            return []  # no element to send; the parser judges the shape
        raise InvalidInput(
            f"{where} has no data: send every input's data in raw_input_contents (one element "
            f"per input, in the order of inputs) or in contents.{field or '<datatype>_contents'}"
        )
    if field is None:
        shown = repr(datatype[:16])
        if datatype in ("FP16", "BF16"):
            raise InvalidInput(f"{where}: datatype {shown} has no contents field; send it raw")
        raise InvalidInput(
            f"{where}: datatype {shown} has no contents field; send one of "
            f"{', '.join(CONTENTS_FIELD)}"
        )
    if given != [field]:
        other = next(f for f in given if f != field)
        raise InvalidInput(
            f"{where} has contents.{other}, but datatype {datatype} takes contents.{field} alone"
        )
    values = list(getattr(contents, field))
    if field == "bytes_contents":
        data: list[Any] = []
        for i, value in enumerate(values):
            try:
                data.append(value.decode("utf-8"))
            except UnicodeDecodeError:
                raise InvalidInput(
                    f"{where}.contents.bytes_contents[{i}] is not UTF-8 text"
                ) from None
        return data
    if field in _FLOAT_FIELDS:
        return [None if v != v else v for v in values]  # NaN: a blank
    return values


def request_to_document(request: ModelInferRequest) -> tuple[dict[str, Any], bytes]:
    """The V2 REST document a ModelInferRequest would be, and the binary tensor data after it."""
    inputs = request.inputs
    raw = request.raw_input_contents
    for i, tensor in enumerate(inputs):
        if "shared_memory_region" in tensor.parameters:
            raise InvalidInput(
                f"{_where(i, tensor.name)}: the shared-memory extension is not supported; send data"
            )
    if raw and len(raw) != len(inputs):
        raise InvalidInput(
            f"raw_input_contents has {len(raw)} elements, but inputs has {len(inputs)}: send one "
            "per input, in the order of inputs"
        )
    tensors: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for i, tensor in enumerate(inputs):
        where = _where(i, tensor.name)
        params = parameters_dict(tensor.parameters)
        params.pop("binary_data_size", None)  # REST framing; ours is set below
        document: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.shape),
        }
        if raw:
            if _has_contents(tensor):
                raise InvalidInput(
                    f"{where} has contents, but the request has raw_input_contents: send every "
                    "input's data one way"
                )
            params["binary_data_size"] = len(raw[i])
            chunks.append(raw[i])
        else:
            document["data"] = _contents_data(tensor, where)
        document["parameters"] = params
        tensors.append(document)
    outputs = []
    for output in request.outputs:
        params = parameters_dict(output.parameters)
        params["binary_data"] = True
        outputs.append({"name": output.name, "parameters": params})
    top: dict[str, Any] = {}
    if request.id:
        top["id"] = request.id
    top["parameters"] = {**parameters_dict(request.parameters), "binary_data_output": True}
    top["inputs"] = tensors
    if outputs:
        top["outputs"] = outputs
    return top, b"".join(chunks)


# -- responses --------------------------------------------------------------------------------
def response_from_answer(answer: dict[str, Any], chunks: list[bytes]) -> ModelInferResponse:
    """The V2 REST answer (every output as binary data) and each output's bytes, in order, to the
    ModelInferResponse with ``raw_output_contents``, as Triton answers.

    A mismatch between the answer and ``chunks`` is a bug of the caller (request_to_document asks
    every output as binary data): ValueError, not a client error."""
    response = ModelInferResponse(
        model_name=answer["model_name"],
        model_version=answer["model_version"],
        id=answer["id"],
    )
    outputs = answer["outputs"]
    if len(chunks) != len(outputs):
        raise ValueError(f"{len(outputs)} outputs, but {len(chunks)} chunks of binary data")
    for i, (tensor, chunk) in enumerate(zip(outputs, chunks, strict=True)):
        params = dict(tensor.get("parameters") or {})
        size = params.pop("binary_data_size", None)  # REST framing: the message frames it
        if "data" in tensor or size is None:
            raise ValueError(f"outputs[{i}] ({tensor['name']}) is not binary data")
        if size != len(chunk):
            raise ValueError(
                f"outputs[{i}] ({tensor['name']}): binary_data_size {size}, chunk {len(chunk)}"
            )
        out = response.outputs.add(
            name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"]
        )
        for key, value in params.items():
            set_parameter(out.parameters[key], value, f"outputs[{i}].parameters.{key}")
    response.raw_output_contents.extend(chunks)
    return response


def metadata_response(meta: dict[str, Any]) -> ModelMetadataResponse:
    """``service.protocols.v2.model_metadata``'s document as a ModelMetadataResponse."""
    response = ModelMetadataResponse(
        name=meta["name"], versions=meta["versions"], platform=meta["platform"]
    )
    for kind in ("inputs", "outputs"):
        for tensor in meta[kind]:
            getattr(response, kind).add(
                name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"]
            )
    return response


def server_metadata_response(meta: dict[str, Any]) -> ServerMetadataResponse:
    """The V2 server metadata document (name, version, extensions) as a ServerMetadataResponse."""
    return ServerMetadataResponse(
        name=meta["name"], version=meta["version"], extensions=meta["extensions"]
    )
