"""Overload: a concurrency limit answered with a quick 503 + Retry-After, a per-request timeout,
health routes exempt, and memory that stays flat under a sustained run.

No test here asserts how long anything took: a slow model is a model call held until the test
releases it, a stalled upload never resumes, and the request timeout's watchdog runs on a clock
the test moves. What is checked is the order of events (refused while the model is held,
answered 503 while the upload is still stalled, expired once its own deadline has passed) and
the counters. Each wait fails only after ``HOLD`` seconds.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from service.app import create_app
from service.observability import middleware
from service.settings import Settings
from tests.support import ServerProcess

ROW = [5.1, 3.5, 1.4, 0.2]
BODY = {"instances": [ROW]}
HOLD = 60.0  # the longest any wait below may take before the test fails


def counter(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


def run(
    settings: Settings, scenario: Callable[[FastAPI, httpx.AsyncClient], Awaitable[Any]]
) -> Any:
    """Run ``scenario`` against the app in one event loop, lifespan included."""

    async def main() -> Any:
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
                return await scenario(app, client)

    return asyncio.run(main())


async def until(condition: Callable[[], bool], what: str) -> None:
    """Yield to the event loop until ``condition`` holds; fail after HOLD seconds."""
    deadline = time.monotonic() + HOLD
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {HOLD:.0f} s"
        await asyncio.sleep(0.01)


async def in_flight(client: httpx.AsyncClient) -> float:
    return counter((await client.get("/metrics")).text, "http_predictions_in_flight")


class HeldModel:
    """Every model call (on the Keras batcher's thread) waits until :meth:`release`."""

    def __init__(self, app: FastAPI) -> None:
        self.runtime = app.state.repository.models["iris"].current.runtime
        self.original = self.runtime.predict
        self.entered = threading.Event()  # a call is being held
        self.released = threading.Event()
        self.returned = threading.Event()  # a held call has returned
        self.rows = 0  # rows of the calls made

        def predict(x: np.ndarray) -> np.ndarray:
            self.rows += len(x)
            self.entered.set()
            self.released.wait(HOLD)
            try:
                return self.original(x)
            finally:
                self.returned.set()

        self.runtime.predict = predict

    def release(self) -> None:
        self.released.set()

    def undo(self) -> None:
        self.release()
        self.runtime.predict = self.original


async def timed(request: Awaitable[httpx.Response]) -> tuple[httpx.Response, float]:
    """The answer and the seconds it took: a figure to print, never asserted."""
    start = time.perf_counter()
    response = await request
    return response, time.perf_counter() - start


def test_beyond_the_limit_a_quick_503(artifacts_copy: Path) -> None:
    """Limit 2, six concurrent requests: two reach the model and are held there; the other four
    are answered 503 while it holds them (refused at once, not queued behind the model), and
    so are health, readiness and metrics (answered 200)."""
    settings = Settings(artifacts_dir=artifacts_copy, model_runtime="keras", max_concurrency=2)

    async def scenario(app: FastAPI, client: httpx.AsyncClient) -> dict[str, Any]:
        before = (await client.get("/metrics")).text
        model = HeldModel(app)
        try:
            predictions = [
                asyncio.create_task(timed(client.post("/predict", json=BODY))) for _ in range(6)
            ]
            await until(lambda: sum(t.done() for t in predictions) == 4, "four answered")
            await until(model.entered.is_set, "the model reached")
            refused = [t.result() for t in predictions if t.done()]
            held = [t for t in predictions if not t.done()]
            exempt = [await client.get(path) for path in ("/healthz", "/readyz", "/metrics")]
            still_held = sum(not t.done() for t in held)
            returned = model.returned.is_set()
        finally:
            model.release()
        answered = await asyncio.gather(*held)
        rows = model.rows  # whether the two came in one model call or two
        model.undo()
        again = await client.post("/predict", json=BODY)  # the slots are free again
        after = (await client.get("/metrics")).text
        return {
            "refused": refused,
            "answered": answered,
            "still_held": still_held,
            "returned": returned,
            "exempt": exempt,
            "again": again,
            "rows": rows,
            "before": before,
            "after": after,
        }

    result = run(settings, scenario)
    # The four answered while the model held the other two: all 503, at once.
    for response, _ in result["refused"]:
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert "MAX_CONCURRENCY" in response.json()["error"]
    # Health, readiness and metrics answered while both slots were still taken.
    assert [r.status_code for r in result["exempt"]] == [200, 200, 200]
    assert result["still_held"] == 2 and not result["returned"]
    # Released, the two admitted are answered; only their rows reached the model.
    assert [r.status_code for r, _ in result["answered"]] == [200, 200]
    assert result["rows"] == 2
    assert result["again"].status_code == 200
    before, after = result["before"], result["after"]
    assert (
        counter(after, "http_overload_rejections_total", reason="concurrency")
        - counter(before, "http_overload_rejections_total", reason="concurrency")
        == 4
    )
    labels = {"route": "/predict", "method": "POST", "status": "503"}
    assert (
        counter(after, "http_requests_total", **labels)
        - counter(before, "http_requests_total", **labels)
        == 4
    )
    assert counter(after, "http_predictions_in_flight") == 0
    slowest = max(seconds for _, seconds in result["refused"])
    print(
        f"\nlimit 2, 6 concurrent: 2 answered 200, 4 refused in at most {slowest * 1000:.1f} ms "
        "while the model held the other 2"
    )


def test_a_slow_prediction_times_out_with_503(artifacts_copy: Path) -> None:
    """A model call that does not return: the request is answered 503 at its timeout while the
    call is still held; released, the call finishes and the next request is answered."""
    settings = Settings(
        artifacts_dir=artifacts_copy, model_runtime="keras", request_timeout_seconds=0.3
    )

    async def scenario(app: FastAPI, client: httpx.AsyncClient) -> dict[str, Any]:
        before = (await client.get("/metrics")).text
        model = HeldModel(app)
        try:
            late = await client.post("/predict", json=BODY)
            held = not model.returned.is_set()
        finally:
            model.undo()
        fine = await client.post("/predict", json=BODY)
        metrics = (await client.get("/metrics")).text
        return {"late": late, "held": held, "fine": fine, "before": before, "metrics": metrics}

    result = run(settings, scenario)
    late = result["late"]
    assert late.status_code == 503
    assert result["held"]  # answered before the model call returned: not waited for
    assert late.headers["retry-after"] == "1"
    assert "REQUEST_TIMEOUT_SECONDS=0.3" in late.json()["error"]
    assert "x-request-id" in late.headers
    assert result["fine"].status_code == 200  # the model and its batcher are still fine
    timeouts = [
        counter(result[key], "http_overload_rejections_total", reason="timeout")
        for key in ("before", "metrics")
    ]
    assert timeouts[1] - timeouts[0] == 1  # (the metrics are the process's: count the change)
    assert counter(result["metrics"], "http_predictions_in_flight") == 0


def test_a_stalled_upload_times_out(artifacts_copy: Path) -> None:
    """An upload that stops half-way is answered 408 while it is still stalled, never having
    taken a prediction slot (its body is read before admission)."""
    settings = Settings(
        artifacts_dir=artifacts_copy, model_runtime="litert", request_timeout_seconds=0.3
    )
    resumed: list[bool] = []

    async def stalled() -> AsyncIterator[bytes]:
        yield b'{"instances": [[5.1, 3.5, '
        await asyncio.sleep(HOLD)  # resumes only if the timeout never came
        resumed.append(True)
        yield b"1.4, 0.2]]}"

    async def scenario(app: FastAPI, client: httpx.AsyncClient) -> httpx.Response:
        headers = {"content-type": "application/json"}
        return await client.post("/predict", content=stalled(), headers=headers)

    response = run(settings, scenario)
    assert response.status_code == 408 and resumed == []
    assert response.json() == {
        "error": "the request body did not arrive within REQUEST_TIMEOUT_SECONDS=0.3"
    }


STALLED_ROW = [7.7, 3.5, 1.4, 0.2]  # a row whose prediction stalls, once admitted


def stall_predictions_of(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    """The served model's predictions of STALLED_ROW wait (on the event loop, where the
    watchdog can cancel them) until the test ends; other rows are answered as usual."""
    model = app.state.repository.models["iris"].current
    real = model.probabilities

    async def probabilities(x: np.ndarray) -> np.ndarray:
        if x[0, 0] == np.float32(STALLED_ROW[0]):
            await asyncio.sleep(HOLD)
        return await real(x)

    monkeypatch.setattr(model, "probabilities", probabilities)


class Clock:
    """``time`` for the request middleware, reading a clock the test moves. The watchdog's
    timer still fires on the event loop's own clock, then compares deadlines with this one."""

    def __init__(self) -> None:
        self.now = 1000.0

    def perf_counter(self) -> float:
        return self.now


def test_each_prediction_times_out_on_its_own_deadline(
    artifacts_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stalled predictions started at different times each get their 503 once their own
    deadline has passed, not when an earlier one's does; a prediction answered meanwhile is not
    disturbed; one started once nothing is left to watch gets its 503 too."""
    timeout = 0.1  # of the loop's clock: how soon the watchdog first looks
    settings = Settings(
        artifacts_dir=artifacts_copy, model_runtime="litert", request_timeout_seconds=timeout
    )
    clock = Clock()
    monkeypatch.setattr(middleware, "time", clock)
    start = clock.now

    stalled = orjson.dumps({"instances": [STALLED_ROW]})

    async def scenario(app: FastAPI, client: httpx.AsyncClient) -> dict[str, Any]:
        headers = {"content-type": "application/json"}
        states: dict[str, Any] = {}
        stall_predictions_of(app, monkeypatch)

        async def admitted(count: int, what: str) -> None:
            """Wait until the service counts ``count`` predictions in flight."""
            deadline = time.monotonic() + HOLD
            while await in_flight(client) != count:
                assert time.monotonic() < deadline, f"{what}: not within {HOLD:.0f} s"
                await asyncio.sleep(0.01)

        def upload() -> asyncio.Task[httpx.Response]:
            return asyncio.create_task(client.post("/predict", content=stalled, headers=headers))

        first = upload()  # deadline start + timeout
        await admitted(1, "the first upload in flight")
        clock.now = start + timeout / 3
        fine = await client.post("/predict", content=orjson.dumps(BODY), headers=headers)
        clock.now = start + 2 * timeout / 3
        second = upload()  # deadline start + 5/3 timeout
        await admitted(2, "the second upload in flight")
        # The watchdog's timer fires (one timeout of the loop's clock after the first upload)
        # and finds no deadline passed on this clock: nothing is cancelled.
        await asyncio.sleep(2 * timeout)
        states["early"] = (first.done(), second.done())
        clock.now = start + 4 * timeout / 3  # past the first deadline only
        await until(first.done, "the first upload expired")
        states["second_after_first"] = second.done()
        await asyncio.sleep(2 * timeout)  # the watchdog looks again: the second is not due
        states["second_still"] = second.done()
        clock.now = start + 2 * timeout  # past the second deadline
        await until(second.done, "the second upload expired")
        # Nothing is watched now; a new upload arms the watchdog again.
        clock.now = start + 10 * timeout
        third = upload()
        await admitted(1, "the third upload in flight")
        clock.now = start + 12 * timeout
        await until(third.done, "the third upload expired")
        states["answers"] = [first.result(), fine, second.result(), third.result()]
        return states

    states = run(settings, scenario)
    first, fine, second, third = states["answers"]
    assert fine.status_code == 200
    assert states["early"] == (False, False)  # none before its deadline
    assert states["second_after_first"] is False  # the first's deadline is not the second's
    assert states["second_still"] is False
    for response in (first, second, third):
        assert response.status_code == 503
        assert "REQUEST_TIMEOUT_SECONDS" in response.json()["error"]


def test_health_and_metrics_are_not_limited(artifacts_copy: Path) -> None:
    settings = Settings(artifacts_dir=artifacts_copy, model_runtime="keras", max_concurrency=1)

    async def scenario(app: FastAPI, client: httpx.AsyncClient) -> list[int]:
        model = HeldModel(app)
        try:
            busy = asyncio.create_task(client.post("/predict", json=BODY))
            await until(model.entered.is_set, "the one slot taken")
            paths = ["/healthz", "/readyz", "/model", "/metrics"] * 5
            statuses = [(await client.get(path)).status_code for path in paths]
            statuses.append((await client.post("/predict", json=BODY)).status_code)
        finally:
            model.undo()
        statuses.append((await busy).status_code)
        return statuses

    statuses = run(settings, scenario)
    assert statuses[:-2] == [200] * 20
    assert statuses[-2:] == [503, 200]


# -- against a real server process -------------------------------------------------------------
def _hammer(url: str, body: bytes, seconds: float, clients: int) -> list[tuple[int, float, dict]]:
    """``clients`` threads posting ``body`` for ``seconds``: (status, latency, headers) each."""
    results: list[tuple[int, float, dict]] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client() -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            while time.monotonic() < deadline:
                start = time.perf_counter()
                response = http.post(
                    "/predict", content=body, headers={"content-type": "application/json"}
                )
                with lock:
                    results.append(
                        (response.status_code, time.perf_counter() - start, dict(response.headers))
                    )

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def _rows_body(rows: int) -> bytes:
    rng = np.random.default_rng(0)
    x = rng.uniform([4.3, 2.0, 1.0, 0.1], [7.9, 4.4, 6.9, 2.5], size=(rows, 4)).round(2)
    return b'{"instances": ' + str(x.tolist()).encode() + b"}"


@pytest.mark.slow
def test_real_server_refuses_quickly_beyond_the_limit(artifacts_copy: Path, tmp_path: Path) -> None:
    server = ServerProcess(
        artifacts_copy, log_path=tmp_path / "server.log", model_runtime="litert", max_concurrency=2
    )
    with server:
        server.wait_for("/readyz")
        results = _hammer(server.url, _rows_body(5000), seconds=4, clients=12)
        metrics = httpx.get(server.url + "/metrics").text
        assert server.process is not None and server.process.poll() is None
    statuses = Counter(status for status, _, _ in results)
    assert set(statuses) <= {200, 503}, statuses
    assert statuses[200] > 0 and statuses[503] > 0, statuses
    assert all(h.get("retry-after") == "1" for s, _, h in results if s == 503)
    ok = [t for s, t, _ in results if s == 200]
    refused = [t for s, t, _ in results if s == 503]
    assert counter(metrics, "http_overload_rejections_total", reason="concurrency") == statuses[503]
    # Refused at the door: the model ran for the answered requests' rows only.
    assert counter(metrics, "model_batch_rows_sum") == 5000 * statuses[200]
    print(
        f"\n12 clients x 5000-row requests, MAX_CONCURRENCY=2, 4 s: {statuses[200]} answered "
        f"(median {statistics.median(ok) * 1000:.0f} ms), {statuses[503]} refused with 503 "
        f"(median {statistics.median(refused) * 1000:.1f} ms)"
    )


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.slow
def test_memory_stays_flat_under_a_sustained_run(artifacts_copy: Path, tmp_path: Path) -> None:
    """Thousands of varied requests (answers, refusals, errors, fresh request ids): RSS flat."""
    server = ServerProcess(
        artifacts_copy, log_path=tmp_path / "server.log", model_runtime="litert", max_concurrency=3
    )
    bodies = [
        (b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}', "application/json"),
        (_rows_body(50), "application/json"),
        (b'{"instances": [[50, 3.5, 1.4, -2]], "top_k": 2}', "application/json"),
        (b'{"instances": [[1.0]]}', "application/json"),  # 422
        (b"{", "application/json"),  # 400
        (b"sepal_length,sepal_width,petal_length,petal_width\n5.1,3.5,1.4,0.2\n", "text/csv"),
    ]
    statuses: Counter[int] = Counter()
    lock = threading.Lock()

    def load(requests: int, worker: int) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for i in range(requests):
                content, kind = bodies[(i + worker) % len(bodies)]
                response = http.post(
                    "/predict",
                    content=content,
                    headers={"content-type": kind, "x-request-id": f"w{worker}-{i}"},
                )
                with lock:
                    statuses[response.status_code] += 1

    def burst(total: int, clients: int = 8) -> None:
        threads = [
            threading.Thread(target=load, args=(total // clients, w)) for w in range(clients)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    with server:
        server.wait_for("/readyz")
        assert server.process is not None
        burst(1000)  # warm up: allocator pools, caches, metric children
        before = _rss_kib(server.process.pid)
        start = time.monotonic()
        burst(6000)
        seconds = time.monotonic() - start
        after = _rss_kib(server.process.pid)
    growth_mib = (after - before) / 1024
    assert set(statuses) <= {200, 400, 422, 503}, statuses
    assert growth_mib < 20, f"RSS grew {growth_mib:.1f} MiB over 6000 requests"
    print(
        f"\nRSS {before / 1024:.1f} MiB -> {after / 1024:.1f} MiB ({growth_mib:+.1f} MiB) over "
        f"6000 requests in {seconds:.1f} s ({6000 / seconds:.0f}/s); statuses {dict(statuses)}"
    )
