"""Structured logs: one JSON line per request, X-Request-ID in and out, LOG_LEVEL honoured."""

from __future__ import annotations

import asyncio
import json
import logging
import logging.config
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.observability.logs import (
    AccessLog,
    JsonFormatter,
    JsonLinesHandler,
    RequestContext,
    current_request,
    log_config,
)
from service.settings import Settings
from tests.support import ROOT, ServerProcess

ROW = [5.1, 3.5, 1.4, 0.2]
ACCESS_FIELDS = {"request_id", "method", "route", "path", "status", "duration_ms", "model"}
ACCESS_FIELDS |= {"model_version"}
# Every access line, whichever way it is written: these keys in this order.
ACCESS_KEYS = ["time", "level", "logger", "message", "request_id", "method", "route", "path"]
ACCESS_KEYS += ["status", "duration_ms", "model", "model_version"]
GENERATED = re.compile(r"[0-9a-f]{32}")


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict]:
    formatter = JsonFormatter()
    return [
        json.loads(formatter.format(record))
        for record in caplog.records
        if record.name == "service.access"
    ]


def test_client_request_id_is_echoed(module_client: TestClient) -> None:
    for given in ("abc-123", "trace:4bf92f3577b34da6.a3ce929d0e0e4736", "x" * 128):
        response = module_client.post(
            "/predict", json={"instances": [ROW]}, headers={"x-request-id": given}
        )
        assert response.status_code == 200
        assert response.headers["x-request-id"] == given


@pytest.mark.parametrize(
    "given",
    [None, b"", b"x" * 129, b"has space", b"<script>", b"a;b", b'quote"d', "\u00fcml".encode()],
)
def test_missing_or_unsafe_request_id_is_replaced(
    module_client: TestClient, given: bytes | None
) -> None:
    headers = {} if given is None else {"x-request-id": given}
    first = module_client.get("/healthz", headers=headers).headers["x-request-id"]
    second = module_client.get("/healthz", headers=headers).headers["x-request-id"]
    assert GENERATED.fullmatch(first) and GENERATED.fullmatch(second)
    assert first != second


def test_error_answers_carry_the_request_id(module_client: TestClient) -> None:
    for response in (
        module_client.post("/predict", content=b"{", headers={"content-type": "application/json"}),
        module_client.get("/no/such/route"),
        module_client.post(
            "/predict", json={"instances": [[1.0]]}, headers={"x-request-id": "bad-1"}
        ),
    ):
        assert response.status_code in (400, 404, 422)
        assert "x-request-id" in response.headers
    assert response.headers["x-request-id"] == "bad-1"


def test_one_json_access_line_per_request(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="service.access")
    ok = client.post("/predict", json={"instances": [ROW]}, headers={"x-request-id": "req-ok"})
    bad = client.post("/predict", json={"instances": [[1.0]]}, headers={"x-request-id": "req-bad"})
    missing = client.get("/nowhere/42")
    assert (ok.status_code, bad.status_code, missing.status_code) == (200, 422, 404)
    lines = access_lines(caplog)
    assert len(lines) == 3
    for line in lines:
        assert set(line) >= ACCESS_FIELDS
        assert list(line) == ACCESS_KEYS
        assert line["logger"] == "service.access" and line["level"] == "info"
        assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
        assert line["model_version"] == 1
    first, second, third = lines
    assert first["request_id"] == "req-ok" and first["status"] == 200
    assert (first["method"], first["route"], first["path"]) == ("POST", "/predict", "/predict")
    assert second["request_id"] == "req-bad" and second["status"] == 422
    assert third["request_id"] == missing.headers["x-request-id"]
    assert (third["route"], third["path"], third["status"]) == ("unmatched", "/nowhere/42", 404)


def test_log_level_warning_drops_access_lines(
    artifacts_copy: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)  # the root; the service's own level decides
    settings = Settings(artifacts_dir=artifacts_copy, model_runtime="litert", log_level="warning")
    with TestClient(create_app(settings)) as client:
        assert client.post("/predict", json={"instances": [ROW]}).status_code == 200
    assert not [r for r in caplog.records if r.name.startswith("service")]


