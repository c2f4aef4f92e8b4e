"""The monitoring loop, off the hot path: the payload log, its CloudEvents, and feature drift.

Each answered (or failed) inference request hands the monitor what it already has: the model,
the feature matrix, the probabilities, the status. :meth:`Monitor.observe` only appends that to
a bounded queue (a full queue drops the request, counted in ``payload_log_dropped_total``), and
one background thread does the rest:

- drift: the rows go into the version's :class:`service.drift.DriftTracker`, and the
  ``model_feature_drift`` gauges are set from it after each batch it takes in;
- the payload log (``PAYLOAD_LOG_DIR``): one JSON line per sampled request, with its inputs as
  records by feature name (the values as the model read them: numbers, true/false, known
  categories, null for a blank, ``"<unseen>"`` for a category training did not see), outputs,
  warnings and error. Each worker writes its own file, ``payloads-<pid>.jsonl``, created 0600,
  rotated by size to ``payloads-<pid>-<time>.jsonl`` (the newest ``PAYLOAD_LOG_FILES`` kept). A
  write that fails (a full disk) stops the log with a warning; serving goes on;
- the same record as two CloudEvents to ``PAYLOAD_LOG_URL`` (:mod:`service.cloudevents`).

On shutdown the queue is drained and the file synced to disk.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import os
import random
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from service import outputs
from service.drift import DriftTracker
from service.model import LoadedModel
from service.observability.logs import current_request, timestamp
from service.settings import Settings

if TYPE_CHECKING:
    from service.cloudevents import CloudEventsSink
    from service.observability.metrics import Metrics

log = logging.getLogger("service.monitor")

# What may wait for the monitor's thread: requests, and rows (a few large requests hold as much
# memory as many small ones); beyond either, a request is dropped and counted.
QUEUE_REQUESTS = 10_000
QUEUE_ROWS = 200_000
# The thread takes what is queued this often, or sooner once this many requests wait.
POLL_SECONDS = 0.1
WAKE_REQUESTS = 2_000
# The drift gauges are set from a version's window at most this often (PSI over every feature).
EXPORT_SECONDS = 1.0
# The thread gives the GIL away after this long of work, so that an answer never waits the
# interpreter's 5 ms switch interval behind the monitor.
YIELD_SECONDS = 0.0005
# Drift takes in at most this many windows of rows per version a second; beyond, the rows of
# the second are skipped (the window, refilled every half second at that rate, is a sample).
DRIFT_WINDOWS_PER_SECOND = 2
# At shutdown, the events still queued get at most this long to go.
EVENTS_CLOSE_SECONDS = 2.0
UNSEEN = "<unseen>"  # a category training did not see, as the payload log writes it


class PayloadLog:
    """This worker's JSONL file under ``directory``: appended, rotated by size, 0600."""

    def __init__(self, directory: Path, max_bytes: int, keep: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.keep = keep
        self.prefix = f"payloads-{os.getpid()}"
        self.path = directory / f"{self.prefix}.jsonl"
        self.fd: int | None = None
        self.size = 0
        self.failed: str | None = None  # why writing stopped

    def write(self, lines: list[bytes]) -> bool:
        """Append whole ``lines``, rotating between two lines when the file would pass its
        size; False once writing has failed."""
        if self.failed is not None:
            return False
        try:
            if self.fd is None:
                self._open()
            chunk: list[bytes] = []
            size = self.size
            for line in lines:
                if size + len(line) > self.max_bytes and size:
                    self._write(b"".join(chunk))
                    chunk = []
                    self._rotate()
                    size = 0
                chunk.append(line)
                size += len(line)
            self._write(b"".join(chunk))
            return True
        except OSError as exc:
            self.failed = exc.strerror or str(exc)
            log.warning(
                "payload log stopped: writing %s failed (%s); serving goes on", self.path,
                self.failed,
            )  # fmt: skip
            return False

    def _write(self, data: bytes) -> None:
        assert self.fd is not None
        view = memoryview(data)
        while view:  # a short write: the rest, or an error
            view = view[os.write(self.fd, view) :]
        self.size += len(data)

    def _open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0)
        self.fd = os.open(self.path, flags, 0o600)
        self.size = os.fstat(self.fd).st_size

    def _rotate(self) -> None:
        assert self.fd is not None
        os.close(self.fd)
        self.fd = None
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        os.replace(self.path, self.directory / f"{self.prefix}-{stamp}.jsonl")
        self.size = 0
        rotated = sorted(self.directory.glob(f"{self.prefix}-*.jsonl"))
        for old in rotated[: max(0, len(rotated) - self.keep)]:
            with contextlib.suppress(OSError):
                old.unlink()
        self._open()

    def close(self) -> None:
        """Sync the file to disk and close it."""
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.fsync(self.fd)
            os.close(self.fd)
            self.fd = None


class Monitor:
    """The queue between the request path and the monitor's thread."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics | None,
        events: CloudEventsSink | None = None,
    ) -> None:
        self.metrics = metrics
        self.window = settings.drift_window
        self.drift_rows_per_second = DRIFT_WINDOWS_PER_SECOND * self.window
        self.sample = settings.payload_log_sample
        self.file = (
            PayloadLog(
                settings.payload_log_dir, settings.payload_log_max_bytes, settings.payload_log_files
            )
            if settings.payload_log_dir is not None
            else None
        )
        self.events = events
        self.logs = self.file is not None or events is not None
        if metrics is not None and self.logs:  # every reason at 0, for rate() and increase()
            reasons = ["queue full", "write failed"]
            if events is not None:
                reasons += ["events failed", "events queue full", "events shutdown"]
            for reason in reasons:
                metrics.payload_log_dropped.labels(reason)
        self.queue: collections.deque[tuple] = collections.deque()
        self.wake = threading.Event()
        self.stopping = False
        self.thread: threading.Thread | None = None
        self.dropped = 0
        self.exported: dict[int, float] = {}  # when each version's drift gauges were last set
        self.pending: dict[int, LoadedModel] = {}  # versions whose window changed since then
        # Rows queued = rows_in - rows_out, each counter written by one thread only.
        self.rows_in = 0
        self.rows_out = 0

    @property
    def enabled(self) -> bool:
        return self.logs or self.window > 0

    # -- the request path ------------------------------------------------------------------
    def observe(
        self,
        model: LoadedModel | None,
        name: str,
        x: np.ndarray | None,
        probabilities: np.ndarray | None,
        notes: Any,
        protocol: str,
        status: int,
        seconds: float,
        error: str | None,
    ) -> None:
        """Hand one request to the monitor (a microsecond or two; never blocks)."""
        logged = self.logs and (self.sample >= 1 or random.random() < self.sample)
        if not logged:  # then only its rows, for drift: the least the queue can hold
            if (
                status == 200
                and x is not None
                and model is not None
                # Up to two windows' worth of rows per version a second (EXPORT_SECONDS): at
                # higher rates the window is a sample of each second's rows, not every row.
                and model.drift_queued < self.drift_rows_per_second
                and model.metadata.distributions is not None
                and len(self.queue) < QUEUE_REQUESTS
                and self.rows_in - self.rows_out + len(x) <= QUEUE_ROWS
            ):
                model.drift_queued += len(x)
                self.rows_in += len(x)
                self.queue.append((model, x))
            return
        tracked = (
            status == 200
            and self.window > 0
            and x is not None
            and model is not None
            and model.metadata.distributions is not None
        )
        rows = len(x) if x is not None else 0
        if len(self.queue) >= QUEUE_REQUESTS or self.rows_in - self.rows_out + rows > QUEUE_ROWS:
            self._dropped("queue full")
            return
        self.rows_in += rows
        context = current_request.get()
        request_id = context.request_id if context is not None else ""
        self.queue.append(
            (time.time(), request_id, model, name, x, probabilities, notes, protocol, status,
             seconds, error, tracked)
        )  # fmt: skip
        # The thread wakes on its own every POLL_SECONDS and takes everything queued at once;
        # woken per request, it would take the GIL from the requests thousands of times a second.
        if len(self.queue) >= WAKE_REQUESTS and not self.wake.is_set():
            self.wake.set()

    def _dropped(self, reason: str, count: int = 1) -> None:
        self.dropped += count
        if self.metrics is not None:
            self.metrics.payload_log_dropped.labels(reason).inc(count)

    # -- the monitor's thread --------------------------------------------------------------
    def start(self) -> None:
        if self.enabled and self.thread is None:
            if self.events is not None:
                self.events.start()
            self.thread = threading.Thread(target=self._run, name="monitor", daemon=True)
            self.thread.start()

    def _run(self) -> None:
        while True:
            self.wake.wait(POLL_SECONDS)
            self.wake.clear()
            try:
                self._drain()
            except Exception:  # never let the thread die: the next batch is tried again
                log.exception("the monitor failed on a batch of requests")
            if self.stopping and not self.queue:
                return

    def _drain(self) -> None:
        lines = []
        rows: dict[int, tuple[LoadedModel, list[np.ndarray]]] = {}
        slice_end = time.perf_counter() + YIELD_SECONDS
        while self.queue:
            item = self.queue.popleft()
            if time.perf_counter() >= slice_end:
                time.sleep(0)  # let a request take the GIL now, not after the switch interval
                slice_end = time.perf_counter() + YIELD_SECONDS
            if len(item) == 2:  # rows for drift only
                model, x = item
                self.rows_out += len(x)
                rows.setdefault(id(model), (model, []))[1].append(x)
                continue
            (stamp, request_id, model, name, x, probabilities, notes, protocol, status, seconds,
             error, tracked) = item  # fmt: skip
            self.rows_out += len(x) if x is not None else 0
            if tracked:  # gathered by version: one pass over each version's rows
                rows.setdefault(id(model), (model, []))[1].append(x)
            record = payload_record(
                stamp, request_id, model, name, x, probabilities, notes, protocol, status,
                seconds, error,
            )  # fmt: skip
            lines.append(orjson.dumps(record) + b"\n")
            if self.events is not None:
                self.events.submit(record)
        if lines and self.file is not None:
            if self.file.write(lines):
                if self.metrics is not None:
                    self.metrics.payload_log_lines.inc(len(lines))
            else:
                self._dropped("write failed", len(lines))
        for model, matrices in rows.values():
            tracker = drift_tracker(model, self.window)
            if tracker is not None:
                tracker.add(matrices[0] if len(matrices) == 1 else np.concatenate(matrices))
                self.pending[id(model)] = model
        now = time.monotonic()
        for key, model in list(self.pending.items()):  # changed windows, once a second each
            if now >= self.exported.get(key, 0.0) + EXPORT_SECONDS:
                self.exported[key] = now
                del self.pending[key]
                model.drift_queued = 0  # a new second: rows are taken in again
                self._export_drift(model)

    def _export_drift(self, model: LoadedModel) -> None:
        tracker = model.drift
        if self.metrics is None or tracker is None or not tracker.enough:
            return
        version = str(model.version)
        for feature, value in zip(model.feature_names, tracker.psi(), strict=True):
            if not math.isnan(value):
                self.metrics.feature_drift.labels(model.name, version, feature).set(value)

    def stop(self, timeout: float = 5.0) -> None:
        """Drain the queue, sync the file, send what the time allows; then return."""
        deadline = time.monotonic() + timeout
        self.stopping = True
        self.wake.set()
        if self.thread is not None:
            self.thread.join(max(0.0, deadline - time.monotonic()))
        if self.file is not None:
            self.file.close()
        if self.events is not None:  # a stalled sink may hold shutdown a moment, not the drain
            self.events.close(min(EVENTS_CLOSE_SECONDS, max(0.1, deadline - time.monotonic())))


_TRACKER_LOCK = threading.Lock()


def drift_tracker(model: LoadedModel, window: int) -> DriftTracker | None:
    """The version's drift tracker, made on first use; None without training distributions."""
    if model.drift is None and model.metadata.distributions is not None and window > 0:
        with _TRACKER_LOCK:
            if model.drift is None:
                model.drift = DriftTracker(
                    model.feature_names, model.metadata.distributions, window
                )
    return model.drift


# -- the payload log's record ------------------------------------------------------------------
def payload_record(
    stamp: float,
    request_id: str,
    model: LoadedModel | None,
    name: str,
    x: np.ndarray | None,
    probabilities: np.ndarray | None,
    notes: Any,
    protocol: str,
    status: int,
    seconds: float,
    error: str | None,
) -> dict[str, Any]:
    """One line of the payload log (the contract: ``../shared/DESIGN.md``, Monitoring loop)."""
    inputs = records_of(model, x) if model is not None and x is not None else None
    answered = model is not None and probabilities is not None and status == 200
    result = None
    warnings: list[list[str]] = []
    if answered:
        assert model is not None and probabilities is not None and x is not None
        keys = model.class_keys
        labels = model.labels
        result = [
            {"label": labels[i], "probabilities": dict(zip(keys, row, strict=True))}
            for i, row in zip(
                model.label_indices(probabilities), probabilities.tolist(), strict=True
            )
        ]
        warnings = outputs.with_notes(outputs.range_warnings(model, x), notes)
    return {
        "time": timestamp(stamp),  # ISO 8601 UTC, milliseconds, as the service's log lines
        "request_id": request_id,
        "model": model.name if model is not None else name,
        "version": model.version if model is not None else None,
        "protocol": protocol,
        "status": status,
        "latency_ms": round(seconds * 1000, 3),
        "inputs": inputs,
        "outputs": result,
        "warnings": warnings,
        "error": error,
    }


def records_of(model: LoadedModel, x: np.ndarray) -> list[dict[str, Any]]:
    """The matrix's rows as records by feature name, the values as the model read them."""
    names = model.feature_names
    # Each float32 as its shortest decimal (5.1, not 5.099999904632568), a blank as None.
    rows = orjson.loads(orjson.dumps(x, option=orjson.OPT_SERIALIZE_NUMPY))
    if model.typed is None:  # numbers only
        return [dict(zip(names, row, strict=True)) for row in rows]
    columns = []
    for j, spec in enumerate(model.metadata.features):
        column = [row[j] for row in rows]
        if spec.kind == "categorical":
            vocabulary = spec.vocabulary or []
            # The blank category ("") is null, as a client sends it.
            column = [(vocabulary[int(v) - 1] or None) if v >= 1 else UNSEEN for v in column]
        elif spec.kind == "boolean":
            column = [None if v is None else v >= 0.5 for v in column]
        columns.append(column)
    return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]
