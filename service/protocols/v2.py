"""The Open Inference Protocol's REST API (KServe V2, as Triton, KServe and MLServer speak it).

Inputs, either form:

- one input per feature, named as the feature, shape ``[N]`` or ``[N, 1]``: BYTES for a
  categorical feature (text; INT types give number-like codes), BOOL for a boolean one, FP32,
  FP64, FP16 or an integer type for a numeric one. A blank is ``null`` in JSON data, an empty
  BYTES element, or NaN in binary float data. Every model takes this form.
- one input ``features`` (FP32 ``[N, n_features]``; FP16, FP64 and integer types are
  converted), for a model whose features are all numeric.

Two outputs: ``probabilities`` (FP32 ``[-1, n_classes]``) and ``label`` (BYTES ``[-1]``, the
decoded class). Tensor data may be JSON (flat or nested) or, with Triton's binary tensor data
extension, raw little-endian bytes after the JSON header.
"""

from __future__ import annotations

import math
import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any, ClassVar, NoReturn

import numpy as np
import orjson

from service import inputs, outputs, typed
from service.errors import InvalidInput, MalformedBody, PayloadTooLarge
from service.model import LoadedModel
from service.protocols.common import INPUT_NAME, OUTPUT_NAMES, Answer

HEADER_LENGTH = "Inference-Header-Content-Length"

# Datatypes a per-feature input of each kind takes (BYTES is handled apart: length-prefixed).
_INTEGER_TYPES = ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")
KIND_DATATYPES: dict[str, tuple[str, ...]] = {
    "numeric": ("FP32", "FP64", "FP16", *_INTEGER_TYPES),
    # 0/1 floats as model.keras takes them, NaN for a blank (binary BOOL data has no blank).
    "boolean": ("BOOL", "FP32", "FP64", "FP16", *_INTEGER_TYPES),
    "categorical": ("BYTES", *_INTEGER_TYPES),
}
# The datatype the metadata declares for a feature of each kind.
KIND_DECLARED = {"numeric": "FP32", "boolean": "BOOL", "categorical": "BYTES"}

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
        "BOOL": "?",
    }.items()
}
_ACCEPTED = ", ".join(d for d in DATATYPES if d != "BOOL")
# Triton's "<framework>_<format>" convention for the platform field.
PLATFORMS = {"litert": "litert_tflite", "keras": "tensorflow_keras"}
FLOAT16_MAX = float(np.finfo(np.float16).max)
# What FP JSON data may hold: numbers (a boolean feature's 0/1), null for a blank.
_FLOAT_DATA = frozenset({float, int, type(None)})


@dataclass(slots=True)
class InferBody:
    """An inference request as it came: the body, the binary extension's header length, and
    the model name of the path (echoed in the answer)."""

    name: str
    body: bytes
    header_length: str | None = None


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


def _shown_shape(value: Any) -> str:
    """A shape for a message: small non-negative integers only, never other input echoed (and
    no integer past 64 bits, which orjson cannot write)."""
    if type(value) is not list or not all(type(d) is int for d in value):
        return "not an array of integers"
    if not all(0 <= d < 2**53 for d in value):
        return "an array with a dimension out of range"
    return orjson.dumps(value).decode()[:64]


def _shape(value: Any, model: LoadedModel, max_rows: int, where: str) -> tuple[int, int]:
    expected = f"[N, {model.n_features}] (features: {', '.join(model.feature_names)})"
    if type(value) is not list or not all(type(d) is int and d >= 0 for d in value):
        raise InvalidInput(f"{where}.shape must be an array of non-negative integers {expected}")
    if len(value) != 2 or value[1] != model.n_features:
        shown = _shown_shape(value)
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


def _check_tensor(tensor: Any, where: str) -> None:
    """An input tensor is an object with at least a name, a shape and a datatype."""
    if type(tensor) is not dict:
        raise InvalidInput(f"{where} must be an object with name, shape, datatype and data")
    for field in ("name", "shape", "datatype"):
        if field not in tensor:
            raise InvalidInput(f"missing field {where}.{field}")


def _input_matrix(
    tensor: Any, binary: bytes, model: LoadedModel, max_rows: int, where: str
) -> np.ndarray:
    _check_tensor(tensor, where)
    name = tensor["name"]
    if name != INPUT_NAME:
        shown = repr(name[:64]) if type(name) is str else "not a string"
        raise InvalidInput(
            f"unknown input {shown} in {where}.name; the model takes one input {INPUT_NAME!r} "
            "or one input per feature"
        )
    datatype = tensor["datatype"]
    if type(datatype) is not str or datatype not in DATATYPES or datatype == "BOOL":
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
        if np.abs(matrix).max() > FLOAT16_MAX:
            raise InvalidInput(f"{where}.data is out of the FP16 range")
        matrix = matrix.astype(np.float16).astype(np.float32)
    return matrix


