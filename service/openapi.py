"""The model-specific parts of the OpenAPI document: request schemas that name the served
model's features, and the bearer token on the routes that need one.

The schemas say exactly what the parsers in ``service.inputs`` and the protocol routes accept,
so that a client (or schemathesis) generating from them gets a 2xx, and anything outside them a
4xx. Where JSON Schema cannot say it (a V2 tensor's shape matching its data, TF Serving's
per-feature columns), the schema documents the common forms and the description the rest.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from service.settings import Settings
from service.typed import MAX_ABS_VALUE

# V2 batches the schema spells out; larger ones work the same way (see the description).
V2_SCHEMA_ROWS = 3
_TF_SIGNATURES = ["", "serving_default"]


def customize(schema: dict[str, Any], model: Any, settings: Settings) -> None:
    """Add the request schemas for ``model`` (None: not ready) and the security requirements."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    max_rows = settings.max_batch_rows
    components["PredictRequest"] = predict_request(model, max_rows)
    components["PredictCSV"] = predict_csv(model, max_rows)
    components["TFPredictRequest"] = tf_predict_request(model)
    components["TFClassifyRequest"] = tf_classify_request(model)
    components["V2InferRequest"] = v2_infer_request(model)
    if model is not None and not model.numeric_only:
        use_model_examples(schema, model)
    document_security(schema, settings)


def example_record(model: Any) -> dict[str, Any]:
    """A record of the served model's features: medians, the first category, false."""
    record: dict[str, Any] = {}
    for spec in model.metadata.features:
        if spec.kind == "categorical":
            record[spec.name] = next((v for v in spec.vocabulary or [] if v), None)
        elif spec.kind == "boolean":
            record[spec.name] = spec.fill >= 0.5
        else:
            record[spec.name] = spec.fill
    return record


def _own_request_content(operation: dict[str, Any]) -> dict[str, Any]:
    """The operation's request body content, copied first: FastAPI puts the routes' constant
    ``openapi_extra`` dicts into the document by reference, and they must not change."""
    if "requestBody" not in operation:
        return {}
    operation["requestBody"] = copy.deepcopy(operation["requestBody"])
    return operation["requestBody"].get("content", {})


def use_model_examples(schema: dict[str, Any], model: Any) -> None:
    """Replace the Iris examples of ``POST /predict`` and TF Serving ``:predict`` with the served
    model's features, so that "Try it out" in /docs answers 200."""
    record = example_record(model)
    row = list(record.values())
    names = list(record)
    blank = dict(record)
    nullable = [s.name for s in model.metadata.features if s.nullable]
    for name in nullable[:2]:
        blank[name] = None
    paths = schema.get("paths", {})
    body = _own_request_content(paths.get("/predict", {}).get("post", {}))
    if "application/json" in body:
        body["application/json"]["examples"] = {
            "records": {"summary": "records by feature name", "value": {"instances": [record]}},
            "rows": {"summary": "rows in feature order", "value": {"instances": [row]}},
            "blanks": {"summary": "null for a blank", "value": {"instances": [blank]}},
        }
    if "text/csv" in body:
        cells = [
            "" if v is None else str(v).lower() if isinstance(v, bool) else str(v) for v in row
        ]
        body["text/csv"]["example"] = ",".join(names) + "\n" + ",".join(cells) + "\n"
    for path, operations in paths.items():
        if path.endswith(":predict") and "post" in operations:
            content = _own_request_content(operations["post"])
            if "application/json" in content:
                content["application/json"]["examples"] = {
                    "rows": {"value": {"instances": [record]}},
                    "columnar": {"value": {"inputs": {k: [v] for k, v in record.items()}}},
                }


def document_security(schema: dict[str, Any], settings: Settings) -> None:
    """Name the bearer token where one is needed: /admin (ADMIN_TOKEN), and with API_KEY set the
    prediction operations, which are those that document a 401 answer."""
    secured = False
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            guarded = path.startswith("/admin") or (
                settings.api_key is not None and "401" in operation.get("responses", {})
            )
            if guarded:
                operation["security"] = [{"bearer": []}]
                secured = True
    if secured:
        schema.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = {
            "type": "http",
            "scheme": "bearer",
            "description": "API_KEY for the prediction routes (when set); ADMIN_TOKEN for /admin",
        }


# -- the pieces -------------------------------------------------------------------------------
def _number() -> dict[str, Any]:
    return {"type": "number", "minimum": -MAX_ABS_VALUE, "maximum": MAX_ABS_VALUE}


def _typed(model: Any) -> bool:
    """True when the model reads typed values (text, true/false or blanks), not numbers only."""
    return model is not None and getattr(model, "typed", None) is not None


