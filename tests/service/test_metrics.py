"""GET /metrics, parsed with prometheus-client's own parser: the series and their counts."""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.observability.metrics import get_metrics
from service.settings import Settings
from tests.support import Samples, ServerProcess, delta, parse, scrape, value

SETOSA = [5.1, 3.5, 1.4, 0.2]
VIRGINICA = [6.7, 3.0, 5.2, 2.3]
VERSICOLOR = [5.9, 3.0, 4.2, 1.5]
# Outside the Iris training range: sepal_length far above, petal_width below.
OUTLIER = [50.0, 3.0, 1.4, -5.0]
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def http(route: str, method: str, status: int) -> dict[str, str]:
    return {"route": route, "method": method, "status": str(status)}


def warned_features(predictions: list[dict]) -> Counter[str]:
    return Counter(w.split("=", 1)[0] for p in predictions for w in p["warnings"])


def test_metrics_count_requests_predictions_and_batches(client: TestClient) -> None:
    before = scrape(client)
    labels: Counter[str] = Counter()
    warned: Counter[str] = Counter()
    bodies = [
        {"instances": [SETOSA]},
        {"instances": [VIRGINICA, VERSICOLOR, OUTLIER, SETOSA]},
        {"instances": [dict(zip(FEATURES, OUTLIER, strict=True))], "top_k": 2},
    ]
    for body in bodies:
        response = client.post("/predict", json=body)
        assert response.status_code == 200, response.text
        predictions = response.json()["predictions"]
        labels.update(p["label"] for p in predictions)
        warned.update(warned_features(predictions))
    csv = ",".join(FEATURES) + "\n" + ",".join(map(str, VIRGINICA)) + "\n"
    response = client.post(
        "/predict", content=csv, headers={"content-type": "text/csv", "accept": "text/csv"}
    )
    assert response.status_code == 200
    labels[response.text.splitlines()[1].split(",")[0]] += 1
    assert client.post("/predict", json={"instances": [[1.0, 2.0]]}).status_code == 422
    assert client.get("/healthz").status_code == 200
    assert client.get("/healthz").status_code == 200
    assert client.get("/no/such/route").status_code == 404
    after = scrape(client)

    rows = 1 + 4 + 1 + 1
    expected = [
        (http("/predict", "POST", 200), 4),
        (http("/predict", "POST", 422), 1),
        (http("/healthz", "GET", 200), 2),
        (http("unmatched", "GET", 404), 1),
        (http("/metrics", "GET", 200), 1),  # the first scrape, counted once it was answered
    ]
    for labelset, count in expected:
        assert delta(before, after, "http_requests_total", **labelset) == count, labelset
        assert delta(before, after, "http_request_duration_seconds_count", **labelset) == count
        assert (
            delta(before, after, "http_request_duration_seconds_bucket", le="+Inf", **labelset)
            == count
        )
        assert delta(before, after, "http_request_duration_seconds_sum", **labelset) > 0

    assert sum(labels.values()) == rows
    assert {"setosa", "virginica"} <= set(labels)
    for label in ("setosa", "versicolor", "virginica"):
        assert (
            delta(before, after, "model_predictions_total", model="iris", version="1", label=label)
            == labels[label]
        )

    assert warned == {"sepal_length": 2, "petal_width": 2}
    for feature in FEATURES:
        assert (
            delta(before, after, "model_out_of_range_total", model="iris", feature=feature)
            == warned[feature]
        )

    # Sequential requests: one model call each, in both runtimes (the batcher has nothing to merge).
    assert delta(before, after, "model_batch_rows_count") == 4
    assert delta(before, after, "model_batch_rows_sum") == rows
    assert delta(before, after, "model_batch_rows_bucket", le="4.0") == 4
    assert delta(before, after, "model_batch_rows_bucket", le="2.0") == 3

    runtime = client.app.state.repository.models["iris"].current.runtime.name  # type: ignore[attr-defined]
    assert value(after, "model_info", model="iris", version="1", runtime=runtime) == 1
    assert value(after, "http_predictions_in_flight") == 0


