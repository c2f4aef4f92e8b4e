"""The payload log sent to an HTTP sink as CloudEvents, the way KServe's inference logger sends it.

Each logged request becomes two events POSTed to ``PAYLOAD_LOG_URL`` in the binary content mode
of the CloudEvents HTTP binding (attributes in ``ce-*`` headers, the data as the JSON body): a
``org.kubeflow.serving.inference.request`` event with ``{"instances": inputs}`` and a
``org.kubeflow.serving.inference.response`` event with ``{"predictions": outputs}``. Both carry
the request id as ``ce-id``, as KServe's do, so a consumer pairs them by it; the model's name and
version travel as the ``model`` and ``modelversion`` extensions (and the name also as KServe's
``inferenceservicename``), so a collector written for KServe's logger reads these unchanged.
KServe logs no response for a failed request; we send one, ``{"error": ..., "status": ...}``,
because the failures are what monitoring most needs to see.

Sending never blocks an answer: :meth:`CloudEventsSink.submit` only appends to a bounded queue,
and one background thread sends the events over a reused connection, retrying a refused or
timed-out connection, a 5xx or a 429 a few times with exponential backoff. Records the queue has
no room for, records whose events still fail, and records left when the service stops are
dropped and counted (reasons "queue full", "failed", "shutdown"), never waited for. The standard
library's ``http.client`` does the HTTP: the service needs no HTTP client package for this.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import socket
import ssl
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlsplit

import orjson

log = logging.getLogger("service.cloudevents")

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
WARN_EVERY_SECONDS = 10.0  # delivery failures are logged at most this often, with their count
# The CloudEvents HTTP binding percent-encodes header values outside printable ASCII, and the
# space, '"' and '%': everything else in U+0021..U+007E is left as it is.
_HEADER_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"%')
_RETRIED_STATUSES = frozenset({429})  # besides every 5xx


class CloudEventsSink:
    """Sends each record as two CloudEvents (binary mode) to an HTTP endpoint, off the caller's
    thread."""

    def __init__(
        self,
        url: str,
        source: str,
        *,
        queue_size: int = 10_000,
        attempts: int = 3,
        timeout: float = 2.0,
        backoff: float = 0.1,
        on_sent: Callable[[], None] | None = None,
        on_dropped: Callable[[str, int], None] | None = None,
    ) -> None:
        """``url``: the sink (http or https); ``source``: the ``ce-source`` of every event;
        ``attempts``: tries per event; ``timeout``: seconds for each connect and each read;
        ``backoff``: seconds before the second try, doubled for each one after."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the CloudEvents sink URL must be http:// or https:// with a host")
        if parts.username is not None or parts.password is not None:
            raise ValueError("the CloudEvents sink URL must not carry credentials")
        if queue_size < 1 or attempts < 1:
            raise ValueError("queue_size and attempts must be at least 1")
        self.source = source
        self.queue_size = queue_size
        self.attempts = attempts
        self.timeout = timeout
        self.backoff = backoff
        self.on_sent = on_sent
        self.on_dropped = on_dropped
        https = parts.scheme == "https"
        self._tls = ssl.create_default_context() if https else None
        self._host = parts.hostname
        self._port = parts.port or (443 if https else 80)
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._where = f"{parts.scheme}://{parts.netloc}{parts.path}"  # for log lines
        self._queue: deque[Mapping[str, Any]] = deque()
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._closing = False
        self._in_flight = False  # the worker holds a record taken off the queue
        self._abandoned = threading.Event()  # close() gave up waiting: the worker stops at once
        self._thread: threading.Thread | None = None
        self._conn: http.client.HTTPConnection | None = None
        self._unlogged = 0
        self._logged_at = -WARN_EVERY_SECONDS

    def start(self) -> None:
        """Start the worker thread (a daemon: it never holds the process up)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="cloudevents-sink", daemon=True)
            self._thread.start()

    def submit(self, record: Mapping[str, Any]) -> bool:
        """Queue a record to send; never waits, never raises. False (and the record counted as
        dropped) when the queue is full or the sink is closing."""
        try:
            with self._lock:
                if self._closing:
                    reason = "shutdown"
                elif len(self._queue) >= self.queue_size:
                    reason = "queue full"
                else:
                    self._queue.append(record)
                    self._ready.notify()
                    return True
            self._dropped(reason, 1)
        except Exception:
            self._warn("could not queue a record for the CloudEvents sink", exc_info=True)
        return False

    def close(self, timeout: float) -> None:
        """Take no more records and send the queued ones for up to ``timeout`` seconds; the ones
        still unsent then are counted as dropped (reason "shutdown")."""
        with self._lock:
            self._closing = True
            self._ready.notify_all()
        thread = self._thread
        if thread is not None:
            thread.join(max(0.0, timeout))
            if not thread.is_alive():
                return
        with self._lock:
            left = len(self._queue) + self._in_flight
            self._queue.clear()
            self._in_flight = False
            self._abandoned.set()
        self._interrupt()
        if left:
            self._dropped("shutdown", left)

    def _run(self) -> None:
        try:
            while True:
                with self._lock:
                    while not self._queue and not self._closing:
                        self._ready.wait()
                    if not self._queue or self._abandoned.is_set():
                        return
                    record = self._queue.popleft()
                    self._in_flight = True
                try:
                    sent = self._send(record)
                except Exception:  # never let the worker die: the next record tries again
                    self._warn("could not send a record to the CloudEvents sink", exc_info=True)
                    sent = False
                with self._lock:
                    if not self._in_flight:  # close() counted it already
                        return
                    self._in_flight = False
                if sent:
                    self._call(self.on_sent)
                else:
                    self._dropped("failed", 1)
        finally:
            self._disconnect()

    def _send(self, record: Mapping[str, Any]) -> bool:
        """Both events of a record, the request first; False when one could not be delivered."""
        attributes = {
            "ce-specversion": "1.0",
            "ce-id": str(record.get("request_id") or uuid.uuid4().hex),
            "ce-source": self.source,
            "ce-time": _rfc3339(record.get("time")),
            "ce-model": record.get("model"),
            "ce-inferenceservicename": record.get("model"),
            "ce-modelversion": record.get("version"),
            "content-type": "application/json",
        }
        headers = {
            name: quote(str(value), safe=_HEADER_SAFE)
            for name, value in attributes.items()
            if value is not None
        }
        request = {"instances": record.get("inputs")}
        status, error = record.get("status"), record.get("error")
        if error is None and isinstance(status, int) and 200 <= status < 300:
            response: dict[str, Any] = {"predictions": record.get("outputs")}
        else:
            response = {"error": error, "status": status}
        for ce_type, data in ((REQUEST_TYPE, request), (RESPONSE_TYPE, response)):
            body = orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY)
            if not self._deliver({**headers, "ce-type": ce_type}, body):
                return False
        return True

    def _deliver(self, headers: dict[str, str], body: bytes) -> bool:
        """POST one event, retrying what may pass on a later try; True once the sink took it."""
        problem = ""
        for attempt in range(self.attempts):
            if attempt:
                self._abandoned.wait(self.backoff * 2 ** (attempt - 1))
            if self._abandoned.is_set():
                return False
            try:
                status = self._post(headers, body)
            except (OSError, http.client.HTTPException) as exc:
                problem = type(exc).__name__
                continue
            if 200 <= status < 300:
                return True
            problem = f"status {status}"
            if status < 500 and status not in _RETRIED_STATUSES:
                break  # the sink refuses this event: another try gets the same answer
        if not self._abandoned.is_set():
            self._warn(
                "CloudEvents sink %s did not take an event (%s, %d tries)",
                self._where,
                problem,
                attempt + 1,
            )
        return False

    def _post(self, headers: dict[str, str], body: bytes) -> int:
        fresh = self._conn is None
        try:
            return self._exchange(headers, body)
        except ConnectionError:
            if fresh or self._abandoned.is_set():
                raise
        # The sink had closed the idle connection we reused: one more try on a new one, not
        # counted as an attempt.
        return self._exchange(headers, body)

    def _exchange(self, headers: dict[str, str], body: bytes) -> int:
        """One POST on the kept connection (made first if there is none); the response status."""
        if self._conn is None:
            if self._tls is not None:
                self._conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self.timeout, context=self._tls
                )
            else:
                self._conn = http.client.HTTPConnection(
                    self._host, self._port, timeout=self.timeout
                )
        conn = self._conn
        try:
            conn.request("POST", self._path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()  # the whole answer, so the connection can carry the next event
        except BaseException:
            self._disconnect()
            raise
        if response.will_close:
            self._disconnect()
        return response.status

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _interrupt(self) -> None:
        """Wake the worker from a send the sink is not answering (called from close())."""
        conn = self._conn
        sock = getattr(conn, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _warn(self, message: str, *args: object, exc_info: bool = False) -> None:
        """A warning at most every WARN_EVERY_SECONDS, with how many were not logged."""
        # Unlocked: a race between threads can only misstate the count in a log line.
        self._unlogged += 1
        now = time.monotonic()
        if now - self._logged_at >= WARN_EVERY_SECONDS:
            self._logged_at = now
            unlogged, self._unlogged = self._unlogged, 0
            log.warning(
                f"{message} (%d such since the last warning)", *args, unlogged, exc_info=exc_info
            )

    def _dropped(self, reason: str, count: int) -> None:
        self._call(self.on_dropped, reason, count)

    def _call(self, callback: Callable[..., None] | None, *args: Any) -> None:
        if callback is None:
            return
        try:
            callback(*args)
        except Exception:
            self._warn("a CloudEvents sink counter failed", exc_info=True)


def _rfc3339(value: Any) -> str | None:
    """The record's time as CloudEvents writes it (RFC 3339), from a string or a datetime."""
    return value.isoformat() if isinstance(value, datetime) else value
