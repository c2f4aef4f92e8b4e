"""TensorFlow Serving's REST API: model status, metadata, ``:predict`` and ``:classify``.

The signature ``serving_default`` takes one input ``features`` (``[-1, n_features]`` floats) and
has two outputs, ``probabilities`` and ``label`` (the decoded class), so a row-format answer is a
list of objects and a columnar answer an object, as TF Serving answers for several outputs.
"""

from __future__ import annotations

from typing import Any, Literal

import anyio
import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.convertors import Convertor, register_url_convertor

from service import inputs, outputs
from service.api._protocol import (
    ERROR_RESPONSES,
    INPUT_NAME,
    LOOKUP_RESPONSES,
    OFFLOAD_BYTES,
    bad_request,
    check_media,
    check_name,
    lookup,
    unwrap_singletons,
)
from service.api.deps import require_api_key
from service.errors import InvalidInput, MalformedBody, PayloadTooLarge
from service.http import JSONBytes, read_body
from service.model import LoadedModel

router = APIRouter(prefix="/v1/models", tags=["tensorflow serving"])


class _Segment(Convertor[str]):
    """A name or version in a GET path: no ':', which starts a verb, so that
    /v1/models/m:predict matches only the :predict route (405 with Allow: POST for a GET)."""

    regex = "[^/:]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("segment", _Segment())

SIGNATURE = "serving_default"
# Signature names a client may give: the default, or the classify method's name for :classify.
_PREDICT_SIGNATURES = (None, "", SIGNATURE)
_CLASSIFY_SIGNATURES = (*_PREDICT_SIGNATURES, "tensorflow/serving/classify")

Verb = Literal["predict", "classify"]


# -- parsing (no HTTP) ------------------------------------------------------------------------
def _document(
    body: bytes, allowed_signatures: tuple[str | None, ...], model: LoadedModel
) -> dict[str, Any]:
    if not body.strip():
        raise MalformedBody('empty body; send JSON such as {"instances": [[...]]}')
    document = inputs.load_json(body, nan_is_blank=model.typed is not None)
    if type(document) is not dict:
        raise InvalidInput("the body must be a JSON object")
    signature = document.get("signature_name")
    if signature not in allowed_signatures:
        shown = repr(signature[:64]) if type(signature) is str else "not a string"
        raise InvalidInput(f"signature_name {shown} not found; the model has {SIGNATURE!r}")
    return document


def _schema(model: LoadedModel, max_rows: int) -> inputs.Schema:
    return inputs.Schema(
        model.feature_names, max_rows, model.n_classes, model.typed, model.ignored_columns
    )


def _instances(value: Any, schema: inputs.Schema) -> np.ndarray:
    """Row format: rows, records by feature name, or objects naming the input tensor."""
    if (
        type(value) is list
        and value
        and type(value[0]) is dict
        and value[0].keys() == {INPUT_NAME}
        and INPUT_NAME not in schema.features
    ):
        if len(value) > schema.max_rows:
            raise PayloadTooLarge(
                f"instances has {len(value)} rows; the limit is {schema.max_rows}"
            )
        rows = []
        for i, instance in enumerate(value):
            if type(instance) is not dict or instance.keys() != {INPUT_NAME}:
                raise InvalidInput(f"instances[{i}] must be an object like instances[0]")
            rows.append(instance[INPUT_NAME])
        return inputs.read_rows(rows, schema, "instances")[0]
    return inputs.read_instances(value, schema, "instances")[0]


def _columnar(value: Any, schema: inputs.Schema) -> np.ndarray:
    """Columnar format: the input tensor, ``{"features": tensor}``, or one column per feature."""
    if type(value) is not dict:
        return inputs.read_instances(value, schema, "inputs")[0]
    features = schema.features
    if value.keys() == {INPUT_NAME} and INPUT_NAME not in features:
        return inputs.read_instances(value[INPUT_NAME], schema, f"inputs.{INPUT_NAME}")[0]
    unknown = sorted(set(value) - set(features) - schema.ignored)
    if unknown:
        raise InvalidInput(
            f"inputs has unknown input {unknown[0][:64]!r}; send {INPUT_NAME!r} or one column "
            f"per feature: {', '.join(features)}"
        )
    missing = [f for f in features if f not in value]
    if missing:
        raise InvalidInput(f"inputs is missing feature {missing[0]!r}")
    columns = []
    for feature in features:
        column = value[feature]
        if type(column) is not list:
            raise InvalidInput(f"inputs.{feature} must be an array with one value per row")
        if columns and len(column) != len(columns[0]):
            raise InvalidInput(
                f"inputs.{feature} has {len(column)} values; inputs.{features[0]} has "
                f"{len(columns[0])}"
            )
        columns.append(unwrap_singletons(column))
    if not columns[0]:
        raise InvalidInput("inputs has no rows; send at least one")
    if len(columns[0]) > schema.max_rows:
        raise PayloadTooLarge(f"inputs has {len(columns[0])} rows; the limit is {schema.max_rows}")
    return inputs.read_columns(columns, schema, "inputs")[0]


