"""Header and connection limits (issue 18, items 2 and 3), against a real server process.

The attacks: a 128 MiB header took 58 s to parse (before auth) and stalled /healthz for 17.5 s;
~20,000 half-open connections (slowloris) exhausted the file descriptors. Now a header section
beyond MAX_HEADER_BYTES, or with more than MAX_HEADERS fields, is answered 431; headers not
complete within HEADER_TIMEOUT_SECONDS are answered 408 (a connection that sent nothing is just
closed); a connection beyond MAX_CONNECTIONS is answered 503 and closed at once.
"""

from __future__ import annotations

import json
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import ServerProcess, metric, wait_until

PATIENCE = 60.0  # how long a client waits for what the server must do: no upper bound is tested
ROW = {"instances": [[5.1, 3.5, 1.4, 0.2]]}
MAX_HEADER_BYTES = 16 * 1024
MAX_HEADERS = 30
MAX_CONNECTIONS = 20
# Real server processes, and waits for HEADER_TIMEOUT_SECONDS (and the close after it) to pass.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory, iris_bundle: Path) -> Path:
    root = tmp_path_factory.mktemp("connections") / "artifacts"
    shutil.copytree(iris_bundle, root / "iris" / "1")
    return root


@pytest.fixture(scope="module")
def server(artifacts: Path) -> Iterator[ServerProcess]:
    """Header limits tight enough to test cheaply, and a 1 s header timeout."""
    process = ServerProcess(
        artifacts,
        log_path=artifacts.parent / "server.log",
        model_name="iris",
        model_runtime="litert",
        max_header_bytes=MAX_HEADER_BYTES,
        max_headers=MAX_HEADERS,
        header_timeout_seconds=1,
    )
    with process:
        process.wait_for("/readyz", timeout=PATIENCE)
        yield process


def connect(server: ServerProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=PATIENCE)


