"""The Open Inference Protocol's REST API (KServe V2, as Triton, KServe and MLServer speak it).

One input tensor ``features`` (FP32 ``[-1, n_features]``; FP16, FP64 and integer types are
converted) and two outputs: ``probabilities`` (FP32 ``[-1, n_classes]``) and ``label`` (BYTES
``[-1]``, the decoded class). Tensor data may be JSON (flat or nested) or, with Triton's binary
tensor data extension, raw little-endian bytes after the JSON header.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import anyio
import numpy as np
import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from service import inputs, outputs
from service.api._protocol import (
    ERROR_RESPONSES,
    INPUT_NAME,
    LOOKUP_RESPONSES,
    OFFLOAD_BYTES,
    OUTPUT_NAMES,
    bad_request,
    check_media,
    check_name,
    lookup,
)
from service.api.deps import require_api_key
from service.errors import InvalidInput, MalformedBody, PayloadTooLarge
from service.http import JSONBytes, read_body
from service.model import LoadedModel

router = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"])

HEADER_LENGTH = "Inference-Header-Content-Length"

# Accepted input datatypes and their little-endian layout in binary tensor data.
DATATYPES: dict[str, np.dtype] = {
    name: np.dtype(code)
    for name, code in {
        "FP32": "<f4",
        "FP64": "<f8",
        "FP16": "<f2",
        "INT8": "i1",
        "INT16": "<i2",
        "INT32": "<i4",
        "INT64": "<i8",
        "UINT8": "u1",
        "UINT16": "<u2",
        "UINT32": "<u4",
        "UINT64": "<u8",
    }.items()
}
_ACCEPTED = ", ".join(DATATYPES)
# Triton's "<framework>_<format>" convention for the platform field.
PLATFORMS = {"litert": "litert_tflite", "keras": "tensorflow_keras"}
_FLOAT16_MAX = float(np.finfo(np.float16).max)


@dataclass
class InferRequest:
    """A validated inference request: the matrix, the id to echo, the outputs to answer."""

    x: np.ndarray
    id: str
    outputs: list[tuple[str, bool]]  # (output name, as binary data)


# -- parsing (no HTTP) ------------------------------------------------------------------------
def _parameters(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if type(value) is not dict:
        raise InvalidInput(f"{where} must be an object")
    return value


def _flag(params: dict[str, Any], key: str, where: str, default: bool) -> bool:
    value = params.get(key, default)
    if type(value) is not bool:
        raise InvalidInput(f"{where}.{key} must be true or false")
    return value


def _split(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The JSON header and the binary tensor data after it (binary tensor data extension)."""
    if header_length is None:
        return body, b""
    if not (header_length.isascii() and header_length.isdigit()):
        raise MalformedBody(f"{HEADER_LENGTH} is not a number")
    size = int(header_length)
    if size > len(body):
        raise MalformedBody(f"{HEADER_LENGTH} is {size}, but the body has {len(body)} bytes")
    return body[:size], body[size:]


def _flatten(data: list[Any]) -> list[Any]:
    """Nested lists to one flat list, row-major (the protocol accepts either form)."""
    if not any(type(v) is list for v in data):
        return data
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if type(item) is list:
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def _shape(value: Any, model: LoadedModel, max_rows: int, where: str) -> tuple[int, int]:
    expected = f"[N, {model.n_features}] (features: {', '.join(model.feature_names)})"
    if type(value) is not list or not all(type(d) is int and d >= 0 for d in value):
        raise InvalidInput(f"{where}.shape must be an array of non-negative integers {expected}")
    if len(value) != 2 or value[1] != model.n_features:
        shown = orjson.dumps(value).decode()[:64]
        raise InvalidInput(f"{where}.shape is {shown}; the model takes {expected}")
    if value[0] == 0:
        raise InvalidInput(f"{where}.shape has no rows; send at least one")
    if value[0] > max_rows:
        raise PayloadTooLarge(f"{where} has {value[0]} rows; the limit is {max_rows}")
    return value[0], value[1]


def _json_matrix(
    data: Any, datatype: str, shape: tuple[int, int], features: Sequence[str], where: str
) -> np.ndarray:
    rows_n, width = shape
    if type(data) is not list:
        raise InvalidInput(f"{where}.data must be an array")
    if len(data) == rows_n and all(type(r) is list and len(r) == width for r in data):
        rows = data  # already [N, F]: the common nested form
    else:
        flat = _flatten(data)
        if len(flat) != rows_n * width:
            raise InvalidInput(
                f"{where}.data has {len(flat)} values; shape [{rows_n}, {width}] needs "
                f"{rows_n * width}"
            )
        rows = [flat[i * width : (i + 1) * width] for i in range(rows_n)]
    matrix = inputs.rows_matrix(rows, features, f"{where}.data")
    if datatype.startswith(("INT", "UINT")):
        _check_integers(rows, datatype, features, where)
    return matrix