def parse_predict(body: bytes, model: LoadedModel, max_rows: int) -> tuple[np.ndarray, bool]:
    """A ``:predict`` body to the matrix and whether it used the columnar (``inputs``) format."""
    document = _document(body, _PREDICT_SIGNATURES, model)
    has_rows, has_columns = "instances" in document, "inputs" in document
    if has_rows == has_columns:
        raise InvalidInput(
            "send exactly one of 'instances' (row format) or 'inputs' (columnar format)"
        )
    schema = _schema(model, max_rows)
    if has_rows:
        return _instances(document["instances"], schema), False
    return _columnar(document["inputs"], schema), True


def parse_classify(body: bytes, model: LoadedModel, max_rows: int) -> np.ndarray:
    """A ``:classify`` body: ``examples`` by feature name, plus an optional shared ``context``."""
    document = _document(body, _CLASSIFY_SIGNATURES, model)
    if "examples" not in document:
        raise InvalidInput("missing field 'examples'")
    examples = document["examples"]
    context = document.get("context")
    context = {} if context is None else context
    if type(examples) is not list:
        raise InvalidInput("examples must be an array of objects by feature name")
    if type(context) is not dict:
        raise InvalidInput("context must be an object by feature name")
    if not examples:
        raise InvalidInput("examples is empty; send at least one")
    if len(examples) > max_rows:
        raise PayloadTooLarge(f"examples has {len(examples)} rows; the limit is {max_rows}")
    names = list(context)
    shared = unwrap_singletons(list(context.values()))
    records = []
    for i, example in enumerate(examples):
        if type(example) is not dict:
            raise InvalidInput(f"examples[{i}] must be an object by feature name")
        clash = next((k for k in names if k in example), None)
        if clash is not None:
            raise InvalidInput(f"examples[{i}] repeats context feature {clash[:64]!r}")
        record = dict(zip(example, unwrap_singletons(list(example.values())), strict=True))
        record.update(zip(names, shared, strict=True))
        records.append(record)
    return inputs.read_instances(records, _schema(model, max_rows), "examples")[0]


# -- rendering --------------------------------------------------------------------------------
def render_predict(model: LoadedModel, probabilities: np.ndarray, columnar: bool) -> JSONBytes:
    labels = [str(label) for label in outputs.argmax_labels(model, probabilities)]
    rows = probabilities.tolist()
    if columnar:
        return JSONBytes({"outputs": {"probabilities": rows, "label": labels}})
    return JSONBytes(
        {
            "predictions": [
                {"probabilities": row, "label": label}
                for row, label in zip(rows, labels, strict=True)
            ]
        }
    )


def render_classify(model: LoadedModel, probabilities: np.ndarray) -> JSONBytes:
    """Every class with its score, per example, in the model's class order."""
    keys = model.class_keys
    return JSONBytes(
        {
            "result": [
                [list(pair) for pair in zip(keys, row, strict=True)]
                for row in probabilities.tolist()
            ]
        }
    )


_TF_DTYPES = {"numeric": "DT_FLOAT", "boolean": "DT_BOOL", "categorical": "DT_STRING"}


def _tensor_info(name: str, dtype: str, dims: list[int]) -> dict[str, Any]:
    return {
        "dtype": dtype,
        "tensor_shape": {
            "dim": [{"size": str(d), "name": ""} for d in dims],
            "unknown_rank": False,
        },
        "name": f"{name}:0",
    }


def model_metadata(model_name: str, model: LoadedModel) -> dict[str, Any]:
    """GetModelMetadataResponse as JSON: the ``serving_default`` signature."""
    if model.numeric_only:
        tensors = {INPUT_NAME: _tensor_info(INPUT_NAME, "DT_FLOAT", [-1, model.n_features])}
    else:
        tensors = {
            f.name: _tensor_info(f.name, _TF_DTYPES[f.kind], [-1]) for f in model.metadata.features
        }
    signature = {
        "inputs": tensors,
        "outputs": {
            "probabilities": _tensor_info("probabilities", "DT_FLOAT", [-1, model.n_classes]),
            "label": _tensor_info("label", "DT_STRING", [-1]),
        },
        "method_name": "tensorflow/serving/predict",
    }
    return {
        "model_spec": {"name": model_name, "signature_name": "", "version": str(model.version)},
        "metadata": {"signature_def": {"signature_def": {SIGNATURE: signature}}},
    }


# -- routes -----------------------------------------------------------------------------------
def _version_status(version: int) -> dict[str, Any]:
    return {
        "version": str(version),
        "state": "AVAILABLE",
        "status": {"error_code": "OK", "error_message": ""},
    }