def test_label_values_stay_bounded(client: TestClient) -> None:
    """Paths and methods come from clients: unknown ones share one series."""
    for i in range(5):
        client.request(f"BREW{i}", "/predict")
        client.get(f"/random/{i}")
    samples = scrape(client)
    methods = {dict(labels)["method"] for name, labels in samples if name == "http_requests_total"}
    routes = {dict(labels)["route"] for name, labels in samples if name == "http_requests_total"}
    # (the metrics are the process's: other tests' PUT and DELETE may be there too)
    assert methods <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}
    assert not any(method.startswith("BREW") for method in methods)
    assert value(samples, "http_requests_total", **http("/predict", "other", 405)) >= 5
    assert not any(route.startswith("/random") for route in routes)


def test_every_protocol_is_counted(client: TestClient) -> None:
    before = scrape(client)
    v2 = {
        "inputs": [
            {"name": "features", "shape": [2, 4], "datatype": "FP32", "data": SETOSA + OUTLIER}
        ]
    }
    assert client.post("/v2/models/iris/infer", json=v2).status_code == 200
    assert (
        client.post("/v1/models/iris:predict", json={"instances": [VIRGINICA]}).status_code == 200
    )
    after = scrape(client)
    assert (
        delta(before, after, "http_requests_total", **http("/v2/models/{name}/infer", "POST", 200))
        == 1
    )
    assert (
        delta(
            before, after, "http_requests_total", **http("/v1/models/{name}:predict", "POST", 200)
        )
        == 1
    )
    predicted = sum(
        delta(before, after, "model_predictions_total", model="iris", version="1", label=label)
        for label in ("setosa", "versicolor", "virginica")
    )
    assert predicted == 3
    assert (
        delta(before, after, "model_out_of_range_total", model="iris", feature="sepal_length") == 1
    )
    assert delta(before, after, "model_batch_rows_sum") == 3


def _break(version_dir: Path) -> None:
    """A version whose model files no longer match its manifest."""
    for name in ("model.tflite", "model.keras"):
        path = version_dir / name
        path.write_bytes(path.read_bytes()[:-100])


def test_model_version_and_reloads(artifacts_copy: Path) -> None:
    model_dir = artifacts_copy / "iris"
    shutil.copytree(model_dir / "1", model_dir / "2")
    _break(model_dir / "2")
    before = parse(get_metrics().render(None)[0].decode())
    settings = Settings(artifacts_dir=artifacts_copy, model_runtime="litert")
    with TestClient(create_app(settings)) as client:
        loaded = scrape(client)
        # Version 2 is refused at verification, version 1 is served.
        assert delta(before, loaded, "model_reloads_total", model="iris", result="rejected") == 1
        assert delta(before, loaded, "model_reloads_total", model="iris", result="succeeded") == 1
        assert value(loaded, "model_info", model="iris", version="1", runtime="litert") == 1

        shutil.copytree(model_dir / "1", model_dir / "3")
        assert client.app.state.repository.models["iris"].poll()  # type: ignore[attr-defined]
        swapped = scrape(client)
        assert delta(before, swapped, "model_reloads_total", model="iris", result="succeeded") == 2
        assert value(swapped, "model_info", model="iris", version="3", runtime="litert") == 1
        assert (
            "model_info",
            frozenset({"model": "iris", "version": "1", "runtime": "litert"}.items()),
        ) not in swapped
    after = parse(get_metrics().render(None)[0].decode())
    assert not any(
        name == "model_info" and dict(labels)["version"] == "3" for name, labels in after
    ), "a stopped app no longer reports its version"


def test_metrics_need_no_api_key(artifacts_copy: Path) -> None:
    settings = Settings(artifacts_dir=artifacts_copy, model_runtime="litert", api_key="secret")
    with TestClient(create_app(settings)) as client:
        assert client.post("/predict", json={"instances": [SETOSA]}).status_code == 401
        samples = scrape(client)
    assert value(samples, "http_requests_total", **http("/predict", "POST", 401)) >= 1


