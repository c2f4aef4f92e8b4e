"""Adaptive batching: requests that arrive while the model is busy form the next batch."""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np


class AdaptiveBatcher:
    """Runs ``predict`` on one worker thread, merging waiting requests into one call.

    A request that finds the model idle runs at once; while a batch runs, new requests
    queue and the next batch takes as many of them as fit in ``max_rows``. ``max_wait``
    (seconds, default 0) optionally waits for more rows before an under-full batch.
    ``on_batch(rows)`` is told of every model call, on the event loop's thread.
    """

    def __init__(
        self,
        predict: Callable[[np.ndarray], np.ndarray],
        max_rows: int,
        max_wait: float = 0.0,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._predict = predict
        self._on_batch = on_batch
        self._max_rows = max_rows
        self._max_wait = max_wait
        self._queue: deque[tuple[np.ndarray, asyncio.Future[np.ndarray]]] = deque()
        self._queued_rows = 0
        self._running = False
        self._drainer: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = self._new_executor()
        # close() comes from the registry's loading thread while the event loop batches.
        self._lock = threading.Lock()
        self._closed = False
        self.batches = 0
        self.rows = 0

    async def submit(self, x: np.ndarray) -> np.ndarray:
        """Probabilities for ``x``, computed in some batch with other requests' rows."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[np.ndarray] = loop.create_future()
        self._queue.append((x, future))
        self._queued_rows += len(x)
        if not self._running:
            self._running = True
            self._drainer = loop.create_task(self._drain())
        return await future

    def _take(self) -> list[tuple[np.ndarray, asyncio.Future[np.ndarray]]]:
        taken = [self._queue.popleft()]
        rows = len(taken[0][0])
        while self._queue and rows + len(self._queue[0][0]) <= self._max_rows:
            item = self._queue.popleft()
            taken.append(item)
            rows += len(item[0])
        self._queued_rows -= rows
        return taken

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                if self._max_wait > 0 and self._queued_rows < self._max_rows:
                    await asyncio.sleep(self._max_wait)
                taken = [item for item in self._take() if not item[1].cancelled()]
                if not taken:
                    continue
                x = taken[0][0] if len(taken) == 1 else np.concatenate([t[0] for t in taken])
                try:
                    out = await loop.run_in_executor(self._worker(), self._predict, x)
                except Exception as exc:
                    for _, future in taken:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                self.batches += 1
                self.rows += len(x)
                if self._on_batch is not None:
                    self._on_batch(len(x))
                start = 0
                for rows, future in taken:
                    if not future.done():
                        future.set_result(out[start : start + len(rows)])
                    start += len(rows)
        finally:
            with self._lock:
                self._running = False
                if self._closed:
                    self._shutdown()

    @staticmethod
    def _new_executor() -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="batcher")

    def _worker(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:  # closed while idle, then a request that held it came
                self._executor = self._new_executor()
            return self._executor

    def _shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    def close(self) -> None:
        """Stop the worker thread once queued work is done (safe from any thread).

        Requests in flight still get their answers: a version swapped out keeps answering
        the requests that took it before the swap, then its thread ends.
        """
        with self._lock:
            self._closed = True
            if not self._running:
                self._shutdown()