async def _status(request: Request, name: str, version: str | None) -> JSONBytes:
    model = lookup(request, name, version)
    versions = [model.version]
    previous = request.app.state.registry.previous
    if version is None and previous is not None and previous.version != model.version:
        versions.append(previous.version)  # still loaded and servable by version path
    return JSONBytes({"model_version_status": [_version_status(v) for v in versions]})


@router.get("/{name:segment}", responses=LOOKUP_RESPONSES, summary="Model status")
async def status(request: Request, name: str) -> JSONBytes:
    """Every loaded version of the model (the served one first), each AVAILABLE."""
    return await _status(request, name, None)


@router.get(
    "/{name:segment}/versions/{version:segment}", responses=LOOKUP_RESPONSES, summary="Model status"
)
async def version_status(request: Request, name: str, version: str) -> JSONBytes:
    return await _status(request, name, version)


@router.get("/{name:segment}/metadata", responses=LOOKUP_RESPONSES, summary="Model metadata")
async def metadata(request: Request, name: str) -> JSONBytes:
    """The ``serving_default`` signature: input ``features``, outputs ``probabilities``, ``label``."""
    return JSONBytes(model_metadata(name, lookup(request, name, None)))


@router.get(
    "/{name:segment}/versions/{version:segment}/metadata",
    responses=LOOKUP_RESPONSES,
    summary="Model metadata",
)
async def version_metadata(request: Request, name: str, version: str) -> JSONBytes:
    return JSONBytes(model_metadata(name, lookup(request, name, version)))


PREDICT_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {"$ref": "#/components/schemas/TFPredictRequest"},
            "examples": {
                "rows": {"value": {"instances": [[5.1, 3.5, 1.4, 0.2]]}},
                "columnar": {"value": {"inputs": {INPUT_NAME: [[5.1, 3.5, 1.4, 0.2]]}}},
            },
        }
    },
}
CLASSIFY_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {"$ref": "#/components/schemas/TFClassifyRequest"},
            "example": {
                "examples": [
                    {
                        "sepal_length": 5.1,
                        "sepal_width": 3.5,
                        "petal_length": 1.4,
                        "petal_width": 0.2,
                    }
                ]
            },
        }
    },
}


async def _run(request: Request, name: str, version: str | None, verb: Verb) -> Response:
    check_name(request, name)
    check_media(request)
    state = request.app.state
    body = await read_body(request, state.settings.max_body_bytes)
    model = lookup(request, name, version)  # one version answers the whole request
    max_rows = state.settings.max_batch_rows
    big = len(body) >= OFFLOAD_BYTES
    parse: Any = parse_classify if verb == "classify" else parse_predict
    with bad_request():
        if big:
            parsed = await anyio.to_thread.run_sync(parse, body, model, max_rows)
        else:
            parsed = parse(body, model, max_rows)
        x = parsed if verb == "classify" else parsed[0]
        probabilities = await model.probabilities(x)
    render: Any = render_classify if verb == "classify" else render_predict
    args = (model, probabilities) if verb == "classify" else (model, probabilities, parsed[1])
    return await anyio.to_thread.run_sync(render, *args) if big else render(*args)


_POST = {"responses": ERROR_RESPONSES, "dependencies": [Depends(require_api_key)]}


@router.post(
    "/{name}:predict",
    openapi_extra={"requestBody": PREDICT_BODY},
    summary="Predict (row or columnar format)",
    **_POST,
)
async def predict(request: Request, name: str) -> Response:
    """``instances`` (rows, records or ``{"features": row}`` objects) answer ``predictions``, one
    ``{"probabilities", "label"}`` object per row; ``inputs`` answer ``outputs`` by name."""
    return await _run(request, name, None, "predict")


@router.post(
    "/{name}/versions/{version}:predict",
    openapi_extra={"requestBody": PREDICT_BODY},
    summary="Predict with a loaded version",
    **_POST,
)
async def version_predict(request: Request, name: str, version: str) -> Response:
    return await _run(request, name, version, "predict")


@router.post(
    "/{name}:classify",
    openapi_extra={"requestBody": CLASSIFY_BODY},
    summary="Classify examples: every class with its score",
    **_POST,
)
async def classify(request: Request, name: str) -> Response:
    """``examples`` by feature name (optional shared ``context``) answer ``result``: per example,
    ``[label, score]`` for every class."""
    return await _run(request, name, None, "classify")


@router.post(
    "/{name}/versions/{version}:classify",
    openapi_extra={"requestBody": CLASSIFY_BODY},
    summary="Classify examples with a loaded version",
    **_POST,
)
async def version_classify(request: Request, name: str, version: str) -> Response:
    return await _run(request, name, version, "classify")


# Not in the OpenAPI document: it only tells a TF Serving client that this model classifies.
@router.post("/{name}:regress", include_in_schema=False, **_POST)
async def regress(request: Request, name: str) -> Response:
    check_name(request, name)
    raise InvalidInput("this model is a classifier: use :classify or :predict", 400)
