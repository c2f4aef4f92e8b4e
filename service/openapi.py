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

import numpy as np

from bundle import columns
from service.protocols.v2 import DATATYPES, FLOAT16_MAX, KIND_DATATYPES
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
    components["ExplainRequest"] = explain_request(model, settings.max_explain_rows)
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
        if path.endswith("explain") and "post" in operations:
            content = _own_request_content(operations["post"])
            if "application/json" in content:
                content["application/json"]["example"] = {"instances": [record]}
            if "text/csv" in content and "text/csv" in body:
                content["text/csv"]["example"] = body["text/csv"]["example"]
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


# What str.strip() strips (str.isspace), as literal characters in a regex class: read the same
# by Python's, ECMAScript's and Rust's regex engines.
_SPACE = "[\t-\r\x1c- \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*"


def _escape(text: str) -> str:
    """Escape regex metacharacters only (``re.escape`` also escapes ``#``, ``-`` and others,
    which ECMAScript's unicode mode refuses)."""
    return "".join("\\" + c if c in "\\^$.|?*+()[]{}" else c for c in text)


# A text the service reads as a blank (bundle.columns.MISSING_TOKENS, surrounding space ignored).
BLANK_TEXT = (
    f"^{_SPACE}(?:{'|'.join(_escape(t) for t in sorted(columns.MISSING_TOKENS) if t)})?{_SPACE}$"
)
# A text the service reads as true or false (any case), or as 1 or 0.
BOOLEAN_TEXT = f"^{_SPACE}(?:[Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee]|0|1){_SPACE}$"


def feature_value(model: Any, j: int) -> dict[str, Any]:
    """The JSON Schema of feature ``j``'s value for a typed model: what ``service.typed`` reads
    from JSON (a text cell as a CSV cell would be read, a blank text as a blank)."""
    feature = model.codec.features[j]
    spec = model.metadata.features[j]
    blank_text = {"type": "string", "pattern": BLANK_TEXT}
    if feature.kind == "categorical":
        vocabulary = [v for v in spec.vocabulary or [] if v]
        shown = ", ".join(repr(v) for v in vocabulary[:10])
        more = f" and {len(vocabulary) - 10} more" if len(vocabulary) > 10 else ""
        text: dict[str, Any] = {"type": "string"}
        if not feature.blank_ok:
            text["not"] = blank_text
        forms: list[dict[str, Any]] = [text, {"type": "number"}, {"type": "boolean"}]
        description = (
            f"{spec.name}: a category ({shown}{more}); another text, number or true/false is "
            "answered with a warning"
        )
    elif feature.kind == "boolean":
        forms = [
            {"type": "boolean"},
            {"type": "number", "enum": [0, 1]},
            {"type": "string", "pattern": BOOLEAN_TEXT},
        ]
        description = f'{spec.name}: true or false (also 1 or 0, or the text "true"/"false")'
    else:
        forms = [_number()]
        description = f"{spec.name}: a number"
    if feature.blank_ok:
        blank = "blank in training" if feature.nullable else "MISSING_VALUES=impute"
        if feature.kind != "categorical":  # any text is a category, a blank one included
            forms.append(blank_text)
        forms.append({"type": "null"})
        description += f"; null or an empty text for a blank ({blank})"
    if len(forms) == 1:
        return {**forms[0], "description": description}
    return {"anyOf": forms, "description": description}


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


def _one_or_list_of_one(value: dict[str, Any]) -> dict[str, Any]:
    """A value, or a list holding just it (as tf.Example features are)."""
    return {"anyOf": [value, {"type": "array", "items": value, "minItems": 1, "maxItems": 1}]}


