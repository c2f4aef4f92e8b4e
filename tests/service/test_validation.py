"""Bad input to ``POST /predict``: each answered with its 4xx and a message naming the fault.

Never a 500, and never the input echoed back (FastAPI's default handler would echo NaN and crash).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests.service.reference import copy_bundle

pytestmark = pytest.mark.slow  # every test here serves a freshly trained bundle

MAX_ROWS = 10
MAX_BODY = 4096
JSON = "application/json"
CSV = "text/csv"
HEADER = "sepal_length,sepal_width,petal_length,petal_width"
ROW = [5.1, 3.5, 1.4, 0.2]
RECORD = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


@pytest.fixture(scope="module", params=["litert", "keras"])
def api(
    request: pytest.FixtureRequest, iris_bundle: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    """One app per runtime for the whole module, with small limits."""
    artifacts = tmp_path_factory.mktemp("validation")
    copy_bundle(iris_bundle, artifacts, "iris")
    settings = Settings(
        artifacts_dir=artifacts,
        model_runtime=request.param,
        max_batch_rows=MAX_ROWS,
        max_body_bytes=MAX_BODY,
    )
    with TestClient(create_app(settings)) as client:
        yield client


def post(client: TestClient, body: bytes | str, content_type: str | None = JSON, **headers: str):
    if content_type is not None:
        headers["content-type"] = content_type
    return client.post("/predict", content=body, headers=headers)


def assert_error(response, status: int, *fragments: str) -> str:
    """The status, a JSON ``{"error": message}`` body, and every fragment in the message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"]
    message = body["error"]
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def rows_body(*rows: object, **extra: object) -> str:
    return json.dumps({"instances": list(rows), **extra})


def csv_text(*lines: str, header: str = HEADER) -> str:
    return "\n".join([header, *lines]) + "\n"


# -- wrong number of features ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        (rows_body([5.1, 3.5, 1.4]), ("instances[0]", "has 3 values", "takes 4", "petal_width")),
        (rows_body(ROW, [*ROW, 9.9]), ("instances[1]", "has 5 values", "takes 4")),
        (rows_body([]), ("instances[0]", "has 0 values")),
    ],
    ids=["too-few", "too-many-in-second-row", "empty-row"],
)
def test_wrong_number_of_features(api: TestClient, body: str, fragments: tuple[str, ...]) -> None:
    assert_error(post(api, body), 422, *fragments)


def test_csv_row_with_wrong_number_of_fields(api: TestClient) -> None:
    body = csv_text("5.1,3.5,1.4,0.2", "5.1,3.5,1.4")
    assert_error(post(api, body, CSV), 400, "CSV row 2", "has 3 fields", "header has 4")


# -- unknown, missing, duplicate feature names --------------------------------------------------
def test_unknown_feature_in_a_record(api: TestClient) -> None:
    body = rows_body(RECORD, {**RECORD, "petal_color": 1.0})
    assert_error(post(api, body), 422, "instances[1]", "unknown feature 'petal_color'")


def test_misspelt_feature_in_a_record(api: TestClient) -> None:
    record = {**RECORD, "petal_widht": RECORD["petal_width"]}
    del record["petal_width"]
    assert_error(post(api, rows_body(record)), 422, "instances[0]", "'petal_widht'")


def test_missing_feature_in_a_record(api: TestClient) -> None:
    record = {k: v for k, v in RECORD.items() if k != "sepal_width"}
    assert_error(post(api, rows_body(record)), 422, "instances[0]", "missing feature 'sepal_width'")


def test_unknown_column_in_csv(api: TestClient) -> None:
    # The target (species) is a known column the model ignores; another one is refused.
    body = csv_text("5.1,3.5,1.4,0.2,red", header=HEADER + ",petal_colour")
    assert_error(post(api, body, CSV), 422, "CSV header", "unknown feature 'petal_colour'")


def test_missing_column_in_csv(api: TestClient) -> None:
    body = csv_text("5.1,1.4,0.2", header="sepal_length,petal_length,petal_width")
    assert_error(post(api, body, CSV), 422, "CSV header", "missing feature 'sepal_width'")


def test_duplicate_key_in_a_json_record(api: TestClient) -> None:
    # Python's json and orjson keep the last value silently; the service must refuse instead.
    body = (
        '{"instances": [{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4,'
        ' "petal_width": 0.2, "petal_width": 9.9}]}'
    )
    assert_error(post(api, body), 422, "duplicate key 'petal_width'")


def test_duplicate_key_replacing_a_missing_one(api: TestClient) -> None:
    """Four keys, one of them twice: the count is right, the names are not."""
    body = (
        '{"instances": [{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4,'
        ' "sepal_length": 0.2}]}'
    )
    assert_error(post(api, body), 422, "duplicate key 'sepal_length'")


