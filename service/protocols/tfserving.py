"""TensorFlow Serving's REST API: model status, metadata, ``:predict`` and ``:classify``.

The signature ``serving_default`` takes one input ``features`` (``[-1, n_features]`` floats) and
has two outputs, ``probabilities`` and ``label`` (the decoded class), so a row-format answer is a
list of objects and a columnar answer an object, as TF Serving answers for several outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import orjson

from service import inputs, outputs
from service.errors import InvalidInput, MalformedBody, PayloadTooLarge
from service.model import LoadedModel
from service.protocols.common import INPUT_NAME, Answer, unwrap_singletons

SIGNATURE = "serving_default"
# Signature names a client may give: the default, or the classify method's name for :classify.
_PREDICT_SIGNATURES = (None, "", SIGNATURE)
_CLASSIFY_SIGNATURES = (*_PREDICT_SIGNATURES, "tensorflow/serving/classify")


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
    known = set(features)
    unknown = next((k for k in value if k not in known and k not in schema.ignored), None)
    if unknown is not None:
        raise InvalidInput(
            f"inputs has unknown input {unknown[:64]!r}; send {INPUT_NAME!r} or one column "
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
def render_predict(model: LoadedModel, probabilities: np.ndarray, columnar: bool) -> bytes:
    labels = [str(label) for label in outputs.argmax_labels(model, probabilities)]
    rows = probabilities.tolist()
    if columnar:
        return orjson.dumps({"outputs": {"probabilities": rows, "label": labels}})
    return orjson.dumps(
        {
            "predictions": [
                {"probabilities": row, "label": label}
                for row, label in zip(rows, labels, strict=True)
            ]
        }
    )


def render_classify(model: LoadedModel, probabilities: np.ndarray) -> bytes:
    """Every class with its score, per example, in the model's class order."""
    keys = model.class_keys
    return orjson.dumps(
        {
            "result": [
                [list(pair) for pair in zip(keys, row, strict=True)]
                for row in probabilities.tolist()
            ]
        }
    )


@dataclass(slots=True)
class Rows:
    """A decoded ``:predict`` request: the matrix and whether it came in columnar form."""

    x: np.ndarray
    columnar: bool = False


class PredictCodec:
    """``:predict``: row (``instances``) or columnar (``inputs``) format, answered alike."""

    protocol: ClassVar[str] = "tfserving"
    invalid_status: ClassVar[int] = 400

    def decode(self, body: bytes, model: LoadedModel, max_rows: int) -> Rows:
        return Rows(*parse_predict(body, model, max_rows))

    def encode(self, body: bytes, model: LoadedModel, rows: Rows, probabilities: Any) -> Answer:
        return Answer(render_predict(model, probabilities, rows.columnar))


class ClassifyCodec(PredictCodec):
    """``:classify``: ``examples`` by feature name; every class with its score."""

    def decode(self, body: bytes, model: LoadedModel, max_rows: int) -> Rows:
        return Rows(parse_classify(body, model, max_rows))

    def encode(self, body: bytes, model: LoadedModel, rows: Rows, probabilities: Any) -> Answer:
        return Answer(render_classify(model, probabilities))


PREDICT = PredictCodec()
CLASSIFY = ClassifyCodec()


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


def version_status(versions: list[int]) -> dict[str, Any]:
    """GetModelStatusResponse as JSON: each version AVAILABLE."""
    return {
        "model_version_status": [
            {
                "version": str(v),
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
            for v in versions
        ]
    }