def _record(model: Any, value: dict[str, Any] | None = None, lists: bool = False) -> dict[str, Any]:
    """A record by feature name; ``lists``: each value may also be a list of one value."""
    value = value or _number()
    if lists:
        value = _one_or_list_of_one(value)
    if model is None:
        return {"type": "object", "additionalProperties": value, "minProperties": 1}
    properties = {f: value for f in model.feature_names}
    if _typed(model):
        properties = {f: feature_value(model, j) for j, f in enumerate(model.feature_names)}
        if lists:
            properties = {f: _one_or_list_of_one(v) for f, v in properties.items()}
    for name in sorted(getattr(model, "ignored_columns", ())):
        # The training table's target and left-out columns: a record may carry them.
        properties[name] = {"description": f"{name}: a column the model does not use; ignored"}
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
def _instances(model: Any, max_rows: int, limit: str) -> dict[str, Any]:
    return {
        **_rows_or_records(model),
        "description": "rows in feature order, or records by feature name (not mixed); "
        f"at most {max_rows} ({limit}, 413 beyond)",
    }


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
            "instances": _instances(model, max_rows, "MAX_BATCH_ROWS"),
            "top_k": {
                "anyOf": [top_k, {"type": "null"}],
                "description": "also list the k most probable classes; null or absent: none",
            },
        },
    }


def explain_request(model: Any, max_rows: int) -> dict[str, Any]:
    """``/explain``'s body: ``/predict``'s rows or records, and ``classes``."""
    return {
        "type": "object",
        "required": ["instances"],
        "additionalProperties": False,
        "properties": {
            "instances": _instances(model, max_rows, "MAX_EXPLAIN_ROWS"),
            "classes": {
                "type": "string",
                "enum": ["predicted", "all"],
                "description": "predicted (the default): the predicted label's attributions; "
                "all: every class's as well",
            },
        },
    }


# A header name or category that needs no CSV quoting and no regex escaping beyond ".".
_PLAIN_CELL = re.compile(r"[A-Za-z0-9_.-]+(?: [A-Za-z0-9_.-]+)*")
_CSV_NUMBER = r"-?[0-9]{1,3}(\.[0-9]{1,6})?"


