"""Version directories: listing them and publishing a new one atomically."""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from bundle.layout import TEMP_PREFIX

# A model's directory name: what a URL path segment and a metric label can carry as is.
MODEL_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def list_models(artifacts: Path) -> list[str]:
    """Model directories under ``artifacts`` that hold at least one published version, sorted.

    A directory whose name is not a model name (hidden, staging, spaces) is not a model; nor is
    one with no version yet (a first training run still writing its staging directory)."""
    try:
        entries = list(Path(artifacts).iterdir())
    except OSError:  # missing, not a directory, unreadable: no model to serve from it
        return []
    return sorted(
        entry.name
        for entry in entries
        if MODEL_NAME_PATTERN.fullmatch(entry.name) and entry.is_dir() and list_versions(entry)
    )


def model_dir(artifacts: Path, name: str) -> Path:
    """The directory holding every version of one model."""
    return Path(artifacts) / name


def list_versions(directory: Path) -> list[int]:
    """Published versions under a model directory, ascending; staging directories are ignored.
    A directory that cannot be read (missing, or not ours to read) holds none."""
    try:
        entries = list(directory.iterdir())
    except OSError:
        return []
    versions = []
    for entry in entries:
        name = entry.name
        if name.isascii() and name.isdigit() and not name.startswith("0") and entry.is_dir():
            versions.append(int(name))
    return sorted(versions)


def new_staging_dir(directory: Path) -> Path:
    """Create an empty staging directory inside the model directory (same filesystem)."""
    directory.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=directory))


def _fsync_tree(root: Path) -> None:
    for path in [*root.rglob("*"), root]:
        _fsync_dir(path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish_version(staging: Path, directory: Path, finalize: Callable[[Path, int], None]) -> int:
    """Rename a staging directory to the next free version number and return that number.

    ``finalize(staging, version)`` writes what depends on the number (metadata, manifest)
    just before the rename. The rename is atomic, so readers see either no version or a
    complete one; a publisher that loses a race for a number finalizes again with the next.
    """
    staging.chmod(0o755)
    while True:
        version = max(list_versions(directory), default=0) + 1
        finalize(staging, version)
        _fsync_tree(staging)
        try:
            os.rename(staging, directory / str(version))
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                continue
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _fsync_dir(directory)
        return version
