"""Write a bundle into a staging directory and publish it as the next version."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import bundle
from training.errors import TrainingError


@contextmanager
def staging_area(artifacts: Path, name: str) -> Iterator[Path]:
    """A fresh staging directory under ``artifacts/name``; removed unless it was published."""
    directory = bundle.model_dir(artifacts, name)
    try:
        staging = bundle.new_staging_dir(directory)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise TrainingError(f"cannot write to artifacts directory {artifacts}: {reason}") from None
    # Held until the run publishes or gives up: another run's clean-up of stale staging
    # directories (bundle.versions.remove_stale_staging) never removes this one, however long
    # training takes. The kernel drops the lock if this process is killed.
    lock = bundle.versions.lock_staging(staging)
    try:
        yield staging
    finally:
        if os.path.lexists(staging):
            shutil.rmtree(staging, ignore_errors=True)
        if lock is not None:
            os.close(lock)


def publish(
    staging: Path, artifacts: Path, metadata: bundle.Metadata, signing_key: str | None
) -> Path:
    """Write metadata and manifest for the next version number, then rename into place."""

    def finalize(directory: Path, version: int) -> None:
        metadata.version = version
        bundle.write_metadata(directory, metadata)
        bundle.write_manifest(directory, signing_key)

    model_dir = bundle.model_dir(artifacts, metadata.name)
    try:
        version = bundle.publish_version(staging, model_dir, finalize)
    except bundle.BundleError as exc:
        raise TrainingError(f"cannot publish into {model_dir}: {exc}") from None
    except OSError as exc:
        raise TrainingError(f"cannot publish into {model_dir}: {exc.strerror or exc}") from None
    return model_dir / str(version)
