"""The service on the Keras runtime with batching turned off: one model call per request.

Same app, same runtime, same worker thread; only the batcher is replaced by one that calls the
model once for every request, to show what adaptive batching gains. Two model calls:

- :func:`create_app`: the runtime's compiled graph, as the batcher calls it (batching alone);
- :func:`create_eager_app`: the Keras model called directly, ``model(x)``, op by op.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from fastapi import FastAPI

import service.registry
from service.app import create_app as create_service_app
from service.runtimes.keras import KerasRuntime


class OnePerRequest:
    """The batcher's interface, without batching: each request is its own model call."""

    def __init__(
        self,
        predict: Callable[[np.ndarray], np.ndarray],
        max_rows: int,
        max_wait: float = 0.0,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._predict = predict
        self._on_batch = on_batch
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="unbatched")
        self.batches = 0
        self.rows = 0

    async def submit(self, x: np.ndarray) -> np.ndarray:
        out = await asyncio.get_running_loop().run_in_executor(self._executor, self._predict, x)
        self.batches += 1
        self.rows += len(x)
        if self._on_batch is not None:
            self._on_batch(len(x))
        return out

    def close(self) -> None:
        self._executor.shutdown(wait=False)


def create_app() -> FastAPI:
    """The service (Keras runtime expected: ``MODEL_RUNTIME=keras``) without batching."""
    # The registry gives each Keras model its batcher (Registry._batcher): replace it there.
    service.registry.AdaptiveBatcher = OnePerRequest  # type: ignore[misc,assignment]
    return create_service_app()


def create_eager_app() -> FastAPI:
    """The service without batching, calling the Keras model directly for every request."""
    KerasRuntime.predict = KerasRuntime.predict_eager  # type: ignore[method-assign]
    return create_app()
