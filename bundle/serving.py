"""``<artifacts>/<name>/serving.json``: a model's labels and traffic split, shared by replicas.

Written by the service's admin API (or by a retraining job, or a person) and read by every
replica's poll. It is replaced atomically (a temporary file in the same directory, fsynced, then
renamed over it), so a reader sees the old document or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import tempfile
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bundle.errors import BundleError
from bundle.layout import SERVING, TEMP_PREFIX

# A label is a lowercase word, as TF Serving's version labels are used: stable, canary, prod.
LABEL_PATTERN = re.compile(r"[a-z][a-z0-9_-]{0,62}")
MAX_SERVING_BYTES = 64 * 1024  # a document with a few labels is a few hundred bytes


class ServingConfig(BaseModel):
    """Which version each label names and how unversioned traffic is split."""

    # Strict: a hand-written "stable": true or "10" is refused, not read as 1 or 10.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    labels: dict[str, int] = Field(
        default_factory=dict, description="label to version; 'stable' takes unversioned requests"
    )
    canary_percent: float = Field(
        0.0, ge=0, le=100, description="share of unversioned requests sent to label 'canary'"
    )
    shadow_version: int | None = Field(
        None, ge=1, description="a version that scores the same rows after the answer is sent"
    )
    shadow_percent: float = Field(
        100.0, ge=0, le=100, description="share of unversioned requests the shadow scores"
    )

    @field_validator("labels")
    @classmethod
    def _labels_are_words(cls, labels: dict[str, int]) -> dict[str, int]:
        for label, version in labels.items():
            check_label(label)
            if type(version) is not int or version < 1:
                raise ValueError(f"label {label!r} must name a positive version number")
        return labels


def check_label(label: str) -> str:
    """``label`` if it is a valid label name, else ValueError naming the rule."""
    if not LABEL_PATTERN.fullmatch(label):
        raise ValueError(
            f"label {label[:64]!r} is not a label name: lowercase letters, digits, '-' and '_', "
            "starting with a letter, at most 63 characters"
        )
    return label


def serving_path(model_dir: Path) -> Path:
    return Path(model_dir) / SERVING


def read_serving(model_dir: Path) -> ServingConfig:
    """The model's serving.json, or the defaults when there is none; BundleError if it is
    unreadable, too large or not a valid document (naming what is wrong)."""
    path = serving_path(model_dir)
    try:
        # Non-blocking: a FIFO in its place must not hang the poll; it is refused below.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return ServingConfig()
    except OSError as exc:
        raise BundleError(f"{SERVING} cannot be read: {exc.strerror or exc}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise BundleError(f"{SERVING} is not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as file:
            content = file.read(MAX_SERVING_BYTES + 1)
    except OSError as exc:
        raise BundleError(f"{SERVING} cannot be read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(content) > MAX_SERVING_BYTES:
        raise BundleError(f"{SERVING} is larger than {MAX_SERVING_BYTES} bytes")
    try:
        return ServingConfig.model_validate(json.loads(content))
    except ValueError as exc:  # JSON or validation
        raise BundleError(f"{SERVING} is not valid: {first_error(exc)}") from None
    except RecursionError:  # thousands of nested brackets, within the size limit
        raise BundleError(f"{SERVING} is not valid: nested too deeply") from None


def write_serving(model_dir: Path, config: ServingConfig) -> None:
    """Replace serving.json atomically with ``config``."""
    directory = Path(model_dir)
    content = config.model_dump_json(indent=2).encode() + b"\n"
    fd, temporary = tempfile.mkstemp(prefix=TEMP_PREFIX + "serving-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, serving_path(directory))
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    # The new document is in place and every reader sees it from here on: a failure to make
    # the rename durable cannot be undone, so it is not reported as a failed write.
    with contextlib.suppress(OSError):
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def first_error(exc: ValueError) -> str:
    """The first problem of a JSON or validation error, as one line naming the field."""
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "document"
        return f"{where}: {first.get('msg', 'invalid')}"
    return str(exc).splitlines()[0][:200]
