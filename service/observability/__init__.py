"""Metrics, JSON logs, request ids and overload protection; no FastAPI imports here.

The prediction path calls :func:`observe_prediction` once per request and :func:`observe_batch`
once per model call, both on the event loop's thread: :class:`service.model.LoadedModel` (its
adaptive batcher for the model calls of the Keras runtime), so every protocol's route that
predicts through ``await model.probabilities(x)`` is counted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from service.observability.logs import note_model_version
from service.observability.metrics import get_metrics, record_batch

if TYPE_CHECKING:
    import numpy as np

    from service.model import LoadedModel


def observe_prediction(model: LoadedModel, x: np.ndarray, probabilities: Any) -> None:
    """One request's predictions: counts by label and out-of-range feature, and the version
    that answered (for the access log line)."""
    note_model_version(model.version)
    get_metrics().observe_predictions(model, x, probabilities)


observe_batch = record_batch

__all__ = ["observe_batch", "observe_prediction"]