def test_openmetrics_on_request(client: TestClient) -> None:
    response = client.get("/metrics", headers={"accept": "application/openmetrics-text"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")


# -- against a real server process -------------------------------------------------------------
def _send(url: str, bodies: list[dict]) -> tuple[Counter[str], Counter[str]]:
    labels: Counter[str] = Counter()
    warned: Counter[str] = Counter()
    for body in bodies:
        # A new connection per request lets the kernel hand requests to every worker.
        response = httpx.post(url + "/predict", json=body, headers={"connection": "close"})
        assert response.status_code == 200, response.text
        predictions = response.json()["predictions"]
        labels.update(p["label"] for p in predictions)
        warned.update(warned_features(predictions))
    return labels, warned


def _workload(n: int) -> list[dict]:
    rows = [SETOSA, VIRGINICA, VERSICOLOR, OUTLIER]
    return [{"instances": rows[: 1 + i % 4]} for i in range(n)]


def _check_server_totals(samples: Samples, n: int, labels: Counter, warned: Counter) -> None:
    rows = sum(labels.values())
    assert value(samples, "http_requests_total", **http("/predict", "POST", 200)) == n
    assert (
        value(samples, "http_request_duration_seconds_count", **http("/predict", "POST", 200)) == n
    )
    for label in ("setosa", "versicolor", "virginica"):
        assert (
            value(samples, "model_predictions_total", model="iris", version="1", label=label)
            == labels[label]
        )
    for feature in FEATURES:
        assert (
            value(samples, "model_out_of_range_total", model="iris", feature=feature)
            == warned[feature]
        )
    assert value(samples, "model_batch_rows_count") == n
    assert value(samples, "model_batch_rows_sum") == rows


@pytest.fixture
def server_log(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "server.log"
    yield path


@pytest.mark.slow
def test_metrics_of_a_real_server(artifacts_copy: Path, server_log: Path) -> None:
    n = 40
    with ServerProcess(artifacts_copy, log_path=server_log, model_runtime="litert") as server:
        server.wait_for("/readyz")
        labels, warned = _send(server.url, _workload(n))
        samples = parse(httpx.get(server.url + "/metrics").text)
    _check_server_totals(samples, n, labels, warned)
    assert value(samples, "model_info", model="iris", version="1", runtime="litert") == 1
    assert value(samples, "model_reloads_total", model="iris", result="succeeded") == 1
    assert value(samples, "process_resident_memory_bytes") > 0
    print(f"\nreal server: {n} requests, {sum(labels.values())} rows counted: {dict(labels)}")


def _wait_for_workers(server: ServerProcess, workers: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while server.log().count("Application startup complete") < workers:
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.2)
    server.wait_for("/readyz")


@pytest.mark.slow
def test_metrics_add_up_across_workers(artifacts_copy: Path, tmp_path: Path) -> None:
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    (metrics_dir / "counter_1.db").write_bytes(b"stale")  # a previous run's file: removed at start
    n = 60
    server = ServerProcess(
        artifacts_copy,
        log_path=tmp_path / "server.log",
        model_runtime="litert",
        workers=2,
        prometheus_multiproc_dir=metrics_dir,
    )
    with server:
        _wait_for_workers(server, 2)
        with ThreadPoolExecutor(4) as pool:
            parts = list(
                pool.map(lambda c: _send(server.url, c), [_workload(n)[i::4] for i in range(4)])
            )
        labels = sum((p[0] for p in parts), Counter())
        warned = sum((p[1] for p in parts), Counter())
        pids = {p.stem.rsplit("_", 1)[1] for p in metrics_dir.glob("counter_*.db")}
        # Each scrape is answered by one worker; every one reports both workers' sum.
        scrapes = [
            parse(httpx.get(server.url + "/metrics", headers={"connection": "close"}).text)
            for _ in range(6)
        ]
    assert "1" not in pids
    assert len(pids) == 2, f"requests reached {len(pids)} worker(s): {pids}"
    for samples in scrapes:
        _check_server_totals(samples, n, labels, warned)
        # Every worker loads the model once at start.
        assert value(samples, "model_reloads_total", model="iris", result="succeeded") == 2
        assert value(samples, "model_info", model="iris", version="1", runtime="litert") == 1
    print(
        f"\n2 workers: {n} requests counted once each in every scrape; worker pids {sorted(pids)}"
    )
