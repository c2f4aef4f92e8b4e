"""Test helpers: a real ``python -m service`` process on a free port on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
# httpx's functions (httpx.get, httpx.post) and each httpx.Client make an SSL context unless given
# one: ~20 ms each on this machine, twenty times what a prediction takes. The servers here speak
# plain HTTP; clients made in a loop share this one (``verify=TLS``).
TLS = ssl.create_default_context()


def require(problem: str | None, variable: str, what: str) -> None:
    """Skip ``what`` (e.g. "Docker image tests") saying why when ``problem`` (what is missing)
    is set, or fail with it when the environment sets ``variable`` to 1, as CI does."""
    if problem:
        if os.environ.get(variable) == "1":
            pytest.fail(f"{variable}=1, but {problem}", pytrace=False)
        pytest.skip(f"{what} skipped: {problem} ({variable}=1 makes this fail)")


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll until ``condition()`` holds; fail naming ``what`` after ``timeout`` seconds (a wait
    for an event, not a timing check)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s"
        time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """Start the service as users do (``python -m service``) with the given environment."""

    def __init__(self, artifacts: Path, log_path: Path | None = None, **env: object) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "ARTIFACTS_DIR": str(artifacts),
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "TF_CPP_MIN_LOG_LEVEL": "3",
            **{k.upper(): str(v) for k, v in env.items()},
        }
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, wait: str | None = "/healthz", timeout: float = 60.0) -> ServerProcess:
        """Start and wait until ``wait`` answers (any status for /healthz, 200 otherwise)."""
        out = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "service"],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        finally:
            if self.log_path:
                out.close()  # the child holds its own descriptor
        if wait:
            self.wait_for(wait, timeout)
        return self

    def wait_for(self, path: str, timeout: float = 60.0, status: int = 200) -> httpx.Response:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}: {self.log()}")
            try:
                response = httpx.get(self.url + path, timeout=2, verify=TLS)
                if response.status_code == status:
                    return response
            except httpx.HTTPError as exc:
                last = exc
            time.sleep(0.05)
        raise TimeoutError(
            f"{path} did not answer {status} within {timeout}s ({last}): {self.log()}"
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path else ""

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait; returns the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- /metrics ------------------------------------------------------------------------------------
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Prometheus exposition text to {(name, labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def scrape(client: Any) -> Samples:
    """The samples of ``GET /metrics`` through a TestClient or an httpx client."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample with exactly these labels (0 when there is none yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def metric(url: str, name: str, **labels: str) -> float:
    """One sample of a running server's ``/metrics`` (0 when it has no such sample yet)."""
    with httpx.Client(base_url=url, timeout=10, verify=TLS) as client:
        return value(scrape(client), name, **labels)
