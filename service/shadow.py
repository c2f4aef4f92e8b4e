"""Shadow scoring: a version scores the rows another one answered, after the answer is sent.

The data plane hands each shadowed request's feature matrix and answered probabilities to
:meth:`ShadowScorer.submit`, which only queues them. A background task wakes a few milliseconds
later, merges what queued meanwhile into one model call per (answering, shadow) pair, and counts
per row whether both versions give the same label and how far apart their probabilities are.
The queue is bounded: under a flood the surplus is dropped and counted, never waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from functools import partial
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from anyio.to_thread import run_sync as to_thread

if TYPE_CHECKING:
    from service.model import LoadedModel
    from service.observability.metrics import Metrics

log = logging.getLogger("service.shadow")

MAX_QUEUED_ROWS = 20_000  # beyond this, rows to shadow are dropped (counted)
GATHER_SECONDS = 0.002  # how long a batch gathers once the first request queued
THREAD_ROWS = 256  # a batch this large is scored on a worker thread, not the event loop


class Shadowed(NamedTuple):
    answered_by: LoadedModel
    shadow: LoadedModel
    x: np.ndarray
    probabilities: np.ndarray


class ShadowScorer:
    """A bounded queue of rows to shadow and the task that scores them."""

    def __init__(self, sink: Metrics | None, max_rows: int = MAX_QUEUED_ROWS) -> None:
        self.sink = sink
        self.max_rows = max_rows
        self._queue: list[Shadowed] = []
        self._rows = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._scoring: list[Shadowed] = []  # the batch being scored
        self._stopping = False
        self.scored_rows = 0  # for tests and the benchmark

    def start(self) -> None:
        """Start the scoring task on the running event loop."""
        self._wake = asyncio.Event()
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="shadow-scorer")

    async def stop(self, timeout: float = 2.0) -> None:
        """Score what is queued, then stop; within ``timeout`` seconds, after which the rows
        still waiting are counted as dropped (reason "shutdown")."""
        task, self._task = self._task, None
        if task is None or self._wake is None:
            return
        self._stopping = True
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self._drop(self._queue + self._scoring, "shutdown")
        self._queue, self._rows, self._scoring = [], 0, []

    def submit(
        self,
        answered_by: LoadedModel,
        shadow: LoadedModel,
        x: np.ndarray,
        probabilities: np.ndarray,
    ) -> None:
        """Queue a request's rows for ``shadow`` (from the event loop; never waits)."""
        if self._task is None or self._wake is None:
            return
        rows = len(x)
        if self._rows + rows > self.max_rows:
            if self.sink is not None:
                self.sink.observe_shadow_dropped(answered_by.name, "queue full", rows)
            return
        self._queue.append(Shadowed(answered_by, shadow, x, probabilities))
        self._rows += rows
        self._wake.set()

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            if not self._stopping:
                await asyncio.sleep(GATHER_SECONDS)  # the answers go out; more requests queue
            self._wake.clear()
            self._scoring, self._queue, self._rows = self._queue, [], 0
            try:
                await self._score(self._scoring)
            except Exception:  # never let the scorer die: the next batch tries again
                log.exception("shadow scoring failed")
                self._drop(self._scoring, "failed")
            self._scoring = []
            if self._stopping and not self._queue:
                return

    def _drop(self, items: list[Shadowed], reason: str) -> None:
        if self.sink is not None:
            for item in items:
                self.sink.observe_shadow_dropped(item.answered_by.name, reason, len(item.x))

    async def _score(self, batch: list[Shadowed]) -> None:
        groups: dict[tuple[int, int], list[Shadowed]] = {}
        for item in batch:
            groups.setdefault((id(item.answered_by), id(item.shadow)), []).append(item)
        for items in groups.values():
            answered_by, shadow = items[0].answered_by, items[0].shadow
            rows = sum(len(item.x) for item in items)
            if shadow.input_signature != answered_by.input_signature:
                self._drop(items, "features differ")
                continue
            try:
                if shadow.batcher is not None:  # Keras: its batcher's thread runs the model
                    scored = await shadow.batcher.submit(_rows_of(items))
                    judge = partial(self._judge, items, scored)
                else:
                    judge = partial(self._score_sync, items)
                # A large batch is read, scored and counted on a worker thread: the event
                # loop never spends more than a small batch's worth on it.
                await to_thread(judge) if rows >= THREAD_ROWS else judge()
            except Exception as exc:
                log.warning(
                    "shadow version %s of %s failed to score %d rows: %s",
                    shadow.version,
                    shadow.name,
                    rows,
                    type(exc).__name__,
                )
                self._drop(items, "failed")

    def _score_sync(self, items: list[Shadowed]) -> None:
        self._judge(items, items[0].shadow.probabilities_sync(_rows_of(items)))

    def _judge(self, items: list[Shadowed], scored: np.ndarray) -> None:
        """Compare the shadow's probabilities with the answers and count them. Rows whose
        shadow probabilities are not finite are dropped (reason "not finite"), not compared."""
        answered_by, shadow = items[0].answered_by, items[0].shadow
        answered = np.concatenate([item.probabilities for item in items])
        scored = np.asarray(scored)
        finite = np.isfinite(scored).all(axis=1)
        if not finite.all():
            if self.sink is not None:
                bad = int(np.count_nonzero(~finite))
                self.sink.observe_shadow_dropped(answered_by.name, "not finite", bad)
            answered, scored = answered[finite], scored[finite]
        if not len(scored):
            return
        agree, difference = compare(answered_by, shadow, answered, scored)
        self.scored_rows += len(scored)
        if self.sink is not None:
            self.sink.observe_shadow(answered_by, shadow, agree, difference)


def _rows_of(items: list[Shadowed]) -> np.ndarray:
    return np.concatenate([item.x for item in items]) if len(items) > 1 else items[0].x


def compare(
    answered_by: LoadedModel, shadow: LoadedModel, answered: np.ndarray, scored: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per row: whether both versions give the same decoded label, and the largest absolute
    difference between their probabilities of the same class (classes matched by label; a
    class only one version has counts with probability 0 in the other)."""
    answered_labels = np.asarray(answered_by.labels, dtype=object)[
        answered_by.label_indices(answered)
    ]
    scored_labels = np.asarray(shadow.labels, dtype=object)[shadow.label_indices(scored)]
    agree = answered_labels == scored_labels
    if answered_by.class_keys == shadow.class_keys:
        return agree, np.abs(answered - scored).max(axis=1)
    keys = list(dict.fromkeys([*answered_by.class_keys, *shadow.class_keys]))
    left = np.zeros((len(answered), len(keys)))
    right = np.zeros_like(left)
    left[:, [keys.index(k) for k in answered_by.class_keys]] = answered
    right[:, [keys.index(k) for k in shadow.class_keys]] = scored
    return agree, np.abs(left - right).max(axis=1)