def feature_value(model: Any, j: int) -> dict[str, Any]:
    """The JSON Schema of feature ``j``'s value for a typed model."""
    feature = model.codec.features[j]
    spec = model.metadata.features[j]
    if feature.kind == "categorical":
        vocabulary = spec.vocabulary or []
        shown = ", ".join(repr(v) for v in vocabulary[:10])
        more = f" and {len(vocabulary) - 10} more" if len(vocabulary) > 10 else ""
        schema: dict[str, Any] = {
            "anyOf": [{"type": "string"}, {"type": "number"}],
            "description": f"{spec.name}: a category ({shown}{more}); another is answered "
            "with a warning",
        }
    elif feature.kind == "boolean":
        schema = {"type": "boolean", "description": f"{spec.name}: true or false"}
    else:
        schema = {**_number(), "description": f"{spec.name}: a number"}
    if feature.blank_ok:
        blank = "blank in training" if feature.nullable else "MISSING_VALUES=impute"
        return {
            "anyOf": [schema, {"type": "null"}],
            "description": schema.get("description", "") + f"; null for a blank ({blank})",
        }
    return schema


def _row(model: Any) -> dict[str, Any]:
    if model is None:
        return {"type": "array", "items": _number(), "minItems": 1}
    width = model.n_features
    row: dict[str, Any] = {
        "type": "array",
        "items": _number(),
        "minItems": width,
        "maxItems": width,
        "description": "values in feature order: " + ", ".join(model.feature_names),
    }
    if _typed(model):
        del row["items"]
        row["prefixItems"] = [feature_value(model, j) for j in range(width)]
    return row


def _record(model: Any, value: dict[str, Any] | None = None) -> dict[str, Any]:
    value = value or _number()
    if model is None:
        return {"type": "object", "additionalProperties": value, "minProperties": 1}
    properties = {f: value for f in model.feature_names}
    if _typed(model):
        properties = {f: feature_value(model, j) for j, f in enumerate(model.feature_names)}
    return {
        "type": "object",
        "properties": properties,
        "required": list(model.feature_names),
        "additionalProperties": False,
    }


def _rows_or_records(model: Any) -> dict[str, Any]:
    """Every instance a row or every instance a record: the service refuses a mix."""
    return {
        "anyOf": [
            {"type": "array", "minItems": 1, "items": _row(model)},
            {"type": "array", "minItems": 1, "items": _record(model)},
        ]
    }


# -- POST /predict ----------------------------------------------------------------------------
def predict_request(model: Any, max_rows: int) -> dict[str, Any]:
    top_k: dict[str, Any] = {"type": "integer", "minimum": 1}
    if model is not None:
        top_k["maximum"] = model.n_classes
    return {
        "type": "object",
        "required": ["instances"],
        "additionalProperties": False,
        "properties": {
            # MAX_BATCH_ROWS is a server limit answered with 413, not a schema violation (422).
            "instances": {
                **_rows_or_records(model),
                "description": "rows in feature order, or records by feature name (not mixed); "
                f"at most {max_rows} (MAX_BATCH_ROWS, 413 beyond)",
            },
            "top_k": {
                "anyOf": [top_k, {"type": "null"}],
                "description": "also list the k most probable classes; null or absent: none",
            },
        },
    }


def predict_csv(model: Any, max_rows: int) -> dict[str, Any]:
    """A header naming every feature, then rows of numbers (the header may list any order)."""
    schema: dict[str, Any] = {
        "type": "string",
        "description": "a header row naming every feature once (any order), then at most "
        f"{max_rows} data rows (MAX_BATCH_ROWS, 413 beyond)",
    }
    if _typed(model):
        schema["description"] += (
            "; numbers, text and true/false as written in the training CSV, an empty cell "
            "for a blank"
        )
    elif model is not None:
        number = r"-?[0-9]{1,3}(\.[0-9]{1,6})?"
        row = ",".join([number] * model.n_features)
        header = ",".join(re.escape(f) for f in model.feature_names)
        schema["pattern"] = rf"^{header}(\r?\n{row})+\r?\n?$"
    return schema


# -- TensorFlow Serving -----------------------------------------------------------------------
def _exactly_one_of(a: str, b: str) -> list[dict[str, Any]]:
    return [
        {"required": [a], "not": {"required": [b]}},
        {"required": [b], "not": {"required": [a]}},
    ]


def tf_predict_request(model: Any) -> dict[str, Any]:
    tensor = {"type": "object", "required": ["features"], "additionalProperties": False}
    tensor["properties"] = {"features": _row(model)}
    return {
        "type": "object",
        "description": "row format (instances) or columnar format (inputs), not both. inputs "
        "may also give one column per feature name, each with a value per row.",
        "properties": {
            "signature_name": {"enum": [*_TF_SIGNATURES, None]},
            "instances": {
                "anyOf": [
                    *_rows_or_records(model)["anyOf"],
                    {"type": "array", "minItems": 1, "items": tensor},
                ]
            },
            "inputs": {
                "anyOf": [
                    *_rows_or_records(model)["anyOf"],
                    {
                        "type": "object",
                        "required": ["features"],
                        "additionalProperties": False,
                        "properties": {"features": _rows_or_records(model)},
                    },
                ]
            },
        },
        "oneOf": _exactly_one_of("instances", "inputs"),
    }


