"""Local CloudEvents sinks for tests: an HTTP server that records what it receives, and a socket
that accepts and never answers (fixtures ``serve`` and ``stalled``, registered in conftest)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: Any
    client_port: int


class SinkServer(ThreadingHTTPServer):
    """Records every request; answers with ``respond(n)`` for the n-th (from 1)."""

    daemon_threads = True

    def __init__(self, respond: Callable[[int], int], close_silently: bool = False) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.respond = respond
        self.close_silently = close_silently  # drop the connection after each answer, unsaid
        self.received: list[Received] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/events"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so the sink can reuse its connection
    server: SinkServer

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        headers = {name.lower(): value for name, value in self.headers.items()}
        with self.server.lock:
            self.server.received.append(Received(self.path, headers, body, self.client_address[1]))
            status = self.server.respond(len(self.server.received))
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()
        self.close_connection = self.server.close_silently

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def serve() -> Iterator[Callable[..., SinkServer]]:
    """Start sink servers in threads; all are stopped after the test."""
    servers: list[SinkServer] = []

    def start(respond: Callable[[int], int] = lambda n: 200, **options: Any) -> SinkServer:
        server = SinkServer(respond, **options)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@dataclass
class Stalled:
    """A sink that accepts connections and reads requests, but never answers."""

    url: str
    got_bytes: threading.Event


@pytest.fixture
def stalled() -> Iterator[Stalled]:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    connections: list[socket.socket] = []
    got_bytes = threading.Event()
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            connections.append(conn)
            conn.settimeout(5)
            if conn.recv(65536):
                got_bytes.set()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield Stalled(f"http://127.0.0.1:{listener.getsockname()[1]}/", got_bytes)
    stop.set()
    thread.join(10)
    for conn in connections:
        conn.close()
    listener.close()
