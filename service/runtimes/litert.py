"""LiteRT runtime: the ai-edge-litert interpreter on ``model.tflite``. Never imports TensorFlow."""

from __future__ import annotations

import threading

import numpy as np
from ai_edge_litert.interpreter import Interpreter


class _Slot:
    """One interpreter with its tensors allocated for a batch size."""

    def __init__(self, content: bytes, rows: int) -> None:
        self.interpreter = Interpreter(model_content=content, num_threads=1)
        (inp,) = self.interpreter.get_input_details()
        (out,) = self.interpreter.get_output_details()
        self.input_index = inp["index"]
        self.output_index = out["index"]
        self.input_width = int(inp["shape_signature"][-1])
        self.rows = 0
        self.lock = threading.Lock()
        self.resize(rows)

    def resize(self, rows: int) -> None:
        if rows != self.rows:
            self.interpreter.resize_tensor_input(
                self.input_index, [rows, self.input_width], strict=True
            )
            self.interpreter.allocate_tensors()
            self.rows = rows

    def run(self, x: np.ndarray) -> np.ndarray:
        with self.lock:
            self.resize(len(x))
            self.interpreter.set_tensor(self.input_index, x)
            self.interpreter.invoke()
            return self.interpreter.get_tensor(self.output_index).copy()


class LiteRTRuntime:
    """Two interpreters: one kept at batch size 1 (no reallocation on the hot path), one for batches."""

    name = "litert"

    def __init__(self, content: bytes) -> None:
        self._single = _Slot(content, 1)
        self._batch = _Slot(content, 1)
        self.input_width = self._single.input_width
        probe = self._single.run(np.zeros((1, self.input_width), dtype=np.float32))
        self.output_width = int(probe.shape[1])

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        return (self._single if len(x) == 1 else self._batch).run(x)