def _check_integers(
    rows: list[list[Any]], datatype: str, features: Sequence[str], where: str
) -> None:
    """Integer datatypes take whole numbers within the type's range."""
    info = np.iinfo(DATATYPES[datatype])
    values = list(chain.from_iterable(rows))
    if set(map(type, values)) <= {int} and info.min <= min(values) and max(values) <= info.max:
        return
    for i, row in enumerate(rows):
        for j, value in enumerate(row):
            cell = f"{where}.data[{i}][{j}] ({features[j]})"
            if type(value) is not int:
                raise InvalidInput(f"{cell} must be an integer for datatype {datatype}")
            if not info.min <= value <= info.max:
                raise InvalidInput(f"{cell} is out of the {datatype} range")


def _binary_matrix(
    binary: bytes,
    size: Any,
    datatype: str,
    shape: tuple[int, int],
    features: Sequence[str],
    where: str,
) -> np.ndarray:
    if type(size) is not int or size < 0:
        raise InvalidInput(f"{where}.parameters.binary_data_size must be a non-negative integer")
    if size != len(binary):
        raise InvalidInput(
            f"{where}.parameters.binary_data_size is {size}, but {len(binary)} bytes of binary "
            f"data follow the JSON header"
        )
    dtype = DATATYPES[datatype]
    rows_n, width = shape
    needed = rows_n * width * dtype.itemsize
    if size != needed:
        raise InvalidInput(
            f"{where} has {size} bytes of binary data; shape [{rows_n}, {width}] of {datatype} "
            f"needs {needed}"
        )
    values = np.frombuffer(binary, dtype=dtype).reshape(rows_n, width)
    # The same checks as JSON data (finite, within the accepted range), the same messages.
    return inputs.rows_matrix(values.tolist(), features, f"{where} (binary data)")


def _input_matrix(
    tensor: Any, binary: bytes, model: LoadedModel, max_rows: int, where: str
) -> np.ndarray:
    if type(tensor) is not dict:
        raise InvalidInput(f"{where} must be an object with name, shape, datatype and data")
    for field in ("name", "shape", "datatype"):
        if field not in tensor:
            raise InvalidInput(f"missing field {where}.{field}")
    name = tensor["name"]
    if name != INPUT_NAME:
        shown = repr(name[:64]) if type(name) is str else "not a string"
        raise InvalidInput(
            f"unknown input {shown} in {where}.name; the model takes one input {INPUT_NAME!r}"
        )
    datatype = tensor["datatype"]
    if type(datatype) is not str or datatype not in DATATYPES:
        shown = repr(datatype[:16]) if type(datatype) is str else "not a string"
        raise InvalidInput(f"{where}.datatype {shown} is not accepted; send one of {_ACCEPTED}")
    shape = _shape(tensor["shape"], model, max_rows, where)
    params = _parameters(tensor.get("parameters"), f"{where}.parameters")
    if "shared_memory_region" in params:
        raise InvalidInput("the shared-memory extension is not supported; send data")
    if "binary_data_size" in params:
        if "data" in tensor:
            raise InvalidInput(f"{where} has both data and parameters.binary_data_size")
        matrix = _binary_matrix(
            binary, params["binary_data_size"], datatype, shape, model.feature_names, where
        )
    else:
        if binary:
            raise InvalidInput(
                f"{len(binary)} bytes of binary data follow the JSON header, but no input "
                f"declares parameters.binary_data_size"
            )
        if "data" not in tensor:
            raise InvalidInput(f"missing field {where}.data")
        matrix = _json_matrix(tensor["data"], datatype, shape, model.feature_names, where)
    if datatype == "FP16":  # the values the client meant are the float16 ones
        if np.abs(matrix).max() > _FLOAT16_MAX:
            raise InvalidInput(f"{where}.data is out of the FP16 range")
        matrix = matrix.astype(np.float16).astype(np.float32)
    return matrix


