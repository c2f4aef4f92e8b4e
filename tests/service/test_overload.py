"""Overload: a concurrency limit answered with a quick 503 + Retry-After, a per-request timeout,
health routes exempt, and memory that stays flat under a sustained run."""

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
from service.settings import Settings
from tests.support import ServerProcess

ROW = [5.1, 3.5, 1.4, 0.2]
BODY = {"instances": [ROW]}


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


def slow_model(app: FastAPI, seconds: float) -> Callable[[], None]:
    """Make every model call take ``seconds`` longer (on the batcher's thread); returns undo."""
    runtime = app.state.registry.current.runtime
    original = runtime.predict

    def predict(x: np.ndarray) -> np.ndarray:
        time.sleep(seconds)
        return original(x)

    runtime.predict = predict
    return lambda: setattr(runtime, "predict", original)


async def timed(request: Awaitable[httpx.Response]) -> tuple[httpx.Response, float]:
    start = time.perf_counter()
    response = await request
    return response, time.perf_counter() - start


def test_beyond_the_limit_a_quick_503(artifacts_copy: Path) -> None:
    settings = Settings(artifacts_dir=artifacts_copy, model_runtime="keras", max_concurrency=2)

    async def scenario(app: FastAPI, client: httpx.AsyncClient) -> dict[str, Any]:
        before = (await client.get("/metrics")).text
        slow_model(app, 0.6)
        predictions = [
            asyncio.create_task(timed(client.post("/predict", json=BODY))) for _ in range(6)
        ]
        await asyncio.sleep(0.1)  # every request has arrived; two are with the model
        exempt = [await timed(client.get(path)) for path in ("/healthz", "/readyz", "/metrics")]
        answered = await asyncio.gather(*predictions)
        again = await client.post("/predict", json=BODY)  # the slots are free again
        after = (await client.get("/metrics")).text
        return {
            "answered": answered,
            "exempt": exempt,
            "again": again,
            "before": before,
            "after": after,
        }

    result = run(settings, scenario)
    answered = result["answered"]
    statuses = Counter(r.status_code for r, _ in answered)
    assert statuses == {200: 2, 503: 4}
    for response, seconds in answered:
        if response.status_code == 503:
            assert response.headers["retry-after"] == "1"
            assert "MAX_CONCURRENCY" in response.json()["error"]
            assert seconds < 0.3, "refused at once, not queued behind the slow model"
        else:
            assert seconds >= 0.6
    for response, seconds in result["exempt"]:
        assert response.status_code == 200 and seconds < 0.3
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
    refused = [s for r, s in answered if r.status_code == 503]
    print(
        f"\nlimit 2, 6 concurrent: 2 answered 200, 4 refused in at most {max(refused) * 1000:.1f} ms"
    )


def test_a_slow_prediction_times_out_with_503(artifacts_copy: Path) -> None:
    settings = Settings(
        artifacts_dir=artifacts_copy, model_runtime="keras", request_timeout_seconds=0.3
    )

    async def scenario(app: FastAPI, client: httpx.AsyncClient) -> dict[str, Any]:
        undo = slow_model(app, 1.0)
        late, seconds = await timed(client.post("/predict", json=BODY))
        await asyncio.sleep(1.0)  # the abandoned model call finishes on its thread
        undo()
        fine = await client.post("/predict", json=BODY)
        metrics = (await client.get("/metrics")).text
        return {"late": late, "seconds": seconds, "fine": fine, "metrics": metrics}

    result = run(settings, scenario)
    late = result["late"]
    assert late.status_code == 503
    assert late.headers["retry-after"] == "1"
    assert "REQUEST_TIMEOUT_SECONDS=0.3" in late.json()["error"]
    assert "x-request-id" in late.headers
    assert 0.25 <= result["seconds"] < 0.9
    assert result["fine"].status_code == 200  # the model and its batcher are still fine
    assert counter(result["metrics"], "http_overload_rejections_total", reason="timeout") >= 1
    assert counter(result["metrics"], "http_predictions_in_flight") == 0


def test_a_stalled_upload_times_out(artifacts_copy: Path) -> None:
    settings = Settings(
        artifacts_dir=artifacts_copy, model_runtime="litert", request_timeout_seconds=0.3
    )

    async def stalled() -> AsyncIterator[bytes]:
        yield b'{"instances": [[5.1, 3.5, '
        await asyncio.sleep(5)
        yield b"1.4, 0.2]]}"

    async def scenario(app: FastAPI, client: httpx.AsyncClient) -> tuple[httpx.Response, float]:
        headers = {"content-type": "application/json"}
        return await timed(client.post("/predict", content=stalled(), headers=headers))

    response, seconds = run(settings, scenario)
    assert response.status_code == 503 and seconds < 2
    assert "REQUEST_TIMEOUT_SECONDS" in response.json()["error"]


def test_each_prediction_times_out_on_its_own_deadline(artifacts_copy: Path) -> None:
    """Stalled uploads started at different times each get their 503 one timeout after their
    own start; a prediction answered meanwhile is not disturbed."""
    settings = Settings(
        artifacts_dir=artifacts_copy, model_runtime="litert", request_timeout_seconds=0.3
    )

    async def stalled() -> AsyncIterator[bytes]:
        yield b'{"instances": [[5.1, 3.5, '
        await asyncio.sleep(5)
        yield b"1.4, 0.2]]}"

    async def scenario(app: FastAPI, client: httpx.AsyncClient) -> list[tuple[int, float]]:
        headers = {"content-type": "application/json"}

        async def send(delay: float, content: Any) -> tuple[int, float]:
            await asyncio.sleep(delay)
            response, seconds = await timed(
                client.post("/predict", content=content, headers=headers)
            )
            return response.status_code, seconds

        fine = orjson.dumps(BODY)
        # The third starts once the others are over and nothing is left to watch.
        return await asyncio.gather(
            send(0.0, stalled()), send(0.1, fine), send(0.2, stalled()), send(0.9, stalled())
        )

    first, answered, second, third = run(settings, scenario)
    assert answered[0] == 200 and answered[1] < 0.25
    for status, seconds in (first, second, third):
        assert status == 503
        assert 0.25 <= seconds < 0.9, seconds


def test_health_and_metrics_are_not_limited(artifacts_copy: Path) -> None:
    settings = Settings(artifacts_dir=artifacts_copy, model_runtime="keras", max_concurrency=1)

    async def scenario(app: FastAPI, client: httpx.AsyncClient) -> list[int]:
        slow_model(app, 0.5)
        busy = asyncio.create_task(client.post("/predict", json=BODY))
        await asyncio.sleep(0.1)
        paths = ["/healthz", "/readyz", "/model", "/metrics"] * 5
        statuses = [(await client.get(path)).status_code for path in paths]
        statuses.append((await client.post("/predict", json=BODY)).status_code)
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
    assert statistics.median(refused) < statistics.median(ok)
    assert counter(metrics, "http_overload_rejections_total", reason="concurrency") == statuses[503]
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