def _csv_cell(model: Any, j: int) -> str:
    """A pattern for feature ``j``'s CSV cells (the common forms: short numbers, the training
    categories, true/false), empty where the feature takes a blank."""
    feature = model.codec.features[j]
    if feature.kind == "numeric":
        cell = _CSV_NUMBER
    elif feature.kind == "boolean":
        cell = "true|false|TRUE|FALSE|True|False|0|1"
    else:
        vocabulary = model.metadata.features[j].vocabulary or []
        plain = [
            _escape(v)
            for v in vocabulary
            if _PLAIN_CELL.fullmatch(v) and v not in columns.MISSING_TOKENS
        ]
        cell = "|".join(plain) or "c[a-z0-9]{0,8}"  # "c...": never a blank token
    # A single empty cell would make an empty line, which is no row.
    return f"(?:{cell})?" if feature.blank_ok and model.n_features > 1 else f"(?:{cell})"


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
        if all(_PLAIN_CELL.fullmatch(f) for f in model.feature_names):
            row = ",".join(_csv_cell(model, j) for j in range(model.n_features))
            header = ",".join(_escape(f) for f in model.feature_names)
            schema["pattern"] = rf"^{header}(\r?\n{row})+\r?\n?$"
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
    return {
        "type": "object",
        "required": ["examples"],
        "description": "examples by feature name; a feature may instead be given once for all "
        "examples in context (then no example repeats it)",
        "properties": {
            "signature_name": {"enum": [*_TF_SIGNATURES, "tensorflow/serving/classify", None]},
            "examples": {"type": "array", "minItems": 1, "items": _record(model, lists=True)},
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


def _v2_data_forms(feature: Any) -> list[tuple[list[str], dict[str, Any]]]:
    """The datatypes a per-feature input of ``feature``'s kind takes (``KIND_DATATYPES``), each
    with the JSON value its data holds."""
    integers = [d for d in KIND_DATATYPES[feature.kind] if d.startswith(("INT", "UINT"))]
    forms: list[tuple[list[str], dict[str, Any]]] = []
    if feature.kind == "boolean":  # true/false, or 1/0 as model.keras takes them
        forms.append((["BOOL"], {"type": "boolean"}))
        forms.append((["FP32", "FP64", "FP16"], {"type": "number", "enum": [0, 1]}))
        forms.append((integers, {"type": "integer", "enum": [0, 1]}))
    elif feature.kind == "categorical":  # text, or number-like codes
        text: dict[str, Any] = {"type": "string"}
        if not feature.blank_ok:
            text["not"] = {"type": "string", "pattern": BLANK_TEXT}
        forms.append((["BYTES"], text))
        for datatype in integers:
            info = np.iinfo(DATATYPES[datatype])
            bounds = {"minimum": int(info.min), "maximum": int(info.max)}
            forms.append(([datatype], {"type": "integer", **bounds}))
    else:
        forms.append((["FP32", "FP64"], _number()))
        forms.append(
            (["FP16"], {"type": "number", "minimum": -FLOAT16_MAX, "maximum": FLOAT16_MAX})
        )
        for datatype in integers:
            info = np.iinfo(DATATYPES[datatype])
            low, high = (
                max(int(info.min), -int(MAX_ABS_VALUE)),
                min(int(info.max), int(MAX_ABS_VALUE)),
            )
            forms.append(([datatype], {"type": "integer", "minimum": low, "maximum": high}))
    if feature.blank_ok:
        forms = [(d, {"anyOf": [v, {"type": "null"}]}) for d, v in forms]
    return forms


def _v2_feature_tensor(feature: Any, rows: int) -> dict[str, Any]:
    """One feature's input for a batch of ``rows``: shape [rows] or [rows, 1], data flat or
    nested, in any of the datatypes the feature's kind takes."""
    branches = []
    for datatypes, value in _v2_data_forms(feature):
        flat = {"type": "array", "items": value, "minItems": rows, "maxItems": rows}
        column = {"type": "array", "items": value, "minItems": 1, "maxItems": 1}
        nested = {"type": "array", "items": column, "minItems": rows, "maxItems": rows}
        datatype = {"const": datatypes[0]} if len(datatypes) == 1 else {"enum": datatypes}
        branches.append({"properties": {"datatype": datatype, "data": {"anyOf": [flat, nested]}}})
    return {
        "type": "object",
        "required": ["name", "shape", "datatype", "data"],
        "properties": {
            "name": {"const": feature.name},
            "shape": {"enum": [[rows], [rows, 1]]},
            "parameters": {
                "anyOf": [
                    _parameters({}, "binary_data_size", "shared_memory_region"),
                    {"type": "null"},
                ]
            },
        },
        "anyOf": branches,
    }


def _v2_feature_inputs(model: Any) -> dict[str, Any]:
    """One input per feature, for a model with text or true/false features or blanks."""
    features = model.codec.features
    batches = [
        {
            "type": "array",
            "prefixItems": [_v2_feature_tensor(f, rows) for f in features],
            "minItems": len(features),
            "maxItems": len(features),
        }
        for rows in range(1, V2_SCHEMA_ROWS + 1)
    ]
    return {
        "anyOf": batches,
        "description": "one input per feature, named as the feature, shape [N] or [N, 1], all "
        "with the same N. BYTES (text) or an integer datatype (number-like codes) for a "
        "category; BOOL, or 0/1 in FP32, FP64, FP16 or an integer datatype, for true/false; "
        "FP32, FP64, FP16 or an integer datatype for a number; null for a blank where the "
        "feature takes one (an empty BYTES element, or NaN in binary float data). Shown in "
        f"feature order for N = 1..{V2_SCHEMA_ROWS}; any order and any N up to MAX_BATCH_ROWS "
        "work the same way, as does the binary tensor data extension "
        "(Inference-Header-Content-Length).",
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