def _requested_outputs(value: Any, binary_default: bool) -> list[tuple[str, bool]]:
    if value is None or value == []:
        return [(name, binary_default) for name in OUTPUT_NAMES]
    if type(value) is not list:
        raise InvalidInput('outputs must be an array of objects like {"name": "label"}')
    chosen: dict[str, bool] = {}
    for i, item in enumerate(value):
        where = f"outputs[{i}]"
        if type(item) is not dict or "name" not in item:
            raise InvalidInput(f'{where} must be an object like {{"name": "label"}}')
        name = item["name"]
        if name not in OUTPUT_NAMES:
            shown = repr(name[:64]) if type(name) is str else "not a string"
            raise InvalidInput(
                f"unknown output {shown} in {where}.name; the model has 'probabilities' and 'label'"
            )
        params = _parameters(item.get("parameters"), f"{where}.parameters")
        classification = params.get("classification")  # false == 0 in Python: check the type
        if classification is not None and not (
            type(classification) in (int, float) and classification == 0
        ):
            raise InvalidInput(
                "the classification extension is not supported; request 'probabilities' and 'label'"
            )
        if "shared_memory_region" in params:
            raise InvalidInput("the shared-memory extension is not supported")
        chosen[name] = _flag(params, "binary_data", f"{where}.parameters", binary_default)
    return list(chosen.items())


def parse_infer(
    body: bytes, header_length: str | None, model: LoadedModel, max_rows: int
) -> InferRequest:
    """An inference request body (JSON, or JSON then binary tensor data) to a validated request."""
    header, binary = _split(body, header_length)
    if not header.strip():
        raise MalformedBody('empty body; send an inference request {"inputs": [...]}')
    document = inputs.load_json(header)
    if type(document) is not dict:
        raise InvalidInput("the body must be a JSON object with 'inputs'")
    request_id = document.get("id")
    if request_id is not None and type(request_id) is not str:
        raise InvalidInput("id must be a string")
    params = _parameters(document.get("parameters"), "parameters")
    binary_default = _flag(params, "binary_data_output", "parameters", False)
    signature = (
        f"one input {INPUT_NAME!r}, FP32 of shape [N, {model.n_features}] "
        f"({', '.join(model.feature_names)})"
    )
    if "inputs" not in document:
        raise InvalidInput(f"missing field 'inputs'; the model takes {signature}")
    tensors = document["inputs"]
    if type(tensors) is not list:
        raise InvalidInput(f"inputs must be an array; the model takes {signature}")
    if len(tensors) != 1:
        raise InvalidInput(f"inputs has {len(tensors)} tensors; the model takes {signature}")
    x = _input_matrix(tensors[0], binary, model, max_rows, "inputs[0]")
    return InferRequest(
        x=x,
        id=request_id if request_id is not None else str(uuid.uuid4()),
        outputs=_requested_outputs(document.get("outputs"), binary_default),
    )


# -- rendering --------------------------------------------------------------------------------
def render_infer(
    model_name: str, model: LoadedModel, request: InferRequest, probabilities: np.ndarray
) -> Response:
    """The inference response; binary outputs follow the JSON header when any was asked for."""
    probabilities = np.asarray(probabilities, dtype=np.float32)
    rows, classes = probabilities.shape
    tensors = []
    chunks = []
    for name, binary in request.outputs:
        if name == "probabilities":
            tensor: dict[str, Any] = {"name": name, "datatype": "FP32", "shape": [rows, classes]}
            if binary:
                chunks.append(probabilities.astype("<f4").tobytes())
            else:
                tensor["data"] = probabilities.ravel().tolist()
        else:
            labels = [str(label) for label in outputs.argmax_labels(model, probabilities)]
            tensor = {"name": name, "datatype": "BYTES", "shape": [rows]}
            if binary:
                encoded = [label.encode() for label in labels]
                chunks.append(b"".join(struct.pack("<I", len(b)) + b for b in encoded))
            else:
                tensor["data"] = labels
        if binary:
            tensor["parameters"] = {"binary_data_size": len(chunks[-1])}
        tensors.append(tensor)
    answer = {
        "model_name": model_name,
        "model_version": str(model.version),
        "id": request.id,
        "outputs": tensors,
    }
    if not chunks:
        return JSONBytes(answer)
    header = orjson.dumps(answer)
    return Response(
        header + b"".join(chunks),
        media_type="application/octet-stream",
        headers={HEADER_LENGTH: str(len(header))},
    )


def model_metadata(model_name: str, model: LoadedModel, versions: list[int]) -> dict[str, Any]:
    return {
        "name": model_name,
        "versions": [str(v) for v in versions],
        "platform": PLATFORMS.get(model.runtime.name, model.runtime.name),
        "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, model.n_features]}],
        "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, model.n_classes]},
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
        ],
    }


