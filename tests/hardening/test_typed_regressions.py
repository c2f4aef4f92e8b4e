"""The bugs the typed hardening runs (schemathesis and fuzzing against a model with text,
true/false and blank features) found, each pinned: fast ones on the parsers, slow ones through
a real server on the typed bundle."""

from __future__ import annotations

import json
import struct
from types import SimpleNamespace
from typing import Any

import httpx
import jsonschema_rs
import numpy as np
import pytest

from service import inputs, openapi
from service.errors import InvalidInput, ServiceError
from service.protocols import v2
from tests.hardening.conftest import AUTH
from tests.hardening.typed_model import MAX_ROWS, NAMES, check_matrix, schema, typed_model
from tests.support import ServerProcess

MODEL = typed_model()
IRIS = SimpleNamespace(
    feature_names=["a", "b", "c", "d"], n_features=4, numeric_only=True, codec=None, typed=None
)
ROW: list[Any] = [31.0, "plus", "west", True, 22.47]
DECLARED = {"age": "FP32", "plan": "BYTES", "region": "BYTES", "member": "BOOL"}
HUGE = 56852142753641519906816  # past 64 bits: orjson cannot write it


def v2_inputs(row: list[Any] = ROW, **changes: dict[str, Any]) -> list[dict[str, Any]]:
    tensors = [
        {"name": n, "datatype": DECLARED.get(n, "FP32"), "shape": [1], "data": [v]}
        for n, v in zip(NAMES, row, strict=True)
    ]
    for tensor in tensors:
        tensor.update(changes.get(tensor["name"], {}))
    return tensors


def infer(tensors: list[dict[str, Any]], model: Any = MODEL) -> np.ndarray:
    return v2.parse_infer(json.dumps({"inputs": tensors}).encode(), None, model, MAX_ROWS).x


