"""Slow bodies hold no prediction slot (issue 18, item 4), against a real server process.

The attack: many clients send a prediction's headers and then its body a byte at a time (or
never). Each used to take one of the MAX_CONCURRENCY slots while its body arrived, so a few
hundred of them made every valid prediction a 503. A body is now read before its request is
admitted: the stalled clients hold their own connections until REQUEST_TIMEOUT_SECONDS, then get
408, and valid predictions are answered meanwhile.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import TLS, ServerProcess, metric, wait_until

HOLD = 60.0
STALLED = 6  # three times MAX_CONCURRENCY below
ROW = {"instances": [[5.1, 3.5, 1.4, 0.2]]}
# Real server processes, and waits for REQUEST_TIMEOUT_SECONDS to pass.
pytestmark = pytest.mark.slow


def gauge(server: ServerProcess, name: str, **labels: str) -> float:
    return metric(server.url, name, **labels)


def start(artifacts: Path, log: Path, request_timeout_seconds: float) -> ServerProcess:
    process = ServerProcess(
        artifacts,
        log_path=log,
        model_name="iris",
        model_runtime="litert",
        max_concurrency=2,
        request_timeout_seconds=request_timeout_seconds,
    )
    process.start(wait="/readyz", timeout=HOLD)
    return process


@pytest.fixture
def server(artifacts_copy: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    """REQUEST_TIMEOUT_SECONDS=5: time enough for the predictions made while clients stall."""
    process = start(artifacts_copy, tmp_path / "server.log", 5)
    yield process
    process.stop()


@pytest.fixture
def quick_server(artifacts_copy: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    """REQUEST_TIMEOUT_SECONDS=1, for what happens after a 408 (which only has to come)."""
    process = start(artifacts_copy, tmp_path / "server.log", 1)
    yield process
    process.stop()


def stalled_client(server: ServerProcess, sent_body: bytes) -> socket.socket:
    """A connection that sent a prediction's headers (announcing 100 bytes of body) and only
    ``sent_body`` of it."""
    connection = socket.create_connection(("127.0.0.1", server.port), timeout=HOLD)
    connection.sendall(
        b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n" + sent_body
    )
    return connection


def answer_of(connection: socket.socket) -> bytes:
    chunks = []
    while True:
        chunk = connection.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        if b"\r\n\r\n" in b"".join(chunks) and b"}" in chunks[-1]:
            break
    return b"".join(chunks)


def test_stalled_bodies_take_no_slot_and_get_408(server: ServerProcess) -> None:
    # Half of them sent part of the body, half only the headers.
    stalled = [
        stalled_client(server, b'{"instances": [[5.1, ' if i % 2 else b"") for i in range(STALLED)
    ]
    try:
        wait_until(
            lambda: gauge(server, "http_request_bodies_arriving") == STALLED // 2,
            "the partial bodies arriving",
            HOLD,
        )
        # Three times MAX_CONCURRENCY clients are stalled; predictions are still answered.
        for _ in range(5):
            response = httpx.post(server.url + "/predict", json=ROW, timeout=HOLD, verify=TLS)
            assert response.status_code == 200, response.text
        assert gauge(server, "http_predictions_in_flight") == 0
        # Each stalled client gets its 408 once REQUEST_TIMEOUT_SECONDS has passed.
        for connection in stalled:
            answer = answer_of(connection)
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
            assert (
                b'{"error":"the request body did not arrive within REQUEST_TIMEOUT_SECONDS=5"}'
                in answer
            )
    finally:
        for connection in stalled:
            connection.close()
    assert gauge(server, "http_overload_rejections_total", reason="slow body") == STALLED
    assert gauge(server, "http_request_bodies_arriving") == 0
    # and no prediction was refused for want of a slot
    assert gauge(server, "http_overload_rejections_total", reason="concurrency") == 0


def test_a_client_still_sending_after_its_408_is_disconnected(quick_server: ServerProcess) -> None:
    """The 408 says ``Connection: close`` and the server closes at once: a client dripping the
    rest of its body does not keep the connection for as long as it likes."""
    connection = stalled_client(quick_server, b'{"instances": ')
    try:
        connection.settimeout(0.5)
        deadline = time.monotonic() + HOLD
        answer = b""
        while b"\r\n\r\n" not in answer and time.monotonic() < deadline:
            connection.sendall(b" ")  # a byte of body every half second
            with contextlib.suppress(TimeoutError):
                answer += connection.recv(65536)
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        assert b"connection: close" in answer.lower()
        answered = time.monotonic()
        closed = False
        while not closed and time.monotonic() < answered + 3:
            try:
                connection.sendall(b" ")
                closed = connection.recv(65536) == b""
            except TimeoutError:
                pass
            except OSError:  # reset: closed too
                closed = True
        assert closed, "the server kept the connection open after its 408"
    finally:
        connection.close()
