"""uvicorn's httptools protocol with limits on what a client may hold before its request is routed.

uvicorn (0.54, httptools) bounds none of these: a header section of any size (httptools joins a
long header's pieces with ``+=``, quadratic, before the first callback sees it), any number of
headers, a client that never finishes its headers (slowloris), and any number of open
connections. Each limit here is cheap on the hot path: a few attribute operations per chunk read
and per header callback, and one timer armed and cancelled per request.

- MAX_HEADER_BYTES: the bytes read while a request's line and headers are incomplete (counted per
  chunk read, so httptools never buffers much more than one chunk past the limit), and the sum of
  the URL and header fields the parser hands over: beyond either, 431.
- MAX_HEADERS: header fields of one request: beyond it, 431.
- HEADER_TIMEOUT_SECONDS: from a connection's accept, and from the first byte of each later
  request, to the end of its headers: beyond it, 408 (a connection that sent nothing is closed
  without an answer).
- MAX_CONNECTIONS: open connections of this worker: a connection beyond it is answered 503 and
  closed at once.

A refused request is answered with a JSON body ``{"error": "..."}`` naming the limit and
``connection: close``; what the client still sends is read and dropped for up to
``LINGER_SECONDS`` so that its kernel does not reset the connection before the answer is read.

``python -m service`` selects this class by its import path (``HTTP_PROTOCOL``), so that each
worker of WORKERS > 1 imports it; the limits are read from the environment once per process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from functools import cache
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

HTTP_PROTOCOL = "service.protocol:GuardedHttpToolsProtocol"
LINGER_SECONDS = 2.0  # after a refusal, how long what the client still sends is read and dropped
WARN_EVERY_SECONDS = 10.0  # refusals are logged at most this often per kind, with their count

logger = logging.getLogger("service.protocol")


@dataclass(frozen=True)
class Limits:
    max_header_bytes: int
    max_headers: int
    header_timeout_seconds: float
    max_connections: int


@cache
def limits() -> Limits:
    """The limits from the environment (Settings), read once per process."""
    from service.settings import Settings

    held = logging.getLogger("service.settings")  # its warnings are logged by the app
    disabled, held.disabled = held.disabled, True
    try:
        settings = Settings()
    finally:
        held.disabled = disabled
    return Limits(
        settings.max_header_bytes,
        settings.max_headers,
        settings.header_timeout_seconds,
        settings.max_connections,
    )


class Refusals:
    """How many connections each limit refused in this process, and a rate-limited warning."""

    def __init__(self) -> None:
        self.counts = dict.fromkeys(("header_bytes", "headers", "header_timeout", "connections"), 0)
        self._unlogged: dict[str, int] = {}
        self._logged_at: dict[str, float] = {}

    def count(self, kind: str, message: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        from service.observability.metrics import get_metrics  # the worker's, made on first use

        get_metrics().connections_refused.labels(kind).inc()
        self._unlogged[kind] = self._unlogged.get(kind, 0) + 1
        now = time.monotonic()
        if now - self._logged_at.get(kind, -WARN_EVERY_SECONDS) >= WARN_EVERY_SECONDS:
            self._logged_at[kind] = now
            logger.warning(
                "%s (%d refused since the last such warning, %d in all)",
                message,
                self._unlogged.pop(kind),
                self.counts[kind],
            )


REFUSALS = Refusals()


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request that broke a limit."""


