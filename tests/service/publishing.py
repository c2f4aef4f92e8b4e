"""Publishing good and broken versions the way training does: stage, then rename atomically."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import joblib
from sklearn.preprocessing import LabelEncoder

import bundle


def next_version(model_dir: Path) -> int:
    return max(bundle.list_versions(model_dir), default=0) + 1


def stage(model_dir: Path, source: Path) -> Path:
    """Copy a bundle into a fresh staging directory ``.tmp-*`` beside the versions."""
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=bundle.TEMP_PREFIX, dir=model_dir))
    shutil.copytree(source, staging, dirs_exist_ok=True)
    return staging


def publish(model_dir: Path, source: Path, breaker: Breaker | None = None) -> int:
    """Stage a copy of ``source``, break it if asked, rename it to the next version number."""
    staging = stage(model_dir, source)
    if breaker is not None:
        breaker(staging)
    version = next_version(model_dir)
    os.rename(staging, model_dir / str(version))
    return version


# -- ways to break a bundle ------------------------------------------------------------------
Breaker = Callable[[Path], None]


def truncate_keras(directory: Path) -> None:
    """``model.keras`` cut in half (a copy interrupted); the manifest still has the old digest."""
    path = directory / bundle.MODEL_KERAS
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def truncate_keras_resigned(directory: Path) -> None:
    """Truncated ``model.keras`` with a manifest rewritten to match: only loading catches it."""
    truncate_keras(directory)
    bundle.write_manifest(directory)


def flip_tflite_bit(directory: Path) -> None:
    """One bit flipped in the middle of ``model.tflite``: only the manifest catches it."""
    path = directory / bundle.MODEL_TFLITE
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0x10
    path.write_bytes(bytes(content))


def flip_tflite_header_resigned(directory: Path) -> None:
    """A bit flipped in the flatbuffer identifier, manifest rewritten: only the runtime catches it."""
    path = directory / bundle.MODEL_TFLITE
    content = bytearray(path.read_bytes())
    content[5] ^= 0x01  # inside the "TFL3" file identifier
    path.write_bytes(bytes(content))
    bundle.write_manifest(directory)


def other_classes(directory: Path) -> None:
    """An encoder fitted on other labels, manifest rewritten: only the class check catches it."""
    encoder = LabelEncoder().fit(["cat", "dog", "emu"])
    joblib.dump(encoder, directory / bundle.LABEL_ENCODER)
    bundle.write_manifest(directory)


def drop_manifest(directory: Path) -> None:
    (directory / bundle.MANIFEST).unlink()


def alter_manifest(directory: Path) -> None:
    """One digest in the manifest changed (metadata.json's)."""
    path = directory / bundle.MANIFEST
    document = json.loads(path.read_text())
    digest = document["files"][bundle.METADATA]
    document["files"][bundle.METADATA] = ("0" if digest[0] != "0" else "1") + digest[1:]
    path.write_text(json.dumps(document))


def unlisted_file(directory: Path) -> None:
    """A file the manifest does not list."""
    (directory / "notes.txt").write_text("added after publishing\n")


# name -> (breaker, a fragment of the rejection reason)
BREAKERS: dict[str, tuple[Breaker, str]] = {
    "truncated model.keras": (truncate_keras, "model.keras does not match"),
    "truncated model.keras, manifest rewritten": (
        truncate_keras_resigned,
        "model.keras",
    ),
    "bit-flipped model.tflite header, manifest rewritten": (
        flip_tflite_header_resigned,
        "model.tflite",
    ),
    "bit-flipped model.tflite": (flip_tflite_bit, "model.tflite does not match"),
    "encoder with other classes": (other_classes, "classes differ"),
    "missing manifest": (drop_manifest, "manifest.json is missing"),
    "altered manifest": (alter_manifest, "metadata.json does not match"),
    "unlisted file": (unlisted_file, "notes.txt is not listed"),
}


def half_written(model_dir: Path, source: Path, version: int | None = None) -> int:
    """A numbered directory written in place and not finished: some files, no manifest yet."""
    version = version or next_version(model_dir)
    directory = model_dir / str(version)
    directory.mkdir(parents=True)
    shutil.copy(source / bundle.METADATA, directory)
    content = (source / bundle.MODEL_KERAS).read_bytes()
    (directory / bundle.MODEL_KERAS).write_bytes(content[: len(content) // 3])
    return version


def finish_writing(directory: Path, source: Path) -> None:
    """Complete a half-written directory, manifest last, as a careful copy would."""
    shutil.copytree(source, directory, dirs_exist_ok=True, ignore=_manifest_only)
    shutil.copy(source / bundle.MANIFEST, directory)


def _manifest_only(_directory: str, names: list[str]) -> list[str]:
    return [name for name in names if name == bundle.MANIFEST]
