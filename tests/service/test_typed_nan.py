"""``NaN`` in a JSON body, as Python's json module and httpx write pandas' blanks, is a blank for
a model with typed features, on every JSON route; ``Infinity`` stays refused, and so does ``NaN``
for an all-numeric model that takes no blanks (Iris)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.service.reference import copy_bundle
from tests.service.typed_support import TYPED_ROWS, columns, records, serve, v2_json_body

pytestmark = pytest.mark.slow  # serves a freshly trained bundle

JSON = {"content-type": "application/json"}


def nan_body(document: Any) -> bytes:
    """``document`` as Python's json module writes it, with every None written as NaN."""
    text = json.dumps(document, allow_nan=True).replace("null", "NaN")
    assert "NaN" in text
    return text.encode()


@pytest.fixture
def typed(tmp_path: Path, typed_bundle: Path) -> Iterator[TestClient]:
    copy_bundle(typed_bundle, tmp_path / "artifacts", "churn")
    with serve(tmp_path / "artifacts", "churn") as client:
        yield client


# Rows with blanks only where training saw them (age, plan, member).
ROWS = [row for row in TYPED_ROWS if row[2] is not None and row[4] is not None]


@pytest.mark.parametrize("shape", ["rows", "records"])
def test_predict_reads_nan_as_a_blank(typed: TestClient, shape: str) -> None:
    instances = ROWS if shape == "rows" else records(ROWS)
    with_null = typed.post("/predict", json={"instances": instances})
    with_nan = typed.post("/predict", content=nan_body({"instances": instances}), headers=JSON)
    assert with_null.status_code == with_nan.status_code == 200, with_nan.text
    assert with_nan.json() == with_null.json()
    assert any("is blank" in w for p in with_nan.json()["predictions"] for w in p["warnings"])


def test_tf_serving_and_v2_read_nan_as_a_blank(typed: TestClient) -> None:
    for path, document in (
        ("/v1/models/churn:predict", {"instances": records(ROWS)}),
        ("/v1/models/churn:predict", {"inputs": columns(ROWS)}),
        ("/v2/models/churn/infer", v2_json_body(ROWS)),
    ):
        with_null = typed.post(path, json=document)
        with_nan = typed.post(path, content=nan_body(document), headers=JSON)
        assert with_null.status_code == with_nan.status_code == 200, (path, with_nan.text)
        if "outputs" in with_nan.json() and "id" in with_nan.json():
            assert with_nan.json()["outputs"] == with_null.json()["outputs"]
        else:
            assert with_nan.json() == with_null.json()


def test_nan_where_training_saw_no_blank_is_refused_naming_the_feature(typed: TestClient) -> None:
    body = json.dumps({"instances": [[31.0, "plus", "west", True, float("nan")]]})
    response = typed.post("/predict", content=body.encode(), headers=JSON)
    assert response.status_code == 422
    assert "monthly_spend" in response.json()["error"]
    assert "is blank" in response.json()["error"]


@pytest.mark.parametrize("literal", ["Infinity", "-Infinity"])
def test_infinity_is_still_refused(typed: TestClient, literal: str) -> None:
    body = f'{{"instances": [[{literal}, "plus", "west", true, 22.5]]}}'.encode()
    response = typed.post("/predict", content=body, headers=JSON)
    assert response.status_code == 422
    assert literal in response.json()["error"]


def test_an_all_numeric_model_without_blanks_still_refuses_nan(client: TestClient) -> None:
    response = client.post(
        "/predict", content=b'{"instances": [[NaN, 3.5, 1.4, 0.2]]}', headers=JSON
    )
    assert response.status_code == 422
    assert (
        response.json()["error"] == "NaN is not a number this service accepts; send finite numbers"
    )
