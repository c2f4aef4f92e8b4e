"""The CloudEvents sink against real HTTP servers on 127.0.0.1: what it sends, its retries, and
that a stalled or missing sink never holds the caller up."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from service.cloudevents import REQUEST_TYPE, RESPONSE_TYPE, CloudEventsSink

SOURCE = "http://testserver/models/iris"


def record(request_id: str, **changes: Any) -> dict[str, Any]:
    """A payload log record of an answered request, with ``changes``."""
    return {
        "time": "2026-11-29T22:15:03.123456+00:00",
        "request_id": request_id,
        "model": "iris",
        "version": 1,
        "protocol": "predict",
        "status": 200,
        "latency_ms": 0.41,
        "inputs": [{"sepal_length": 5.1, "sepal_width": 3.5}],
        "outputs": [{"label": "setosa", "probabilities": {"setosa": 0.9, "virginica": 0.1}}],
        "warnings": [[]],
        "error": None,
        **changes,
    }


class Counts:
    """The sink's on_sent and on_dropped callbacks, counted."""

    def __init__(self) -> None:
        self.sent = 0
        self.dropped: Counter[str] = Counter()
        self._lock = threading.Lock()

    def on_sent(self) -> None:
        with self._lock:
            self.sent += 1

    def on_dropped(self, reason: str, count: int) -> None:
        with self._lock:
            self.dropped[reason] += count


@pytest.fixture
def counts() -> Counts:
    return Counts()


def make_sink(url: str, counts: Counts, **options: Any) -> CloudEventsSink:
    options = {"attempts": 3, "backoff": 0.01, "timeout": 5.0, **options}
    sink = CloudEventsSink(
        url, SOURCE, on_sent=counts.on_sent, on_dropped=counts.on_dropped, **options
    )
    sink.start()
    return sink


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_two_events_per_record_as_kserve_sends_them(serve_sink, counts):
    server = serve_sink()
    sink = make_sink(server.url, counts)
    failed = record(
        "req-2", status=422, inputs=None, outputs=None, error="row 0: sepal_length is missing"
    )
    blank = record("req-3", inputs=[{"sepal_length": float("nan"), "sepal_width": 3.5}])
    for each in (record("req-1"), failed, blank):
        assert sink.submit(each)
    wait_for(lambda: counts.sent == 3)
    sink.close(timeout=5)

    received = server.received
    assert [(r.headers["ce-id"], r.headers["ce-type"]) for r in received] == [
        (request_id, ce_type)
        for request_id in ("req-1", "req-2", "req-3")
        for ce_type in (REQUEST_TYPE, RESPONSE_TYPE)
    ]
    for event in received:
        assert event.path == "/events"
        assert event.headers["content-type"] == "application/json"
        assert event.headers["ce-specversion"] == "1.0"
        assert event.headers["ce-source"] == SOURCE
        assert event.headers["ce-time"] == "2026-11-29T22:15:03.123456+00:00"
        assert event.headers["ce-model"] == "iris"
        assert event.headers["ce-inferenceservicename"] == "iris"
        assert event.headers["ce-modelversion"] == "1"
    assert [event.body for event in received] == [
        {"instances": [{"sepal_length": 5.1, "sepal_width": 3.5}]},
        {"predictions": [{"label": "setosa", "probabilities": {"setosa": 0.9, "virginica": 0.1}}]},
        {"instances": None},  # a request the service could not read
        {"error": "row 0: sepal_length is missing", "status": 422},
        {"instances": [{"sepal_length": None, "sepal_width": 3.5}]},  # NaN is not JSON
        {"predictions": [{"label": "setosa", "probabilities": {"setosa": 0.9, "virginica": 0.1}}]},
    ]
    assert len({event.client_port for event in received}) == 1  # one connection, reused
    assert counts.dropped == {}


def test_header_values_are_percent_encoded(serve_sink, counts):
    server = serve_sink()
    sink = CloudEventsSink(server.url, "http://testserver/models/my model", on_sent=counts.on_sent)
    sink.start()
    sink.submit(record("req-1", model="irís", version=None))
    wait_for(lambda: counts.sent == 1)
    sink.close(timeout=5)
    headers = server.received[0].headers
    assert headers["ce-source"] == "http://testserver/models/my%20model"
    assert headers["ce-model"] == "ir%C3%ADs"
    assert "ce-modelversion" not in headers  # no version: the attribute is left out


@pytest.mark.parametrize("status", [503, 429])
def test_a_retried_event_is_delivered(serve_sink, counts, status):
    server = serve_sink(lambda n: status if n <= 2 else 200)
    sink = make_sink(server.url, counts)
    sink.submit(record("req-1"))
    wait_for(lambda: counts.sent == 1)
    sink.close(timeout=5)
    types = [event.headers["ce-type"] for event in server.received]
    assert types == [REQUEST_TYPE] * 3 + [RESPONSE_TYPE]
    assert len({json.dumps(event.body) for event in server.received[:3]}) == 1
    assert counts.dropped == {}


