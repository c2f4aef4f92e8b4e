"""The service as users run it: ``python -m service`` on a free port, real HTTP over loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.service.reference import (
    IRIS_FEATURES,
    answered,
    answered_csv,
    copy_bundle,
    csv_body,
    iris_rows,
    records,
    reference,
)
from tests.support import ServerProcess

pytestmark = pytest.mark.slow

CLASSES = ["setosa", "versicolor", "virginica"]
MAX_BODY = 32 * 1024
RSS_LIMIT_MB = 150


@pytest.fixture(scope="module")
def litert_server(
    iris_bundle: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """One LiteRT service process for the module, serving a copy of the Iris bundle."""
    root = tmp_path_factory.mktemp("litert-server")
    copy_bundle(iris_bundle, root / "artifacts", "iris")
    server = ServerProcess(
        root / "artifacts",
        log_path=root / "server.log",
        model_runtime="litert",
        max_body_bytes=MAX_BODY,
    )
    server.start(wait="/readyz")
    try:
        yield server
    finally:
        assert server.stop() == 0, server.log()


def test_readiness_before_and_after_a_bundle_is_published(
    tmp_path: Path, iris_bundle: Path
) -> None:
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    server = ServerProcess(
        artifacts, log_path=tmp_path / "server.log", poll_seconds=1, model_name="iris"
    )
    with server:
        assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
        ready = httpx.get(server.url + "/readyz")
        assert ready.status_code == 503
        assert "no version of model 'iris'" in ready.json()["error"]
        early = httpx.post(server.url + "/predict", json={"instances": [iris_rows()[0]]})
        assert early.status_code == 503
        assert early.json() == ready.json()

        copy_bundle(iris_bundle, artifacts, "iris")  # staged, then renamed: as training does
        ready = server.wait_for("/readyz", timeout=60)
        assert ready.json()["version"] == 1

        rows = iris_rows()
        response = httpx.post(server.url + "/predict", json={"instances": rows})
        assert response.status_code == 200
        labels, probabilities = answered(response.json()["predictions"], CLASSES)
        expected_labels, expected = reference(iris_bundle, rows)
        assert labels == expected_labels
        np.testing.assert_allclose(probabilities, expected, rtol=0, atol=1e-5)
        card = httpx.get(server.url + "/model").json()
        assert card["versions"] == [
            {"version": 1, "state": "serving", "reason": None, "loaded": True, "labels": []}
        ]
    assert server.process is not None and server.process.returncode == 0, server.log()


def test_every_input_format_over_http(litert_server: ServerProcess, iris_bundle: Path) -> None:
    rows = iris_rows()
    expected_labels, expected = reference(iris_bundle, rows)
    url = litert_server.url + "/predict"
    order = ["petal_length", "sepal_width", "petal_width", "sepal_length"]
    with httpx.Client(timeout=30) as http:
        answers = [
            http.post(url, json={"instances": rows}),
            http.post(url, json={"instances": records(rows, IRIS_FEATURES)}),
            http.post(
                url,
                content=csv_body(rows, IRIS_FEATURES, order),
                headers={"content-type": "text/csv"},
            ),
        ]
        for response in answers:
            assert response.status_code == 200
            assert response.json()["version"] == 1
            labels, probabilities = answered(response.json()["predictions"], CLASSES)
            assert labels == expected_labels
            np.testing.assert_allclose(probabilities, expected, rtol=0, atol=1e-5)

        as_csv = http.post(
            url,
            content=csv_body(rows, IRIS_FEATURES, IRIS_FEATURES),
            headers={"content-type": "text/csv", "accept": "text/csv"},
        )
        assert as_csv.headers["content-type"].startswith("text/csv")
        labels, probabilities, _ = answered_csv(as_csv.text, CLASSES)
        assert labels == expected_labels
        np.testing.assert_allclose(probabilities, expected, rtol=0, atol=1e-5)


def test_bad_input_over_http(litert_server: ServerProcess) -> None:
    url = litert_server.url + "/predict"
    with httpx.Client(timeout=30) as http:
        nan = http.post(
            url,
            content=b'{"instances": [[5.1, NaN, 1.4, 0.2]]}',
            headers={"content-type": "application/json"},
        )
        assert nan.status_code == 422
        assert "NaN" in nan.json()["error"]
        no_type = http.post(url, content=b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}')
        assert no_type.status_code == 415
        assert no_type.headers["content-type"] == "application/json"


def test_body_over_the_limit_with_content_length(litert_server: ServerProcess) -> None:
    body = b'{"instances": [' + b"[5.1, 3.5, 1.4, 0.2], " * 3000 + b"[5.1, 3.5, 1.4, 0.2]]}"
    response = httpx.post(
        litert_server.url + "/predict", content=body, headers={"content-type": "application/json"}
    )
    assert response.request.headers["content-length"] == str(len(body))
    assert response.status_code == 413
    assert f"MAX_BODY_BYTES={MAX_BODY}" in response.json()["error"]


def chunked(rows: int) -> Iterator[bytes]:
    """A JSON body streamed from a generator: httpx sends it chunked, without Content-Length."""
    yield b'{"instances": ['
    for _ in range(rows - 1):
        yield b"[5.1, 3.5, 1.4, 0.2], "
    yield b"[5.1, 3.5, 1.4, 0.2]]}"


def test_chunked_body_over_the_limit(litert_server: ServerProcess) -> None:
    response = httpx.post(
        litert_server.url + "/predict",
        content=chunked(3000),
        headers={"content-type": "application/json"},
    )
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert f"MAX_BODY_BYTES={MAX_BODY}" in response.json()["error"]
    assert httpx.get(litert_server.url + "/readyz").status_code == 200  # still serving


def test_chunked_body_within_the_limit(litert_server: ServerProcess) -> None:
    response = httpx.post(
        litert_server.url + "/predict",
        content=chunked(100),
        headers={"content-type": "application/json"},
    )
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert response.status_code == 200
    assert [p["label"] for p in response.json()["predictions"]] == ["setosa"] * 100


def test_litert_process_maps_no_tensorflow_and_stays_small(litert_server: ServerProcess) -> None:
    assert httpx.get(litert_server.url + "/readyz").json()["runtime"] == "litert"
    answer = httpx.post(litert_server.url + "/predict", json={"instances": iris_rows()})
    assert answer.status_code == 200
    assert litert_server.process is not None
    pid = litert_server.process.pid

    maps = Path(f"/proc/{pid}/maps").read_text()
    mapped = {line.split()[-1] for line in maps.splitlines() if "/" in line}
    assert any("ai_edge_litert" in path for path in mapped)  # the runtime really is loaded
    heavy = sorted(
        path
        for path in mapped
        if any(n in path.lower() for n in ("tensorflow", "_pywrap_tensorflow", "libtensorflow"))
    )
    assert heavy == []

    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])
    rss_mb = rss_kb / 1024
    print(f"\nLiteRT service resident memory after load and a 151-row request: {rss_mb:.1f} MB")
    assert rss_mb < RSS_LIMIT_MB