def read_until_closed(connection: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a reset counts as closed)."""
    chunks = []
    while True:
        try:
            chunk = connection.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def read_response(connection: socket.socket) -> tuple[int, bytes]:
    """One response with a content-length, on a connection that stays open."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        assert chunk, f"closed mid-response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = next(
        int(line.split(b":", 1)[1]) for line in lines if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        chunk = connection.recv(65536)
        assert chunk, "closed mid-body"
        body += chunk
    return int(lines[0].split()[1]), body


def refusal(answer: bytes) -> tuple[int, str, bytes]:
    """Status, JSON error and head of an answer the server sent before closing."""
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower(), answer[:500]
    return int(head.split()[1]), json.loads(body)["error"], head


def get(path: str = "/healthz", extra: bytes = b"") -> bytes:
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra + b"\r\n"


def test_a_one_mebibyte_header_is_refused_431_and_healthz_keeps_answering(
    server: ServerProcess,
) -> None:
    before = metric(server.url, "http_connections_refused_total", reason="header_bytes")
    with connect(server) as attack:
        attack.sendall(get(extra=b"X-Big: " + b"a" * (1024 * 1024) + b"\r\n"))
        status, error, _ = refusal(read_until_closed(attack))
    assert status == 431
    assert "MAX_HEADER_BYTES" in error and str(MAX_HEADER_BYTES) in error
    assert httpx.get(server.url + "/healthz", timeout=PATIENCE).status_code == 200
    after = metric(server.url, "http_connections_refused_total", reason="header_bytes")
    assert after - before == 1  # counted


def test_a_long_url_counts_toward_the_header_bytes(server: ServerProcess) -> None:
    with connect(server) as attack:
        attack.sendall(get("/healthz?" + "a" * (2 * MAX_HEADER_BYTES)))
        status, error, _ = refusal(read_until_closed(attack))
    assert status == 431 and "MAX_HEADER_BYTES" in error


def test_headers_arriving_a_little_at_a_time_are_counted_across_reads(
    server: ServerProcess,
) -> None:
    """Many small header fields, each under the limit, sent in separate writes."""
    with connect(server) as attack:
        attack.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
        answer = b""
        try:
            for _ in range(4 * MAX_HEADER_BYTES // 1024):
                attack.sendall(b"b" * 1024)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused while still sending
        else:
            answer = read_until_closed(attack)
    if answer:  # (a reset while sending also shows the refusal)
        status, error, _ = refusal(answer)
        assert status == 431 and "MAX_HEADER_BYTES" in error


def test_too_many_headers_are_refused_431(server: ServerProcess) -> None:
    many = b"".join(b"X-H%d: v\r\n" % index for index in range(200))
    with connect(server) as attack:
        attack.sendall(get(extra=many))
        status, error, _ = refusal(read_until_closed(attack))
    assert status == 431
    assert "MAX_HEADERS" in error and str(MAX_HEADERS) in error
    assert httpx.get(server.url + "/healthz", timeout=PATIENCE).status_code == 200


def test_headers_within_the_limits_are_served(server: ServerProcess) -> None:
    fields = {f"x-h{index}": "v" for index in range(MAX_HEADERS - 10)}  # httpx adds five
    fields["x-long"] = "c" * (MAX_HEADER_BYTES // 2)
    response = httpx.get(server.url + "/healthz", headers=fields, timeout=PATIENCE)
    assert response.status_code == 200


def test_half_a_request_line_is_answered_408_and_closed(server: ServerProcess) -> None:
    with connect(server) as slow:
        slow.sendall(b"GET /heal")
        status, error, _ = refusal(read_until_closed(slow))
    assert status == 408
    assert "HEADER_TIMEOUT_SECONDS" in error


def test_headers_sent_a_byte_at_a_time_are_cut_off(server: ServerProcess) -> None:
    """Slowloris proper: each byte resets no timer, so the request never completes."""
    request = get(extra=b"X-Slow: " + b"s" * 10_000 + b"\r\n")
    with connect(server) as slow:
        closed = False
        for byte in request:
            try:
                slow.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.01)
        assert closed, "the server was still reading after the whole slow request"


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(
    server: ServerProcess,
) -> None:
    with connect(server) as idle:
        assert read_until_closed(idle) == b""


def test_keep_alive_and_predictions_still_work(server: ServerProcess) -> None:
    body = json.dumps(ROW).encode()
    predict = (
        b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body) + body
    )
    with connect(server) as client:
        for _ in range(20):
            client.sendall(get())
            assert read_response(client)[0] == 200
            client.sendall(predict)
            status, answer = read_response(client)
            assert status == 200, answer
        # Idle between requests for longer than the header timeout: the keep-alive timeout
        # (uvicorn's 5 s), not the header timeout, applies there.
        time.sleep(1.5)
        client.sendall(get())
        assert read_response(client)[0] == 200
    with httpx.Client(base_url=server.url, timeout=PATIENCE) as session:
        for _ in range(20):
            assert session.post("/predict", json=ROW).status_code == 200
        # Bodies are not header bytes, however large the read that ends them.
        big = {"instances": ROW["instances"] * 8000}  # ~170 KiB, ten times MAX_HEADER_BYTES
        for _ in range(3):
            assert session.post("/predict", json=big).status_code == 200


@pytest.fixture
def capped(artifacts: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    """MAX_CONNECTIONS=20; a long header timeout so that idle connections stay open."""
    process = ServerProcess(
        artifacts,
        log_path=tmp_path / "server.log",
        model_name="iris",
        model_runtime="litert",
        max_connections=MAX_CONNECTIONS,
        header_timeout_seconds=PATIENCE,
    )
    with process:
        yield process


def outcome(connection: socket.socket) -> str:
    """Send /healthz on a connection and say what came of it: "served", or "refused" (503
    naming MAX_CONNECTIONS, or closed without an answer)."""
    try:
        connection.sendall(get())
        answer = read_until_closed_or_response(connection)
    except (BrokenPipeError, ConnectionResetError):
        return "refused"
    if answer.startswith(b"HTTP/1.1 200"):
        return "served"
    if answer:
        status, error, head = refusal(answer)
        assert status == 503 and "MAX_CONNECTIONS" in error, answer
        assert b"retry-after" in head.lower()
    return "refused"


def read_until_closed_or_response(connection: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            return data
        data += chunk
    if data.startswith(b"HTTP/1.1 200"):
        return data
    return data + read_until_closed(connection)


def test_connections_beyond_the_cap_are_refused_and_earlier_ones_served(
    capped: ServerProcess,
) -> None:
    """Open more idle connections than the cap, then ask /healthz on each: every one is served
    or refused; no more than the cap are served; the connection opened (and used) before them
    is served; closing some lets new ones in."""
    keeper = connect(capped)
    keeper.sendall(get())
    assert read_response(keeper)[0] == 200  # the server holds it open before the others come
    idle = [connect(capped) for _ in range(MAX_CONNECTIONS + 10)]
    try:
        keeper.sendall(get())
        assert read_response(keeper)[0] == 200
        outcomes = [outcome(connection) for connection in idle]
        served = outcomes.count("served")
        assert served <= MAX_CONNECTIONS - 1, outcomes  # the keeper holds one
        assert outcomes.count("refused") >= 11, outcomes
        keeper.sendall(get())
        assert read_response(keeper)[0] == 200
    finally:
        for connection in idle:
            connection.close()
    # With those closed, new connections are served again.
    wait_until(
        lambda: httpx.get(capped.url + "/healthz", timeout=PATIENCE).status_code == 200,
        "a new connection served after others closed",
        timeout=PATIENCE,
    )
    keeper.close()
    assert capped.log_path is not None
    log_path = capped.log_path
    wait_until(lambda: "MAX_CONNECTIONS" in log_path.read_text(), "the refusal logged", PATIENCE)


def test_two_workers_start_with_the_limits(artifacts: Path, tmp_path: Path) -> None:
    """uvicorn's workers import the protocol by its path."""
    process = ServerProcess(
        artifacts,
        log_path=tmp_path / "server.log",
        model_name="iris",
        model_runtime="litert",
        workers=2,
        max_headers=5,
    )
    with process:
        process.wait_for("/readyz", timeout=PATIENCE)
        with connect(process) as attack:
            attack.sendall(get(extra=b"".join(b"X-H%d: v\r\n" % i for i in range(10))))
            status, error, _ = refusal(read_until_closed(attack))
        assert status == 431 and "MAX_HEADERS (5)" in error
