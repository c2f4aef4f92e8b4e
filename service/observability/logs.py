"""JSON-lines logging: one object per line, with the request id of the request being answered."""

from __future__ import annotations

import logging
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

ACCESS_LOGGER = "service.access"


@dataclass(slots=True)
class RequestContext:
    """What the log line of a request needs from deeper code (set by the request middleware)."""

    request_id: str
    model_version: int | None = None


current_request: ContextVar[RequestContext | None] = ContextVar("current_request", default=None)


def note_model_version(version: int) -> None:
    """Remember which model version answered the current request (for its access log line)."""
    context = current_request.get()
    if context is not None:
        context.model_version = version


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", ...}``; access lines add their fields."""

    _second = -1
    _prefix = ""

    def timestamp(self, created: float) -> str:
        """ISO 8601 UTC with milliseconds; the date and time part is formatted once a second."""
        second = int(created)
        if second != self._second:
            self._prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._second = second
        return f"{self._prefix}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": self.timestamp(record.created),
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
                "class": "logging.StreamHandler",
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
