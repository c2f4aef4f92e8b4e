"""Hostile requests beyond what schemathesis generates, against a real server process.

Each is answered with one specific 4xx (never a 5xx) and a JSON error naming the fault; the
process stays up and keeps answering.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from tests.hardening.conftest import AUTH
from tests.hardening.figures import record
from tests.support import ServerProcess

pytestmark = pytest.mark.slow

JSON = {"content-type": "application/json"}
CSV = {"content-type": "text/csv"}
ROW = b"[5.1, 3.5, 1.4, 0.2]"
HEADER = b"sepal_length,sepal_width,petal_length,petal_width\n"
V2 = "/v2/models/iris/infer"
TF = "/v1/models/iris:predict"
MB = 1024 * 1024


def _instances(*cells: bytes) -> bytes:
    return b'{"instances": [[' + b", ".join(cells) + b"]]}"


def _v2(data: bytes, datatype: bytes = b"FP32", shape: bytes = b"[1, 4]") -> bytes:
    return (
        b'{"inputs": [{"name": "features", "shape": '
        + shape
        + b', "datatype": "'
        + datatype
        + b'", "data": '
        + data
        + b"}]}"
    )


def _chunks(body: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    """A body sent with Transfer-Encoding: chunked and no Content-Length."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


@dataclass
class Hostile:
    """One hostile request and the status it must get."""

    name: str
    path: str
    body: bytes | None
    status: int
    headers: dict[str, str] = field(default_factory=lambda: dict(JSON))
    method: str = "POST"
    chunked: bool = False
    auth: bool = True


HOSTILE = [
    # -- numbers that are not finite numbers ------------------------------------------------
    Hostile("NaN", "/predict", _instances(b"NaN", b"3.5", b"1.4", b"0.2"), 422),
    Hostile("Infinity", "/predict", _instances(b"Infinity", b"3.5", b"1.4", b"0.2"), 422),
    Hostile("-Infinity", "/predict", _instances(b"-Infinity", b"3.5", b"1.4", b"0.2"), 422),
    Hostile("1e309", "/predict", _instances(b"1e309", b"3.5", b"1.4", b"0.2"), 422),
    Hostile("-1e309", "/predict", _instances(b"-1e309", b"3.5", b"1.4", b"0.2"), 422),
    Hostile("float32 max", "/predict", _instances(b"3.4e38", b"3.5", b"1.4", b"0.2"), 422),
    Hostile("beyond 1e15", "/predict", _instances(b"1.5e15", b"3.5", b"1.4", b"0.2"), 422),
    Hostile("5000-digit integer", "/predict", _instances(b"9" * 5000, b"3.5", b"1.4", b"0.2"), 422),
    Hostile(
        "NaN in a record",
        "/predict",
        b'{"instances": [{"sepal_length": NaN, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}]}',
        422,
    ),
    # -- values of the wrong type -------------------------------------------------------------
    Hostile("number as string", "/predict", _instances(b'"5.1"', b"3.5", b"1.4", b"0.2"), 422),
    Hostile("boolean", "/predict", _instances(b"true", b"3.5", b"1.4", b"0.2"), 422),
    Hostile("null", "/predict", _instances(b"null", b"3.5", b"1.4", b"0.2"), 422),
    Hostile("nested array", "/predict", _instances(b"[5.1]", b"3.5", b"1.4", b"0.2"), 422),
    Hostile("object as value", "/predict", _instances(b"{}", b"3.5", b"1.4", b"0.2"), 422),
    Hostile("instances null", "/predict", b'{"instances": null}', 422),
    Hostile("instances a string", "/predict", b'{"instances": "5.1,3.5,1.4,0.2"}', 422),
    Hostile("instances empty", "/predict", b'{"instances": []}', 422),
    Hostile("row too short", "/predict", b'{"instances": [[5.1, 3.5]]}', 422),
    Hostile("row too long", "/predict", b'{"instances": [[5.1, 3.5, 1.4, 0.2, 9]]}', 422),
    Hostile(
        "rows and records mixed",
        "/predict",
        b'{"instances": [[5.1, 3.5, 1.4, 0.2], {"sepal_length": 5.1}]}',
        422,
    ),
    Hostile("record missing feature", "/predict", b'{"instances": [{"sepal_length": 5.1}]}', 422),
    Hostile(
        "record unknown feature",
        "/predict",
        b'{"instances": [{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2, "x": 1}]}',
        422,
    ),
    Hostile("body a JSON array", "/predict", b"[[5.1, 3.5, 1.4, 0.2]]", 422),
    Hostile("body a JSON string", "/predict", b'"hello"', 422),
    Hostile("body JSON null", "/predict", b"null", 422),
    Hostile(
        "unknown top-level field", "/predict", b'{"instances": [' + ROW + b'], "debug": true}', 422
    ),
    Hostile("missing instances", "/predict", b'{"top_k": 1}', 422),
    # -- structure and size -------------------------------------------------------------------
    Hostile(
        "100,000-deep arrays",
        "/predict",
        b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        400,
    ),
    Hostile("100,000-deep objects", "/predict", b'{"a":' * 100_000 + b"1" + b"}" * 100_000, 400),
    Hostile("100,000 unclosed brackets", "/predict", b"[" * 100_000, 400),
    Hostile(
        "10 MB body",
        "/predict",
        b'{"instances": [' + b",".join([ROW] * (10 * MB // len(ROW))) + b"]}",
        413,
    ),
    Hostile(
        "10 MB chunked, no length",
        "/predict",
        b'{"instances": [' + b",".join([ROW] * (10 * MB // len(ROW))) + b"]}",
        413,
        chunked=True,
    ),
    Hostile("chunked malformed JSON", "/predict", b'{"instances": [[5.1, 3.5', 400, chunked=True),
    Hostile(
        "chunked NaN", "/predict", _instances(b"NaN", b"3.5", b"1.4", b"0.2"), 422, chunked=True
    ),
    Hostile(
        "more rows than MAX_BATCH_ROWS",
        "/predict",
        b'{"instances": [' + b",".join([ROW] * 10_001) + b"]}",
        413,
    ),
    Hostile("empty body", "/predict", b"", 400),
    Hostile("whitespace body", "/predict", b" \r\n\t ", 400),
    Hostile("truncated JSON", "/predict", b'{"instances": [[5.1, 3.5, 1.4', 400),
    Hostile("trailing garbage", "/predict", b'{"instances": [' + ROW + b"]} xyz", 400),
    Hostile("single quotes", "/predict", b"{'instances': [[5.1, 3.5, 1.4, 0.2]]}", 400),
    # -- content types and encodings ----------------------------------------------------------
    Hostile("missing Content-Type", "/predict", b'{"instances": [' + ROW + b"]}", 415, headers={}),
    Hostile(
        "text/plain",
        "/predict",
        b'{"instances": [' + ROW + b"]}",
        415,
        headers={"content-type": "text/plain"},
    ),
    Hostile(
        "application/xml",
        "/predict",
        b"<instances/>",
        415,
        headers={"content-type": "application/xml"},
    ),
    Hostile(
        "form-urlencoded",
        "/predict",
        b"instances=1",
        415,
        headers={"content-type": "application/x-www-form-urlencoded"},
    ),
    Hostile(
        "multipart",
        "/predict",
        b"--x\r\n\r\n--x--",
        415,
        headers={"content-type": "multipart/form-data; boundary=x"},
    ),
    Hostile(
        "JSON body labelled CSV",
        "/predict",
        b'{"instances": [' + ROW + b"]}",
        422,
        headers=dict(CSV),
    ),
    Hostile("invalid UTF-8", "/predict", b'{"instances": [' + ROW + b'], "\xff\xfe": 1}', 400),
    Hostile(
        "UTF-8 encoded surrogate",
        "/predict",
        b'{"instances": [' + ROW + b'], "\xed\xa0\x80": 1}',
        400,
    ),
    Hostile(
        "lone surrogate escape", "/predict", b'{"instances": [' + ROW + b'], "\\ud800": 1}', 400
    ),
    Hostile(
        "UTF-16 body", "/predict", '{"instances": [[5.1, 3.5, 1.4, 0.2]]}'.encode("utf-16"), 400
    ),
    Hostile("NUL bytes", "/predict", b'{"instances": [[5.1\x00, 3.5, 1.4, 0.2]]}', 400),
    Hostile(
        "duplicate keys",
        "/predict",
        b'{"instances": [' + ROW + b'], "instances": [' + ROW + b"]}",
        422,
    ),
    Hostile(
        "duplicate feature in a record",
        "/predict",
        b'{"instances": [{"sepal_length": 5.1, "sepal_length": 5.2, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}]}',
        422,
    ),
    # -- CSV ----------------------------------------------------------------------------------
    Hostile("CSV empty", "/predict", b"", 400, headers=dict(CSV)),
    Hostile("CSV header only", "/predict", HEADER, 422, headers=dict(CSV)),
    Hostile("CSV nan cell", "/predict", HEADER + b"5.1,3.5,1.4,nan\n", 422, headers=dict(CSV)),
    Hostile("CSV inf cell", "/predict", HEADER + b"5.1,3.5,1.4,inf\n", 422, headers=dict(CSV)),
    Hostile("CSV word cell", "/predict", HEADER + b"5.1,3.5,1.4,setosa\n", 422, headers=dict(CSV)),
    Hostile("CSV empty cell", "/predict", HEADER + b"5.1,3.5,1.4,\n", 422, headers=dict(CSV)),
    Hostile("CSV ragged row", "/predict", HEADER + b"5.1,3.5,1.4\n", 400, headers=dict(CSV)),
    Hostile(
        "CSV duplicate column",
        "/predict",
        b"sepal_length,sepal_length,petal_length,petal_width\n1,2,3,4\n",
        422,
        headers=dict(CSV),
    ),
    Hostile("CSV unknown column", "/predict", b"a,b,c,d\n1,2,3,4\n", 422, headers=dict(CSV)),
    Hostile(
        "CSV unterminated quote", "/predict", HEADER + b'"5.1,3.5,1.4,0.2\n', 400, headers=dict(CSV)
    ),
    Hostile(
        "CSV invalid UTF-8", "/predict", HEADER + b"5.1,3.5,1.4,\xff\n", 400, headers=dict(CSV)
    ),
    Hostile("CSV NUL byte", "/predict", HEADER + b"5.1,3.5,1.4,0\x00\n", 422, headers=dict(CSV)),
    # -- top_k --------------------------------------------------------------------------------
    Hostile(
        "top_k huge", "/predict", b'{"instances": [' + ROW + b'], "top_k": 1000000000000}', 422
    ),
    Hostile(
        "top_k 5000 digits",
        "/predict",
        b'{"instances": [' + ROW + b'], "top_k": ' + b"9" * 5000 + b"}",
        422,
    ),
    Hostile("top_k negative", "/predict", b'{"instances": [' + ROW + b'], "top_k": -1}', 422),
    Hostile("top_k zero", "/predict", b'{"instances": [' + ROW + b'], "top_k": 0}', 422),
    Hostile("top_k above classes", "/predict", b'{"instances": [' + ROW + b'], "top_k": 4}', 422),
    Hostile("top_k fraction", "/predict", b'{"instances": [' + ROW + b'], "top_k": 1.5}', 422),
    Hostile("top_k string", "/predict", b'{"instances": [' + ROW + b'], "top_k": "2"}', 422),
    Hostile("top_k boolean", "/predict", b'{"instances": [' + ROW + b'], "top_k": true}', 422),
    Hostile("top_k Infinity", "/predict", b'{"instances": [' + ROW + b'], "top_k": Infinity}', 422),
    # -- authentication and methods -----------------------------------------------------------
    Hostile("no bearer token", "/predict", b'{"instances": [' + ROW + b"]}", 401, auth=False),
    Hostile(
        "wrong bearer token",
        "/predict",
        b'{"instances": [' + ROW + b"]}",
        401,
        headers={**JSON, "authorization": "Bearer nope"},
        auth=False,
    ),
    Hostile(
        "basic auth instead of bearer",
        "/predict",
        b'{"instances": [' + ROW + b"]}",
        401,
        headers={**JSON, "authorization": "Basic dXNlcjpwYXNz"},
        auth=False,
    ),
    Hostile("admin without token", "/admin/reload", b"", 401, auth=False),
    Hostile("admin reload malformed", "/admin/reload", b'{"version": ', 400),
    Hostile("admin reload version string", "/admin/reload", b'{"version": "1"}', 422),
    Hostile("admin reload unknown version", "/admin/reload", b'{"version": 999}', 404),
    Hostile("PUT /predict", "/predict", b"{}", 405, method="PUT"),
    Hostile("DELETE /model", "/model", None, 405, method="DELETE"),
    Hostile("unknown route", "/predict/../../etc/passwd", None, 404, method="GET"),
    # -- the V2 (Open Inference Protocol) routes ----------------------------------------------
    Hostile("V2 unknown model", "/v2/models/nope/infer", _v2(b"[5.1, 3.5, 1.4, 0.2]"), 404),
    Hostile(
        "V2 unknown version",
        "/v2/models/iris/versions/999/infer",
        _v2(b"[5.1, 3.5, 1.4, 0.2]"),
        404,
    ),
    Hostile(
        "V2 version not a number",
        "/v2/models/iris/versions/latest/infer",
        _v2(b"[5.1, 3.5, 1.4, 0.2]"),
        404,
    ),
    Hostile(
        "V2 negative version",
        "/v2/models/iris/versions/-1/infer",
        _v2(b"[5.1, 3.5, 1.4, 0.2]"),
        404,
    ),
    Hostile(
        "V2 huge version",
        "/v2/models/iris/versions/" + "9" * 400 + "/infer",
        _v2(b"[5.1, 3.5, 1.4, 0.2]"),
        404,
    ),
    Hostile("V2 metadata of unknown model", "/v2/models/nope", None, 404, method="GET"),
    Hostile(
        "V2 readiness of unknown version",
        "/v2/models/iris/versions/999/ready",
        None,
        404,
        method="GET",
    ),
    Hostile("V2 NaN", V2, _v2(b"[NaN, 3.5, 1.4, 0.2]"), 400),
    Hostile("V2 1e309", V2, _v2(b"[1e309, 3.5, 1.4, 0.2]"), 400),
    Hostile("V2 strings as numbers", V2, _v2(b'["5.1", "3.5", "1.4", "0.2"]'), 400),
    Hostile("V2 shape mismatch", V2, _v2(b"[5.1, 3.5, 1.4, 0.2]", shape=b"[2, 4]"), 400),
    Hostile("V2 negative shape", V2, _v2(b"[5.1, 3.5, 1.4, 0.2]", shape=b"[-1, 4]"), 400),
    Hostile("V2 huge shape", V2, _v2(b"[5.1, 3.5, 1.4, 0.2]", shape=b"[100000000000, 4]"), 413),
    Hostile("V2 unknown datatype", V2, _v2(b"[5.1, 3.5, 1.4, 0.2]", datatype=b"FP128"), 400),
    Hostile(
        "V2 lone surrogate id", V2, b'{"id": "\\udfff", ' + _v2(b"[5.1, 3.5, 1.4, 0.2]")[1:], 400
    ),
    Hostile(
        "V2 classification false",
        V2,
        _v2(b"[5.1, 3.5, 1.4, 0.2]")[:-1]
        + b', "outputs": [{"name": "label", "parameters": {"classification": false}}]}',
        400,
    ),
    Hostile("V2 deep nesting", V2, b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400),
    Hostile("V2 empty body", V2, b"", 400),
    Hostile("V2 CSV content type", V2, _v2(b"[5.1, 3.5, 1.4, 0.2]"), 415, headers=dict(CSV)),
    Hostile(
        "V2 bad binary header length",
        V2,
        _v2(b"[5.1, 3.5, 1.4, 0.2]"),
        400,
        headers={**JSON, "inference-header-content-length": "-5"},
    ),
    Hostile("V2 no bearer token", V2, _v2(b"[5.1, 3.5, 1.4, 0.2]"), 401, auth=False),
    # -- the TensorFlow Serving routes --------------------------------------------------------
    Hostile("TF unknown model", "/v1/models/nope:predict", b'{"instances": [' + ROW + b"]}", 404),
    Hostile(
        "TF unknown version",
        "/v1/models/iris/versions/999:predict",
        b'{"instances": [' + ROW + b"]}",
        404,
    ),
    Hostile(
        "TF version not a number",
        "/v1/models/iris/versions/x:predict",
        b'{"instances": [' + ROW + b"]}",
        404,
    ),
    Hostile("TF status of unknown model", "/v1/models/nope", None, 404, method="GET"),
    Hostile(
        "TF metadata of unknown version",
        "/v1/models/iris/versions/999/metadata",
        None,
        404,
        method="GET",
    ),
    Hostile("TF unknown verb", "/v1/models/iris:explode", b'{"instances": [' + ROW + b"]}", 404),
    Hostile("TF GET on :predict", TF, None, 405, method="GET"),
    Hostile("TF NaN", TF, _instances(b"NaN", b"3.5", b"1.4", b"0.2"), 400),
    Hostile("TF booleans", TF, _instances(b"true", b"false", b"true", b"false"), 400),
    Hostile(
        "TF both instances and inputs",
        TF,
        b'{"instances": [' + ROW + b'], "inputs": [' + ROW + b"]}",
        400,
    ),
    Hostile(
        "TF unknown signature", TF, b'{"signature_name": "other", "instances": [' + ROW + b"]}", 400
    ),
    Hostile("TF deep nesting", TF, b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400),
    Hostile(
        "TF 10 MB body",
        TF,
        b'{"instances": [' + b",".join([ROW] * (10 * MB // len(ROW))) + b"]}",
        413,
    ),
    Hostile(
        "TF XML content type", TF, b"<instances/>", 415, headers={"content-type": "application/xml"}
    ),
    Hostile("TF no bearer token", TF, b'{"instances": [' + ROW + b"]}", 401, auth=False),
]

# Requests that only a raw socket can send: broken framing must not reach the app as a 5xx.
RAW = [
    ("Content-Length not a number", b"Content-Length: abc\r\n\r\n{}", 400),
    ("negative Content-Length", b"Content-Length: -5\r\n\r\n{}", 400),
    (
        "Content-Length and chunked",
        b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    ("chunk size not hex", b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n", 400),
]


@pytest.mark.parametrize("case", HOSTILE, ids=[c.name for c in HOSTILE])
def test_hostile_request_gets_its_4xx(server: ServerProcess, case: Hostile) -> None:
    headers = {**case.headers, **(AUTH if case.auth else {})}
    content: bytes | Iterator[bytes] | None = case.body
    if case.chunked and case.body is not None:
        content = _chunks(case.body)
    with httpx.Client(base_url=server.url, timeout=60) as client:
        response = client.request(case.method, case.path, content=content, headers=headers)
    record("hostile_inputs", 1)
    record("server_errors", int(response.status_code >= 500))
    assert response.status_code == case.status, response.text[:300]
    error = response.json()["error"]
    assert isinstance(error, str) and error
    assert len(error) < 1000  # names the fault, never echoes a large input back


@pytest.mark.parametrize("case", RAW, ids=[c[0] for c in RAW])
def test_broken_framing_gets_400(server: ServerProcess, case: tuple[str, bytes, int]) -> None:
    _, tail, status = case
    request = (
        b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Authorization: {AUTH['Authorization']}\r\n".encode()
        + tail
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        answer = sock.recv(4096)
    record("hostile_inputs", 1)
    status_line = answer.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 "), answer[:200]
    code = int(status_line.split()[1])
    record("server_errors", int(code >= 500))
    assert code == status, answer[:200]


def test_process_still_serves_after_the_hostile_list(server: ServerProcess) -> None:
    """Runs after the lists above: the process is up, live, ready and predicts correctly."""
    assert server.process is not None and server.process.poll() is None
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").status_code == 200
        answer = client.post("/predict", json={"instances": [[5.1, 3.5, 1.4, 0.2]]}, headers=AUTH)
    assert answer.status_code == 200
    assert answer.json()["predictions"][0]["label"] == "setosa"
