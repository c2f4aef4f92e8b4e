"""Rows of raw values for the typed (churn-like) bundle, and the request bodies each protocol
takes for them. The answers are compared with ``model.keras`` called on the same raw values
(:func:`tests.service.reference.reference`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.http as triton
from fastapi.testclient import TestClient

import bundle
from service.app import create_app
from service.settings import Settings

# The features of the session ``typed_bundle`` (tests/conftest.py: make_typed_csv), in order;
# the ID-like columns ``id`` and ``name`` are left out by training.
TYPED_FEATURES = ["age", "plan", "region", "member", "monthly_spend"]
CLASSES = ["no", "yes"]
HEADER_LENGTH = "Inference-Header-Content-Length"
TOLERANCE = 1e-5

# Text, blanks in nullable features (age, plan, member), unseen categories, an explicit empty
# text; region and monthly_spend had no blanks in training. More than 8 rows: the answers take
# the many-rows path; the first three the few-rows path.
TYPED_ROWS: list[list[Any]] = [
    [31.0, "plus", "west", True, 22.47],
    [None, "basic", "north", False, 48.75],
    [52.0, None, "south", True, 80.0],
    [45.0, "pro", "east", None, 120.5],
    [38.0, "gold", "south", False, 60.0],
    [60.0, "basic", "mars", True, 15.0],
    [None, None, "west", None, 33.3],
    [29.0, "", "north", True, 70.25],
    [41.0, "basic", "east", False, 95.0],
    [55.0, "plus", "south", True, 10.5],
]


def records(rows: list[list[Any]]) -> list[dict[str, Any]]:
    """Rows as records whose keys come in reverse feature order (order must not matter)."""
    return [dict(reversed(list(zip(TYPED_FEATURES, row, strict=True)))) for row in rows]


def columns(rows: list[list[Any]]) -> dict[str, list[Any]]:
    """Rows as one list of values per feature."""
    return {name: [row[j] for row in rows] for j, name in enumerate(TYPED_FEATURES)}


def cell(value: Any) -> str:
    """A raw value as a CSV cell: an empty cell for a blank, true/false for a boolean."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def csv_body(rows: list[list[Any]], order: list[str] | None = None) -> bytes:
    """A CSV body with a header row in ``order`` (default: reversed feature order)."""
    order = order or TYPED_FEATURES[::-1]
    index = [TYPED_FEATURES.index(name) for name in order]
    lines = [",".join(order)] + [",".join(cell(row[i]) for i in index) for row in rows]
    return ("\n".join(lines) + "\n").encode()


def flagged(metadata: bundle.Metadata, row: list[Any]) -> list[str]:
    """The features a row's answer warns about, in the answer's order: blanks and unseen
    categories first (feature order), then numbers outside the training range."""
    notes, outside = [], []
    for spec, value in zip(metadata.features, row, strict=True):
        if spec.kind == "categorical":
            key = None if value is None or value == "" else str(value)
            if key is None or key not in (spec.vocabulary or []):
                notes.append(spec.name)
        elif value is None:
            notes.append(spec.name)
        elif not spec.min <= np.float32(value) <= spec.max:
            outside.append(spec.name)
    return notes + outside


def warned_features(warnings: list[str]) -> list[str]:
    """The feature each JSON warning starts with ("age is blank", "plan='gold' is ...")."""
    return [message.split(" ", 1)[0].split("=", 1)[0] for message in warnings]


# -- Open Inference Protocol ------------------------------------------------------------------
def v2_json_body(rows: list[list[Any]]) -> dict[str, Any]:
    """One input per feature with JSON data, in reverse feature order, shapes [N] and [N, 1]."""
    by_feature = columns(rows)
    n = len(rows)
    inputs = [
        {
            "name": "monthly_spend",
            "datatype": "FP64",
            "shape": [n],
            "data": by_feature["monthly_spend"],
        },
        {"name": "member", "datatype": "BOOL", "shape": [n], "data": by_feature["member"]},
        {
            "name": "region",
            "datatype": "BYTES",
            "shape": [n, 1],
            "data": [[v] for v in by_feature["region"]],
        },
        {"name": "plan", "datatype": "BYTES", "shape": [n], "data": by_feature["plan"]},
        {"name": "age", "datatype": "FP32", "shape": [n, 1], "data": by_feature["age"]},
    ]
    return {"id": "typed-1", "inputs": inputs}


def _floats(values: list[Any], dtype: Any) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in values], dtype=dtype)


def triton_request(rows: list[list[Any]], member_datatype: str = "FP32") -> tuple[bytes, dict]:
    """A binary-data inference request as ``tritonclient.http`` writes it: FP32 with NaN for
    a blank number, BYTES ("" for a blank text), FP64, and the boolean as BOOL or as 0/1
    floats (NaN for a blank, which BOOL data cannot carry)."""
    by_feature = columns(rows)
    n = len(rows)
    age = triton.InferInput("age", [n], "FP32")
    age.set_data_from_numpy(_floats(by_feature["age"], np.float32))
    plan = triton.InferInput("plan", [n], "BYTES")
    plan.set_data_from_numpy(np.array([cell(v) for v in by_feature["plan"]], dtype=object))
    region = triton.InferInput("region", [n, 1], "BYTES")
    region.set_data_from_numpy(np.array([[v] for v in by_feature["region"]], dtype=object))
    member = triton.InferInput("member", [n], member_datatype)
    if member_datatype == "BOOL":
        member.set_data_from_numpy(np.array(by_feature["member"], dtype=bool))
    else:
        member.set_data_from_numpy(_floats(by_feature["member"], np.float32))
    spend = triton.InferInput("monthly_spend", [n], "FP64")
    spend.set_data_from_numpy(_floats(by_feature["monthly_spend"], np.float64))
    outputs = [
        triton.InferRequestedOutput("probabilities", binary_data=True),
        triton.InferRequestedOutput("label", binary_data=True),
    ]
    body, length = triton.InferenceServerClient.generate_request_body(
        [spend, member, region, plan, age], outputs=outputs, request_id="typed-binary"
    )
    headers = {"Content-Type": "application/octet-stream"}
    if length is not None:
        headers[HEADER_LENGTH] = str(length)
    return body, headers


def triton_result(content: bytes, headers: Any) -> triton.InferResult:
    """A (binary) inference response read by ``tritonclient.http``."""
    length = headers.get(HEADER_LENGTH)
    return triton.InferResult.from_response_body(
        content, header_length=None if length is None else int(length)
    )


def v2_outputs(answer: dict[str, Any]) -> tuple[list[str], np.ndarray]:
    """Labels and probabilities ``[rows, classes]`` from a JSON inference response."""
    tensors = {t["name"]: t for t in answer["outputs"]}
    shape = tensors["probabilities"]["shape"]
    probabilities = np.array(tensors["probabilities"]["data"]).reshape(shape)
    return tensors["label"]["data"], probabilities


def serve(artifacts: Path, name: str, runtime: str | None = None, **options: Any) -> TestClient:
    """A test client of the service on ``artifacts``, serving model ``name`` (enter it to start)."""
    settings = Settings(artifacts_dir=artifacts, model_name=name, model_runtime=runtime, **options)
    return TestClient(create_app(settings))
