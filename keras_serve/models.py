"""What an artifacts directory holds: every model, its versions, and whether each one verifies.

A version is checked as the service checks it before it loads the model (manifest digests and
signature, ``metadata.json``, the model files the metadata names, the required files, the label
encoder's classes), through the bundle package and the service's pickle-free encoder reader:
no runtime is loaded and no model is run, so listing is quick and safe on any bundle. A version
that passes can still be refused at load (a model file the runtime cannot read, reference rows
it does not reproduce). Whatever is wrong is reported as a reason, never raised. No click here.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

import bundle
from bundle.manifest import read_bundle_file
from bundle.serving import read_serving
from bundle.versions import scan_versions
from service import encoder

# The longest reason shown: a reason may quote file names found in the directory.
MAX_REASON = 300
# label_encoder.joblib and report/metrics.json are read whole to check them; a trained bundle's
# are a few KB.
MAX_READ_BYTES = 64 << 20


class ListingError(Exception):
    """The artifacts directory itself cannot be listed; the message says why."""


@dataclass(frozen=True)
class VersionInfo:
    """One version directory: whether it verifies (and why not), and what its metadata says
    (read even when the version does not verify, when the metadata itself is readable)."""

    version: int
    verified: bool
    problem: str | None = None
    created_at: str | None = None  # ISO 8601, UTC
    accuracy: float | None = None  # on the held-out test split
    features: int | None = None
    classes: int | None = None
    format_version: int | None = None
    labels: list[str] = field(default_factory=list)  # serving.json labels naming it


@dataclass(frozen=True)
class ModelInfo:
    """One model directory: its versions, labels, and what is wrong with it as a whole."""

    name: str
    path: str
    versions: list[VersionInfo]
    labels: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def newest_verified(self) -> int | None:
        return max((v.version for v in self.versions if v.verified), default=None)


@dataclass(frozen=True)
class Listing:
    """Every model under an artifacts directory."""

    artifacts: Path
    models: list[ModelInfo]
    signed: bool  # checked against ARTIFACT_SIGNING_KEY

    def as_dict(self) -> dict[str, Any]:
        """The listing as one JSON-ready object (``--json``)."""
        return {
            "artifacts": str(self.artifacts),
            "signature_checked": self.signed,
            "models": [
                {**asdict(model), "newest_verified": model.newest_verified} for model in self.models
            ],
        }

    def text(self) -> str:
        """The listing as a table: a row per version, its reason on the line below."""
        if not self.models:
            return f"no model under {self.artifacts}"
        header = ("MODEL", "VERSION", "VERIFIED", "CREATED (UTC)", "ACCURACY", "FEATURES")
        header += ("CLASSES", "LABELS")
        rows: list[tuple[str, ...] | str] = []
        for model in self.models:
            if not model.versions:
                rows.append((model.name, "-", "-", "-", "-", "-", "-", "-"))
                rows.append(f"{model.name}: no published version")
            for v in model.versions:
                rows.append(
                    (
                        model.name,
                        str(v.version),
                        "yes" if v.verified else "NO",
                        v.created_at[:19].replace("T", " ") if v.created_at else "-",
                        "-" if v.accuracy is None else f"{v.accuracy:.4f}",
                        _count(v.features),
                        _count(v.classes),
                        ",".join(v.labels) or "-",
                    )
                )
                if v.problem:
                    rows.append(f"{model.name} {v.version}: {_printable(v.problem)}")
            rows += [f"{model.name}: {_printable(p)}" for p in model.problems]
        table = [row for row in rows if isinstance(row, tuple)]
        widths = [max(len(row[i]) for row in [header, *table]) for i in range(len(header))]
        right = {1, 4, 5, 6}  # numbers

        def line(cells: tuple[str, ...]) -> str:
            padded = (
                c.rjust(w) if i in right else c.ljust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
            return "  ".join(padded).rstrip()

        lines = [line(header)]
        for row in rows:
            lines.append(line(row) if isinstance(row, tuple) else f"  ! {row}")
        signed = "checked" if self.signed else "not checked: ARTIFACT_SIGNING_KEY is not set"
        lines.append(f"artifacts {self.artifacts}; manifest signatures {signed}")
        return "\n".join(lines)


def list_artifacts(artifacts: Path, signing_key: str | None = None) -> Listing:
    """Every model directory under ``artifacts`` with each version checked.

    A model directory is a directory whose name is a model name (``bundle.MODEL_NAME_PATTERN``:
    hidden and staging directories are not); one with no version yet is listed too."""
    artifacts = Path(artifacts)
    try:
        with os.scandir(artifacts) as iterator:
            entries = sorted(iterator, key=lambda entry: entry.name)
    except FileNotFoundError:
        raise ListingError(f"artifacts directory {artifacts} does not exist") from None
    except NotADirectoryError:
        raise ListingError(f"artifacts {artifacts} is not a directory") from None
    except OSError as exc:
        raise ListingError(
            f"artifacts directory {artifacts} cannot be read: {_reason(exc)}"
        ) from None
    models = [
        inspect_model(Path(entry.path), signing_key)
        for entry in entries
        if bundle.MODEL_NAME_PATTERN.fullmatch(entry.name) and _is_dir(entry)
    ]
    return Listing(artifacts, models, signed=bool(signing_key))


def inspect_model(directory: Path, signing_key: str | None = None) -> ModelInfo:
    """One model directory: its versions (links to a directory listed as never served), its
    labels from ``serving.json``, and what keeps it from being read."""
    problems: list[str] = []
    scan = scan_versions(directory)
    if scan.error:
        problems.append(scan.error)
    labels: dict[str, int] = {}
    try:
        labels = dict(read_serving(directory).labels)
    except bundle.BundleError as exc:
        problems.append(str(exc))
    named: dict[int, list[str]] = {}
    for label, version in sorted(labels.items()):
        named.setdefault(version, []).append(label)
    versions = [
        check_version(directory / str(number), signing_key, named.get(number, []))
        for number in scan.versions
    ]
    versions += [
        VersionInfo(
            number,
            verified=False,
            problem="a symbolic link: never served (a version is a real directory)",
            labels=named.get(number, []),
        )
        for number in scan.symlinks
    ]
    versions.sort(key=lambda v: v.version)
    listed = {v.version for v in versions}
    for label, version in sorted(labels.items()):
        if version not in listed:
            problems.append(f"label {label} names version {version}, which does not exist")
    return ModelInfo(directory.name, str(directory), versions, labels, problems)


def check_version(
    directory: Path, signing_key: str | None = None, labels: list[str] | None = None
) -> VersionInfo:
    """One version directory, checked without loading a runtime; never raises."""
    number = int(directory.name)
    metadata: bundle.Metadata | str
    try:
        metadata = bundle.read_metadata(directory)
    except bundle.BundleError as exc:
        metadata = str(exc)
    except RecursionError:  # thousands of nested brackets, within the size limit
        metadata = f"{bundle.METADATA} is invalid: nested too deeply"
    try:
        problem = _problem(directory, signing_key, metadata)
    except Exception as exc:  # one odd version never stops the listing: it is reported
        problem = f"cannot be checked: {type(exc).__name__}"
    about: dict[str, Any] = {}
    if isinstance(metadata, bundle.Metadata):
        about = {
            "created_at": metadata.created_at.astimezone(UTC).isoformat(),
            "accuracy": metadata.metrics.get("accuracy"),
            "features": len(metadata.features),
            "classes": len(metadata.classes),
            "format_version": metadata.format_version,
        }
    return VersionInfo(number, problem is None, problem, labels=labels or [], **about)


class _Refused(Exception):
    """Why a version would be refused, as the service words it."""


def _problem(
    directory: Path, signing_key: str | None, metadata: bundle.Metadata | str
) -> str | None:
    """Why the service would refuse this version before loading its model, or None: its
    checks in its order (``service.model.load_version``), so the reasons read the same. The
    manifest comes first: a changed metadata.json is reported as changed, not as invalid."""
    try:
        digests = bundle.verify_manifest(directory, signing_key)
        if isinstance(metadata, str):
            return metadata
        for name, digest in sorted(metadata.model_sha256.items()):
            if digests.get(name) != digest:
                return f"{name} is not the model {bundle.METADATA} describes"
        missing = [name for name in bundle.REQUIRED_FILES if name not in digests]
        if missing:
            return f"{missing[0]} is missing"
        if bundle.METRICS_JSON in digests:
            try:
                json.loads(_read_verified(directory, bundle.METRICS_JSON, digests))
            except (ValueError, RecursionError):
                return f"{bundle.METRICS_JSON} is not valid JSON"
        content = _read_verified(directory, bundle.LABEL_ENCODER, digests)
        classes = encoder.read_classes(content).tolist()
    except (bundle.BundleError, _Refused) as exc:
        return str(exc)
    except encoder.EncoderUnreadable as exc:
        return f"{bundle.LABEL_ENCODER} cannot be loaded: {exc}"
    except OSError as exc:
        return f"cannot read the bundle: {_reason(exc)}"
    expected = metadata.classes
    if classes != expected or [type(c) for c in classes] != [type(c) for c in expected]:
        return f"{bundle.LABEL_ENCODER} classes differ from {bundle.METADATA} classes"
    return None


def _read_verified(directory: Path, name: str, digests: dict[str, str]) -> bytes:
    """A file's bytes (at most :data:`MAX_READ_BYTES`), checked again against its digest."""
    content = read_bundle_file(directory / name, MAX_READ_BYTES)
    if hashlib.sha256(content).hexdigest() != digests[name]:
        raise _Refused(f"{name} changed after its manifest was verified")
    return content


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def _printable(text: str) -> str:
    """A reason on one line of a terminal: control characters escaped, length capped."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__
