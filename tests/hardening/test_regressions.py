"""The bugs the hardening runs found, each pinned by a fast test (no server, no training)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.errors import InvalidInput, MalformedBody, ServiceError
from service.inputs import MAX_ABS_VALUE, Schema, parse_json_body
from service.model import _require_finite
from service.settings import Settings

SCHEMA = Schema(("a", "b", "c", "d"), max_rows=100, n_classes=3)
ROW = b"[5.1, 3.5, 1.4, 0.2]"


@pytest.mark.parametrize(
    ("body", "error", "status"),
    [
        # found by the hostile list: a 5000-digit integer raised ValueError (500)
        (b'{"instances": [[' + b"9" * 5000 + b", 1, 2, 3]]}", InvalidInput, 422),
        (b'{"instances": [' + ROW + b'], "top_k": ' + b"9" * 5000 + b"}", InvalidInput, 422),
        # found by the hostile list: a lone surrogate key raised TypeError in orjson (500), and
        # an echoed V2 "id" holding one could not be written back (500)
        (b'{"instances": [' + ROW + b'], "\\ud800": 1}', MalformedBody, 400),
        (b'{"instances": [' + ROW + b'], "\xed\xa0\x80": 1}', MalformedBody, 400),
        ('{"instances": [[5.1, 3.5, 1.4, 0.2]]}'.encode("utf-16"), MalformedBody, 400),
        # found by schemathesis: 3.4e38 passed and the network answered NaN, sent as null
        (b'{"instances": [[3.4e38, 1, 2, 3]]}', InvalidInput, 422),
        (b'{"instances": [[1.5e15, 1, 2, 3]]}', InvalidInput, 422),
    ],
    ids=[
        "huge integer",
        "huge top_k",
        "surrogate escape",
        "UTF-8 surrogate",
        "UTF-16",
        "3.4e38",
        "1.5e15",
    ],
)
def test_refused_with_a_4xx(body: bytes, error: type[ServiceError], status: int) -> None:
    with pytest.raises(error) as raised:
        parse_json_body(body, SCHEMA)
    assert raised.value.status_code == status
    assert len(raised.value.message) < 200  # never echoes the 5000 digits


def test_valid_unicode_and_edge_values_are_still_accepted() -> None:
    body = b'{"instances": [[1e15, -1e15, 0, 1]], "top_k": 3.0}'  # 3.0 is an integer in JSON
    parsed = parse_json_body(body, SCHEMA)
    assert parsed.top_k == 3 and np.abs(parsed.x).max() == MAX_ABS_VALUE
    emoji = b'{"instances": [{"a": 1, "b": 2, "c": 3, "d": 4, "\\ud83d\\ude00": 5}]}'
    with pytest.raises(InvalidInput, match="unknown feature"):  # a valid pair, a plain 422
        parse_json_body(emoji, SCHEMA)


def test_non_finite_model_output_is_refused_not_sent_as_null() -> None:
    good = np.array([[0.2, 0.8], [0.5, 0.5]], dtype=np.float32)
    assert _require_finite(good) is good
    with pytest.raises(InvalidInput, match="row 1"):
        _require_finite(np.array([[0.2, 0.8], [np.nan, np.nan]], dtype=np.float32))


@pytest.fixture
def not_ready(tmp_path: Path) -> Iterator[TestClient]:
    """An app with no bundle: the routes and the OpenAPI document, without a model."""
    settings = Settings(artifacts_dir=tmp_path, model_name="iris", api_key="k", admin_token="a")
    with TestClient(create_app(settings)) as client:
        yield client


def test_openapi_names_the_bearer_token_where_it_is_needed(
    not_ready: TestClient, tmp_path: Path
) -> None:
    document = not_ready.get("/openapi.json").json()
    secured = {
        (method, path)
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if operation.get("security") == [{"bearer": []}]
    }
    assert ("post", "/predict") in secured
    assert ("post", "/v2/models/{name}/infer") in secured
    assert ("post", "/v1/models/{name}:predict") in secured
    assert ("post", "/admin/reload") in secured
    assert ("get", "/healthz") not in secured
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    with TestClient(create_app(Settings(artifacts_dir=tmp_path))) as open_client:
        open_document = open_client.get("/openapi.json").json()
    assert "securitySchemes" not in open_document["components"]


def test_openapi_documents_only_what_the_routes_accept(not_ready: TestClient) -> None:
    document = not_ready.get("/openapi.json").json()
    # :regress always answers 400 for a classifier: not an operation to document
    assert not [path for path in document["paths"] if path.endswith(":regress")]
    infer = document["paths"]["/v2/models/{name}/infer"]["post"]
    assert "application/octet-stream" in infer["responses"]["200"]["content"]
    body = infer["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/V2InferRequest"}


def test_a_verb_path_answers_405_naming_its_own_method(not_ready: TestClient) -> None:
    """GET /v1/models/{name} used to match /v1/models/m:predict and claim Allow: GET."""
    answer = not_ready.get("/v1/models/iris:predict")
    assert answer.status_code == 405
    assert answer.headers["allow"] == "POST"
    assert not_ready.get("/v1/models/iris").status_code == 503  # still routed: not ready
