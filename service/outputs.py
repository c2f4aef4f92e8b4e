"""Probabilities to answers: decoded labels, per-class probabilities, range warnings, CSV."""

from __future__ import annotations

import csv
import io
from typing import Any

import numpy as np

from service.model import LoadedModel


def argmax_labels(model: LoadedModel, probabilities: np.ndarray) -> list[Any]:
    """``encoder.inverse_transform(argmax(p))``, through the labels decoded at load time."""
    labels = model.labels
    return [labels[i] for i in probabilities.argmax(axis=1).tolist()]


def range_warnings(model: LoadedModel, x: np.ndarray) -> list[list[str]]:
    """For each row, a message per feature outside the training range (mostly empty lists)."""
    low = x < model.feature_min
    high = x > model.feature_max
    out: list[list[str]] = [[] for _ in range(len(x))]
    rows, cols = np.nonzero(low | high)
    if len(rows):
        names = model.feature_names
        for i, j in zip(rows.tolist(), cols.tolist(), strict=True):
            side = "below" if low[i, j] else "above"
            out[i].append(
                f"{names[j]}={float(x[i, j]):.6g} is {side} the training range "
                f"[{float(model.feature_min[j]):.6g}, {float(model.feature_max[j]):.6g}]"
            )
    return out


def out_of_range_features(model: LoadedModel, x: np.ndarray) -> list[list[str]]:
    """For each row, the names of the features outside the training range."""
    mask = (x < model.feature_min) | (x > model.feature_max)
    out: list[list[str]] = [[] for _ in range(len(x))]
    rows, cols = np.nonzero(mask)
    names = model.feature_names
    for i, j in zip(rows.tolist(), cols.tolist(), strict=True):
        out[i].append(names[j])
    return out


def predictions(
    model: LoadedModel, x: np.ndarray, probabilities: np.ndarray, top_k: int | None = None
) -> list[dict[str, Any]]:
    """One ``{"label", "probabilities", "warnings"}`` object per row (plus ``top_k`` if asked)."""
    keys = model.class_keys
    labels = argmax_labels(model, probabilities)
    warnings = range_warnings(model, x)
    rows = probabilities.tolist()
    result = [
        {"label": label, "probabilities": dict(zip(keys, row, strict=True)), "warnings": warn}
        for label, row, warn in zip(labels, rows, warnings, strict=True)
    ]
    if top_k is not None:
        order = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k].tolist()
        decoded = model.labels
        for item, indices, row in zip(result, order, rows, strict=True):
            item["top_k"] = [{"label": decoded[i], "probability": row[i]} for i in indices]
    return result


def predictions_csv(model: LoadedModel, x: np.ndarray, probabilities: np.ndarray) -> str:
    """CSV answer: ``label``, one ``prob_<class>`` column per class, then ``warnings``."""
    labels = argmax_labels(model, probabilities)
    warnings = out_of_range_features(model, x)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["label", *(f"prob_{k}" for k in model.class_keys), "warnings"])
    writer.writerows(
        [label, *row, ";".join(warn)]
        for label, row, warn in zip(labels, probabilities.tolist(), warnings, strict=True)
    )
    return buffer.getvalue()