def _bytes_elements(binary: bytes, where: str) -> list[str | None]:
    """BYTES binary data: each element a 4-byte little-endian length, then UTF-8 text."""
    values: list[str | None] = []
    offset = 0
    while offset < len(binary):
        if offset + 4 > len(binary):
            raise InvalidInput(f"{where} binary BYTES data ends inside an element's length")
        (size,) = struct.unpack_from("<I", binary, offset)
        offset += 4
        if offset + size > len(binary):
            raise InvalidInput(f"{where} binary BYTES data ends inside an element")
        try:
            text = binary[offset : offset + size].decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput(f"{where} has a BYTES element that is not UTF-8 text") from None
        values.append(text if text else None)
        offset += size
    return values


def _feature_values(
    tensor: Any, chunk: bytes | None, feature: typed.Feature, rows: int | None, where: str
) -> list[Any]:
    """One per-feature input's values (blanks as None), checked against its kind."""
    datatype = tensor["datatype"]
    allowed = KIND_DATATYPES[feature.kind]
    if type(datatype) is not str or datatype not in allowed:
        shown = repr(datatype[:16]) if type(datatype) is str else "not a string"
        raise InvalidInput(
            f"{where}.datatype {shown} does not fit {feature.kind} feature {feature.name!r}; "
            f"send {' or '.join(allowed[:2])}"
        )
    shape = tensor["shape"]
    if (
        type(shape) is not list
        or not 1 <= len(shape) <= 2
        or not all(type(d) is int and d >= 0 for d in shape)
        or (len(shape) == 2 and shape[1] != 1)
    ):
        raise InvalidInput(
            f"{where}.shape is {_shown_shape(shape)}; a feature input is [N] or [N, 1]"
        )
    count = shape[0]
    if rows is not None and count != rows:
        raise InvalidInput(f"{where}.shape has {count} rows; the first input has {rows}")
    if chunk is not None:
        if datatype == "BYTES":
            values: list[Any] = _bytes_elements(chunk, where)
        else:
            dtype = DATATYPES[datatype]
            if len(chunk) != count * dtype.itemsize:
                raise InvalidInput(
                    f"{where} has {len(chunk)} bytes of binary data; {count} values of "
                    f"{datatype} need {count * dtype.itemsize}"
                )
            array = np.frombuffer(chunk, dtype=dtype)
            values = array.tolist()
            if array.dtype.kind == "f" and np.isnan(array).any():
                values = [None if v != v else v for v in values]  # NaN: a blank
    else:
        if "data" not in tensor:
            raise InvalidInput(f"missing field {where}.data")
        data = tensor["data"]
        if type(data) is not list:
            raise InvalidInput(f"{where}.data must be an array")
        values = _flatten(data)
        if datatype in DATATYPES and datatype.startswith(("INT", "UINT")):
            info = np.iinfo(DATATYPES[datatype])
            if float in set(map(type, values)):  # JSON Schema counts 3.0 as an integer: so do we
                values = [int(v) if type(v) is float and v.is_integer() else v for v in values]
            for i, value in enumerate(values):
                if value is not None and (
                    type(value) is not int or not info.min <= value <= info.max
                ):
                    raise InvalidInput(
                        f"{where}.data[{i}] must be an integer in the {datatype} range or null"
                    )
        elif datatype == "BYTES":
            for i, value in enumerate(values):
                if value is not None and type(value) is not str:
                    raise InvalidInput(f"{where}.data[{i}] must be a string for datatype BYTES")
            values = [None if v == "" else v for v in values]
        elif datatype == "BOOL":
            for i, value in enumerate(values):
                if value is not None and type(value) is not bool:
                    raise InvalidInput(f"{where}.data[{i}] must be true or false for datatype BOOL")
        elif not set(map(type, values)) <= _FLOAT_DATA:  # FP32, FP64, FP16: numbers, null
            for i, value in enumerate(values):
                if value is not None and type(value) is not float and type(value) is not int:
                    raise InvalidInput(
                        f"{where}.data[{i}] must be a number or null for datatype {datatype}"
                    )
    if len(values) != count:
        raise InvalidInput(f"{where}.data has {len(values)} values; shape needs {count}")
    if datatype == "FP16":  # the values the client meant are the float16 ones
        values = [_float16(v) if type(v) in (int, float) else v for v in values]
    return values


