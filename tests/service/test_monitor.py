"""The monitor in process (service/monitor.py): what the request path queues, the payload log
file's rotation and failure, and the records' values, on the session's real Iris bundle."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from service import monitor
from service.model import LoadedModel, load_version

ROW = np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)


@pytest.fixture(scope="module")
def iris(iris_bundle: Path) -> LoadedModel:
    return load_version(iris_bundle, "litert")


def settings(**changes: object) -> SimpleNamespace:
    values = {
        "drift_window": 10,
        "payload_log_dir": None,
        "payload_log_sample": 1.0,
        "payload_log_max_bytes": 1 << 20,
        "payload_log_files": 3,
    }
    return SimpleNamespace(**{**values, **changes})


def test_drift_takes_in_two_windows_of_rows_a_second_and_no_more(iris: LoadedModel) -> None:
    iris.drift_queued = 0
    watcher = monitor.Monitor(settings(), None)  # type: ignore[arg-type]
    rows = np.repeat(ROW, 5, axis=0)
    for _ in range(6):
        watcher.observe(iris, "iris", rows, None, None, "predict", 200, 0.001, None)
    assert len(watcher.queue) == 4  # 20 rows: twice DRIFT_WINDOW
    # Failed requests and versions without distributions are never taken in.
    iris.drift_queued = 0
    watcher.observe(iris, "iris", rows, None, None, "predict", 422, 0.001, "bad")
    assert len(watcher.queue) == 4
    watcher._drain()
    assert iris.drift is not None and iris.drift.seen == 20


def test_a_full_queue_drops_logged_requests_and_counts_them(iris: LoadedModel, tmp_path: Path) -> None:  # fmt: skip
    watcher = monitor.Monitor(settings(payload_log_dir=tmp_path), None)  # type: ignore[arg-type]
    big = np.repeat(ROW, monitor.QUEUE_ROWS // 2 + 1, axis=0)
    p = iris.probabilities_sync(ROW)
    watcher.observe(iris, "iris", big, p, None, "predict", 200, 0.001, None)
    watcher.observe(iris, "iris", big, p, None, "predict", 200, 0.001, None)  # over the rows
    assert len(watcher.queue) == 1 and watcher.dropped == 1


def test_the_log_rotates_between_lines_and_keeps_the_newest_files(tmp_path: Path) -> None:
    log = monitor.PayloadLog(tmp_path, max_bytes=100, keep=2)
    for i in range(10):
        assert log.write([json.dumps({"n": i, "pad": "x" * 30}).encode() + b"\n"] * 2)
    log.close()
    files = sorted(tmp_path.glob("*.jsonl"))
    assert len(files) == 3  # the current one and the two newest rotated
    lines = [json.loads(line) for path in files for line in path.read_text().splitlines()]
    assert [line["n"] for line in lines][-2:] == [9, 9]
    assert all(path.stat().st_size <= 100 for path in files)
    assert all(oct(path.stat().st_mode & 0o777) == "0o600" for path in files)


def test_a_failing_write_stops_the_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = monitor.PayloadLog(tmp_path, max_bytes=1 << 20, keep=2)
    assert log.write([b"{}\n"])

    def full(fd: int, data: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(monitor.os, "write", full)
    assert not log.write([b"{}\n"])
    monkeypatch.undo()
    assert not log.write([b"{}\n"])  # stopped for good
    assert log.failed == os.strerror(errno.ENOSPC)


def test_a_record_holds_what_the_model_read_and_answered(iris: LoadedModel) -> None:
    x = np.array([[5.1, 3.5, 1.4, 0.2], [9.9, 3.0, 5.0, 1.8]], dtype=np.float32)
    p = iris.probabilities_sync(x)
    record = monitor.payload_record(0.0, "r1", iris, "iris", x, p, None, "v2", 200, 0.0021, None)
    assert record["time"] == "1970-01-01T00:00:00.000Z"
    assert record["inputs"][0] == {
        "sepal_length": 5.1,
        "sepal_width": 3.5,
        "petal_length": 1.4,
        "petal_width": 0.2,
    }
    assert [o["label"] for o in record["outputs"]] == [iris.labels[i] for i in p.argmax(axis=1)]
    assert record["warnings"][0] == [] and "sepal_length=9.9" in record["warnings"][1][0]
    assert (record["protocol"], record["latency_ms"], record["error"]) == ("v2", 2.1, None)
    failed = monitor.payload_record(
        0.0, "r2", None, "nope", None, None, None, "predict", 404, 0, "x"
    )
    assert (failed["model"], failed["version"], failed["inputs"], failed["outputs"]) == (
        "nope",
        None,
        None,
        None,
    )
