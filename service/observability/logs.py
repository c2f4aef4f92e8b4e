"""JSON-lines logging: one object per line, with the request id of the request being answered.

Lines reach stdout through :class:`JsonLinesHandler`: whole lines, one ``os.write`` each, so
that lines from several threads never interleave. The access line of each request skips the
``logging`` machinery (a record, a handler, a formatter: ~11 us a line) when the access
logger's records end at that handler alone, and the access lines of one event loop iteration
are written together, right after it (a system call costs as much as formatting a line); see
:class:`AccessLog`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

ACCESS_LOGGER = "service.access"


@dataclass(slots=True)
class RequestContext:
    """What the log line of a request needs from deeper code (set by the request middleware)."""

    request_id: str
    model_version: int | None = None
    model_name: str | None = None


current_request: ContextVar[RequestContext | None] = ContextVar("current_request", default=None)


def note_model(name: str, version: int | None = None) -> None:
    """Remember which model (and version) the current request is for (for its access line)."""
    context = current_request.get()
    if context is not None:
        context.model_name = name
        context.model_version = version


# A second and its date and time, "YYYY-MM-DDTHH:MM:SS." (one tuple: threads read a matching pair).
_second: tuple[int, str] = (-1, "")


def timestamp(created: float) -> str:
    """ISO 8601 UTC with milliseconds; the date and time part is formatted once a second."""
    global _second
    ms = int(created * 1000)
    second, prefix = _second
    if ms // 1000 != second:
        second = ms // 1000
        prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        _second = (second, prefix)
    return f"{prefix}{ms % 1000:03d}Z"


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", ...}``; access lines add their fields."""

    def timestamp(self, created: float) -> str:
        return timestamp(created)

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            document.update(fields)
        else:
            context = current_request.get()
            if context is not None:
                document["request_id"] = context.request_id
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(document, default=str).decode()


def write_line(fd: int, line: bytes) -> None:
    """Write ``line`` whole: one ``os.write`` unless the descriptor takes it in parts."""
    while line:
        line = line[os.write(fd, line) :]


class JsonLinesHandler(logging.Handler):
    """Each record as one line on a stream's file descriptor (stdout by default).

    A record is written at once, with one ``os.write``. Lines given to :meth:`write_soon` on
    the event loop's thread (the access lines) are written together when the loop next runs
    its callbacks: one system call for all the lines of a loop iteration instead of one each.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__()
        self.stream = sys.stdout if stream is None else stream
        try:
            self.stream.flush()  # whatever was printed before comes first
            self.fd: int | None = self.stream.fileno()
        except (AttributeError, OSError, ValueError):  # no descriptor (a test's capture)
            self.fd = None
        # Queued lines; only the event loop's thread touches them while it runs.
        self._pending: list[bytes] = []
        self._flush_loop: asyncio.AbstractEventLoop | None = None  # where a flush is scheduled
        self._loop_thread: int | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record) + "\n"
            if self.fd is None:
                self.stream.write(text)
                self.stream.flush()
            elif self._pending and threading.get_ident() == self._loop_thread:
                self._write_pending(text.encode())  # after the lines queued before it
            else:
                write_line(self.fd, text.encode())
        except Exception:
            self.handleError(record)

    def write_soon(self, line: bytes) -> None:
        """Queue ``line`` (whole, with its newline), written with the others of this loop
        iteration. Call on the event loop's thread, on a handler with a descriptor."""
        loop = asyncio.get_running_loop()  # raises outside the loop, before anything is queued
        self._pending.append(line)
        if self._flush_loop is not loop:
            self._flush_loop = loop
            self._loop_thread = threading.get_ident()
            loop.call_soon(self._write_pending)

    def _write_pending(self, last: bytes = b"") -> None:
        self._flush_loop = None
        lines, self._pending = self._pending, []
        if lines or last:
            assert self.fd is not None
            try:
                write_line(self.fd, b"".join(lines) + last)
            except Exception:
                self.handleError(logging.makeLogRecord({"msg": f"{len(lines)} access lines"}))

    def flush(self) -> None:
        """Write the queued lines (``logging.shutdown`` calls it at exit)."""
        if self._pending:
            self._write_pending()


def _direct_handler(logger: logging.Logger) -> JsonLinesHandler | None:
    """The handler the logger's INFO records end at, when writing a line to it directly gives
    exactly what ``logger.info`` would: no filter, and a single handler, a
    :class:`JsonLinesHandler` with a :class:`JsonFormatter` and a descriptor. Else None."""
    if logger.filters:
        return None
    handlers: list[logging.Handler] = []
    current: logging.Logger | None = logger
    while current is not None:
        handlers += current.handlers
        current = current.parent if current.propagate else None
    if len(handlers) != 1:
        return None
    handler = handlers[0]
    if (
        type(handler) is JsonLinesHandler
        and handler.fd is not None
        and type(handler.formatter) is JsonFormatter
        and not handler.filters
        and handler.level <= logging.INFO
    ):
        return handler
    return None


class AccessLog:
    """The access line of each answered request: logger ``service.access``, level INFO.

    Queued straight on the handler (:meth:`JsonLinesHandler.write_soon`) when the logging
    configuration is the service's own (:func:`log_config`, as ``python -m service`` runs it),
    through ``logging`` otherwise (tests capturing records, an operator's configuration).
    Decided when made; the lines are the same either way.
    """

    def __init__(self) -> None:
        self.logger = logging.getLogger(ACCESS_LOGGER)
        self.handler = _direct_handler(self.logger)

    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def write(
        self,
        request_id: str,
        method: str,
        route: str,
        path: str,
        status: int,
        seconds: float,
        model_version: int | None,
        model: str | None = None,
    ) -> None:
        """The line of one answered request (``path`` as the client sent it, cut to 200)."""
        message = f"{method} {route} {status}"
        document = {
            "time": timestamp(time.time()),
            "level": "info",
            "logger": ACCESS_LOGGER,
            "message": message,
            "request_id": request_id,
            "method": method,
            "route": route,
            "path": path[:200],
            "status": status,
            "duration_ms": round(seconds * 1_000_000) / 1000,  # 3 decimals
            "model": model,
            "model_version": model_version,
        }
        if self.handler is not None:
            try:
                self.handler.write_soon(orjson.dumps(document, option=orjson.OPT_APPEND_NEWLINE))
                return
            except Exception:  # logging reports it the usual way, below
                pass
        fields = dict(list(document.items())[4:])  # the record gives time, level, logger, message
        # makeRecord + handle: Logger.info would also walk the stack for the caller.
        self.logger.handle(
            self.logger.makeRecord(
                ACCESS_LOGGER, logging.INFO, "", 0, message, (), None, extra={"fields": fields}
            )
        )


def log_config(level: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` (uvicorn's ``log_config``): JSON lines on stdout for the
    service's and uvicorn's loggers at ``level``; uvicorn's own access log is off (ours replaces it)."""
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "service.observability.logs.JsonFormatter"}},
        "handlers": {
            "stdout": {
                "class": "service.observability.logs.JsonLinesHandler",
                "formatter": "json",
                "stream": "ext://sys.stdout",
            }
        },
        "loggers": {
            "service": {"handlers": ["stdout"], "level": level, "propagate": False},
            "uvicorn": {"handlers": ["stdout"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }
