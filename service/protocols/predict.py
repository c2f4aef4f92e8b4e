"""The service's own ``/predict`` protocol: JSON rows, JSON records or CSV in; JSON or CSV out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from service import inputs, outputs
from service.model import LoadedModel
from service.protocols.common import Answer


@dataclass(slots=True)
class PredictRequest:
    """A ``/predict`` body, its format (from Content-Type) and the answer's (from Accept)."""

    body: bytes
    kind: Literal["json", "csv"]
    csv_out: bool


def parse(body: bytes, kind: str, model: LoadedModel, max_rows: int) -> inputs.Parsed:
    schema = inputs.Schema(
        model.feature_names, max_rows, model.n_classes, model.typed, model.ignored_columns
    )
    if kind == "csv":
        return inputs.parse_csv_body(body, schema)
    return inputs.parse_json_body(body, schema)


class PredictCodec:
    """Rows, records or CSV to the matrix; labels, probabilities and warnings back."""

    protocol: ClassVar[str] = "predict"
    invalid_status: ClassVar[int] = 422

    def decode(self, request: PredictRequest, model: LoadedModel, max_rows: int) -> inputs.Parsed:
        return parse(request.body, request.kind, model, max_rows)

    def encode(
        self,
        request: PredictRequest,
        model: LoadedModel,
        parsed: inputs.Parsed,
        probabilities: np.ndarray,
    ) -> Answer:
        if request.csv_out:
            return Answer(
                outputs.predictions_csv(model, parsed.x, probabilities, parsed.notes).encode(),
                "text/csv",
                {"X-Model-Version": str(model.version)},
            )
        return Answer(
            outputs.answer_json(model, parsed.x, probabilities, parsed.top_k, parsed.notes)
        )


PREDICT = PredictCodec()
