"""Domain errors that know their HTTP status; the model code never imports FastAPI."""

from __future__ import annotations


class ServiceError(Exception):
    """An error answered to the client as ``{"error": message}`` with ``status_code``."""

    status_code = 500

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code


class InvalidInput(ServiceError):
    """The request body is well-formed but does not fit the model (422)."""

    status_code = 422


class MalformedBody(ServiceError):
    """The body is not valid JSON or CSV (400)."""

    status_code = 400


class PayloadTooLarge(ServiceError):
    """The body or the number of rows exceeds a limit (413)."""

    status_code = 413


class UnsupportedMediaType(ServiceError):
    """The Content-Type is not one we read (415)."""

    status_code = 415


class Unauthorized(ServiceError):
    """A missing or wrong bearer token (401)."""

    status_code = 401


class NotFound(ServiceError):
    """An unknown model name or version (404)."""

    status_code = 404


class Conflict(ServiceError):
    """An admin action that cannot be done in the current state (409)."""

    status_code = 409


class ModelNotReady(ServiceError):
    """No verified model is loaded (503)."""

    status_code = 503


class Overloaded(ServiceError):
    """Too many requests in flight, or a prediction timed out (503 with Retry-After)."""

    status_code = 503


class BundleRejected(Exception):
    """A bundle version failed verification; never served. Not an HTTP error by itself."""