def test_duplicate_key_in_a_later_record(api: TestClient) -> None:
    first = json.dumps(RECORD)
    second = first[:-1] + ', "sepal_width": 1.0}'
    body = '{"instances": [' + first + ", " + second + "]}"
    assert_error(post(api, body), 422, "duplicate key 'sepal_width'")


def test_duplicate_top_level_field(api: TestClient) -> None:
    body = '{"instances": [[5.1, 3.5, 1.4, 0.2]], "instances": [[1, 2, 3, 4]]}'
    assert_error(post(api, body), 422, "duplicate key 'instances'")


def test_duplicate_column_in_csv_header(api: TestClient) -> None:
    body = csv_text("5.1,3.5,1.4,0.2,0.3", header=HEADER + ",petal_width")
    assert_error(post(api, body, CSV), 422, "CSV header", "'petal_width' twice")


# -- strings, booleans, nulls where numbers belong (no coercion) --------------------------------
@pytest.mark.parametrize(
    ("value", "kind"),
    [('"3.5"', "a string"), ("true", "a boolean"), ("false", "a boolean"), ("null", "null")],
)
def test_non_numbers_in_rows(api: TestClient, value: str, kind: str) -> None:
    body = '{"instances": [[5.1, 3.5, 1.4, 0.2], [5.1, ' + value + ", 1.4, 0.2]]}"
    assert_error(post(api, body), 422, "instances[1][1] (sepal_width)", f"not {kind}")


@pytest.mark.parametrize(
    ("value", "kind"),
    [('"1.4"', "a string"), ("true", "a boolean"), ("null", "null"), ("[1.4]", "an array")],
)
def test_non_numbers_in_records(api: TestClient, value: str, kind: str) -> None:
    body = (
        '{"instances": [{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": '
        + value
        + ', "petal_width": 0.2}]}'
    )
    assert_error(post(api, body), 422, "instances[0].petal_length", f"not {kind}")


@pytest.mark.parametrize(
    ("cell", "fault"),
    [("abc", "is not a number"), ("true", "is not a number"), ("", "is empty")],
)
def test_non_numbers_in_csv(api: TestClient, cell: str, fault: str) -> None:
    body = csv_text("5.1,3.5,1.4,0.2", f"5.1,3.5,{cell},0.2")
    assert_error(post(api, body, CSV), 422, "CSV row 2, column 'petal_length'", fault)


def test_strings_are_not_coerced_even_when_numeric(api: TestClient) -> None:
    body = json.dumps({"instances": [["5.1", "3.5", "1.4", "0.2"]]})
    assert_error(post(api, body), 422, "instances[0][0] (sepal_length)", "not a string")


def test_rows_and_records_cannot_be_mixed(api: TestClient) -> None:
    assert_error(post(api, rows_body(ROW, RECORD)), 422, "instances[1]")
    assert_error(post(api, rows_body(RECORD, ROW)), 422, "instances[1]", "no mixing")


# -- NaN, Infinity, -Infinity and overflow -----------------------------------------------------
@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_json_literals_in_rows(api: TestClient, literal: str) -> None:
    body = '{"instances": [[5.1, ' + literal + ", 1.4, 0.2]]}"
    assert_error(post(api, body), 422, literal, "finite")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_json_literals_in_records(api: TestClient, literal: str) -> None:
    body = json.dumps(RECORD).replace("3.5", literal)
    assert_error(post(api, '{"instances": [' + body + "]}"), 422, literal, "finite")


@pytest.mark.parametrize("literal", ["1e309", "-1e309", "1" + "0" * 400])
def test_numbers_beyond_float64_in_rows(api: TestClient, literal: str) -> None:
    body = '{"instances": [[5.1, ' + literal + ", 1.4, 0.2]]}"
    assert_error(post(api, body), 422, "instances[0][1] (sepal_width)", "finite")


def test_number_beyond_float64_in_a_record(api: TestClient) -> None:
    body = json.dumps(RECORD).replace("0.2", "1e309")
    assert_error(post(api, '{"instances": [' + body + "]}"), 422, "instances[0].petal_width")


@pytest.mark.parametrize("cell", ["nan", "NaN", "inf", "-inf", "Infinity", "1e309"])
def test_non_finite_values_in_csv(api: TestClient, cell: str) -> None:
    body = csv_text(f"5.1,{cell},1.4,0.2")
    assert_error(post(api, body, CSV), 422, "CSV row 1, column 'sepal_width'", "finite")


def test_finite_numbers_too_large_for_the_model(api: TestClient) -> None:
    """Finite in float64 but far beyond anything a float32 network can take."""
    response = post(api, '{"instances": [[5.1, 3.5, 1e300, 0.2]]}')
    assert_error(response, 422, "instances[0][2] (petal_length)")