# -- found by schemathesis: a shape past 64 bits was a 500 (orjson could not write it back) ------
@pytest.mark.parametrize(
    ("tensors", "model", "where"),
    [
        (v2_inputs(age={"shape": [1, HUGE]}), MODEL, "inputs[0] (age).shape"),
        (v2_inputs(plan={"shape": [HUGE]}), MODEL, "inputs[1] (plan).shape"),
        (
            [{"name": "features", "datatype": "FP32", "shape": [1, HUGE], "data": [1] * 4}],
            IRIS,
            "inputs[0].shape",
        ),
    ],
    ids=["feature [1, 2**75]", "feature [2**75]", "single tensor [1, 2**75]"],
)
def test_a_huge_shape_is_a_400_naming_the_input(tensors: Any, model: Any, where: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        infer(tensors, model)
    assert raised.value.status_code == 422  # 400 on the V2 route (see bad_request)
    assert raised.value.message.startswith(where)
    assert str(HUGE) not in raised.value.message


def test_a_shape_of_text_is_not_echoed() -> None:
    with pytest.raises(InvalidInput) as raised:
        infer(v2_inputs(age={"shape": ["<b>mark</b>"]}))
    assert "age" in raised.value.message and "mark" not in raised.value.message


# -- found by the schema review: FP JSON data took text ("NA" as a blank, "true" as true) --------
@pytest.mark.parametrize(
    ("feature", "value"),
    [("age", "NA"), ("age", ""), ("member", "true"), ("member", True), ("monthly_spend", "1")],
)
def test_float_datatypes_take_numbers_and_null_only(feature: str, value: Any) -> None:
    changes = {feature: {"datatype": "FP32", "data": [value]}}
    with pytest.raises(InvalidInput, match=f"{feature}.*must be a number or null") as raised:
        infer(v2_inputs(**changes))
    if isinstance(value, str) and value:
        assert repr(value) not in raised.value.message


def test_float_datatypes_still_take_a_booleans_zero_one_and_nan_blank() -> None:
    x = infer(v2_inputs(member={"datatype": "FP64", "data": [1.0]}))
    assert x[0, NAMES.index("member")] == 1.0
    x = infer(v2_inputs(member={"datatype": "FP16", "data": [None]}))  # nullable: a blank
    assert np.isnan(x[0, NAMES.index("member")])


# -- found by schemathesis: JSON Schema's integer 3.0 was refused by the INT datatypes -----------
def test_integer_datatypes_take_integral_floats() -> None:
    tensors = v2_inputs(
        region={"datatype": "INT64", "data": [415.0]},
        member={"datatype": "UINT8", "data": [1.0]},
        monthly_spend={"datatype": "INT32", "data": [-3.0]},
    )
    x = infer(tensors)
    assert x[0, NAMES.index("member")] == 1.0 and x[0, NAMES.index("monthly_spend")] == -3.0
    with pytest.raises(InvalidInput, match="monthly_spend"):
        infer(v2_inputs(monthly_spend={"datatype": "INT32", "data": [2.5]}))


# -- found by hypothesis: a category holding \u2028 or \x85 split the CSV row --------------------
@pytest.mark.parametrize("separator", ["\u2028", "\x85", "\x0c", "\x1e"])
def test_csv_category_with_a_unicode_line_separator_is_one_cell(separator: str) -> None:
    body = f'age,plan,region,member,monthly_spend\n31,"pl{separator}us",west,true,22\n'.encode()
    parsed = inputs.parse_csv_body(body, schema(MODEL))
    check_matrix(parsed.x, MODEL, parsed.notes)
    assert parsed.x.shape == (1, 5)
    assert parsed.notes and "plan" in parsed.notes[0][0][0]  # an unseen category, warned


# -- the schema says what the service accepts: each value, valid <=> answered ------------------
VALUES: list[Any] = [
    None,
    "",
    "  ",
    "NA",
    "?",
    "x",
    "basic",
    "true",
    " FALSE ",
    "0",
    "1",
    0,
    1,
    1.0,
    2,
    -0.5,
    True,
    False,
    1e15,
    1e15 + 1,
    [],
    [1],
    {},
]


def _answers(parse: Any) -> bool:
    try:
        parse()
    except ServiceError as exc:
        assert 400 <= exc.status_code < 500
        return False
    return True


@pytest.mark.parametrize("missing", ["refuse", "impute"])
def test_feature_value_schemas_match_what_json_rows_accept(missing: str) -> None:
    model = typed_model(missing)
    for j, name in enumerate(NAMES):
        validator = jsonschema_rs.validator_for(openapi.feature_value(model, j))
        for value in VALUES:
            row = list(ROW)
            row[j] = value
            body = json.dumps({"instances": [row]}).encode()
            accepted = _answers(lambda body=body: inputs.parse_json_body(body, schema(model)))
            assert validator.is_valid(value) == accepted, (name, value, accepted)


V2_VALUES: list[Any] = [None, "", "NA", "x", "west", 0, 1, 1.0, 2, 415, -1, 2.5, True, 70000, 1e15]


@pytest.mark.parametrize("missing", ["refuse", "impute"])
def test_v2_schema_matches_what_each_datatype_accepts(missing: str) -> None:
    """Every datatype KIND_DATATYPES gives a feature's kind, and others, with every value."""
    model = typed_model(missing)
    document = openapi.v2_infer_request(model)
    validator = jsonschema_rs.validator_for(document)
    for name in NAMES:
        for datatype in [*v2.DATATYPES, "BYTES"]:
            for value in V2_VALUES:
                tensors = v2_inputs(**{name: {"datatype": datatype, "data": [value]}})
                accepted = _answers(lambda t=tensors: infer(t, model))
                valid = validator.is_valid({"inputs": tensors})
                assert valid == accepted, (name, datatype, value, accepted)


# -- through a real server on the typed bundle -------------------------------------------------
@pytest.mark.slow
def test_typed_server_answers_the_found_cases_with_4xx_naming_the_field(
    typed_server: ServerProcess,
) -> None:
    infer_url = "/v2/models/churn/infer"
    with httpx.Client(base_url=typed_server.url, headers=AUTH, timeout=30) as http:
        document = http.get("/openapi.json").json()["components"]["schemas"]
        request = jsonschema_rs.validator_for(document["V2InferRequest"])

        # Was a 500: a shape past 64 bits.
        body = {"inputs": v2_inputs(age={"shape": [1, HUGE]})}
        answer = http.post(infer_url, content=json.dumps(body))
        assert answer.status_code == 400, answer.text
        assert "inputs[0] (age).shape" in answer.json()["error"]
        assert str(HUGE) not in answer.text

        # Was refused although the schema allowed it: 415.0 for an INT64 category.
        body = {"inputs": v2_inputs(region={"datatype": "INT64", "data": [415.0]})}
        assert request.is_valid(body)
        answer = http.post(infer_url, json=body)
        assert answer.status_code == 200, answer.text

        # A boolean as FP32 0/1 and NaN (blank) in binary data, as the schema now documents.
        member = struct.pack("<2f", 1.0, float("nan"))
        tensors = [
            {"name": "age", "datatype": "FP32", "shape": [2], "data": [31, None]},
            {"name": "plan", "datatype": "BYTES", "shape": [2], "data": ["plus", ""]},
            {"name": "region", "datatype": "UINT8", "shape": [2], "data": [1, 2]},
            {
                "name": "member",
                "datatype": "FP32",
                "shape": [2],
                "parameters": {"binary_data_size": len(member)},
            },
            {"name": "monthly_spend", "datatype": "INT64", "shape": [2, 1], "data": [[22], [9]]},
        ]
        header = json.dumps({"inputs": tensors}).encode()
        answer = http.post(
            infer_url,
            content=header + member,
            headers={v2.HEADER_LENGTH: str(len(header))},
        )
        assert answer.status_code == 200, answer.text
        json_form = {"inputs": [*tensors[:3], {**tensors[3], "data": [1.0, None]}, tensors[4]]}
        del json_form["inputs"][3]["parameters"]
        assert request.is_valid(json_form)
        assert http.post(infer_url, json=json_form).status_code == 200

        # Text in FP32 data: refused, naming the input, not echoing the text.
        body = {"inputs": v2_inputs(age={"data": ["NA-marker"]})}
        assert not request.is_valid(body)
        answer = http.post(infer_url, json=body)
        assert answer.status_code == 400
        assert "age" in answer.json()["error"] and "NA-marker" not in answer.text

        # A blank text where the model saw no blanks: invalid by the schema and a 422.
        predict = jsonschema_rs.validator_for(document["PredictRequest"])
        body = {"instances": [{**dict(zip(NAMES, ROW, strict=True)), "region": " "}]}
        assert not predict.is_valid(body)
        answer = http.post("/predict", json=body)
        assert answer.status_code == 422 and "region" in answer.json()["error"]

        # An empty CSV body: the typed CSV schema now has a pattern it fails.
        csv_schema = jsonschema_rs.validator_for(document["PredictCSV"])
        assert not csv_schema.is_valid("")
        answer = http.post("/predict", content=b"", headers={"content-type": "text/csv"})
        assert answer.status_code == 400
        good = "age,plan,region,member,monthly_spend\n31,plus,west,true,22.5\n,,east,,1\n"
        assert csv_schema.is_valid(good)
        answer = http.post("/predict", content=good, headers={"content-type": "text/csv"})
        assert answer.status_code == 200, answer.text

        # A category holding U+2028 is one cell, not two rows.
        text = 'age,plan,region,member,monthly_spend\n31,"a\u2028b",west,true,22\n'
        answer = http.post("/predict", content=text.encode(), headers={"content-type": "text/csv"})
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["predictions"]) == 1
    assert typed_server.process is not None and typed_server.process.poll() is None
