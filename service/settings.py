"""Service configuration, read from the environment (names as in DESIGN.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the service; each field is read from the environment variable of its name."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    artifacts_dir: Path = Field(
        Path("artifacts"), description="Root of the bundles: <dir>/<name>/<version>/."
    )
    model_name: str = Field("iris", description="Which model under ARTIFACTS_DIR to serve.")
    model_version: int | None = Field(
        None, ge=1, description="Pin this version; unset serves the highest valid one and upgrades."
    )
    model_runtime: Literal["litert", "keras"] | None = Field(
        None,
        description="litert (no TensorFlow) or keras; unset picks litert when the bundle has it.",
    )
    missing_values: Literal["refuse", "impute"] = Field(
        "refuse",
        description="A blank (null, empty CSV cell) in a feature that had no blanks in training: "
        "refuse it (422), or impute it as training did (median, or the unseen category) with a "
        "warning. Blanks in features that had them in training are always answered.",
    )
    host: str = Field("127.0.0.1", description="Address to bind; the Docker image sets 0.0.0.0.")
    port: int = Field(8000, ge=0, le=65535, description="Port to bind.")
    grpc_port: int = Field(
        8081,
        ge=0,
        le=65535,
        description="Port of the gRPC Open Inference Protocol and health services; 0 turns gRPC off.",
    )
    workers: int = Field(
        1, ge=1, le=64, description="uvicorn worker processes; each loads the model."
    )
    api_key: SecretStr | None = Field(
        None, description="If set, prediction routes need 'Authorization: Bearer <key>'."
    )
    admin_token: SecretStr | None = Field(
        None, description="If set, enables /admin/* with 'Authorization: Bearer <token>'."
    )
    poll_seconds: float = Field(
        0.0, ge=0, description="Look for new versions this often (seconds); 0 turns polling off."
    )
    max_batch_rows: int = Field(
        10_000, ge=1, description="Most rows one request may carry (413 beyond)."
    )
    max_body_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Largest request body in bytes (413 beyond)."
    )
    batch_wait_ms: float = Field(
        0.0,
        ge=0,
        le=1000,
        description="Keras runtime: extra wait to grow a batch; 0 runs at once when the model is idle.",
    )
    max_concurrency: int = Field(
        256,
        ge=1,
        description="Requests in flight at once; beyond it requests get 503 and Retry-After.",
    )
    request_timeout_seconds: float = Field(
        30.0, gt=0, description="A prediction taking longer than this is answered 503."
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
        "OpenTelemetry SDK and providers, e.g. opentelemetry-instrument). Off, a request skips "
        "FastAPI's look-up of the three global providers.",
    )
    log_level: Literal["debug", "info", "warning", "error", "critical"] = Field(
        "info", description="Log level of the service and uvicorn."
    )

    @property
    def drain_seconds(self) -> float:
        """How long in-flight requests (HTTP and gRPC) may run after SIGTERM, so that the
        process is gone within SHUTDOWN_TIMEOUT_SECONDS: all but the second the exit takes
        (noticing the signal, the lifespan shutdown; measured at 0.2-0.3 s), half below 2 s."""
        timeout = self.shutdown_timeout_seconds
        return max(timeout - 1.0, timeout / 2)

    @property
    def model_dir(self) -> Path:
        """The directory holding every version of the served model."""
        return self.artifacts_dir / self.model_name