def _float16(value: float) -> float:
    """A number as float16 rounds it; infinite beyond float16's range (refused later)."""
    return float(np.float16(value)) if abs(value) <= FLOAT16_MAX else math.inf


def _feature_inputs(
    tensors: list[Any], binary: bytes, model: LoadedModel, max_rows: int
) -> tuple[np.ndarray, typed.Notes]:
    """One input per feature, in any order, to the core's matrix (with warnings by row)."""
    assert model.codec is not None
    features = {f.name: (j, f) for j, f in enumerate(model.codec.features)}
    columns: list[list[Any] | None] = [None] * len(features)
    rows: int | None = None
    offset = 0
    for k, tensor in enumerate(tensors):
        where = f"inputs[{k}]"
        _check_tensor(tensor, where)
        name = tensor["name"]
        if type(name) is not str or name not in features:
            shown = repr(name[:64]) if type(name) is str else "not a string"
            raise InvalidInput(
                f"unknown input {shown} in {where}.name; the model takes one input per feature: "
                f"{', '.join(model.feature_names)}"
            )
        j, feature = features[name]
        if columns[j] is not None:
            raise InvalidInput(f"{where} repeats input {name[:64]!r}")
        params = _parameters(tensor.get("parameters"), f"{where}.parameters")
        if "shared_memory_region" in params:
            raise InvalidInput("the shared-memory extension is not supported; send data")
        chunk = None
        if "binary_data_size" in params:
            if "data" in tensor:
                raise InvalidInput(f"{where} has both data and parameters.binary_data_size")
            size = params["binary_data_size"]
            if type(size) is not int or size < 0 or offset + size > len(binary):
                raise InvalidInput(
                    f"{where}.parameters.binary_data_size must be a non-negative integer within "
                    f"the {len(binary)} bytes after the JSON header"
                )
            chunk = binary[offset : offset + size]
            offset += size
        values = _feature_values(tensor, chunk, feature, rows, f"{where} ({name[:64]})")
        if rows is None:
            rows = len(values)
            if rows == 0:
                raise InvalidInput(f"{where}.shape has no rows; send at least one")
            if rows > max_rows:
                raise PayloadTooLarge(f"{where} has {rows} rows; the limit is {max_rows}")
        columns[j] = values
    if offset != len(binary):
        raise InvalidInput(
            f"{len(binary) - offset} bytes of binary data after the JSON header belong to no input"
        )
    names = model.feature_names
    return typed.encode(
        columns,  # type: ignore[arg-type]  # every feature was given once (counted above)
        model.codec,
        lambda i, j: f"input {names[j]!r} element {i}",
    )


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


def _signature(model: LoadedModel) -> str:
    """The inputs the model takes, for messages."""
    per_feature = f"one input per feature ({', '.join(model.feature_names)})"
    if not model.numeric_only:
        return per_feature
    return (
        f"{per_feature}, or one input {INPUT_NAME!r}, FP32 of shape [N, {model.n_features}] "
        f"({', '.join(model.feature_names)})"
    )


def refuse_input_count(count: int, model: LoadedModel) -> NoReturn:
    raise InvalidInput(f"inputs has {count} tensors; the model takes {_signature(model)}")


def parse_infer(
    body: bytes, header_length: str | None, model: LoadedModel, max_rows: int
) -> InferRequest:
    """An inference request body (JSON, or JSON then binary tensor data) to a validated request."""
    header, binary = _split(body, header_length)
    if not header.strip():
        raise MalformedBody('empty body; send an inference request {"inputs": [...]}')
    document = inputs.load_json(header, nan_is_blank=model.typed is not None)
    return read_document(document, binary, model, max_rows)


