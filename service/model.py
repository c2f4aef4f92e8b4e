"""A verified, loaded model version: load-time checks and prediction. No HTTP here."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

import bundle
from service import encoder, runtimes
from service.batching import AdaptiveBatcher
from service.errors import BundleRejected, InvalidInput
from service.typed import MissingValues, TypedSchema, encode

log = logging.getLogger("service.model")


def _read_verified(directory: Path, name: str, digests: dict[str, str]) -> bytes:
    """Read a file and check its bytes against the verified manifest digest."""
    if name not in digests:
        raise BundleRejected(f"{name} is missing")
    content = (directory / name).read_bytes()
    if hashlib.sha256(content).hexdigest() != digests[name]:
        raise BundleRejected(f"{name} changed after its manifest was verified")
    return content


def _load_encoder(content: bytes, classes: list) -> np.ndarray:
    """Read the LabelEncoder's classes (its bytes are already verified) and check them."""
    try:
        decoded = encoder.read_classes(content)
    except encoder.EncoderUnreadable as exc:
        raise BundleRejected(f"{bundle.LABEL_ENCODER} cannot be loaded: {exc}") from None
    if decoded.tolist() != classes or [type(c) for c in decoded.tolist()] != [
        type(c) for c in classes
    ]:
        raise BundleRejected(
            f"{bundle.LABEL_ENCODER} classes differ from {bundle.METADATA} classes"
        )
    # inverse_transform(i) is classes_[i]: every class index is decoded once, here.
    return decoded


@dataclass(eq=False)
class LoadedModel:
    """One bundle version, verified and ready to predict."""

    name: str
    version: int
    path: Path
    metadata: bundle.Metadata
    runtime: runtimes.Runtime
    labels: list  # decoded label of each class index, in encoder order
    class_keys: list[str]  # the labels as JSON object keys
    feature_names: list[str]
    feature_min: np.ndarray
    feature_max: np.ndarray
    report: dict | None = None  # report/metrics.json, verified with the rest
    # Passed in by whoever loads it (the registry): the batcher that merges concurrent requests
    # into one model call, if any, and who is told of every model call's row count.
    batcher: AdaptiveBatcher | None = None
    on_batch: Callable[[int], None] | None = None
    # How requests are read: None for numbers only (numeric features that had no blanks, and
    # MISSING_VALUES=refuse); else the typed encoder.
    typed: TypedSchema | None = None
    # The typed encoder under the service's MISSING_VALUES, whatever the kinds: protocols that
    # send one tensor per feature read through it even for an all-numeric model.
    codec: TypedSchema | None = None
    threshold: float | None = None  # binary: P(classes[1]) at or above which it is the label
    # Built on the first explanation (service.protocols.explain): the background and its
    # predictions, kept with the version.
    explainer: Any = None
    # Made on its first answered row when drift is tracked (service.monitor): its last rows.
    drift: Any = None
    drift_queued: int = 0  # rows queued for drift since the monitor's last pass

    @cached_property
    def ignored_columns(self) -> frozenset[str]:
        """Columns of the training table the model does not use: its target and the columns
        left out (IDs, --exclude). A record or a CSV header may carry them; they are ignored."""
        left_out = set(self.metadata.columns_left_out) | {self.metadata.target}
        return frozenset(left_out - set(self.feature_names))

    @cached_property
    def input_signature(self) -> tuple:
        """What the feature matrix's columns mean: two versions with the same signature read
        a request into the same matrix (names, kinds, categories, which numbers may be blank)."""
        return tuple(
            (f.name, f.kind, tuple(f.vocabulary or ()), f.nullable) for f in self.metadata.features
        )

    @property
    def numeric_only(self) -> bool:
        """Every feature is a number: the protocols' single float tensor form applies."""
        return all(f.kind == "numeric" for f in self.metadata.features)

    def label_indices(self, probabilities: np.ndarray) -> list[int]:
        """The class index of each row: argmax, or the binary threshold when one is set."""
        if self.threshold is None:
            return probabilities.argmax(axis=1).tolist()
        return (probabilities[:, 1] >= self.threshold).astype(np.int64).tolist()

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    @cached_property
    def feature_bounds(self) -> tuple[list[float], list[float]]:
        """``feature_min`` and ``feature_max`` as Python floats, for checking a few rows."""
        return self.feature_min.tolist(), self.feature_max.tolist()

    @property
    def n_classes(self) -> int:
        return len(self.class_keys)

    def probabilities_sync(self, x: np.ndarray) -> np.ndarray:
        """Per-class probabilities ``[rows, classes]`` for a validated float32 matrix."""
        raw = self.runtime.predict(x)
        if raw.shape[1] == 1:  # one sigmoid unit: P(class 1); class 0 gets the rest
            return np.concatenate([1.0 - raw, raw], axis=1)
        return raw

    async def probabilities(self, x: np.ndarray) -> np.ndarray:
        """Like :meth:`probabilities_sync`, through the batcher when the model has one."""
        if self.batcher is not None:
            return _require_finite(await self.batcher.submit(x))
        probabilities = self.probabilities_sync(x)
        if self.on_batch is not None:
            self.on_batch(len(x))
        return _require_finite(probabilities)

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()


