"""Service configuration, read from the environment (names as in DESIGN.md)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the service; each field is read from the environment variable of its name."""

    model_config = SettingsConfigDict(
        env_prefix="", case_sensitive=False, extra="ignore", hide_input_in_errors=True
    )

    artifacts_dir: Path = Field(
        Path("artifacts"), description="Root of the bundles: <dir>/<name>/<version>/."
    )
    model_name: str = Field(
        "*",
        description="The models to serve: one name, a comma-separated list (`iris,penguins`: "
        "every one must be ready for `/readyz`), or `*` (or empty): every model "
        "directory under `ARTIFACTS_DIR`, including ones that appear later (with "
        "polling).",
    )
    default_model: str | None = Field(
        None,
        description="The model `/predict`, `/model`, `/admin/reload` and `/admin/rollback` act "
        "on; unset, the only model served. With several models and none named, "
        "`/predict` answers 404 listing them: set it in production.",
    )
    model_version: int | None = Field(
        None,
        ge=1,
        description="Pin this version of every model; unset serves the highest valid one (and, "
        "with polling, upgrades).",
    )
    model_versions: str = Field(
        "latest",
        description="Versions loaded and answerable at once: `latest` (the newest valid one, and "
        "the one it replaced after a swap), `latest:N` (the N newest), `all`, or a "
        "list such as `1,3` (only those); versions a label or the shadow names are "
        "always loaded.",
    )
    model_runtime: Literal["litert", "keras"] | None = Field(
        None,
        description="`litert` (no TensorFlow) or `keras`; unset picks `litert` when the bundle "
        "has `model.tflite` and ai-edge-litert is installed.",
    )
    missing_values: Literal["refuse", "impute"] = Field(
        "refuse",
        description="A blank (JSON `null`, an empty CSV cell) in a feature that had no blanks in "
        "training: `refuse` answers 422 naming the feature; `impute` answers it as "
        "training would (the median, or the unseen category) with a warning. Blanks "
        "in features that had them in training are always answered, with a warning.",
    )
    host: str = Field("127.0.0.1", description="Address to bind; the Docker image sets `0.0.0.0`.")
    port: int = Field(8000, ge=0, le=65535, description="Port to bind.")
    grpc_port: int = Field(
        8081,
        ge=0,
        le=65535,
        description="Port of the gRPC Open Inference Protocol and `grpc.health.v1` services (same"
        " `HOST`); `0` turns gRPC off.",
    )
    workers: int = Field(
        1, ge=1, le=64, description="uvicorn worker processes; each loads the model."
    )
    api_key: SecretStr | None = Field(
        None,
        description="If set, prediction routes need `Authorization: Bearer <key>` (401 otherwise;"
        " gRPC: the `authorization` metadata of ModelInfer); health routes stay open."
        " Visible ASCII only: empty, blank, or inner whitespace/control/non-ASCII "
        "characters stop the start (exit 2); surrounding whitespace (a key file's "
        "newline) is removed with a warning.",
    )
    admin_token: SecretStr | None = Field(
        None,
        description="If set, enables `/admin/*` with `Authorization: Bearer <token>`; same rules "
        "as `API_KEY` (empty or blank stops the start: unset it to turn the admin "
        "routes off).",
    )
    poll_seconds: float = Field(
        0.0,
        ge=0,
        description="Look for new versions this often (seconds); `0` turns polling off (a version"
        " published later is not picked up).",
    )
    max_batch_rows: int = Field(
        10_000, ge=1, description="Most rows one request may carry (413 beyond)."
    )
    max_explain_rows: int = Field(
        100, ge=1, description="Most rows one /explain request may carry (413 beyond)."
    )
    explain_evaluations: int = Field(
        8192,
        ge=64,
        le=1 << 22,
        description="Model rows evaluated per explained row: Shapley values are exact when every "
        "coalition fits (`2**features`; the background summarised to fit), sampled "
        "with an error bound beyond.",
    )
    payload_log_dir: Path | None = Field(
        None,
        description="Write one JSON line per request (inputs, outputs, warnings, error) to "
        "payloads-<pid>.jsonl here, rotated by size; unset: no payload log.",
    )
    payload_log_sample: float = Field(
        1.0,
        ge=0,
        le=1,
        description="Share of requests the payload log (and its CloudEvents) keeps.",
    )
    payload_log_url: str | None = Field(
        None,
        pattern=r"^https?://[^\s]+$",
        description="Also send each logged request as CloudEvents (binary mode, as KServe's "
        "logger) to this http(s) URL; unset: none.",
    )
    payload_log_max_bytes: int = Field(
        64 * 1024 * 1024, ge=4096, description="Rotate the payload log file beyond this size."
    )
    payload_log_files: int = Field(
        10, ge=1, description="Rotated payload log files kept per worker (the oldest removed)."
    )
    drift_window: int = Field(
        1000,
        ge=0,
        le=1_000_000,
        description="Rows per model version kept for feature drift (PSI against training); `0` "
        "turns it off.",
    )
    max_body_bytes: int = Field(
        8 * 1024 * 1024,
        ge=1024,
        description="Largest request body, with or without `Content-Length` (413 beyond), and "
        "largest gRPC message (RESOURCE_EXHAUSTED).",
    )
    batch_wait_ms: float = Field(
        0.0,
        ge=0,
        le=1000,
        description="Keras runtime: extra wait to grow a batch; `0` runs at once when the model "
        "is idle.",
    )
    max_concurrency: int = Field(
        256,
        ge=1,
        description="Prediction requests in flight at once, REST and gRPC together; beyond it, "
        "503 with `Retry-After` (gRPC: UNAVAILABLE).",
    )
    request_timeout_seconds: float = Field(
        30.0,
        gt=0,
        description="A prediction taking longer (from its arrival) is answered 503; a prediction "
        "whose body has not fully arrived by then is answered 408. The body is read "
        "before the request takes one of the `MAX_CONCURRENCY` slots, so slow or "
        "stalled uploads never hold one.",
    )
    shutdown_timeout_seconds: float = Field(
        20.0,
        gt=0,
        description="On SIGTERM, finish the requests in flight and exit within this many "
        "seconds; requests get all but the last second (half of it, below 2 s).",
    )
    artifact_signing_key: SecretStr | None = Field(
        None,
        description="If set, only bundles whose manifest carries a valid HMAC-SHA256 are served.",
    )
    otel_telemetry: bool = Field(
        False,
        description="FastAPI's native OpenTelemetry spans, metrics and logs (they need an "
        "OpenTelemetry SDK and providers, e.g. `opentelemetry-instrument`); off, "
        "requests skip FastAPI's look-up of the three global providers, and the "
        "service warns at start if an `OTEL_*` variable or "
        "`FASTAPI_OTEL_AUTO_CONFIGURE=true` is set.",
    )
    log_level: Literal["debug", "info", "warning", "error", "critical"] = Field(
        "info",
        description="`debug`, `info`, `warning`, `error` or `critical`, for the service and "
        "uvicorn.",
    )
    max_header_bytes: int = Field(
        64 * 1024,
        ge=1024,
        description="Largest request line and header section; beyond it 431 and the connection "
        "closed, before any route or auth runs (counted as the bytes arrive: a huge "
        "header is never buffered).",
    )
    max_headers: int = Field(
        100,
        ge=1,
        description="Most header fields one request may carry (431 beyond, and the connection "
        "closed).",
    )
    header_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="A request's line and headers must arrive within this many seconds of its "
        "first byte (a new connection: of being accepted); else 408 and the "
        "connection closed (a connection that sent nothing is closed without an "
        "answer).",
    )
    max_connections: int = Field(
        1000,
        ge=1,
        description="Open HTTP connections per worker; a connection beyond it is answered 503 and"
        " closed at once. Keep `WORKERS` times this below the open-files limit "
        "(`ulimit -n`).",
    )

    @field_validator("model_name")
    @classmethod
    def _model_names(cls, value: str) -> str:
        model_names(value)
        return value

    @field_validator("default_model")
    @classmethod
    def _default_model(cls, value: str | None) -> str | None:
        if value is not None and value.strip():
            names = model_names(value)
            if names is None or len(names) != 1:
                raise ValueError("DEFAULT_MODEL names one model")
            return names[0]
        return None

    @field_validator("api_key", "admin_token")
    @classmethod
    def _bearer_secret(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        """API_KEY and ADMIN_TOKEN: what a client sends after ``Bearer``. Empty or blank is
        refused (it would not protect anything); the whitespace around a key read from a file
        (``$(cat keyfile)``, a Secret made from a file: a trailing newline) is removed with a
        warning; whitespace, control or non-ASCII characters inside the key are refused: no
        client could send them in an HTTP header or gRPC metadata."""
        if value is None:
            return None
        name = (info.field_name or "").upper()
        secret = value.get_secret_value()
        stripped = secret.strip()
        if not stripped:
            unset = (
                "to serve prediction routes without a key"
                if name == "API_KEY"
                else "to turn the admin routes off"
            )
            raise ValueError(f"empty or only whitespace: set a token, or unset {name} {unset}")
        if not all("!" <= char <= "~" for char in stripped):
            raise ValueError(
                "contains whitespace, a control character or a non-ASCII character: a bearer "
                "token is visible ASCII characters (letters, digits, punctuation) only"
            )
        if stripped == secret:
            return value
        logging.getLogger(__name__).warning(
            "%s had whitespace around it (a key file's trailing newline?): it was removed; "
            "clients send the token without it",
            name,
        )
        return SecretStr(stripped)

    @field_validator("model_versions")
    @classmethod
    def _model_versions(cls, value: str) -> str:
        VersionPolicy.parse(value)
        return value

    @property
    def served_names(self) -> tuple[str, ...] | None:
        """The models MODEL_NAME lists, or None for every model directory."""
        return model_names(self.model_name)

    @property
    def version_policy(self) -> VersionPolicy:
        return VersionPolicy.parse(self.model_versions)

    @property
    def drain_seconds(self) -> float:
        """How long in-flight requests (HTTP and gRPC) may run after SIGTERM, so that the
        process is gone within SHUTDOWN_TIMEOUT_SECONDS: all but the second the exit takes
        (noticing the signal, the lifespan shutdown; measured at 0.2-0.3 s), half below 2 s."""
        timeout = self.shutdown_timeout_seconds
        return max(timeout - 1.0, timeout / 2)


def model_names(value: str) -> tuple[str, ...] | None:
    """MODEL_NAME as a tuple of names; None for every model (``*`` or blank)."""
    from bundle import MODEL_NAME_PATTERN

    value = value.strip()
    if value in ("", "*"):
        return None
    names = tuple(dict.fromkeys(part.strip() for part in value.split(",")))
    for name in names:
        if not MODEL_NAME_PATTERN.fullmatch(name):
            raise ValueError(
                f"{name[:64]!r} is not a model name: letters, digits, '.', '-' and '_', "
                "starting with a letter or digit, at most 128 characters"
            )
    return names


@dataclass(frozen=True)
class VersionPolicy:
    """MODEL_VERSIONS: which versions of a model are loaded besides labelled ones."""

    kind: Literal["latest", "all", "list"]
    count: int = 1  # latest:N
    versions: tuple[int, ...] = ()  # a list

    @classmethod
    def parse(cls, value: str) -> VersionPolicy:
        text = value.strip().lower()
        if text in ("", "latest"):
            return cls("latest")
        if text == "all":
            return cls("all")
        if text.startswith("latest:"):
            count = text.removeprefix("latest:")
            if count.isascii() and count.isdigit() and 1 <= int(count) <= 1000:
                return cls("latest", count=int(count))
            raise ValueError(f"MODEL_VERSIONS {value[:40]!r}: latest:N needs N from 1 to 1000")
        parts = [part.strip() for part in text.split(",")]
        if all(p.isascii() and p.isdigit() and not p.startswith("0") for p in parts):
            return cls("list", versions=tuple(sorted({int(p) for p in parts}, reverse=True)))
        raise ValueError(
            f"MODEL_VERSIONS {value[:40]!r} is not latest, latest:N, all or a list of versions "
            "such as 1,3"
        )