@pytest.mark.parametrize("status", [500, 503, 429])
def test_an_event_failing_every_attempt_drops_the_record(serve_sink, counts, status):
    server = serve_sink(lambda n: status)
    sink = make_sink(server.url, counts, attempts=3)
    sink.submit(record("req-1"))
    sink.submit(record("req-2"))
    wait_for(lambda: counts.dropped["failed"] == 2)
    sink.close(timeout=5)
    # Three tries of each record's request event; its response event is not sent.
    assert [event.headers["ce-id"] for event in server.received] == ["req-1"] * 3 + ["req-2"] * 3
    assert {event.headers["ce-type"] for event in server.received} == {REQUEST_TYPE}
    assert counts.sent == 0
    assert counts.dropped == {"failed": 2}


@pytest.mark.parametrize("status", [400, 404, 413])
def test_a_refused_event_is_not_retried(serve_sink, counts, status):
    server = serve_sink(lambda n: status if n == 1 else 200)
    sink = make_sink(server.url, counts, attempts=3)
    sink.submit(record("req-1"))
    sink.submit(record("req-2"))
    wait_for(lambda: counts.sent == 1 and counts.dropped["failed"] == 1)
    sink.close(timeout=5)
    assert [event.headers["ce-id"] for event in server.received] == ["req-1", "req-2", "req-2"]


def test_a_connection_the_sink_closed_is_replaced_without_using_an_attempt(serve_sink, counts):
    server = serve_sink(close_silently=True)
    sink = make_sink(server.url, counts, attempts=1)
    for i in range(5):
        sink.submit(record(f"req-{i}"))
    wait_for(lambda: counts.sent == 5)
    sink.close(timeout=5)
    assert len(server.received) == 10
    assert counts.dropped == {}


def test_close_sends_what_is_queued(serve_sink, counts):
    server = serve_sink()
    sink = CloudEventsSink(server.url, SOURCE, on_sent=counts.on_sent)
    for i in range(200):  # queued before the worker starts
        assert sink.submit(record(f"req-{i}"))
    sink.start()
    sink.close(timeout=30)
    assert counts.sent == 200
    assert len(server.received) == 400
    assert not sink.submit(record("late"))


def test_a_stalled_sink_never_holds_up_submit_or_close(stalled, counts):
    queue_size = 1000
    sink = make_sink(stalled.url, counts, queue_size=queue_size, timeout=30.0)
    assert sink.submit(record("first"))
    assert stalled.got_bytes.wait(10)  # the worker now waits on the sink with "first"

    submitted = 20_000
    slowest = 0.0
    accepted = 0
    started = time.perf_counter()
    for i in range(submitted):
        before = time.perf_counter()
        accepted += sink.submit(record(f"req-{i}"))
        slowest = max(slowest, time.perf_counter() - before)
    total = time.perf_counter() - started
    print(f"\n{submitted} submits: {total * 1000:.1f} ms in all, slowest {slowest * 1e6:.0f} µs")
    assert accepted == queue_size
    assert counts.dropped == {"queue full": submitted - queue_size}
    assert total < 2.0  # generous: the machine is shared

    started = time.perf_counter()
    sink.close(timeout=1)
    took = time.perf_counter() - started
    print(f"close(timeout=1): {took:.2f} s")
    assert took < 2.0
    # The queued records and the one in flight, counted once: the interrupted send is not
    # also counted as failed.
    assert counts.dropped == {"queue full": submitted - queue_size, "shutdown": queue_size + 1}
    assert sink._thread is not None
    sink._thread.join(5)
    assert not sink._thread.is_alive()
    assert counts.dropped["failed"] == 0
    assert counts.sent == 0


def test_an_unreachable_sink_drops_records_as_failed_and_the_worker_goes_on(counts):
    with socket.create_server(("127.0.0.1", 0)) as probe:
        closed_port = probe.getsockname()[1]  # nothing listens there once closed
    sink = make_sink(f"http://127.0.0.1:{closed_port}/", counts, attempts=3)
    for i in range(5):
        sink.submit(record(f"req-{i}"))
    wait_for(lambda: counts.dropped["failed"] == 5)
    sink.submit(record("later"))
    wait_for(lambda: counts.dropped["failed"] == 6)
    assert sink._thread is not None and sink._thread.is_alive()
    started = time.perf_counter()
    sink.close(timeout=5)
    assert time.perf_counter() - started < 1.0
    assert counts.sent == 0
    assert counts.dropped == {"failed": 6}


def test_the_worker_survives_a_record_it_cannot_send_and_a_failing_counter(serve_sink, counts):
    server = serve_sink()
    raised = []

    def on_sent() -> None:
        counts.on_sent()
        if not raised:
            raised.append(True)
            raise RuntimeError("counter broke")

    sink = CloudEventsSink(server.url, SOURCE, on_sent=on_sent, on_dropped=counts.on_dropped)
    sink.start()
    sink.submit(record("req-1"))
    sink.submit(record("req-2", inputs=[{"sepal_length": object()}]))  # not JSON
    sink.submit(record("req-3"))
    wait_for(lambda: counts.sent == 2)
    sink.close(timeout=5)
    assert counts.dropped == {"failed": 1}
    assert [event.headers["ce-id"] for event in server.received] == ["req-1"] * 2 + ["req-3"] * 2


@pytest.mark.parametrize(
    "url", ["ftp://127.0.0.1/", "http:///events", "127.0.0.1:9000", "http://user:pw@sink/"]
)
def test_a_url_it_cannot_use_is_refused_at_start(url):
    with pytest.raises(ValueError):
        CloudEventsSink(url, SOURCE)
