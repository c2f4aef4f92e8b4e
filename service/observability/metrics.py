"""Prometheus metrics: one set per process, rendered at ``GET /metrics``.

Each uvicorn worker is a process with its own counters. When ``PROMETHEUS_MULTIPROC_DIR`` is set
before the process starts (``python -m service`` sets it when WORKERS > 1), prometheus-client
keeps every value in a file there and :func:`render` adds up the files of all workers, so
whichever worker answers a scrape reports the whole server.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess, values
from prometheus_client.exposition import choose_encoder

from service.observability.series import HistogramChild, PlainCounter, PlainHistogram
from service.registry import ModelEvents

if TYPE_CHECKING:
    from service.model import LoadedModel

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Seconds: sub-millisecond health checks up to requests near the default 30 s timeout.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# Rows per model call: powers of two up to the default MAX_BATCH_ROWS (10,000) and beyond.
BATCH_BUCKETS = tuple(float(2**i) for i in range(15))
# The largest difference between two versions' probabilities of one row.
DIFFERENCE_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def multiprocess_mode() -> bool:
    """True when values live in PROMETHEUS_MULTIPROC_DIR (decided when prometheus-client loads)."""
    return values.ValueClass is not values.MutexValue


class Metrics:
    """Every series the service exports; children are cached so a request does no label lookup.

    The series updated per request are plain numbers (:mod:`.series`) unless values must be
    shared through files (multiprocess mode); either way they are updated on the event loop.
    """

    def __init__(self) -> None:
        self.multiprocess = multiprocess_mode()
        self.registry = CollectorRegistry()
        counter: Any = Counter
        histogram: Any = Histogram
        if not self.multiprocess:
            from prometheus_client import PLATFORM_COLLECTOR, PROCESS_COLLECTOR

            self.registry.register(PROCESS_COLLECTOR)
            self.registry.register(PLATFORM_COLLECTOR)
            counter, histogram = PlainCounter, PlainHistogram
        registry = self.registry
        http = ["route", "method", "status"]
        self.requests = counter(
            "http_requests",
            "HTTP requests answered, by route template, method and status.",
            http,
            registry=registry,
        )
        self.latency = histogram(
            "http_request_duration_seconds",
            "Time from the request's arrival to the end of its answer, by route template, method and status.",
            http,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "http_predictions_in_flight",
            "Prediction requests being answered now, HTTP and gRPC (MAX_CONCURRENCY caps it per "
            "worker).",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.predictions_in_flight = 0
        if not self.multiprocess:  # read at scrape time: nothing to do per request
            self.in_flight.set_function(lambda: self.predictions_in_flight)
        self.connections_refused = Counter(
            "http_connections_refused",
            "Requests or connections refused before any route ran, by reason: header_bytes "
            "(MAX_HEADER_BYTES, 431), headers (MAX_HEADERS, 431), header_timeout "
            "(HEADER_TIMEOUT_SECONDS, 408 or closed), connections (MAX_CONNECTIONS, 503).",
            ["reason"],
            registry=registry,
        )
        self.bodies_arriving = Gauge(
            "http_request_bodies_arriving",
            "Prediction requests whose body is still arriving (read before they take one of "
            "the MAX_CONCURRENCY slots): many of them are slow or stalled clients.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.overload = counter(
            "http_overload_rejections",
            "Prediction requests refused: 503 over MAX_CONCURRENCY (concurrency) or "
            "REQUEST_TIMEOUT_SECONDS (timeout); 408 for a body still arriving after "
            "REQUEST_TIMEOUT_SECONDS (slow body).",
            ["reason"],
            registry=registry,
        )
        self.predictions = counter(
            "model_predictions",
            "Rows predicted, by model, version and predicted label.",
            ["model", "version", "label"],
            registry=registry,
        )
        self.out_of_range = counter(
            "model_out_of_range",
            "Feature values outside the training range (one per row and feature), by model and "
            "feature.",
            ["model", "feature"],
            registry=registry,
        )
        self.batch_rows = histogram(
            "model_batch_rows",
            "Rows per model call (the Keras runtime's batcher merges concurrent requests).",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.payload_log_lines = Counter(
            "payload_log_lines",
            "Requests written to the payload log (PAYLOAD_LOG_DIR).",
            registry=registry,
        )
        self.payload_log_dropped = Counter(
            "payload_log_dropped",
            "Requests the payload log (or its CloudEvents) lost, by reason: queue full, write "
            "failed (the log stopped: a full disk), failed (events after their retries), "
            "shutdown.",
            ["reason"],
            registry=registry,
        )
        self.feature_drift = Gauge(
            "model_feature_drift",
            "Population stability index of each feature over the last DRIFT_WINDOW rows a "
            "version answered, against its training distribution (> 0.2: significant drift).",
            ["model", "version", "feature"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.model_info = Gauge(
            "model_info",
            "The version each model serves to unversioned requests: 1 while a worker serves it.",
            ["model", "version", "runtime"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.reloads = Counter(
            "model_reloads",
            "Model versions loaded and swapped in (succeeded, the first load included) or "
            "refused at verification (rejected), by model.",
            ["model", "result"],
            registry=registry,
        )
        self.inferences = counter(
            "inference_requests",
            "Inference calls answered by the data plane, by model and version (empty when none "
            "was found), protocol (predict, v2, tfserving, grpc) and outcome as an HTTP status "
            "(200, 400, 404, 413, 503...; 499: cancelled, by REQUEST_TIMEOUT_SECONDS or the "
            "client), whatever the transport.",
            ["model", "version", "protocol", "status"],
            registry=registry,
        )
        self.inference_latency = histogram(
            "inference_request_duration_seconds",
            "Time the data plane took for an inference call (lookup, decoding, prediction, "
            "encoding), by model, version and protocol.",
            ["model", "version", "protocol"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.grpc_requests = counter(
            "grpc_requests",
            "gRPC calls answered, by method and status code.",
            ["method", "code"],
            registry=registry,
        )
        self.grpc_latency = histogram(
            "grpc_request_duration_seconds",
            "Time from a gRPC call's arrival to its answer, by method and status code.",
            ["method", "code"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.shadow_predictions = counter(
            "model_shadow_predictions",
            "Rows a shadow version scored after another version answered them, by model, the "
            "answering version, the shadow version and whether both gave the same label.",
            ["model", "version", "shadow_version", "agree"],
            registry=registry,
        )
        self.shadow_difference = histogram(
            "model_shadow_probability_difference",
            "Per shadowed row, the largest difference between the answering and the shadow "
            "version's probability of one class.",
            ["model", "version", "shadow_version"],
            buckets=DIFFERENCE_BUCKETS,
            registry=registry,
        )
        self.shadow_dropped = counter(
            "model_shadow_dropped",
            "Rows not shadowed, by model and reason: queue full (the scorer is behind), "
            "features differ (the shadow reads other features), not finite (the shadow answered "
            "NaN or infinity), failed (the shadow raised), shutdown (still queued at exit).",
            ["model", "reason"],
            registry=registry,
        )
        self._grpc: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._inference: dict[tuple[str, int, str, int], tuple[Any, Any]] = {}
        self._http: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        # Per model and version: its class keys and feature names, and their counters.
        self._model_children: dict[tuple[str, int], tuple[Any, Any, list[Any], list[Any]]] = {}
        # One model call of that many rows: the unlabelled histogram's own observe.
        self.observe_batch = (
            self.batch_rows.observe if self.multiprocess else self.batch_rows.labels().observe
        )

    # -- per request -------------------------------------------------------------------------
    def prediction_started(self) -> None:
        self.predictions_in_flight += 1
        if self.multiprocess:
            self.in_flight.inc()

    def prediction_ended(self) -> None:
        self.predictions_in_flight -= 1
        if self.multiprocess:
            self.in_flight.dec()

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        if method not in _METHODS:  # any token is a valid method: keep the series bounded
            method = "other"
        key = (route, method, status)
        children = self._http.get(key)
        if children is None:
            labels = (route, method, str(status))
            children = (self.requests.labels(*labels), self.latency.labels(*labels))
            self._http[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def observe_grpc(self, method: str, code: str, seconds: float) -> None:
        key = (method, code)
        children = self._grpc.get(key)
        if children is None:
            children = (self.grpc_requests.labels(*key), self.grpc_latency.labels(*key))
            self._grpc[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def observe_inference(
        self, model: str, version: int, protocol: str, status: int, seconds: float
    ) -> None:
        """One inference call; ``model`` "" and ``version`` 0 when no model was found."""
        key = (model, version, protocol, status)
        children = self._inference.get(key)
        if children is None:
            number = str(version) if version else ""
            children = (
                self.inferences.labels(model, number, protocol, str(status)),
                self.inference_latency.labels(model, number, protocol),
            )
            self._inference[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def observe_predictions(self, model: LoadedModel, x: np.ndarray, probabilities: Any) -> None:
        """Count rows by predicted label and out-of-range values by feature."""
        labels, features = self._children_of(model)
        if len(probabilities) == 1 and model.threshold is None:  # plain Python: faster for a row
            row = probabilities.tolist()[0]
            labels[row.index(max(row))].inc()  # argmax: the first maximum
            lows, highs = model.feature_bounds
            for j, value in enumerate(x.tolist()[0]):
                if value < lows[j] or value > highs[j]:
                    features[j].inc()
            return
        if len(probabilities):
            counts = np.bincount(model.label_indices(probabilities), minlength=len(labels))
            for i in np.flatnonzero(counts).tolist():
                labels[i].inc(int(counts[i]))
        outside = (x < model.feature_min) | (x > model.feature_max)
        if outside.any():
            per_feature = np.count_nonzero(outside, axis=0)
            for j in np.flatnonzero(per_feature).tolist():
                features[j].inc(int(per_feature[j]))

    def _children_of(self, model: LoadedModel) -> tuple[list[Any], list[Any]]:
        """The counters of the model's labels and features, in class and feature order."""
        key = (model.name, model.version)
        cached = self._model_children.get(key)
        if (
            cached is None
            or model.class_keys is not cached[0]
            or model.feature_names is not cached[1]
        ):
            name, version = key[0], str(key[1])
            cached = (
                model.class_keys,
                model.feature_names,
                [self.predictions.labels(name, version, label) for label in model.class_keys],
                [self.out_of_range.labels(name, feature) for feature in model.feature_names],
            )
            self._model_children[key] = cached
        return cached[2], cached[3]

    def observe_shadow(
        self,
        answered_by: LoadedModel,
        shadow: LoadedModel,
        agree: np.ndarray,
        difference: np.ndarray,
    ) -> None:
        """Count a shadowed batch's rows by agreement and observe each row's difference."""
        labels = (answered_by.name, str(answered_by.version), str(shadow.version))
        agreed = int(np.count_nonzero(agree))
        if agreed:
            self.shadow_predictions.labels(*labels, "true").inc(agreed)
        if len(agree) - agreed:
            self.shadow_predictions.labels(*labels, "false").inc(len(agree) - agreed)
        child = self.shadow_difference.labels(*labels)
        if isinstance(child, HistogramChild):
            child.observe_many(difference)
        else:  # prometheus-client's, in multiprocess mode: one value at a time
            for value in difference.tolist():
                child.observe(value)

    def observe_shadow_dropped(self, model: str, reason: str, rows: int) -> None:
        self.shadow_dropped.labels(model, reason).inc(rows)

    # -- exposition --------------------------------------------------------------------------
    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition text (all workers' sum in multiprocess mode) and its content type."""
        encoder, content_type = choose_encoder(accept or "")
        if not self.multiprocess:
            return encoder(self.registry), content_type
        combined = CollectorRegistry()
        multiprocess.MultiProcessCollector(combined)
        return encoder(combined), content_type


_metrics: Metrics | None = None


def get_metrics() -> Metrics:
    """This process's metrics, made on first use."""
    global _metrics
    if _metrics is None:
        _metrics = Metrics()
    return _metrics


class ModelMetrics(ModelEvents):
    """The registry's events as metrics: the served version (``model_info``), reloads by
    result and rows per model call. Each worker writes its own (files in multiprocess mode)
    as the events happen, so any worker's scrape is current."""

    def __init__(self, model_name: str, metrics: Metrics | None = None) -> None:
        self.model_name = model_name
        self.metrics = metrics or get_metrics()
        self.batch = self.metrics.observe_batch  # type: ignore[method-assign]
        self._served: tuple[str, str, str] | None = None

    def loaded(self, model: LoadedModel) -> None:
        self.metrics.reloads.labels(self.model_name, "succeeded").inc()

    def rejected(self, version: int, reason: str) -> None:
        self.metrics.reloads.labels(self.model_name, "rejected").inc()

    def served(self, model: LoadedModel) -> None:
        served = (self.model_name, str(model.version), model.runtime.name)
        if served != self._served:
            self._forget()
            self.metrics.model_info.labels(*served).set(1)
            self._served = served

    def _forget(self) -> None:
        if self._served is None:
            return
        self.metrics.model_info.labels(*self._served).set(0)
        # A worker's file keeps the zero: prometheus-client cannot remove multiprocess children.
        if not self.metrics.multiprocess:
            with contextlib.suppress(KeyError):
                self.metrics.model_info.remove(*self._served)
        self._served = None

    def close(self) -> None:
        """The worker stops serving: its served version is forgotten, its files marked dead."""
        self._forget()
        if self.metrics.multiprocess:
            multiprocess.mark_process_dead(os.getpid())


def prepare_multiprocess_dir(path: str) -> None:
    """Create the directory, or empty it of a previous run's files (call before workers start)."""
    os.makedirs(path, exist_ok=True)
    for name in os.listdir(path):
        if name.endswith(".db"):
            os.remove(os.path.join(path, name))
