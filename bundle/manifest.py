"""``manifest.json``: the sha256 of every other file, optionally signed with HMAC-SHA256."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
from pathlib import Path

from bundle.errors import BundleError
from bundle.layout import MANIFEST

_CHUNK = 1 << 20

# manifest.json lists one digest per file: about 600 bytes for a trained bundle. It is read
# whole, so a larger one (a padded file, a link to /dev/zero) is refused before it is read.
MAX_MANIFEST_BYTES = 1 << 20


def read_capped(path: Path, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes, without following a link.

    Raises :class:`FileNotFoundError` when it is missing and :class:`BundleError` naming the
    file and the limit when it is larger, a link or not a regular file; other OSErrors pass."""
    name = path.name
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # ELOOP on a link
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise BundleError(f"{name} is not a regular file")
        if info.st_size > limit:
            raise BundleError(f"{name} is {info.st_size} bytes, over the {limit}-byte limit")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            content = handle.read(limit + 1)  # it may grow after the fstat
    finally:
        os.close(fd)
    if len(content) > limit:
        raise BundleError(f"{name} is over the {limit}-byte limit")
    return content


def read_bundle_file(path: Path, limit: int) -> bytes:
    """:func:`read_capped`, with a link and an unreadable file as :class:`BundleError`."""
    try:
        return read_capped(path, limit)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if path.is_symlink():
            raise BundleError(f"{path.name} is a symbolic link") from None
        raise BundleError(f"{path.name} cannot be read: {exc.strerror or exc}") from None


def manifest_digest(directory: Path) -> str | None:
    """The sha256 of ``manifest.json``'s bytes: with the version number, a version's identity
    (a number reused for other files has another manifest). None when it cannot be read."""
    try:
        return hashlib.sha256(read_capped(directory / MANIFEST, MAX_MANIFEST_BYTES)).hexdigest()
    except (OSError, BundleError):
        return None


def sha256_file(path: Path) -> str:
    """Return the hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _bundle_files(directory: Path) -> list[str]:
    """Every regular file below ``directory`` but the manifest, as sorted POSIX paths."""
    names = []
    for path in directory.rglob("*"):
        if path.is_symlink():
            raise BundleError(f"{path.relative_to(directory)} is a symbolic link")
        if path.is_file():
            rel = path.relative_to(directory).as_posix()
            if rel != MANIFEST:
                names.append(rel)
    return sorted(names)


def _signature(files: dict[str, str], key: str) -> str:
    canonical = json.dumps(files, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(key.encode(), canonical, hashlib.sha256).hexdigest()


def write_manifest(directory: Path, signing_key: str | None = None) -> dict[str, str]:
    """Write ``manifest.json`` listing the sha256 of every file; sign it when a key is given."""
    files = {name: sha256_file(directory / name) for name in _bundle_files(directory)}
    document: dict[str, object] = {"algorithm": "sha256", "files": files}
    if signing_key:
        document["signature"] = {
            "algorithm": "hmac-sha256",
            "value": _signature(files, signing_key),
        }
    (directory / MANIFEST).write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    return files


def verify_manifest(directory: Path, signing_key: str | None = None) -> dict[str, str]:
    """Check that the files in ``directory`` are exactly those of its manifest, byte for byte.

    With ``signing_key`` the manifest must also carry a valid HMAC-SHA256 signature.
    Raises :class:`BundleError` naming the first fault; returns the verified digests.
    """
    path = directory / MANIFEST
    try:
        content = read_bundle_file(path, MAX_MANIFEST_BYTES)
    except FileNotFoundError:
        raise BundleError(f"{MANIFEST} is missing") from None
    try:
        document = json.loads(content.decode())
        files = document["files"]
        if not isinstance(files, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in files.items()
        ):
            raise TypeError
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise BundleError(f"{MANIFEST} is not a valid manifest") from None
    if signing_key:
        signature = document.get("signature")
        if not isinstance(signature, dict) or not isinstance(signature.get("value"), str):
            raise BundleError(f"{MANIFEST} is not signed")
        if not hmac.compare_digest(signature["value"], _signature(files, signing_key)):
            raise BundleError(f"{MANIFEST} signature does not match the signing key")
    present = _bundle_files(directory)
    unlisted = sorted(set(present) - set(files))
    if unlisted:
        raise BundleError(f"{unlisted[0]} is not listed in {MANIFEST}")
    for name in sorted(files):
        target = directory / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise BundleError(f"{MANIFEST} names a path outside the bundle: {name}")
        if not target.is_file():
            raise BundleError(f"{name} is listed in {MANIFEST} but missing")
        if not hmac.compare_digest(sha256_file(target), files[name]):
            raise BundleError(f"{name} does not match its sha256 in {MANIFEST}")
    return dict(files)
