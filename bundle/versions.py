"""Version directories: listing them and publishing a new one atomically."""

from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
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
        if MODEL_NAME_PATTERN.fullmatch(entry.name) and _is_dir(entry) and list_versions(entry)
    )


def _is_dir(path: Path) -> bool:
    """``path.is_dir()``, False when it cannot be looked at (Path.is_dir raises on EACCES)."""
    try:
        return path.is_dir()
    except OSError:
        return False


def model_dir(artifacts: Path, name: str) -> Path:
    """The directory holding every version of one model."""
    return Path(artifacts) / name


@dataclass(frozen=True)
class VersionScan:
    """What a model directory holds: its published versions, the numbered entries that are
    symbolic links (never a version: a version is a real directory under ARTIFACTS_DIR), and
    why the directory could not be read, if it could not (a missing one is simply empty)."""

    versions: list[int] = field(default_factory=list)
    symlinks: list[int] = field(default_factory=list)
    error: str | None = None


def scan_versions(directory: Path) -> VersionScan:
    """List a model directory without following any link: entries are looked at with lstat."""
    try:
        entries = list(Path(directory).iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return VersionScan()
    except OSError as exc:
        return VersionScan(error=f"{directory} cannot be read: {exc.strerror or exc}")
    versions, symlinks = [], []
    for entry in entries:
        name = entry.name
        if not (name.isascii() and name.isdigit() and not name.startswith("0")):
            continue
        try:
            mode = entry.lstat().st_mode
        except OSError:  # vanished, or cannot be looked at: not a version
            continue
        if stat.S_ISLNK(mode):
            symlinks.append(int(name))
        elif stat.S_ISDIR(mode):
            versions.append(int(name))
    return VersionScan(sorted(versions), sorted(symlinks))


def list_versions(directory: Path) -> list[int]:
    """Published versions under a model directory, ascending; staging directories are ignored,
    and so are symbolic links (never followed). A directory that cannot be read (missing, or
    not ours to read) holds none: :func:`scan_versions` says why."""
    return scan_versions(directory).versions


# A staging directory older than this (by mtime) that no publisher holds locked is the leftover
# of a killed run (SIGKILL, power loss) and is removed by the next run that stages a version.
STALE_STAGING_SECONDS = 3600.0


def lock_staging(path: Path, blocking: bool = True) -> int | None:
    """Lock a staging directory (``flock``) for as long as the returned descriptor is open: a
    publisher holds it until it publishes or gives up, and :func:`remove_stale_staging` never
    removes a locked directory. None when another process holds it (``blocking=False``) or the
    filesystem has no locks; the kernel releases it when the holder dies, even by SIGKILL."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except OSError:
        os.close(fd)
        return None
    return fd


def remove_stale_staging(
    directory: Path, max_age: float = STALE_STAGING_SECONDS, now: float | None = None
) -> list[Path]:
    """Remove the staging directories under a model directory that are older than ``max_age``
    seconds by mtime and that no publisher holds locked; return those removed.

    Symbolic links and files (``serving.json``'s temporary files) are left alone; a directory
    that is in use, too recent, or cannot be locked is kept. Never raises."""
    removed: list[Path] = []
    try:
        with os.scandir(directory) as iterator:
            entries = [e for e in iterator if e.name.startswith(TEMP_PREFIX)]
    except OSError:
        return removed
    now = time.time() if now is None else now
    for entry in entries:
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISDIR(info.st_mode) or now - info.st_mtime < max_age:
            continue
        path = Path(entry.path)
        try:
            fd = lock_staging(path, blocking=False)
        except OSError:  # gone meanwhile, or replaced by a link
            continue
        if fd is None:  # a publisher still holds it
            continue
        try:
            shutil.rmtree(path, ignore_errors=True)
        finally:
            os.close(fd)
        if not os.path.lexists(path):
            removed.append(path)
    return removed


def new_staging_dir(directory: Path) -> Path:
    """Create an empty staging directory inside the model directory (same filesystem), after
    removing the stale ones killed runs left (:func:`remove_stale_staging`)."""
    directory.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(directory)
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
        scan = scan_versions(directory)  # a number a link holds is taken too
        version = max([*scan.versions, *scan.symlinks], default=0) + 1
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