# -- no instances ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        ('{"instances": []}', ("instances is empty",)),
        ("{}", ("missing field 'instances'",)),
        ('{"top_k": 1}', ("missing field 'instances'",)),
        ('{"instances": null}', ("instances must be an array",)),
        ('{"instances": {"sepal_length": 5.1}}', ("instances must be an array",)),
        ('{"inputs": [[5.1, 3.5, 1.4, 0.2]]}', ("unknown field 'inputs'",)),
        ("[[5.1, 3.5, 1.4, 0.2]]", ("JSON object", "instances")),
        ('"instances"', ("JSON object",)),
    ],
    ids=["empty", "no-field", "only-top-k", "null", "object", "other-field", "array", "string"],
)
def test_no_instances(api: TestClient, body: str, fragments: tuple[str, ...]) -> None:
    assert_error(post(api, body), 422, *fragments)


def test_csv_header_without_rows(api: TestClient) -> None:
    assert_error(post(api, csv_text(), CSV), 422, "no data rows")


# -- limits ------------------------------------------------------------------------------------
def test_more_rows_than_max_batch_rows(api: TestClient) -> None:
    assert post(api, rows_body(*[ROW] * MAX_ROWS)).status_code == 200  # at the limit: served
    too_many = rows_body(*[ROW] * (MAX_ROWS + 1))
    assert_error(post(api, too_many), 413, f"{MAX_ROWS + 1} rows", f"limit is {MAX_ROWS}")


def test_more_records_than_max_batch_rows(api: TestClient) -> None:
    too_many = rows_body(*[RECORD] * (MAX_ROWS + 1))
    assert_error(post(api, too_many), 413, f"{MAX_ROWS + 1} rows", f"limit is {MAX_ROWS}")


def test_more_csv_rows_than_max_batch_rows(api: TestClient) -> None:
    assert post(api, csv_text(*["5.1,3.5,1.4,0.2"] * MAX_ROWS), CSV).status_code == 200
    body = csv_text(*["5.1,3.5,1.4,0.2"] * (MAX_ROWS + 1))
    assert_error(post(api, body, CSV), 413, f"{MAX_ROWS + 1} rows", f"limit is {MAX_ROWS}")


def test_body_larger_than_max_body_bytes(api: TestClient) -> None:
    body = '{"instances": [[5.1, 3.5, 1.4, 0.2]]}' + " " * MAX_BODY
    message = assert_error(post(api, body), 413, f"MAX_BODY_BYTES={MAX_BODY}")
    assert str(len(body)) in message  # the declared Content-Length


def test_chunked_body_larger_than_max_body_bytes(api: TestClient) -> None:
    """No Content-Length: the limit is enforced while the body streams in."""

    def chunks() -> Iterator[bytes]:
        yield b'{"instances": ['
        for _ in range(200):
            yield b"[5.1, 3.5, 1.4, 0.2], "
        yield b"[5.1, 3.5, 1.4, 0.2]]}"

    response = api.post("/predict", content=chunks(), headers={"content-type": JSON})
    assert_error(response, 413, f"MAX_BODY_BYTES={MAX_BODY}")


def test_chunked_body_within_the_limit_is_served(api: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"instances": ['
        yield b"[5.1, 3.5, 1.4, 0.2]"
        yield b"]}"

    response = api.post("/predict", content=chunks(), headers={"content-type": JSON})
    assert response.status_code == 200
    assert response.json()["predictions"][0]["label"] == "setosa"


# -- content types -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "content_type",
    [
        "application/xml",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonx",
    ],
)
def test_unsupported_content_type(api: TestClient, content_type: str) -> None:
    response = post(api, rows_body(ROW), content_type)
    shown = content_type.split(";")[0]
    assert_error(response, 415, "application/json or text/csv", f"got {shown}")


def test_missing_content_type(api: TestClient) -> None:
    response = post(api, rows_body(ROW), None)
    assert_error(response, 415, "Content-Type must be", "got missing")


# -- malformed JSON and CSV --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        ('{"instances": [[5.1, 3.5, 1.4, 0.2]]', ("malformed JSON", "line 1")),
        ('{"instances": [[5.1, 3.5, 1.4, 0.2]]} trailing', ("malformed JSON", "line 1")),
        ("{'instances': [[5.1, 3.5, 1.4, 0.2]]}", ("malformed JSON",)),
        ('{"instances": [[5.1, 3.5,\n 1.4, 0.2,]]}', ("malformed JSON", "line 2")),
        ("", ("empty body",)),
        ("   \n", ("empty body",)),
        ("[" * 2000 + "]" * 2000, ("JSON", "deep")),
    ],
    ids=["truncated", "trailing", "single-quotes", "trailing-comma", "empty", "blank", "deep"],
)
def test_malformed_json(api: TestClient, body: str, fragments: tuple[str, ...]) -> None:
    assert_error(post(api, body), 400, *fragments)