# -- routes -----------------------------------------------------------------------------------
@router.get("", summary="Server metadata")
async def server_metadata(request: Request) -> JSONBytes:
    return JSONBytes(
        {
            "name": "keras-serve",
            "version": request.app.version,
            "extensions": ["binary_tensor_data"],
        }
    )


@router.get("/health/live", summary="Server liveness")
async def server_live() -> JSONBytes:
    return JSONBytes({"live": True})


@router.get(
    "/health/ready",
    responses={503: ERROR_RESPONSES[503]},
    summary="Server readiness: a verified model is loaded",
)
async def server_ready(request: Request) -> JSONBytes:
    request.app.state.registry.require()
    return JSONBytes({"ready": True})


async def _metadata(request: Request, name: str, version: str | None) -> JSONBytes:
    model = lookup(request, name, version)
    registry = request.app.state.registry
    loaded = {m.version for m in (registry.current, registry.previous) if m is not None}
    return JSONBytes(model_metadata(name, model, sorted(loaded, reverse=True)))


@router.get("/models/{name}", responses=LOOKUP_RESPONSES, summary="Model metadata")
async def metadata(request: Request, name: str) -> JSONBytes:
    """The input tensor and both outputs, and the versions that can be asked for by path."""
    return await _metadata(request, name, None)


@router.get(
    "/models/{name}/versions/{version}", responses=LOOKUP_RESPONSES, summary="Model metadata"
)
async def version_metadata(request: Request, name: str, version: str) -> JSONBytes:
    return await _metadata(request, name, version)


@router.get("/models/{name}/ready", responses=LOOKUP_RESPONSES, summary="Model readiness")
async def model_ready(request: Request, name: str) -> JSONBytes:
    lookup(request, name, None)
    return JSONBytes({"name": name, "ready": True})


@router.get(
    "/models/{name}/versions/{version}/ready",
    responses=LOOKUP_RESPONSES,
    summary="Model readiness",
)
async def version_ready(request: Request, name: str, version: str) -> JSONBytes:
    lookup(request, name, version)
    return JSONBytes({"name": name, "ready": True})


INFER_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {"$ref": "#/components/schemas/V2InferRequest"},
            "example": {
                "id": "42",
                "inputs": [
                    {
                        "name": INPUT_NAME,
                        "shape": [1, 4],
                        "datatype": "FP32",
                        "data": [[5.1, 3.5, 1.4, 0.2]],
                    }
                ],
                "outputs": [{"name": "label"}, {"name": "probabilities"}],
            },
        }
    },
}

# With binary_data_output (or an output's binary_data) the answer is a JSON header, then bytes.
INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    200: {
        "description": "the inference response (binary outputs follow the JSON header)",
        "content": {"application/octet-stream": {}},
    },
}


async def _infer(request: Request, name: str, version: str | None) -> Response:
    check_name(request, name)
    check_media(request)
    state = request.app.state
    body = await read_body(request, state.settings.max_body_bytes)
    model = lookup(request, name, version)  # one version answers the whole request
    max_rows = state.settings.max_batch_rows
    header_length = request.headers.get(HEADER_LENGTH)
    big = len(body) >= OFFLOAD_BYTES
    with bad_request():
        if not big:
            parsed = parse_infer(body, header_length, model, max_rows)
        else:
            parsed = await anyio.to_thread.run_sync(
                parse_infer, body, header_length, model, max_rows
            )
        probabilities = await model.probabilities(parsed.x)
    if not big:
        return render_infer(name, model, parsed, probabilities)
    return await anyio.to_thread.run_sync(render_infer, name, model, parsed, probabilities)


@router.post(
    "/models/{name}/infer",
    responses=INFER_RESPONSES,
    openapi_extra={"requestBody": INFER_BODY},
    dependencies=[Depends(require_api_key)],
    summary="Inference: probabilities and decoded labels",
)
async def infer(request: Request, name: str) -> Response:
    """Input ``features`` (FP32 ``[N, n_features]``, JSON or binary); outputs ``probabilities``
    (FP32 ``[N, n_classes]``) and ``label`` (BYTES ``[N]``)."""
    return await _infer(request, name, None)


@router.post(
    "/models/{name}/versions/{version}/infer",
    responses=INFER_RESPONSES,
    openapi_extra={"requestBody": INFER_BODY},
    dependencies=[Depends(require_api_key)],
    summary="Inference on a loaded version",
)
async def version_infer(request: Request, name: str, version: str) -> Response:
    return await _infer(request, name, version)
