"""Model runtimes behind one small interface: raw model output for a float32 matrix."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

RuntimeName = Literal["litert", "keras"]


class Runtime(Protocol):
    """Runs one model on a float32 ``[rows, features]`` matrix."""

    name: RuntimeName
    input_width: int
    output_width: int

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Raw model output ``[rows, output_width]``; safe to call from one thread at a time."""
        ...


def litert_available() -> bool:
    """True when the ai-edge-litert interpreter is installed."""
    return importlib.util.find_spec("ai_edge_litert") is not None


def choose(requested: RuntimeName | None, has_tflite: bool) -> RuntimeName:
    """The runtime to use: the requested one, else LiteRT when it can run this bundle."""
    if requested is not None:
        return requested
    return "litert" if has_tflite and litert_available() else "keras"


def load(name: RuntimeName, model_bytes: bytes, path: Path, core: str | None = None) -> Runtime:
    """Load verified model bytes with the named runtime (imports it only now). ``core`` names
    the layer of ``model.keras`` that takes the encoded matrix (format 2)."""
    if name == "litert":
        from service.runtimes.litert import LiteRTRuntime

        return LiteRTRuntime(model_bytes)
    from service.runtimes.keras import KerasRuntime

    return KerasRuntime(model_bytes, path.name, core)