def test_other_log_lines_name_the_request() -> None:
    formatter = JsonFormatter()
    record = logging.LogRecord(
        "service.registry", logging.WARNING, __file__, 1, "odd %s", ("x",), None
    )
    token = current_request.set(RequestContext("req-7"))
    try:
        inside = json.loads(formatter.format(record))
    finally:
        current_request.reset(token)
    assert inside["request_id"] == "req-7" and inside["message"] == "odd x"
    assert "request_id" not in json.loads(formatter.format(record))
    try:
        raise ValueError("boom")
    except ValueError:
        failed = logging.LogRecord(
            "service", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    document = json.loads(formatter.format(failed))
    assert document["level"] == "error" and "ValueError: boom" in document["exception"]


# -- the service's own logging configuration (as python -m service runs it) ------------------
CONFIGURED = ["service", "uvicorn", "uvicorn.error", "uvicorn.access"]


@pytest.fixture
def stdout_logging(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``log_config("info")`` applied with stdout going to a file; the file's path."""
    path = tmp_path / "stdout.log"
    saved = {}
    for name in CONFIGURED:
        logger = logging.getLogger(name)
        saved[name] = (logger.handlers[:], logger.level, logger.propagate, logger.disabled)
    with open(path, "w") as out:
        monkeypatch.setattr(sys, "stdout", out)
        logging.config.dictConfig(log_config("info"))
        handler = as_configured()
        try:
            yield path
        finally:
            handler.flush()
            for name, (handlers, level, propagate, disabled) in saved.items():
                logger = logging.getLogger(name)
                logger.handlers[:] = handlers
                logger.setLevel(level)
                logger.propagate, logger.disabled = propagate, disabled
            handler.close()


def as_configured() -> JsonLinesHandler:
    """The configuration's handler, alone again: pytest attaches its capture handlers to every
    non-propagating logger at the start of each test phase."""
    logger = logging.getLogger("service")
    handler = next(h for h in logger.handlers if isinstance(h, JsonLinesHandler))
    logger.handlers[:] = [handler]
    return handler


def read_lines(path: Path, count: int, timeout: float = 2.0) -> list[dict]:
    """The file's JSON lines once there are ``count`` (written after the loop's iteration)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_text().splitlines()
        if len(lines) >= count or time.monotonic() > deadline:
            return [json.loads(line) for line in lines]
        time.sleep(0.01)


def test_access_lines_skip_logging_with_the_service_configuration(
    stdout_logging: Path, artifacts_copy: Path
) -> None:
    settings = Settings(artifacts_dir=artifacts_copy, model_runtime="litert")
    handler = as_configured()
    assert AccessLog().handler is handler  # lines are written straight to it
    with TestClient(create_app(settings)) as client:
        start = len(read_lines(stdout_logging, 0))  # the startup lines
        ok = client.post("/predict", json={"instances": [ROW]}, headers={"x-request-id": "a-1"})
        bad = client.post("/predict", json={"instances": [[1.0]]})
        missing = client.get("/nowhere/42")
        statuses = (ok.status_code, bad.status_code, missing.status_code)
        assert statuses == (200, 422, 404)
        # Written when the event loop next runs its callbacks: no flush needed, nothing waits.
        lines = read_lines(stdout_logging, start + 3)[start:]
    access = [line for line in lines if line["logger"] == "service.access"]
    assert len(access) == 3
    expected_ids = ["a-1", bad.headers["x-request-id"], missing.headers["x-request-id"]]
    assert [line["request_id"] for line in access] == expected_ids
    assert [line["status"] for line in access] == [200, 422, 404]
    # The same line as logging would write: same keys, in the same order, same values.
    formatter = JsonFormatter()
    for line in access:
        assert list(line) == ACCESS_KEYS
        fields = {k: line[k] for k in ACCESS_KEYS[4:]}
        record = logging.LogRecord("service.access", logging.INFO, "", 0, line["message"], (), None)
        record.fields = fields
        record.created = time.time()
        via_logging = json.loads(formatter.format(record))
        assert list(line) == list(via_logging)
        assert {**line, "time": None} == {**via_logging, "time": None}
        assert line["message"] == f"{line['method']} {line['route']} {line['status']}"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
        assert line["model_version"] == 1


def test_queued_access_lines_come_before_later_records(stdout_logging: Path) -> None:
    handler = as_configured()

    async def scenario() -> None:
        handler.write_soon(b'{"n": 1}\n')
        handler.write_soon(b'{"n": 2}\n')
        logging.getLogger("service.registry").info("after the queued lines")
        handler.write_soon(b'{"n": 3}\n')
        await asyncio.sleep(0)  # the loop's next iteration writes the queue

    asyncio.run(scenario())
    lines = read_lines(stdout_logging, 4)
    assert [line.get("n", line.get("message")) for line in lines] == [
        1,
        2,
        "after the queued lines",
        3,
    ]


def test_access_lines_go_through_logging_otherwise(stdout_logging: Path) -> None:
    as_configured()
    access = logging.getLogger("service.access")
    extra = logging.StreamHandler(sys.stderr)
    access.addHandler(extra)  # two handlers: logging decides what each gets
    try:
        assert AccessLog().handler is None
    finally:
        access.removeHandler(extra)
    access.addFilter(lambda record: True)
    try:
        assert AccessLog().handler is None
    finally:
        access.filters.clear()
    assert AccessLog().handler is not None


# -- against a real server process -------------------------------------------------------------
class _Server(ServerProcess):
    """``python -m service`` with stdout (the logs) and stderr (native libraries) apart."""

    def __init__(self, artifacts: Path, directory: Path, **env: object) -> None:
        super().__init__(artifacts, log_path=directory / "stdout.log", **env)
        self.stderr_path = directory / "stderr.log"

    def start(self, wait: str | None = "/healthz", timeout: float = 60.0) -> _Server:
        with open(self.log_path, "wb") as out, open(self.stderr_path, "wb") as err:  # type: ignore[arg-type]
            self.process = subprocess.Popen(
                [sys.executable, "-m", "service"], cwd=ROOT, env=self.env, stdout=out, stderr=err
            )
        if wait:
            self.wait_for(wait, timeout)
        return self


@pytest.mark.slow
def test_server_writes_json_lines(artifacts_copy: Path, tmp_path: Path) -> None:
    server = _Server(artifacts_copy, tmp_path, model_runtime="litert", log_level="info")
    with server:
        server.wait_for("/readyz")
        with httpx.Client(base_url=server.url) as client:
            for i in range(5):
                response = client.post(
                    "/predict",
                    json={"instances": [ROW] * (i + 1)},
                    headers={"x-request-id": f"r-{i}"},
                )
                assert response.headers["x-request-id"] == f"r-{i}"
            assert client.get("/healthz").status_code == 200
    assert server.process is not None and server.process.returncode == 0
    assert server.log_path is not None
    text = server.log_path.read_text()
    documents = [json.loads(line) for line in text.splitlines()]  # every line is JSON
    assert {"time", "level", "logger", "message"} <= set(documents[0])
    loggers = {d["logger"] for d in documents}
    assert {"uvicorn.error", "service.registry", "service.access"} <= loggers
    access = {d["request_id"]: d for d in documents if d["logger"] == "service.access"}
    for i in range(5):
        line = access[f"r-{i}"]
        assert set(line) >= ACCESS_FIELDS
        assert (line["route"], line["status"], line["model_version"]) == ("/predict", 200, 1)
    print(f"\n{len(documents)} log lines, all JSON; e.g. {json.dumps(access['r-0'])}")


@pytest.mark.slow
def test_server_log_level_warning(artifacts_copy: Path, tmp_path: Path) -> None:
    server = _Server(artifacts_copy, tmp_path, model_runtime="litert", log_level="warning")
    with server:
        server.wait_for("/readyz")
        assert httpx.post(server.url + "/predict", json={"instances": [ROW]}).status_code == 200
    assert server.log_path is not None
    assert server.log_path.read_text() == ""  # no access lines, no uvicorn info lines