def _require_finite(probabilities: np.ndarray) -> np.ndarray:
    """Refuse an answer with NaN or infinite probabilities (they would be sent as null)."""
    if len(probabilities) == 1:  # plain Python: a few times faster than numpy for one row
        if all(map(math.isfinite, probabilities[0].tolist())):
            return probabilities
    elif np.isfinite(probabilities).all():
        return probabilities
    finite = np.isfinite(probabilities).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise InvalidInput(
            f"the model's output for row {row} is not finite: its values are too far outside "
            "the training range"
        )
    return probabilities


def load_version(
    directory: Path,
    runtime: runtimes.RuntimeName | None = None,
    signing_key: str | None = None,
    missing_values: MissingValues = "refuse",
    batcher: Callable[[LoadedModel], AdaptiveBatcher | None] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> LoadedModel:
    """Verify a bundle version and load it; raise :class:`BundleRejected` with the reason.

    ``batcher(model)`` gives the verified model its batcher (or None); ``on_batch(rows)`` is
    told of each model call made outside a batcher (a batcher has its own)."""
    try:
        version = int(directory.name)
        digests = bundle.verify_manifest(directory, signing_key)
        metadata = bundle.read_metadata(directory)
        for name, digest in sorted(metadata.model_sha256.items()):
            if digests.get(name) != digest:
                raise BundleRejected(f"{name} is not the model {bundle.METADATA} describes")
        missing = [name for name in bundle.REQUIRED_FILES if name not in digests]
        if missing:
            raise BundleRejected(f"{missing[0]} is missing")
        chosen = runtimes.choose(runtime, bundle.MODEL_TFLITE in digests)
        model_file = bundle.MODEL_TFLITE if chosen == "litert" else bundle.MODEL_KERAS
        if model_file not in digests:
            raise BundleRejected(f"runtime {chosen} needs {model_file}, which the bundle lacks")
        report = None
        if bundle.METRICS_JSON in digests:
            try:
                report = json.loads(_read_verified(directory, bundle.METRICS_JSON, digests))
            except ValueError:
                raise BundleRejected(f"{bundle.METRICS_JSON} is not valid JSON") from None
        labels = _load_encoder(
            _read_verified(directory, bundle.LABEL_ENCODER, digests), metadata.classes
        )
        try:
            core = bundle.CORE_LAYER if metadata.format_version >= 2 else None
            engine = runtimes.load(
                chosen, _read_verified(directory, model_file, digests), directory / model_file, core
            )
        except BundleRejected:
            raise
        except Exception as exc:  # a corrupt model file fails deep inside the runtime
            detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            raise BundleRejected(
                f"{model_file} cannot be loaded: {type(exc).__name__} {detail}".strip()
            ) from None
        for other in (bundle.MODEL_KERAS, bundle.MODEL_TFLITE):
            if other != model_file and other in digests:
                _check_structure(other, _read_verified(directory, other, digests))
    except bundle.BundleError as exc:
        raise BundleRejected(str(exc)) from None
    except OSError as exc:
        raise BundleRejected(f"cannot read the bundle: {exc.strerror or exc}") from None

    features = metadata.features
    codec = TypedSchema.of(features, missing_values)
    typed = None if metadata.all_numeric and missing_values == "refuse" else codec
    if engine.input_width != len(features):
        raise BundleRejected(
            f"{model_file} takes {engine.input_width} features; metadata lists {len(features)}"
        )
    if engine.output_width != metadata.output_units:
        raise BundleRejected(
            f"{model_file} outputs {engine.output_width} units; {len(metadata.classes)} classes "
            f"need {metadata.output_units}"
        )
    loaded = LoadedModel(
        name=metadata.name,
        version=version,
        path=directory,
        metadata=metadata,
        runtime=engine,
        labels=labels.tolist(),
        class_keys=[str(c) for c in metadata.classes],
        feature_names=[f.name for f in features],
        feature_min=np.array(
            [-np.inf if f.min is None else f.min for f in features], dtype=np.float32
        ),
        feature_max=np.array(
            [np.inf if f.max is None else f.max for f in features], dtype=np.float32
        ),
        report=report,
        typed=typed,
        codec=codec,
        threshold=metadata.threshold,
    )
    # One row of training means (numbers) and first categories: finite, sums to one.
    smoke = [[1.0 if f.kind == "categorical" else f.fill for f in features]]
    _smoke_test(loaded, np.array(smoke, dtype=np.float32))
    if metadata.reference is not None:
        _reproduce_reference(loaded, metadata.reference)
    loaded.on_batch = on_batch
    loaded.batcher = batcher(loaded) if batcher is not None else None
    return loaded


def _check_structure(name: str, content: bytes) -> None:
    """The model file the runtime does not load must still be whole: a bundle with a corrupt
    model file is broken even when its manifest was written after the damage."""
    if name == bundle.MODEL_KERAS:
        try:
            with zipfile.ZipFile(io.BytesIO(content)) as archive:
                damaged = archive.testzip()  # reads every member and checks its CRC
                if damaged is None and "config.json" not in archive.namelist():
                    damaged = "config.json (missing)"
        except (zipfile.BadZipFile, OSError, EOFError, ValueError):
            raise BundleRejected(f"{name} is not a whole Keras archive") from None
        if damaged is not None:
            raise BundleRejected(f"{name} is damaged: {damaged}")
    elif content[4:8] != b"TFL3":
        raise BundleRejected(f"{name} is not a TFLite flatbuffer")
    elif runtimes.litert_available():
        try:
            runtimes.load("litert", content, Path(name))
        except Exception as exc:
            raise BundleRejected(f"{name} cannot be loaded: {type(exc).__name__}") from None


def _smoke_test(model: LoadedModel, x: np.ndarray) -> None:
    """One prediction on the training means must give finite probabilities that sum to 1."""
    try:
        probabilities = model.probabilities_sync(x)
    except Exception as exc:
        raise BundleRejected(f"smoke prediction failed: {type(exc).__name__}") from None
    if probabilities.shape != (1, model.n_classes):
        raise BundleRejected(f"smoke prediction has shape {probabilities.shape}")
    if not np.isfinite(probabilities).all() or abs(float(probabilities.sum()) - 1) > 1e-3:
        raise BundleRejected("smoke prediction is not a probability distribution")


def _reproduce_reference(model: LoadedModel, reference: bundle.Reference) -> None:
    """The runtime must give the probabilities training recorded for its reference rows, read
    through the service's own encoding of raw values (so both must agree with model.keras)."""
    expected = np.asarray(reference.probabilities, dtype=np.float32)
    rows = reference.inputs
    if any(len(row) != model.n_features for row in rows) or expected.shape != (
        len(rows),
        model.n_classes,
    ):
        raise BundleRejected(f"{bundle.METADATA} reference rows do not fit the model")
    try:
        columns = [list(column) for column in zip(*rows, strict=True)]
        schema = TypedSchema.of(model.metadata.features, "impute")
        x, _ = encode(columns, schema, lambda i, j: f"reference row {i}, feature {j}")
    except InvalidInput as exc:
        raise BundleRejected(f"{bundle.METADATA} reference rows: {exc.message}") from None
    try:
        actual = model.probabilities_sync(x)
    except Exception as exc:
        raise BundleRejected(f"reference prediction failed: {type(exc).__name__}") from None
    diff = float(np.max(np.abs(actual - expected)))
    if not diff <= reference.tolerance:
        raise BundleRejected(
            f"{model.runtime.name} runtime does not reproduce the training probabilities "
            f"(max abs diff {diff:.2e} > {reference.tolerance:.0e})"
        )
