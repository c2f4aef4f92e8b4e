"""The baseline: a FastAPI service as the tutorials write it, ``model.predict`` per request.

A pydantic request model, a plain ``def`` route (run on the thread pool), ``model.predict`` and
``LabelEncoder.inverse_transform`` on every call. It reads the newest bundle version without
verifying it: a baseline for speed and memory, not a service.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import joblib
import keras
import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel

import bundle


class PredictRequest(BaseModel):
    instances: list[list[float]]


def create_app() -> FastAPI:
    """Load the newest version of ``$MODEL_NAME`` under ``$ARTIFACTS_DIR`` and serve it."""
    directory = bundle.model_dir(
        os.environ.get("ARTIFACTS_DIR", "artifacts"), os.environ.get("MODEL_NAME", "iris")
    )
    version = Path(directory) / str(max(bundle.list_versions(directory)))
    model = keras.saving.load_model(version / bundle.MODEL_KERAS)
    metadata = bundle.read_metadata(version)
    names = metadata.feature_names
    encoder = joblib.load(version / bundle.LABEL_ENCODER)
    classes = [str(c) for c in encoder.classes_]
    app = FastAPI(title="tutorial")

    @app.get("/readyz")
    def readyz() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/predict")
    def predict(request: PredictRequest) -> dict[str, object]:
        x = np.array(request.instances, dtype=np.float32)
        # A format-2 model.keras takes a dict of columns (raw values), format 1 one matrix.
        inputs = x if metadata.format_version == 1 else {n: x[:, j] for j, n in enumerate(names)}
        probabilities = model.predict(inputs, verbose=0)
        labels = encoder.inverse_transform(probabilities.argmax(axis=1))
        return {
            "model": "iris",
            "predictions": [
                {
                    "label": str(label),
                    "probabilities": dict(zip(classes, map(float, row), strict=True)),
                }
                for label, row in zip(labels, probabilities, strict=True)
            ],
        }

    return app
