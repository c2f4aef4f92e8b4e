"""The monitoring loop against real server processes: feature drift (PSI) per feature, the
payload log line of every request (failed ones included), sampling, rotation, a full disk,
and drift with no training distributions or tracking off."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.datasets import load_iris

from tests.conftest import FORMAT1_BUNDLE
from tests.support import TLS, ServerProcess, metric, wait_until

pytestmark = pytest.mark.slow  # every test here starts a server process

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
IRIS = load_iris().data.astype(np.float32)


def serve(artifacts: Path, tmp_path: Path, **env: Any) -> ServerProcess:
    return ServerProcess(artifacts, log_path=tmp_path / "server.log", model_name="iris", **env)


@contextlib.contextmanager
def running(server: ServerProcess) -> Iterator[ServerProcess]:
    server.start(wait="/readyz")
    try:
        yield server
    finally:
        assert server.stop() == 0, server.log()


def predict(server: ServerProcess, rows: list[list[float]], request_id: str | None = None) -> httpx.Response:  # fmt: skip
    headers = {"X-Request-ID": request_id} if request_id else {}
    return httpx.post(
        server.url + "/predict", json={"instances": rows}, headers=headers, timeout=30, verify=TLS
    )


def lines_of(directory: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for path in sorted(directory.glob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]


def drift(server: ServerProcess) -> dict[str, Any]:
    response = httpx.get(server.url + "/models/iris/drift", timeout=30, verify=TLS)
    assert response.status_code == 200, response.text
    return response.json()


def wait_for_rows(server: ServerProcess, rows: int) -> dict[str, Any]:
    """The drift report once the monitor has taken in ``rows`` rows."""
    for _ in range(200):
        report = drift(server)
        if report.get("rows_seen", 0) >= rows:
            return report
        time.sleep(0.05)
    raise AssertionError(f"the monitor never took in {rows} rows: {report}")


# -- drift --------------------------------------------------------------------------------------
def test_in_distribution_traffic_keeps_every_psi_low_and_a_shift_shows_on_its_feature(
    artifacts_copy: Path, tmp_path: Path
) -> None:
    rng = np.random.default_rng(0)
    with running(serve(artifacts_copy, tmp_path, drift_window=600)) as server:
        for _ in range(60):  # 600 rows drawn from the training data, 10 a request
            assert predict(server, IRIS[rng.integers(0, len(IRIS), 10)].tolist()).status_code == 200
        calm = wait_for_rows(server, 600)
        assert calm["enough_rows"] and calm["rows"] == 600
        assert calm["drifting"] == []
        assert all(f["psi"] < 0.1 for f in calm["features"].values()), calm
        # The same rows, sepal_width moved up by 1.5 cm: only that feature drifts.
        shifted = IRIS[rng.integers(0, len(IRIS), 600)].copy()
        shifted[:, 1] += 1.5
        assert predict(server, shifted.tolist()).status_code == 200
        report = wait_for_rows(server, 1200)
        psi = {name: f["psi"] for name, f in report["features"].items()}
        assert report["drifting"] == ["sepal_width"], psi
        assert psi["sepal_width"] > 1.0
        assert all(psi[f] < 0.1 for f in FEATURES if f != "sepal_width"), psi
        # The gauge is set from the same window within a second or so.
        labels = {"model": "iris", "version": "1", "feature": "sepal_width"}
        wait_until(
            lambda: (
                metric(server.url, "model_feature_drift", **labels)
                == pytest.approx(psi["sepal_width"])
            ),
            "the drift gauge",
            10,
        )


def test_drift_says_why_it_has_nothing(artifacts_copy: Path, tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(FORMAT1_BUNDLE, old / "iris" / "1")  # trained before distributions
    with running(serve(old, tmp_path)) as server:
        assert "no training distributions" in drift(server)["reason"]
    with running(serve(artifacts_copy, tmp_path, drift_window=0)) as server:
        assert "DRIFT_WINDOW=0" in drift(server)["reason"]
        assert httpx.get(server.url + "/models/nope/drift").status_code == 404


# -- the payload log ----------------------------------------------------------------------------
def test_every_logged_line_matches_its_answer(artifacts_copy: Path, tmp_path: Path) -> None:
    logs = tmp_path / "payloads"
    rng = np.random.default_rng(1)
    sent: dict[str, tuple[list[list[float]], dict[str, Any]]] = {}
    with running(serve(artifacts_copy, tmp_path, payload_log_dir=logs)) as server:
        for i in range(40):
            rows = load_iris().data[rng.integers(0, len(IRIS), 1 + i % 5)].tolist()
            request_id = f"req-{i}-{uuid.uuid4().hex[:8]}"
            response = predict(server, rows, request_id)
            assert response.status_code == 200
            sent[request_id] = (rows, response.json())
        failed = predict(server, [[1.0, 2.0]], "req-failed")
        assert failed.status_code == 422
        v2 = httpx.post(
            server.url + "/v2/models/iris/infer",
            json={
                "inputs": [
                    {
                        "name": "features",
                        "shape": [1, 4],
                        "datatype": "FP32",
                        "data": [5.1, 3.5, 1.4, 0.2],
                    }
                ]
            },
            headers={"X-Request-ID": "req-v2"},
        )
        assert v2.status_code == 200
    # The server has stopped (SIGTERM): everything answered is on disk.
    lines = {line["request_id"]: line for line in lines_of(logs)}
    assert set(lines) == {*sent, "req-failed", "req-v2"}
    for request_id, (rows, answer) in sent.items():
        line = lines[request_id]
        assert (line["model"], line["version"], line["protocol"], line["status"]) == ("iris", 1, "predict", 200)  # fmt: skip
        assert line["inputs"] == [dict(zip(FEATURES, row, strict=True)) for row in rows]
        assert line["outputs"] == [
            {"label": p["label"], "probabilities": p["probabilities"]}
            for p in answer["predictions"]
        ]
        assert line["warnings"] == [p["warnings"] for p in answer["predictions"]]
        assert line["error"] is None and line["latency_ms"] > 0
    refused = lines["req-failed"]
    assert refused["status"] == 422 and refused["inputs"] is None and refused["outputs"] is None
    assert "the model takes 4" in refused["error"]
    assert lines["req-v2"]["protocol"] == "v2"
    for path in logs.glob("*.jsonl"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_sampling_and_rotation(artifacts_copy: Path, tmp_path: Path) -> None:
    logs = tmp_path / "sampled"
    row = [[5.1, 3.5, 1.4, 0.2]]
    with running(serve(artifacts_copy, tmp_path, payload_log_dir=logs, payload_log_sample=0)) as server:  # fmt: skip
        for _ in range(20):
            predict(server, row)
    assert lines_of(logs) == []
    logs = tmp_path / "rotated"
    env = {"payload_log_dir": logs, "payload_log_max_bytes": 4096, "payload_log_files": 3}
    with running(serve(artifacts_copy, tmp_path, **env)) as server:
        for i in range(200):
            predict(server, row, f"rotation-{i}")
        # The monitor writes what it took off its queue every 100 ms: read once it has caught up.
        wait_until(
            lambda: metric(server.url, "payload_log_lines_total") >= 190, "the lines written", 30
        )
        written = metric(server.url, "payload_log_lines_total")
    files = sorted(logs.glob("*.jsonl"))
    assert len(files) == 4  # the current file and the 3 newest rotated ones
    assert all(path.stat().st_size <= 4096 for path in files)
    kept = lines_of(logs)
    assert 0 < len(kept) < 200 and written >= 190
    # the newest lines are kept (the current file sorts after the rotated ones), in order
    numbers = [int(line["request_id"].split("-")[1]) for line in kept]
    assert numbers == list(range(200 - len(kept), 200))


def test_a_full_disk_stops_the_log_and_serving_goes_on(
    artifacts_copy: Path, tmp_path: Path
) -> None:
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0 or os.geteuid() != 0:
        pytest.skip(f"cannot mount a 64 KiB tmpfs here: {done.stderr.decode().strip()[:100]}")
    try:
        with running(serve(artifacts_copy, tmp_path, payload_log_dir=mount)) as server:
            rows = IRIS[:20].tolist()
            for _ in range(60):  # about 120 KB of lines into 64 KiB
                assert predict(server, rows).status_code == 200
            assert predict(server, rows).status_code == 200  # serving goes on
            wait_until(  # the monitor writes behind the answers (every 100 ms)
                lambda: metric(server.url, "payload_log_dropped_total", reason="write failed") > 0,
                "a failed write counted",
                30,
            )
            dropped = metric(server.url, "payload_log_dropped_total", reason="write failed")
        assert dropped > 0
        assert "payload log stopped" in (tmp_path / "server.log").read_text()
    finally:
        subprocess.run(["umount", str(mount)], check=False)


# -- CloudEvents --------------------------------------------------------------------------------
def test_a_sink_receives_request_and_response_events_with_the_request_id(
    artifacts_copy: Path, tmp_path: Path, serve_sink: Any
) -> None:
    sink = serve_sink()
    with running(serve(artifacts_copy, tmp_path, payload_log_url=sink.url)) as server:
        answer = predict(server, [[5.1, 3.5, 1.4, 0.2]], "ce-ok").json()
        assert predict(server, [[1.0]], "ce-refused").status_code == 422
    # The server has stopped: what the monitor held was sent before it exited.
    events = {(e.headers["ce-id"], e.headers["ce-type"]): e for e in sink.received}
    request_type, response_type = (
        "org.kubeflow.serving.inference.request",
        "org.kubeflow.serving.inference.response",
    )
    assert set(events) == {
        ("ce-ok", request_type),
        ("ce-ok", response_type),
        ("ce-refused", request_type),
        ("ce-refused", response_type),
    }
    ok = events[("ce-ok", response_type)]
    assert ok.headers["ce-specversion"] == "1.0"
    assert (ok.headers["ce-model"], ok.headers["ce-modelversion"]) == ("iris", "1")
    assert ok.body["predictions"][0]["label"] == answer["predictions"][0]["label"]
    assert events[("ce-ok", request_type)].body["instances"] == [dict(zip(FEATURES, [5.1, 3.5, 1.4, 0.2], strict=True))]  # fmt: skip
    refused = events[("ce-refused", response_type)].body
    assert refused["status"] == 422 and "the model takes 4" in refused["error"]


def test_a_stalled_sink_never_holds_up_an_answer(
    artifacts_copy: Path, tmp_path: Path, stalled: Any
) -> None:
    env = {"payload_log_url": stalled.url, "shutdown_timeout_seconds": 5}
    with running(serve(artifacts_copy, tmp_path, **env)) as server:
        started = time.monotonic()
        for i in range(300):
            assert predict(server, [[5.1, 3.5, 1.4, 0.2]], f"stalled-{i}").status_code == 200
        elapsed = time.monotonic() - started
        assert stalled.got_bytes.wait(10)  # the sink was reached, and never answered
    # Answered one after another while the sink held its first event: nothing waited on it
    # (a generous bound on a shared machine; each answer takes about a millisecond).
    assert elapsed < 30, elapsed


def test_replay_of_the_servers_own_log_agrees_with_its_answers(
    artifacts_copy: Path, tmp_path: Path
) -> None:
    """The payload log a real server wrote, replayed against the version that answered it: every
    row gets the label it got, with the same probabilities."""
    logs = tmp_path / "payloads"
    rng = np.random.default_rng(2)
    with running(serve(artifacts_copy, tmp_path, payload_log_dir=logs)) as server:
        for _ in range(30):
            rows = load_iris().data[rng.integers(0, len(IRIS), 4)].tolist()
            assert predict(server, rows).status_code == 200
        assert predict(server, [[1.0]]).status_code == 422  # a failed line, skipped
    done = subprocess.run(
        [sys.executable, "-m", "keras_serve", "replay", "--log", str(logs), "--artifacts",
         str(artifacts_copy), "--model", "iris", "--version", "1", "--json"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["rows"], report["agree"], report["disagree"]) == (120, 120, 0)
    assert report["lines_skipped"]["failed"] == 1
    assert report["largest_difference"]["value"] < 1e-5
