"""Keras runtime: ``model.keras`` loaded in safe mode, called through one compiled graph."""

from __future__ import annotations

import os
import tempfile

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


class KerasRuntime:
    """Runs the Keras model as a ``tf.function`` traced once, for any number of rows.

    Per call on this kind of machine: ``model.predict`` ~40 ms, calling the model directly
    (eager) ~3 ms, this graph ~0.5 ms, most of it in TensorFlow's C++ with the GIL released,
    so the event loop keeps serving while a batch runs. The input signature leaves the row
    count open: one trace at load, never a retrace for a new batch size.
    """

    name = "keras"

    def __init__(
        self, content: bytes, filename: str = "model.keras", core: str | None = None
    ) -> None:
        import keras
        import tensorflow as tf

        # Load the verified bytes, not the file again: the file could change after verification.
        with tempfile.TemporaryDirectory(prefix="keras-load-") as tmp:
            path = os.path.join(tmp, filename)
            with open(path, "wb") as handle:
                handle.write(content)
            self._model = keras.saving.load_model(path, compile=False, safe_mode=True)
        if core is not None:
            # model.keras takes raw values; the service encodes them itself (as for LiteRT)
            # and calls the core, which takes the encoded matrix.
            self._model = self._model.get_layer(core)
        shape = self._model.inputs[0].shape
        self.input_width = int(shape[-1])
        model = self._model
        self._graph = tf.function(
            lambda x: model(x, training=False),
            input_signature=[tf.TensorSpec([None, self.input_width], tf.float32)],
            autograph=False,
        )
        probe = self.predict(np.zeros((1, self.input_width), dtype=np.float32))
        self.output_width = int(probe.shape[1])

    def predict(self, x: np.ndarray) -> np.ndarray:
        out = self._graph(np.ascontiguousarray(x, dtype=np.float32))
        return np.asarray(out, dtype=np.float32)

    def predict_eager(self, x: np.ndarray) -> np.ndarray:
        """The model called directly, op by op (the benchmark's per-request baseline)."""
        out = self._model(np.ascontiguousarray(x, dtype=np.float32), training=False)
        return np.asarray(out, dtype=np.float32)