def _response(status: int, message: str, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    body = json.dumps({"error": message}).encode()
    content = [STATUS_LINE[status]]
    for name, value in default_headers:
        content += [name, b": ", value, b"\r\n"]
    if status == 503:
        content.append(b"retry-after: 1\r\n")
    content += [
        b"content-type: application/json\r\n",
        b"content-length: %d\r\n" % len(body),
        b"connection: close\r\n\r\n",
        body,
    ]
    return b"".join(content)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with header size, header count, header time and connection limits."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits()
        # Reading a request's line and headers: from the accept, and from each request's first
        # byte (counted from the start of the read it began in) to the end of its headers.
        self._in_headers = True
        self._read = 0  # bytes read while in the headers (per chunk)
        self._header_size = 0  # URL and header fields handed over by the parser
        self._header_count = 0
        self._begun = False  # a request's first byte came, its headers did not yet
        self._header_timer: asyncio.TimerHandle | None = None
        self._refusal: tuple[str, int, str] | None = None  # (kind, status, message) once refused
        self._linger_timer: asyncio.TimerHandle | None = None

    # Connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        cap = self.limits.max_connections
        if len(self.connections) >= cap:
            self._refusal = ("connections", 503, f"more than MAX_CONNECTIONS ({cap}) connections")
            self.transport = transport
            REFUSALS.count("connections", self._refusal[2])
            transport.write(_response(503, self._refusal[2], self.server_state.default_headers))
            transport.close()
            return
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        if self.flow is None:  # refused in connection_made: uvicorn's state was never set up
            self.parser = None  # type: ignore[assignment]
            return
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:
            return  # lingering after a refusal: drop what the client still sends
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            if self._refusal is not None:
                self._send_refusal()
                return
            message = "Invalid HTTP request received."
            self.logger.warning(message)
            self.send_400_response(message)
            return
        if self._in_headers:
            self._read += len(data)
            if self._read > self.limits.max_header_bytes:
                self._refuse_header_bytes()
                self._send_refusal()
        elif self._header_timer is None and (self.cycle is None or self.cycle.response_complete):
            # Bytes after a response that begin no request (blank lines, or a body the app did
            # not read) stopped the keep-alive timer: they must not hold the connection open.
            self._arm_header_timer()

    # Parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = self._begun = True
        self._read = self._header_size = self._header_count = 0
        if self._header_timer is None:
            self._arm_header_timer()

    def on_url(self, url: bytes) -> None:
        self._header_size += len(url)
        if self._header_size > self.limits.max_header_bytes:
            self._refuse_header_bytes()
            raise _Refused
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._header_size += len(name) + len(value) + 4  # ": " and CRLF
        if self._header_count > self.limits.max_headers:
            self._refusal = (
                "headers",
                431,
                f"more than MAX_HEADERS ({self.limits.max_headers}) request headers",
            )
            raise _Refused
        if self._header_size > self.limits.max_header_bytes:
            self._refuse_header_bytes()
            raise _Refused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_headers = self._begun = False
        self._read = 0
        self._cancel_header_timer()
        super().on_headers_complete()

    # Limits

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(
            self.limits.header_timeout_seconds, self._header_timeout
        )

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self._refusal is not None:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined request's headers behind a response still being written: wait for
            # it (after it, the keep-alive timer closes a connection that sends no more).
            self._arm_header_timer()
            return
        seconds = self.limits.header_timeout_seconds
        self._refusal = (
            "header_timeout",
            408,
            f"request headers not complete within HEADER_TIMEOUT_SECONDS ({seconds:g} s)",
        )
        if self._begun:
            self._send_refusal()
        else:  # no request begun (a new or idle connection): close without an answer
            REFUSALS.count("header_timeout", self._refusal[2])
            self.transport.close()

    def _refuse_header_bytes(self) -> None:
        self._refusal = (
            "header_bytes",
            431,
            f"request line and headers exceed MAX_HEADER_BYTES ({self.limits.max_header_bytes} "
            "bytes)",
        )

    def _send_refusal(self) -> None:
        """Answer the refusal, stop writing, and close once the client stops sending (at most
        LINGER_SECONDS later): closing at once with unread bytes would reset the connection."""
        assert self._refusal is not None
        kind, status, message = self._refusal
        REFUSALS.count(kind, message)
        self._cancel_header_timer()
        self._unset_keepalive_if_required()
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # an earlier request's response is cut short
            self.transport.close()
            return
        self.transport.write(_response(status, message, self.server_state.default_headers))
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self._linger_timer = self.loop.call_later(LINGER_SECONDS, self.transport.close)
        else:
            self.transport.close()