def read_document(document: Any, binary: bytes, model: LoadedModel, max_rows: int) -> InferRequest:
    """A decoded inference request (the JSON header as Python objects, and the binary tensor
    data after it) to a validated request: what REST and gRPC requests both become."""
    if type(document) is not dict:
        raise InvalidInput("the body must be a JSON object with 'inputs'")
    request_id = document.get("id")
    if request_id is not None and type(request_id) is not str:
        raise InvalidInput("id must be a string")
    params = _parameters(document.get("parameters"), "parameters")
    binary_default = _flag(params, "binary_data_output", "parameters", False)
    signature = _signature(model)
    if "inputs" not in document:
        raise InvalidInput(f"missing field 'inputs'; the model takes {signature}")
    tensors = document["inputs"]
    if type(tensors) is not list:
        raise InvalidInput(f"inputs must be an array; the model takes {signature}")
    single = (
        len(tensors) == 1
        and type(tensors[0]) is dict
        and tensors[0].get("name") == INPUT_NAME
        and INPUT_NAME not in model.feature_names
    )
    # One tensor for a numeric model of several features is the single-tensor form, however
    # it is named: its own checks name the field at fault (the name, the shape, the data).
    if model.numeric_only and len(tensors) == 1 and (single or model.n_features > 1):
        x = _input_matrix(tensors[0], binary, model, max_rows, "inputs[0]")
    elif single or len(tensors) != model.n_features:
        refuse_input_count(len(tensors), model)
    else:
        x, _ = _feature_inputs(tensors, binary, model, max_rows)
    return InferRequest(
        x=x,
        id=request_id if request_id is not None else str(uuid.uuid4()),
        outputs=_requested_outputs(document.get("outputs"), binary_default),
    )


# -- rendering --------------------------------------------------------------------------------
# Each loaded version's labels as BYTES binary data frames them, made once per version: keyed by
# the identity of its label list (a few versions are loaded at a time; older entries go).
_FRAMED_LABELS: dict[int, tuple[list[Any], list[bytes]]] = {}


def label_bytes(model: LoadedModel, probabilities: np.ndarray) -> bytes:
    """The ``label`` output as BYTES binary data: per row, a 4-byte little-endian length, then
    the UTF-8 text of the decoded label (REST's binary extension and gRPC's raw contents)."""
    labels = model.labels
    cached = _FRAMED_LABELS.get(id(labels))
    if cached is None or cached[0] is not labels:
        encoded = [str(label).encode() for label in labels]
        if len(_FRAMED_LABELS) >= 8:
            _FRAMED_LABELS.clear()
        cached = _FRAMED_LABELS[id(labels)] = (
            labels,
            [struct.pack("<I", len(b)) + b for b in encoded],
        )
    framed = cached[1]
    return b"".join([framed[i] for i in model.label_indices(probabilities)])


def answer_parts(
    model_name: str, model: LoadedModel, request: InferRequest, probabilities: np.ndarray
) -> tuple[dict[str, Any], list[bytes]]:
    """The inference response as a JSON-ready document, and the binary data of each output
    asked for as binary (in output order, each declared by its ``binary_data_size``)."""
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
            tensor = {"name": name, "datatype": "BYTES", "shape": [rows]}
            if binary:
                chunks.append(label_bytes(model, probabilities))
            else:
                tensor["data"] = [
                    str(label) for label in outputs.argmax_labels(model, probabilities)
                ]
        if binary:
            tensor["parameters"] = {"binary_data_size": len(chunks[-1])}
        tensors.append(tensor)
    answer = {
        "model_name": model_name,
        "model_version": str(model.version),
        "id": request.id,
        "outputs": tensors,
    }
    return answer, chunks


class InferCodec:
    """The V2 REST inference request and response (JSON, or JSON then binary tensor data)."""

    protocol: ClassVar[str] = "v2"
    invalid_status: ClassVar[int] = 400

    def decode(self, request: InferBody, model: LoadedModel, max_rows: int) -> InferRequest:
        return parse_infer(request.body, request.header_length, model, max_rows)

    def encode(
        self, request: InferBody, model: LoadedModel, parsed: InferRequest, probabilities: Any
    ) -> Answer:
        answer, chunks = answer_parts(request.name, model, parsed, probabilities)
        if not chunks:
            return Answer(orjson.dumps(answer))
        header = orjson.dumps(answer)
        return Answer(
            header + b"".join(chunks),
            "application/octet-stream",
            {HEADER_LENGTH: str(len(header))},
        )


INFER = InferCodec()


def server_metadata(version: str) -> dict[str, Any]:
    return {"name": "keras-serve", "version": version, "extensions": ["binary_tensor_data"]}


def input_metadata(model: LoadedModel) -> list[dict[str, Any]]:
    """The single ``features`` tensor for an all-numeric model, else one input per feature."""
    if model.numeric_only:
        return [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, model.n_features]}]
    return [
        {"name": f.name, "datatype": KIND_DECLARED[f.kind], "shape": [-1]}
        for f in model.metadata.features
    ]


def model_metadata(model_name: str, model: LoadedModel, versions: list[int]) -> dict[str, Any]:
    return {
        "name": model_name,
        "versions": [str(v) for v in versions],
        "platform": PLATFORMS.get(model.runtime.name, model.runtime.name),
        "inputs": input_metadata(model),
        "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, model.n_classes]},
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
        ],
    }
