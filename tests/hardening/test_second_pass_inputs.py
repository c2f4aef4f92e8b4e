"""Second outside attack pass on request bodies: duplicate keys (many, escaped, nested), CSV line
breaks, and the cost of rows outside the training range."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import httpx
import numpy as np
import orjson
import pytest

from service import inputs, outputs
from service.errors import InvalidInput, ServiceError
from service.inputs import Schema, load_json, parse_csv_body
from service.model import LoadedModel
from tests.hardening.conftest import AUTH
from tests.support import ServerProcess

SCHEMA = Schema(("a", "b", "c", "d"), max_rows=100, n_classes=3)
ROW = b"[5.1, 3.5, 1.4, 0.2]"
IRIS = ("sepal_length", "sepal_width", "petal_length", "petal_width")


# -- 1. the duplicate-key checks are linear -----------------------------------------------------
class _CountedKey(str):
    """A key that counts the comparisons made with it."""

    calls = 0

    def __eq__(self, other: object) -> bool:
        _CountedKey.calls += 1
        return str.__eq__(self, other)

    def __hash__(self) -> int:
        _CountedKey.calls += 1
        return str.__hash__(self)


def test_reject_duplicates_compares_each_key_a_bounded_number_of_times() -> None:
    n = 2000
    pairs = [(_CountedKey(f"k{i}"), i) for i in range(n)] + [(_CountedKey("k0"), 0)]
    _CountedKey.calls = 0
    with pytest.raises(InvalidInput, match="duplicate key 'k0'"):
        inputs._reject_duplicates(pairs)
    assert _CountedKey.calls <= 6 * n  # a count per key was n * n


def test_many_keys_are_scanned_once_not_once_per_key(monkeypatch: pytest.MonkeyPatch) -> None:
    body = orjson.dumps({f"k{i}": 1 for i in range(6000)})  # 60 KB, the attack's object
    scanned = []
    real = inputs._count_keys
    monkeypatch.setattr(
        inputs, "_count_keys", lambda text, exact: scanned.append(len(text)) or real(text, exact)
    )
    assert len(load_json(body)) == 6000
    assert sum(scanned) <= 2 * len(body)


@pytest.mark.slow  # starts a server process
def test_many_keys_answer_422_from_the_server(server: ServerProcess) -> None:
    body = orjson.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]], **{f"k{i}": 1 for i in range(6000)}})
    response = httpx.post(
        server.url + "/predict",
        content=body,
        headers={**AUTH, "Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 422
    assert "unknown field" in response.text


# -- 9. escaped and nested duplicate keys -------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "key"),
    [
        (b'{"\\u0069nstances": [' + ROW + b'], "instances": [' + ROW + b"]}", "instances"),
        (b'{"instances": [' + ROW + b'], "\\u0069nstances": [' + ROW + b"]}", "instances"),
        (b'{"instances": [{"a": 1, "\\u0061": 2, "b": 3, "c": 4, "d": 5}]}', "a"),
        (b'{"instances": [' + ROW + b'], "top_k": 1, "top_k" : 2}', "top_k"),
        (b'{"x": {"y": {"z": 1, "z": 2}}}', "z"),
        (b'[{"k": 1}, {"k": 1, "k": 2}]', "k"),
    ],
    ids=["escaped first", "escaped last", "escaped record feature", "spaced", "nested", "in list"],
)
def test_escaped_and_nested_duplicates_are_refused(body: bytes, key: str) -> None:
    with pytest.raises(InvalidInput, match=f"duplicate key {key!r}"):
        load_json(body)


@pytest.mark.parametrize(
    "body",
    [
        b'{"instances": [' + ROW + b'], "note": "\\"a\\": 1"}',  # a key-like string value
        b'{"instances": [' + ROW + b'], "note": ": x", "\\u006eext": ":"}',
        b'{"instances": [{"a": 1, "b": 2, "c": 3, "d": ":"}]}',
    ],
)
def test_strings_that_look_like_keys_are_not_duplicates(body: bytes) -> None:
    assert isinstance(load_json(body), dict)


def _v2(tensor: bytes) -> bytes:
    return b'{"inputs": [' + tensor + b"]}"


@pytest.mark.slow  # starts a server process
@pytest.mark.parametrize(
    ("path", "body", "status", "key"),
    [
        (
            "/predict",
            b'{"\\u0069nstances": [[1, 1, 1, 1]], "instances": [' + ROW + b"]}",
            422,
            "instances",
        ),
        (
            "/v2/models/iris/infer",
            _v2(
                b'{"name": "x", "\\u006eame": "features", "shape": [1, 4], "datatype": "FP32",'
                b' "data": [5.1, 3.5, 1.4, 0.2]}'
            ),
            400,
            "name",
        ),
        (
            "/v2/models/iris/infer",
            _v2(
                b'{"name": "features", "shape": [1, 4], "datatype": "FP32",'
                b' "data": [9, 9, 9, 9], "data": [5.1, 3.5, 1.4, 0.2]}'
            ),
            400,
            "data",
        ),
        (
            "/v1/models/iris:classify",
            b'{"examples": [{"sepal_length": 9, "sepal_length": 5.1, "sepal_width": 3.5,'
            b' "petal_length": 1.4, "petal_width": 0.2}]}',
            400,
            "sepal_length",
        ),
        (
            "/v1/models/iris:predict",
            b'{"inputs": {"sepal_length": [9], "sepal_width": [3.5], "petal_length": [1.4],'
            b' "petal_width": [0.2], "sepal_\\u006cength": [5.1]}}',
            400,
            "sepal_length",
        ),
    ],
    ids=["predict escaped", "v2 name", "v2 data", "tfserving examples", "tfserving columnar"],
)
def test_duplicates_are_refused_by_the_server(
    server: ServerProcess, path: str, body: bytes, status: int, key: str
) -> None:
    response = httpx.post(
        server.url + path,
        content=body,
        headers={**AUTH, "Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == status, response.text
    assert f"duplicate key {key!r}" in response.text


# -- 13. CSV line breaks ------------------------------------------------------------------------
HEADER = b"a,b,c,d\n"


@pytest.mark.parametrize("separator", ["\x1c", "\u2028", "\x85", "\x0b", "\x0c"])
def test_only_cr_and_lf_end_a_csv_line(separator: str) -> None:
    body = HEADER + f"5.1,3.5,1.4,0.2{separator}4.9,3.0,1.4,0.2\n".encode()
    with pytest.raises(ServiceError, match="row 1 has 7 fields"):  # one row, not two
        parse_csv_body(body, SCHEMA)
    if separator not in "\x0b\x0c":  # float() reads those two as blanks around a number
        with pytest.raises(InvalidInput, match="row 1, column 'd' is not a number"):
            parse_csv_body(HEADER + f"5.1,3.5,1.4,0.2{separator}\n".encode(), SCHEMA)


@pytest.mark.parametrize("line_end", ["\n", "\r\n", "\r"])
def test_csv_line_ends_still_split_rows(line_end: str) -> None:
    body = line_end.join(["a,b,c,d", "5.1,3.5,1.4,0.2", "4.9,3.0,1.4,0.2", ""]).encode()
    assert parse_csv_body(body, SCHEMA).x.shape == (2, 4)


@pytest.mark.parametrize("cell", ['"5.\n1"', '"5.1\n"', '"5.\r\n1"', '"\n5.1"'])
def test_a_quoted_line_break_is_not_read_as_a_number(cell: str) -> None:
    body = HEADER + f"{cell},3.5,1.4,0.2\n4.9,3.0,1.4,0.2\n".encode()
    with pytest.raises(InvalidInput, match="CSV row 1, column 'a' holds a line break"):
        parse_csv_body(body, SCHEMA)


def test_a_quoted_line_break_in_the_header_is_named() -> None:
    body = b'"a\nb",c,d,e\n5.1,3.5,1.4,0.2\n'
    with pytest.raises(InvalidInput, match="CSV header column 1 holds a line break"):
        parse_csv_body(body, SCHEMA)


@pytest.mark.slow  # starts a server process
def test_csv_line_breaks_against_the_server(server: ServerProcess) -> None:
    header = ",".join(IRIS).encode() + b"\n"
    for body, expected in [
        (header + b'"5.\n1",3.5,1.4,0.2\n', "holds a line break"),
        (header + "5.1,3.5,1.4,0.2\u20284.9,3.0,1.4,0.2\n".encode(), "fields"),
        (b'"sepal\nlength",sepal_width,petal_length,petal_width\n5.1,3.5,1.4,0.2\n', "header"),
    ]:
        response = httpx.post(
            server.url + "/predict",
            content=body,
            headers={**AUTH, "Content-Type": "text/csv"},
            timeout=30,
        )
        assert response.status_code in (400, 422), response.text
        assert expected in response.text


# -- 14. rows outside the training range: same answers, computed by column ---------------------
class _Bounds:
    """The parts of a model the range warnings read."""

    feature_names: ClassVar[list[str]] = ["a", 'b"q', "c\\d", "é\n"]  # JSON escapes these
    feature_min = np.array([0.0, -1.5, 1e-7, 4.3], dtype=np.float32)
    feature_max = np.array([1.0, 2.5, 3e6, 7.9], dtype=np.float32)
    feature_bounds = (feature_min.tolist(), feature_max.tolist())


def _per_cell(x: np.ndarray) -> list[list[str]]:
    """The warnings as the per-cell code wrote them."""
    lows, highs = _Bounds.feature_bounds
    return [
        [
            outputs._warning(_Bounds.feature_names[j], v, lows[j], highs[j])
            for j, v in enumerate(row)
            if v < lows[j] or v > highs[j]
        ]
        for row in x.tolist()
    ]


def test_column_wise_warnings_match_the_per_cell_ones() -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(0, 5, (500, 4)).astype(np.float32)
    x[rng.random(x.shape) < 0.1] = -0.0
    x[rng.random(x.shape) < 0.05] = 123456789.0
    x[3] = [2.0, 9.0, 1e-9, 100.0]  # every feature out, both sides
    model = _Bounds()
    expected = _per_cell(x)
    assert outputs.range_warnings(model, x) == expected  # type: ignore[arg-type]
    # The JSON answer's warnings, assembled from per-message JSON fragments, say the same.
    loaded = LoadedModel(
        name="m",
        version=1,
        path=Path("."),
        metadata=None,  # type: ignore[arg-type]
        runtime=None,  # type: ignore[arg-type]
        labels=["a", "b"],
        class_keys=["a", "b"],
        feature_names=_Bounds.feature_names,
        feature_min=_Bounds.feature_min,
        feature_max=_Bounds.feature_max,
    )
    p = np.tile(np.array([[0.25, 0.75]], dtype=np.float32), (len(x), 1))
    answer = orjson.loads(outputs.answer_json(loaded, x, p))
    assert [row["warnings"] for row in answer["predictions"]] == expected


@pytest.mark.slow  # starts a server process
def test_many_rows_outside_the_range_are_answered_alike(server: ServerProcess) -> None:
    rows = [[100.0 + i % 7, -5.0, 50.0, 0.2] for i in range(2000)]
    response = httpx.post(
        server.url + "/predict", json={"instances": rows}, headers=AUTH, timeout=60
    )
    assert response.status_code == 200
    predictions = response.json()["predictions"]
    small = httpx.post(
        server.url + "/predict", json={"instances": rows[:3]}, headers=AUTH, timeout=60
    ).json()["predictions"]  # the few-row path (plain Python) writes the same warnings
    assert [p["warnings"] for p in predictions[:3]] == [p["warnings"] for p in small]
    assert all(len(p["warnings"]) == 3 for p in predictions)