def test_json_that_is_not_utf8(api: TestClient) -> None:
    assert_error(post(api, b'{"instances": [[5.1, 3.5, 1.4, \xff]]}'), 400, "UTF-8")


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        (csv_text('5.1,"3.5,1.4,0.2'), ("malformed CSV",)),
        (csv_text('5.1,3"5",1.4,0.2,'), ("CSV row 1", "5 fields")),
        ("", ("empty CSV body",)),
        ("\n\n", ("empty CSV body",)),
    ],
    ids=["open-quote", "extra-field", "empty", "blank-lines"],
)
def test_malformed_csv(api: TestClient, body: str, fragments: tuple[str, ...]) -> None:
    assert_error(post(api, body, CSV), 400, *fragments)


def test_csv_that_is_not_utf8(api: TestClient) -> None:
    body = csv_text("5.1,3.5,1.4,0.2").encode("utf-16")
    assert_error(post(api, body, CSV), 400, "UTF-8")


# -- top_k -------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [0, 4, -1, 10**12])
def test_top_k_out_of_range(api: TestClient, k: int) -> None:
    assert_error(post(api, rows_body(ROW, top_k=k)), 422, "top_k", "between 1 and 3")


@pytest.mark.parametrize("k", ['"2"', "true", "1.5", "[2]"])
def test_top_k_not_an_integer(api: TestClient, k: str) -> None:
    body = '{"instances": [[5.1, 3.5, 1.4, 0.2]], "top_k": ' + k + "}"
    assert_error(post(api, body), 422, "top_k must be an integer")


# -- what the errors never do ------------------------------------------------------------------
def test_errors_do_not_echo_the_input(api: TestClient) -> None:
    secret = "do-not-echo-" + "x" * 200
    message = assert_error(post(api, rows_body([5.1, secret, 1.4, 0.2])), 422)
    assert "do-not-echo" not in message
    long_key = "k" * 500
    message = assert_error(post(api, rows_body({**RECORD, long_key: 1.0})), 422, "unknown feature")
    assert long_key not in message and len(message) < 200


def test_errors_are_json_even_when_csv_is_accepted(api: TestClient) -> None:
    response = post(api, rows_body([5.1, 3.5]), accept="text/csv")
    assert_error(response, 422, "instances[0]")


def test_other_methods_and_routes_answer_json_errors(api: TestClient) -> None:
    assert_error(api.get("/predict"), 405, "GET")
    assert_error(api.post("/predictions", json={"instances": [ROW]}), 404, "/predictions")


HOSTILE = [
    b"",
    b"\x00" * 64,
    b"\xff\xfe\xfd",
    b"{",
    b"[]",
    b"null",
    b"0",
    b'{"instances": [[]]}',
    b'{"instances": [[[[]]]]}',
    b'{"instances": [{}]}',
    b'{"instances": [null]}',
    b'{"instances": [[5.1, 3.5, 1.4, 0.2]], "top_k": NaN}',
    b'{"instances": [[5.1, 3.5, 1.4, 0.2]], "top_k": 1e309}',
    b'{"instances": [[-0.0, 1e-320, 1.4, 0.2]], "top_k": -0}',
    b'{"instances": [{"sepal_length": NaN, "sepal_width": NaN}]}',
    b'{"instances": [{"": 1, "sepal_width": 1, "petal_length": 1, "petal_width": 1}]}',
    b'{"\\u0000": 1}',
    b'{"instances": "' + b"a" * 3000 + b'"}',
    b'{"instances": [[1e999999999, 3.5, 1.4, 0.2]]}',
    b'{"instances": [[' + b"9" * 3000 + b", 3.5, 1.4, 0.2]]}",
    HEADER.encode() + b"\n" + b",,,\n",
    HEADER.encode() + b"\n" + b"\x00,\x00,\x00,\x00\n",
    b"\n".join([HEADER.encode(), b"1,2,3,4", b"", b"1,2,3,4"]),
    b",,,\n1,2,3,4\n",
    b'"' * 100,
    b"sepal_length\r5.1\r",
]


@pytest.mark.parametrize("content_type", [JSON, CSV])
@pytest.mark.parametrize("body", HOSTILE, ids=[f"hostile-{i}" for i in range(len(HOSTILE))])
def test_hostile_bodies_get_a_4xx_never_a_500(
    api: TestClient, body: bytes, content_type: str
) -> None:
    response = post(api, body, content_type, accept="text/csv")
    if response.status_code == 200:  # valid after all: a CSV answer, as asked
        assert response.text.startswith("label,")
    else:
        assert 400 <= response.status_code < 500, response.text
        assert isinstance(response.json()["error"], str)
