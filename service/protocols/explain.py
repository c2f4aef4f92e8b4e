"""Explanations: ``/explain`` (and KServe V1 ``:explain``) read ``/predict``'s body and answer,
per row, the Shapley values of the predicted class's probability (``"classes": "all"``: of
every class) against the background sample the bundle stores (``service.explain``)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import orjson

from service import inputs, outputs
from service.errors import Conflict, InvalidInput, PayloadTooLarge
from service.explain import Background, ColumnKind, Explainer, Explanation
from service.model import LoadedModel
from service.protocols.common import Answer
from service.typed import TypedSchema, encode

CLASSES = ("predicted", "all")
_LOCK = threading.Lock()  # builds each version's explainer once


@dataclass(slots=True)
class ExplainRequest:
    """An ``/explain`` body, its format, and ``classes`` if the query string gives it."""

    body: bytes
    kind: Literal["json", "csv"]
    classes: str | None = None


@dataclass(slots=True)
class ExplainParsed:
    x: np.ndarray
    notes: Any
    every_class: bool


class ExplainCodec:
    """Rows, records or CSV to the matrix; explanations back (computed on a worker thread)."""

    protocol: ClassVar[str] = "explain"
    invalid_status: ClassVar[int] = 422
    explains: ClassVar[bool] = True  # heavy: always off the event loop, never shadowed

    def __init__(self, max_rows: int, evaluations: int) -> None:
        self.max_rows = max_rows
        self.evaluations = evaluations

    def decode(self, request: ExplainRequest, model: LoadedModel, max_rows: int) -> ExplainParsed:
        limit = min(max_rows, self.max_rows)
        schema = inputs.Schema(
            model.feature_names, limit, model.n_classes, model.typed, model.ignored_columns
        )
        classes = request.classes
        try:
            if request.kind == "csv":
                parsed = inputs.parse_csv_body(request.body, schema)
            else:
                x, notes, document = inputs.read_json_body(request.body, schema, ("classes",))
                parsed = inputs.Parsed(x, None, notes)
                classes = document.get("classes", classes)
                if "classes" in document and classes not in CLASSES:
                    raise InvalidInput('classes must be "predicted" or "all"')
        except PayloadTooLarge as exc:
            raise PayloadTooLarge(f"{exc.message} (MAX_EXPLAIN_ROWS)") from None
        if classes is not None and classes not in CLASSES:
            raise InvalidInput('classes must be "predicted" or "all"')
        return ExplainParsed(parsed.x, parsed.notes, classes == "all")

    def encode(
        self,
        request: ExplainRequest,
        model: LoadedModel,
        parsed: ExplainParsed,
        probabilities: np.ndarray,
    ) -> Answer:
        explainer = explainer_of(model, self.evaluations)
        explanation = explainer.explain(parsed.x, probabilities)
        labels = model.label_indices(probabilities)
        warnings = outputs.with_notes(outputs.range_warnings(model, parsed.x), parsed.notes)
        rows = [
            _row(model, explanation, i, label, probabilities[i], warnings[i], parsed.every_class)
            for i, label in enumerate(labels)
        ]
        answer = {
            "model": model.name,
            "version": model.version,
            "method": explanation.method,
            "background": explainer.source,
            "background_rows": explanation.background_rows,
            "explanations": rows,
        }
        return Answer(orjson.dumps(answer))


def _class_part(
    model: LoadedModel, explanation: Explanation, i: int, k: int, probability: float
) -> dict[str, Any]:
    part: dict[str, Any] = {
        "probability": probability,
        "base_value": float(explanation.base_values[k]),
        "attributions": dict(
            zip(model.feature_names, explanation.attributions[i, :, k].tolist(), strict=True)
        ),
    }
    if explanation.error_bounds is not None:
        part["error_bound"] = float(explanation.error_bounds[i, k])
    return part


def _row(
    model: LoadedModel,
    explanation: Explanation,
    i: int,
    label: int,
    probabilities: np.ndarray,
    warnings: list[str],
    every_class: bool,
) -> dict[str, Any]:
    """One row's explanation: the predicted label's, and every class's if asked."""
    p = probabilities.tolist()
    row = {"label": model.labels[label], **_class_part(model, explanation, i, label, p[label])}
    if every_class:
        row["classes"] = {
            key: _class_part(model, explanation, i, k, p[k])
            for k, key in enumerate(model.class_keys)
        }
    row["warnings"] = warnings
    return row


def explainer_of(model: LoadedModel, evaluations: int) -> Explainer:
    """The version's explainer, built on first use (one background prediction), or 409 if the
    bundle gives nothing to explain against."""
    explainer = model.explainer
    if explainer is None:
        with _LOCK:
            explainer = model.explainer
            if explainer is None:
                kinds: list[ColumnKind] = [f.kind for f in model.metadata.features]
                explainer = Explainer(
                    model.probabilities_sync, background_of(model), kinds, evaluations
                )
                model.explainer = explainer
    return explainer


def background_of(model: LoadedModel) -> Background:
    """The bundle's background sample in the model's encoding; for an older bundle with numbers
    only, the training means; otherwise 409 naming what is missing."""
    metadata = model.metadata
    sample = metadata.background
    if sample is not None:
        columns = [list(column) for column in zip(*sample.inputs, strict=True)]
        schema = TypedSchema.of(metadata.features, "impute")
        try:
            x, _ = encode(columns, schema, lambda i, j: f"background row {i}, feature {j}")
        except InvalidInput as exc:
            raise Conflict(
                f"model {model.name!r} version {model.version}: its background sample cannot be "
                f"read ({exc.message})"
            ) from None
        return Background(x, np.full(len(x), 1 / len(x)), "training sample")
    if any(f.kind == "categorical" for f in metadata.features):
        raise Conflict(
            f"model {model.name!r} version {model.version} has no background sample to explain "
            "against (it was trained before explanations); train it again"
        )
    means = np.array([[f.mean for f in metadata.features]], dtype=np.float32)
    return Background(means, np.ones(1), "training means")
