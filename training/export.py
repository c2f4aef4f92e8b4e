"""Export the Keras model for LiteRT and check that both give the same probabilities."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from training.errors import TrainingError

if TYPE_CHECKING:
    import keras

# The LiteRT model must answer within this of model.keras called on the same raw rows.
MAX_ABS_DIFF = 1e-5


def export_litert(model: keras.Model, path: Path) -> None:
    """Write ``model.tflite`` (the core: encoded matrix in) for the LiteRT interpreter."""
    with contextlib.redirect_stdout(io.StringIO()):  # Keras prints "Saved artifact at ..."
        model.export(str(path), format="litert")


def litert_predict(path: Path, x: np.ndarray) -> np.ndarray:
    """Raw model output of ``model.tflite`` on ``x`` through the LiteRT interpreter."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    (inp,) = interpreter.get_input_details()
    (out,) = interpreter.get_output_details()
    interpreter.resize_tensor_input(inp["index"], [len(x), x.shape[1]], strict=True)
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], np.ascontiguousarray(x, dtype=np.float32))
    interpreter.invoke()
    return interpreter.get_tensor(out["index"]).copy()


def check_equivalence(
    model: keras.Model, path: Path, raw: dict[str, np.ndarray], x: np.ndarray
) -> float:
    """Largest absolute difference between ``model.keras`` on raw rows and LiteRT on the same
    rows encoded (``x``); refuse the export if it is too big."""
    expected = np.asarray(model(raw, training=False))
    actual = litert_predict(path, x)
    if actual.shape != expected.shape:
        raise TrainingError(
            f"LiteRT output shape {actual.shape} differs from Keras {expected.shape}"
        )
    diff = float(np.max(np.abs(actual - expected))) if len(x) else 0.0
    if not diff <= MAX_ABS_DIFF:
        raise TrainingError(
            f"LiteRT export differs from the Keras model by {diff:.2e} > {MAX_ABS_DIFF}"
        )
    return diff