def tf_classify_request(model: Any) -> dict[str, Any]:
    value = {
        "anyOf": [_number(), {"type": "array", "items": _number(), "minItems": 1, "maxItems": 1}]
    }
    return {
        "type": "object",
        "required": ["examples"],
        "description": "examples by feature name; a feature may instead be given once for all "
        "examples in context (then no example repeats it)",
        "properties": {
            "signature_name": {"enum": [*_TF_SIGNATURES, "tensorflow/serving/classify", None]},
            "examples": {"type": "array", "minItems": 1, "items": _record(model, value)},
            "context": {"anyOf": [{"type": "object", "maxProperties": 0}, {"type": "null"}]},
        },
    }


# -- Open Inference Protocol (V2) -------------------------------------------------------------
def _v2_shapes(model: Any) -> list[dict[str, Any]]:
    """A tensor's shape and data for batches of 1..V2_SCHEMA_ROWS rows, flat or nested."""
    if model is None:
        return [{"properties": {"data": {"type": "array"}}}]
    width = model.n_features
    forms = []
    for rows in range(1, V2_SCHEMA_ROWS + 1):
        flat = {"type": "array", "items": _number(), "minItems": rows * width}
        flat["maxItems"] = rows * width
        nested = {"type": "array", "items": _row(model), "minItems": rows, "maxItems": rows}
        forms.append(
            {
                "properties": {
                    "shape": {"const": [rows, width]},
                    "data": {"anyOf": [flat, nested]},
                }
            }
        )
    return forms


def _parameters(properties: dict[str, Any], *refused: str) -> dict[str, Any]:
    """A V2 ``parameters`` object: any keys, these typed, the extensions we refuse absent."""
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if refused:
        schema["propertyNames"] = {"not": {"enum": list(refused)}}
    return schema


def _v2_feature_inputs(model: Any) -> dict[str, Any]:
    """One input per feature (any order), for a model with text or true/false features."""
    tensors = []
    for j, spec in enumerate(model.metadata.features):
        value = feature_value(model, j)
        datatype = {"categorical": "BYTES", "boolean": "BOOL"}.get(spec.kind, "FP32")
        tensors.append(
            {
                "type": "object",
                "required": ["name", "shape", "datatype", "data"],
                "properties": {
                    "name": {"const": spec.name},
                    "datatype": {"const": datatype},
                    "shape": {"type": "array", "items": {"type": "integer", "minimum": 1}},
                    "data": {"type": "array", "items": value, "minItems": 1},
                },
            }
        )
    return {
        "type": "array",
        "minItems": len(tensors),
        "maxItems": len(tensors),
        "items": {"anyOf": tensors},
        "description": "one input per feature, named as the feature, shape [N] or [N, 1], all "
        "with the same N; BYTES for text (categorical), BOOL for true/false, FP32 (or FP64 or an "
        "integer type) for numbers; null for a blank",
    }


def v2_infer_request(model: Any) -> dict[str, Any]:
    if model is not None and not model.numeric_only:
        document = v2_infer_request(None)
        document["properties"]["inputs"] = _v2_feature_inputs(model)
        return document
    width = model.n_features if model is not None else "F"
    tensor = {
        "type": "object",
        "required": ["name", "shape", "datatype", "data"],
        "properties": {
            "name": {"const": "features"},
            "datatype": {"enum": ["FP32", "FP64"]},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 1}},
            "data": {"type": "array"},
            # Free-form, as the protocol has it, but for the two extensions it names.
            "parameters": {
                "anyOf": [
                    _parameters({}, "binary_data_size", "shared_memory_region"),
                    {"type": "null"},
                ]
            },
        },
        "anyOf": _v2_shapes(model),
        "description": f"one input 'features' of shape [N, {width}], data flat or nested, N*"
        f"{width} values. Any N up to MAX_BATCH_ROWS works as the N = 1..{V2_SCHEMA_ROWS} "
        "shown; FP16 and the integer datatypes are accepted too, as is the binary tensor data "
        "extension (Inference-Header-Content-Length).",
    }
    binary_flag = {"type": "boolean"}
    output = {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"enum": ["probabilities", "label"]},
            "parameters": {
                "anyOf": [
                    _parameters(
                        {"binary_data": binary_flag, "classification": {"enum": [0, None]}},
                        "shared_memory_region",
                    ),
                    {"type": "null"},
                ]
            },
        },
    }
    return {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "parameters": {
                "anyOf": [_parameters({"binary_data_output": binary_flag}), {"type": "null"}]
            },
            "inputs": {"type": "array", "minItems": 1, "maxItems": 1, "items": tensor},
            "outputs": {"anyOf": [{"type": "array", "items": output}, {"type": "null"}]},
        },
    }
