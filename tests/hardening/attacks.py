"""Issue 18's outside attack pass, reproduced against real servers, with figures.

    python -m tests.hardening.attacks [--work DIR] [--artifacts DIR] [--only 1,3,14]

Trains an Iris bundle (``python -m training --epochs 5``) unless ``--artifacts`` names a
directory holding ``iris/<version>``, starts real ``python -m service`` processes on 127.0.0.1
(``tests.support.ServerProcess``: LiteRT runtime, ``MODEL_NAME=iris``, gRPC off) and runs the
fourteen attacks at about the scale the issue gives. Each prints one line:

    attack  N name: sent ...; measured ...; bound ...: ok | FAILED

and the run exits 1 if any bound failed. Each bound fails clearly on the behaviour the issue
measured and, but for item 14's (the issue's own goals: outside rows <= 1.5x the in-range time,
CSV-to-CSV >= 500,000 rows/s), holds with a wide margin on a shared 2-core machine. Where a
machine cannot stage an attack for real (item 10 as root without CAP_SETPCAP, item 12 without a
tmpfs mount) the line says so and reports the regression tests run instead.

Everything happens in a fresh directory (``tempfile.mkdtemp``, inside ``--work`` if given);
at the end all of it but ``logs/`` (the servers' and training runs' output) is removed, and
``logs/`` too when ``--work`` was not given and every bound held. ``make harden`` runs this
(``tests/hardening/harden.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import http.client
import json
import os
import re
import resource
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

import bundle
from bench.large import csv_body, json_body, sample_rows
from bundle.versions import STALE_STAGING_SECONDS, lock_staging
from service.settings import Settings
from tests.support import ServerProcess, metric, wait_until

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
HOST = "127.0.0.1"
MIB = 1024 * 1024
PATIENCE = 60.0  # how long to wait for what must happen; never a bound
FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
ROW = [5.1, 3.5, 1.4, 0.2]
PREDICT = orjson.dumps({"instances": [ROW]})
JSON = {"Content-Type": "application/json"}
TOKEN = "attacks-admin-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
DEFAULTS = {name: info.default for name, info in Settings.model_fields.items()}
PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2


def say(message: str) -> None:
    print(message, flush=True)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 0.01 else f"{seconds * 1000:.0f} ms"


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def one_line(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class Outcome:
    sent: str
    measured: str
    bound: str
    held: bool


# -- servers, bundles and clients ------------------------------------------------------------------
class Run:
    """What the attacks share: the work directory, the bundles, starting servers."""

    def __init__(self, work: Path, iris: Path) -> None:
        self.work = work
        self.logs = work / "logs"
        self.bundle = iris  # a version directory of the Iris model
        self.other: Path | None = None  # another Iris bundle, another seed (item 11 trains it)

    def artifacts(self, name: str) -> Path:
        """A fresh artifacts directory holding a copy of the bundle as ``iris/1``."""
        root = self.work / name / "artifacts"
        shutil.copytree(self.bundle, root / "iris" / "1")
        return root

    def other_bundle(self) -> Path:
        if self.other is None:
            self.other = train(self.work / "other", self.logs / "training-other.log", seed=7)
        return self.other

    @contextlib.contextmanager
    def server(
        self, name: str, artifacts: Path, wait: str | None = "/readyz", **env: object
    ) -> Iterator[ServerProcess]:
        """``python -m service`` on Iris with the LiteRT runtime, stopped however the block
        ends."""
        process = ServerProcess(
            artifacts,
            log_path=self.logs / f"server-{name}.log",
            model_name="iris",
            model_runtime="litert",
            grpc_port=0,
            **env,
        )
        try:
            process.start(wait=None)
            if wait:
                process.wait_for(wait, timeout=PATIENCE)
            yield process
        finally:
            if process.process is not None:
                process.stop()


def train(artifacts: Path, log: Path, seed: int | None = None) -> Path:
    """``python -m training --epochs 5 --quiet``; the published version directory."""
    command = [PYTHON, "-m", "training", "--artifacts", str(artifacts), "--epochs", "5", "--quiet"]
    if seed is not None:
        command += ["--seed", str(seed)]
    with log.open("w") as out:
        code = subprocess.run(command, cwd=ROOT, stdout=out, stderr=out, timeout=600).returncode
    if code != 0:
        raise RuntimeError(f"training exited {code}: {one_line(log.read_text()[-600:])}")
    return artifacts / "iris" / str(max(bundle.list_versions(artifacts / "iris")))


def publish_copy(
    model_dir: Path, source: Path, change: Callable[[Path], None] | None = None
) -> int:
    """Publish a copy of ``source`` as training does (staged in ``.tmp-*`` beside the
    versions, changed if asked, renamed to the next free number); the number."""
    staging = Path(tempfile.mkdtemp(prefix=bundle.TEMP_PREFIX, dir=model_dir))
    shutil.copytree(source, staging, dirs_exist_ok=True)
    if change is not None:
        change(staging)
    version = max(bundle.list_versions(model_dir), default=0) + 1
    os.rename(staging, model_dir / str(version))
    return version


def proc_status(pid: int, field: str) -> float:
    """A /proc/PID/status field in MB (VmHWM: the peak resident set)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def refused(server: ServerProcess, reason: str) -> float:
    return metric(server.url, "http_connections_refused_total", reason=reason)


class Prober(threading.Thread):
    """Send one request every ``every`` seconds until stopped, on one keep-alive connection
    (or a new connection each time), recording each answer's status and latency; a failure
    counts as the exception's name and its full wait."""

    def __init__(
        self,
        port: int,
        path: str = "/healthz",
        every: float = 0.02,
        body: bytes | None = None,
        keep_alive: bool = True,
        timeout: float = 10.0,
    ) -> None:
        super().__init__(daemon=True)
        self.port, self.path, self.every, self.body = port, path, every, body
        self.keep_alive, self.timeout = keep_alive, timeout
        self.latencies: list[float] = []
        self.statuses: Counter[int | str] = Counter()
        self.halt = threading.Event()

    def run(self) -> None:
        connection: http.client.HTTPConnection | None = None
        method, headers = ("POST", JSON) if self.body is not None else ("GET", {})
        while not self.halt.is_set():
            start = time.perf_counter()
            status: int | str
            try:
                if connection is None:
                    connection = http.client.HTTPConnection(HOST, self.port, timeout=self.timeout)
                connection.request(method, self.path, self.body, headers)
                response = connection.getresponse()
                response.read()
                status = response.status
                if response.will_close or not self.keep_alive:
                    connection.close()
                    connection = None
            except (OSError, http.client.HTTPException) as exc:
                status = type(exc).__name__
                if connection is not None:
                    connection.close()
                    connection = None
            self.latencies.append(time.perf_counter() - start)
            self.statuses[status] += 1
            self.halt.wait(self.every)
        if connection is not None:
            connection.close()

    def __enter__(self) -> Prober:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.halt.set()
        self.join(self.timeout + 10)

    @property
    def count(self) -> int:
        return len(self.latencies)

    def all(self, status: int) -> bool:
        return self.count > 0 and self.statuses[status] == self.count

    def summary(self) -> str:
        latencies = self.latencies or [float("nan")]
        return f"median {ms(median(latencies))}, max {ms(max(latencies))} over {self.count}"


class Crowd:
    """Many raw client connections driven from one thread: each sends ``first``, then ``drip``
    every ``every`` seconds until the server closes it. Records for each the status it was
    answered (None: closed without an answer), when the answer came and when the connection
    closed, in seconds from the start."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.selector = selectors.DefaultSelector()
        self.open: dict[socket.socket, bytearray] = {}
        self.first_byte: dict[socket.socket, float] = {}
        self.answers: list[tuple[int | None, float, float]] = []
        self.failed_connects = 0
        self.start = time.monotonic()

    def connect(self, count: int, first: bytes) -> None:
        for _ in range(count):
            try:
                connection = socket.create_connection((HOST, self.port), timeout=10)
            except OSError:
                self.failed_connects += 1
                continue
            connection.setblocking(False)
            self.open[connection] = bytearray()
            self.selector.register(connection, selectors.EVENT_READ)
            self._send(connection, first)

    def drive(
        self, drip: bytes, every: float, until: float, tick: Callable[[], None] | None = None
    ) -> None:
        next_drip = time.monotonic() + every
        while self.open and time.monotonic() < until:
            wait = max(0.0, min(next_drip, until) - time.monotonic())
            for key, _ in self.selector.select(min(wait, 0.1)):
                self._read(key.fileobj)  # type: ignore[arg-type]
            if time.monotonic() >= next_drip:
                for connection in list(self.open):
                    self._send(connection, drip)
                next_drip += every
            if tick is not None:
                tick()

    def close(self) -> None:
        for connection in list(self.open):
            connection.close()
        self.open.clear()
        self.selector.close()

    def _send(self, connection: socket.socket, data: bytes) -> None:
        try:
            connection.send(data)
        except BlockingIOError:
            pass
        except OSError:  # closed by the server: read what it answered, if anything
            self._read(connection, until_closed=True)

    def _read(self, connection: socket.socket, until_closed: bool = False) -> None:
        buffer = self.open[connection]
        while True:
            try:
                chunk = connection.recv(65536)
            except BlockingIOError:
                if not until_closed:
                    return
                chunk = b""
            except OSError:  # reset
                chunk = b""
            if not chunk:
                break
            if not buffer:
                self.first_byte[connection] = time.monotonic()
            buffer += chunk
            if not until_closed:
                return
        del self.open[connection]
        self.selector.unregister(connection)
        connection.close()
        status = int(buffer[9:12]) if buffer.startswith(b"HTTP/1.1 ") else None
        closed = time.monotonic()
        answered = self.first_byte.pop(connection, closed)
        self.answers.append((status, answered - self.start, closed - self.start))


# -- the attacks -------------------------------------------------------------------------------
def many_keys(count: int) -> bytes:
    return orjson.dumps({"instances": [ROW], **{f"k{i}": 1 for i in range(count)}})


def attack_many_keys(run: Run, server: ServerProcess) -> Outcome:
    """1. Was: a 62 KB object blocked the event loop 1.7 s, four clients pushed /predict to a
    9.9 s median and /healthz timed out; a 6.3 MB one kept a thread busy for 100 s."""
    small, big = many_keys(6_300), many_keys(530_000)
    seconds = 5.0
    answers: dict[str, list[float]] = {"small": [], "big": []}
    statuses: Counter[int | str] = Counter()
    halt, lock = threading.Event(), threading.Lock()

    def client(kind: str, body: bytes) -> None:
        connection = http.client.HTTPConnection(HOST, server.port, timeout=PATIENCE)
        try:
            while not halt.is_set():
                start = time.perf_counter()
                status: int | str
                try:
                    connection.request("POST", "/predict", body, JSON)
                    response = connection.getresponse()
                    response.read()
                    status = response.status
                except (OSError, http.client.HTTPException) as exc:
                    status = type(exc).__name__
                    connection.close()
                with lock:
                    statuses[status] += 1
                    answers[kind].append(time.perf_counter() - start)
        finally:
            connection.close()

    clients = [
        threading.Thread(target=client, args=(kind, body), daemon=True)
        for kind, body in [("small", small), ("big", big)] * 2
    ]
    with Prober(server.port) as health:
        for thread in clients:
            thread.start()
        time.sleep(seconds)
        halt.set()
        for thread in clients:
            thread.join(PATIENCE)
    start = time.perf_counter()
    after = httpx.post(server.url + "/predict", content=PREDICT, headers=JSON, timeout=PATIENCE)
    after_seconds = time.perf_counter() - start
    total = sum(statuses.values())
    four_xx = sum(n for s, n in statuses.items() if isinstance(s, int) and 400 <= s < 500)
    # /healthz waits whenever a 6 MB body is being parsed: parsing and checking one holds the
    # GIL for 0.1-0.5 s (orjson alone ~0.1 s), so with two clients sending them back to back
    # its median is ~50-150 ms here (the attack made it time out). The bounds leave room for
    # that, not for seconds.
    held = (
        total >= 4
        and four_xx == total
        and health.all(200)
        and median(health.latencies) < 0.3
        and max(health.latencies) < 2.0
        and median(answers["small"]) < 0.25
        and after.status_code == 200
        and after_seconds < 1.0
    )
    return Outcome(
        sent=f"4 clients for {seconds:g} s, two posting a {len(small) / 1000:.0f} KB object of "
        f"6,300 keys, two a {len(big) / 1e6:.1f} MB one of 530,000 keys",
        measured=f"{total} answers {dict(statuses)}; 62 KB answered in median "
        f"{ms(median(answers['small']))}, 6 MB in {ms(median(answers['big']))}; /healthz "
        f"meanwhile {health.summary()} {dict(health.statuses)}; a valid /predict right after: "
        f"{after.status_code} in {ms(after_seconds)}",
        bound="all 4xx; /healthz all 200, median < 300 ms, max < 2 s; 62 KB median < 250 ms; "
        "a valid /predict after 200 in < 1 s",
        held=held,
    )


def attack_huge_header(run: Run, server: ServerProcess) -> Outcome:
    """2. Was: a 128 MiB header took 58 s (parsed before auth) and stalled /healthz 17.5 s."""
    total = 128 * MIB
    sent = 0
    stopped = "all of it"
    sender_done = float("nan")

    def send(connection: socket.socket, start: float) -> None:
        nonlocal sent, stopped, sender_done
        chunk = b"a" * MIB
        try:
            connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
            while sent < total:
                connection.sendall(chunk)
                sent += len(chunk)
            connection.sendall(b"\r\n\r\n")
        except OSError as exc:
            stopped = f"stopped by {type(exc).__name__}"
        sender_done = time.perf_counter() - start

    data = b""
    answered = None
    with Prober(server.port) as health:
        time.sleep(0.2)
        connection = socket.create_connection((HOST, server.port), timeout=PATIENCE)
        try:
            start = time.perf_counter()
            sender = threading.Thread(target=send, args=(connection, start), daemon=True)
            sender.start()
            while True:
                try:
                    chunk = connection.recv(65536)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                data += chunk
                if answered is None and b"\r\n\r\n" in data:
                    answered = time.perf_counter() - start
            ended = time.perf_counter() - start  # the server's end of the answer (FIN)
            sender.join(PATIENCE)
        finally:
            connection.close()
        time.sleep(0.5)
    status = int(data[9:12]) if data.startswith(b"HTTP/1.1 ") else None
    limit = DEFAULTS["max_header_bytes"]
    held = (
        status == 431
        and answered is not None
        and answered < 5.0
        and ended < 10.0
        and health.all(200)
        and max(health.latencies) < 2.0
    )
    answer = f"{status} after {ms(answered)}" if answered is not None else "no answer"
    return Outcome(
        sent=f"a 128 MiB header as fast as the socket takes it (MAX_HEADER_BYTES={limit})",
        measured=f"{answer}, the answer ended (FIN) after {ms(ended)}; the client sent "
        f"{sent / MIB:.0f} MiB ({stopped}) in {sender_done:.2f} s, read and dropped; /healthz "
        f"meanwhile {health.summary()} {dict(health.statuses)}",
        bound="431 within 5 s, answer ended within 10 s, /healthz all 200 and max < 2 s",
        held=held,
    )


def attack_slowloris(run: Run) -> Outcome:
    """3. Was: no header timeout, no connection cap: ~20k half-open connections exhausted the
    file descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    count = max(100, min(2000, soft - 500))
    cap = 200
    timeout = DEFAULTS["header_timeout_seconds"]
    with run.server("slowloris", run.artifacts("slowloris"), max_connections=cap) as server:
        assert server.process is not None
        pid = server.process.pid
        before = {r: refused(server, r) for r in ("connections", "header_timeout")}
        idle_files = open_files(pid)
        peak = idle_files
        last_sample = 0.0

        def sample() -> None:
            nonlocal peak, last_sample
            if time.monotonic() - last_sample > 0.2:
                last_sample = time.monotonic()
                peak = max(peak, open_files(pid))

        kept = Prober(server.port, "/predict", every=0.25, body=PREDICT)
        newcomers = Prober(server.port, "/predict", every=0.5, body=PREDICT, keep_alive=False)
        crowd = Crowd(server.port)
        with kept:
            wait_until(lambda: kept.count > 0, "the first prediction", PATIENCE)
            try:
                with newcomers:
                    crowd.start = time.monotonic()
                    crowd.connect(count, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                    crowd.drive(b"s", 1.0, crowd.start + timeout + 15, sample)
                still_open = len(crowd.open)
            finally:
                crowd.close()
        after = {r: refused(server, r) - before[r] for r in before}
        fresh = httpx.post(server.url + "/predict", content=PREDICT, headers=JSON, timeout=PATIENCE)
    statuses = Counter(status for status, _, _ in crowd.answers)
    cut = [
        t for status, t, _ in crowd.answers if status == 408 or (status is None and t > timeout / 2)
    ]
    cap_refused = [
        t
        for status, t, _ in crowd.answers
        if status == 503 or (status is None and t <= timeout / 2)
    ]
    others = len(crowd.answers) - len(cut) - len(cap_refused)
    last_cut = max(cut, default=float("nan"))
    held = (
        still_open == 0
        and others == 0
        and crowd.failed_connects == 0
        and 0 < len(cut) <= cap
        and len(cap_refused) >= count - cap
        and last_cut < timeout + 5
        and kept.all(200)
        and kept.count >= 10
        and fresh.status_code == 200
        and peak < cap + idle_files + 100
    )
    return Outcome(
        sent=f"{count} connections each sending a request line and a header byte a second "
        f"(MAX_CONNECTIONS={cap}, HEADER_TIMEOUT_SECONDS={timeout:g})",
        measured=f"{len(cut)} cut off by the header timeout, the last after {last_cut:.1f} s; "
        f"{len(cap_refused)} refused by MAX_CONNECTIONS; answers {dict(statuses)} "
        f"(None: closed unanswered); {still_open} still open; server counted "
        f"header_timeout +{after['header_timeout']:.0f}, connections +{after['connections']:.0f}; "
        f"server open files peak {peak} (idle {idle_files}); /predict on a kept connection "
        f"{kept.statuses[200]}/{kept.count} 200 ({kept.summary()}); on new connections "
        f"{dict(newcomers.statuses)}; a new /predict after: {fresh.status_code}",
        bound=f"all cut or refused, none open; cut <= {cap}, by {timeout + 5:g} s; kept-connection "
        f"/predict all 200; server files < cap + idle + 100; new /predict after 200",
        held=held,
    )


def attack_slow_bodies(run: Run) -> Outcome:
    """4. Was: slow bodies held MAX_CONCURRENCY slots; 260 of them at 1 byte/s made every
    valid prediction a 503."""
    stalled, slots, timeout = 260, 4, 5.0
    head = (
        b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(PREDICT)
    )
    with run.server(
        "slow-bodies",
        run.artifacts("slow-bodies"),
        max_concurrency=slots,
        request_timeout_seconds=timeout,
    ) as server:
        arriving: list[float] = []
        sampled = 0.0

        def sample() -> None:
            nonlocal sampled
            if time.monotonic() - sampled > 1.0:
                sampled = time.monotonic()
                arriving.append(metric(server.url, "http_request_bodies_arriving"))

        crowd = Crowd(server.port)
        predictors = [Prober(server.port, "/predict", every=0.0, body=PREDICT) for _ in range(2)]
        try:
            crowd.connect(stalled, head)
            with predictors[0], predictors[1]:
                crowd.drive(b" ", 1.0, crowd.start + timeout + 20, sample)
            still_open = len(crowd.open)
        finally:
            crowd.close()
        slow = metric(server.url, "http_overload_rejections_total", reason="slow body")
        busy = metric(server.url, "http_overload_rejections_total", reason="concurrency")
    statuses = Counter(status for status, _, _ in crowd.answers)
    times = [t for status, t, _ in crowd.answers if status == 408]
    closed = [t for _, _, t in crowd.answers]
    predictions: Counter[int | str] = predictors[0].statuses + predictors[1].statuses
    made = predictors[0].count + predictors[1].count
    held = (
        statuses[408] == stalled
        and still_open == 0
        and made >= 20
        and predictions[200] == made
        and slow == stalled
        and busy == 0
    )
    span = f"{min(times):.1f}-{max(times):.1f} s" if times else "-"
    closing = f"{min(closed):.1f}-{max(closed):.1f} s" if closed else "-"
    return Outcome(
        sent=f"{stalled} clients sending a prediction's headers, then its body at 1 byte/s "
        f"(MAX_CONCURRENCY={slots}, REQUEST_TIMEOUT_SECONDS={timeout:g})",
        measured=f"stalled answered {dict(statuses)} after {span} (their connections closed "
        f"after {closing}, still dripping); bodies arriving (sampled) "
        f"up to {max(arriving, default=0):.0f}; valid predictions meanwhile {predictions[200]}/"
        f"{made} 200 (median {ms(median(predictors[0].latencies + predictors[1].latencies))}); "
        f"server counted slow body {slow:.0f}, concurrency {busy:.0f}",
        bound=f"all {stalled} stalled 408, every valid prediction 200 (>= 20), no concurrency "
        "refusal",
        held=held,
    )


def reference(version_dir: Path) -> tuple[list[list[float]], np.ndarray, float]:
    document = json.loads((version_dir / bundle.METADATA).read_text())["reference"]
    return document["inputs"], np.array(document["probabilities"]), document["tolerance"]


def answer(server: ServerProcess, rows: list[list[float]]) -> tuple[int, np.ndarray]:
    response = httpx.post(server.url + "/predict", json={"instances": rows}, timeout=PATIENCE)
    response.raise_for_status()
    body = response.json()
    classes = list(body["predictions"][0]["probabilities"])
    return body["version"], np.array(
        [[p["probabilities"][c] for c in classes] for p in body["predictions"]]
    )


def attack_reused_version(run: Run) -> Outcome:
    """5. Was: version 13 deleted and published again with other files kept answering with the
    deleted model, and reload kept it."""
    old_rows, old, tolerance = reference(run.bundle)
    new_rows, new, _ = reference(run.other_bundle())
    figures = []
    held = True
    for way in ("reload", "poll"):
        artifacts = run.artifacts(f"reuse-{way}")
        model_dir = artifacts / "iris"
        env: dict[str, object] = (
            {"admin_token": TOKEN} if way == "reload" else {"poll_seconds": 0.5}
        )
        with run.server(f"reuse-{way}", artifacts, **env) as server:
            version, before = answer(server, old_rows)
            shutil.rmtree(model_dir / "1")
            reused = publish_copy(model_dir, run.other_bundle())
            start = time.monotonic()
            status = 0
            if way == "reload":
                reply = httpx.post(server.url + "/admin/reload", headers=ADMIN, timeout=PATIENCE)
                status = reply.status_code
            else:

                def answers_new() -> bool:
                    try:
                        return bool(np.abs(answer(server, new_rows)[1] - new).max() <= tolerance)
                    except httpx.HTTPError:
                        return False

                with contextlib.suppress(AssertionError):
                    wait_until(answers_new, "the new files answering", PATIENCE)
            seconds = time.monotonic() - start
            version_after, after = answer(server, new_rows)
            _, after_old_rows = answer(server, old_rows)
        to_new = float(np.abs(after - new).max())  # on the new bundle's reference rows
        to_old = float(np.abs(after_old_rows - old).max())  # on the deleted one's
        ok = (
            version == version_after == reused == 1
            and float(np.abs(before - old).max()) <= tolerance
            and to_new <= tolerance
            and to_old > 10 * tolerance
            and status in (0, 200)
        )
        held = held and ok
        how = f"reload {status}" if way == "reload" else f"poll (0.5 s) after {seconds:.1f} s"
        figures.append(
            f"{how}: version {version_after} answers as the new bundle's reference (max diff "
            f"{to_new:.1e}), unlike the deleted one's (max diff {to_old:.3f})"
        )
    return Outcome(
        sent="version 1 deleted and published again from another training run (seed 7), "
        "with ADMIN_TOKEN and POST /admin/reload, then with POLL_SECONDS",
        measured="; ".join(figures),
        bound=f"under the same number, the new bundle's reference probabilities within its "
        f"{tolerance:g} tolerance and not the deleted one's (> {10 * tolerance:g} apart), both "
        "ways",
        held=held,
    )


def attack_padded_metadata(run: Run) -> Outcome:
    """6. Was: metadata.json padded to 500 MB (manifest recomputed) peaked RSS at 1.09 GB."""
    size = 500 * 10**6
    artifacts = run.artifacts("padded")
    model_dir = artifacts / "iris"

    def pad(directory: Path) -> None:
        block = b" " * (8 * MIB)
        with (directory / bundle.METADATA).open("ab") as handle:
            while (left := size - handle.tell()) > 0:
                handle.write(block[:left])
        bundle.write_manifest(directory)

    with run.server("padded", artifacts, admin_token=TOKEN) as server:
        assert server.process is not None
        pid = server.process.pid
        peak_before = proc_status(pid, "VmHWM")
        version = publish_copy(model_dir, run.bundle, pad)
        try:
            start = time.monotonic()
            reload = httpx.post(
                server.url + "/admin/reload",
                json={"version": version},
                headers=ADMIN,
                timeout=PATIENCE,
            )
            seconds = time.monotonic() - start
            card = httpx.get(server.url + "/model", timeout=PATIENCE).json()
            status = next((v for v in card["versions"] if v["version"] == version), {})
            served, _ = answer(server, [ROW])
            peak = proc_status(pid, "VmHWM")
        finally:
            shutil.rmtree(model_dir / str(version), ignore_errors=True)
    reason = str(status.get("reason"))
    held = (
        reload.status_code == 409
        and status.get("state") == "rejected"
        and "metadata.json is" in reason
        and "limit" in reason
        and served == 1
        and peak < 400
    )
    return Outcome(
        sent=f"version {version} with metadata.json padded with blanks to {size / 1e6:.0f} MB, "
        "manifest recomputed; POST /admin/reload of it",
        measured=f"reload {reload.status_code} in {seconds:.1f} s, {status.get('state')}: "
        f"{one_line(reason, 110)}; /predict answered by version {served}; server peak RSS "
        f"(VmHWM) {peak:.0f} MB (before {peak_before:.0f} MB)",
        bound="refused (409, rejected naming the size limit), version 1 still answering, "
        "peak RSS < 400 MB",
        held=held,
    )


def attack_symlinked_versions(run: Run) -> Outcome:
    """7. Was: a version directory linking outside ARTIFACTS_DIR was served; a link to / made
    every poll walk the filesystem."""
    artifacts = run.artifacts("links")
    outside = shutil.copytree(run.bundle, run.work / "links" / "outside" / "bundle")
    model_dir = artifacts / "iris"
    links = {2: outside, 3: Path("/")}
    with run.server("links", artifacts, poll_seconds=0.5, admin_token=TOKEN) as server:
        assert server.process is not None
        pid = server.process.pid
        try:
            for version, target in links.items():
                (model_dir / str(version)).symlink_to(target, target_is_directory=True)

            def versions() -> dict[int, dict[str, Any]]:
                card = httpx.get(server.url + "/model", timeout=PATIENCE).json()
                return {v["version"]: v for v in card["versions"]}

            with contextlib.suppress(AssertionError):
                wait_until(lambda: set(links) <= set(versions()), "the links seen", PATIENCE)
            cpu_before, start = cpu_seconds(pid), time.monotonic()
            time.sleep(5.0)
            cpu = cpu_seconds(pid) - cpu_before
            polled = time.monotonic() - start
            reloads = []
            for _ in range(5):
                began = time.perf_counter()
                reply = httpx.post(server.url + "/admin/reload", headers=ADMIN, timeout=PATIENCE)
                reloads.append(time.perf_counter() - began)
            statuses = {
                version: httpx.post(
                    f"{server.url}/models/iris/versions/{version}/predict",
                    content=PREDICT,
                    headers=JSON,
                    timeout=PATIENCE,
                ).status_code
                for version in links
            }
            seen = versions()
            models = httpx.get(server.url + "/models", timeout=PATIENCE).json()["models"]
        finally:
            for version in links:
                (model_dir / str(version)).unlink(missing_ok=True)
    loaded = models[0]["loaded_versions"]
    states = {v: (seen.get(v, {}).get("state"), str(seen.get(v, {}).get("reason"))) for v in links}
    held = (
        loaded == [1]
        and all(state == "rejected" and "symbolic link" in why for state, why in states.values())
        and all(status != 200 for status in statuses.values())
        and reply.status_code == 200
        and cpu < 1.0
        and median(reloads) < 0.5
    )
    return Outcome(
        sent="versions 2 -> a bundle outside ARTIFACTS_DIR and 3 -> /, POLL_SECONDS=0.5",
        measured=f"loaded {loaded}; "
        + ", ".join(f"{v}: {s} ({one_line(w, 50)})" for v, (s, w) in states.items())
        + f"; predictions on 2 and 3: {list(statuses.values())}; server CPU {cpu:.2f} s over "
        f"{polled:.1f} s of polling; POST /admin/reload {reply.status_code}, median "
        f"{ms(median(reloads))}",
        bound="neither loaded nor answered, both rejected naming the link, CPU < 1 s over 5 s, "
        "reload median < 500 ms",
        held=held,
    )


def attack_credentials(run: Run) -> Outcome:
    """8. Was: API_KEY="" accepted an empty bearer token; a key with a trailing newline refused
    the right key; neither warned."""
    key = "attacks-key_0123+/="
    artifacts = run.artifacts("credentials")
    empty = ServerProcess(
        artifacts, log_path=run.logs / "server-empty-key.log", api_key="", grpc_port=0
    )
    empty.start(wait=None)
    assert empty.process is not None
    try:
        code = empty.process.wait(PATIENCE)
    finally:
        empty.stop()
    lines = empty.log().splitlines()
    first = lines[0] if lines else ""
    with run.server("newline-key", artifacts, api_key=key + "\n") as server:
        right = httpx.post(
            server.url + "/predict",
            content=PREDICT,
            headers={**JSON, "Authorization": f"Bearer {key}"},
            timeout=PATIENCE,
        ).status_code
        none = httpx.post(
            server.url + "/predict", content=PREDICT, headers=JSON, timeout=PATIENCE
        ).status_code
        blank = httpx.post(
            server.url + "/predict",
            content=PREDICT,
            headers={**JSON, "Authorization": "Bearer"},
            timeout=PATIENCE,
        ).status_code
    log = server.log()
    warned = [line for line in log.splitlines() if "API_KEY" in line and "warning" in line]
    held = (
        code == 2
        and len(lines) == 1
        and lines[0].startswith("error: API_KEY: empty or only whitespace")
        and right == 200
        and none == 401
        and blank == 401
        and len(warned) == 1
        and key not in log
    )
    return Outcome(
        sent='API_KEY="" and API_KEY=key plus a trailing newline',
        measured=f"empty: exit {code} with {len(lines)} line ({one_line(first, 70)}); "
        f"newline: the stripped key {right}, no key {none}, 'Bearer' {blank}, "
        f"{len(warned)} warning, key in the log: {key in log}",
        bound="exit 2 with one line; the stripped key 200, no or empty key 401, one warning "
        "without the key",
        held=held,
    )


DUPLICATES = [
    ("/predict", b'{"\\u0069nstances": [[1, 1, 1, 1]], "instances": [[5.1, 3.5, 1.4, 0.2]]}'),
    ("/predict", b'{"instances": [[5.1, 3.5, 1.4, 0.2]], "\\u0069nstances": [[1, 1, 1, 1]]}'),
    (
        "/v2/models/iris/infer",
        b'{"inputs": [{"name": "x", "\\u006eame": "features", "shape": [1, 4], '
        b'"datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}',
    ),
    (
        "/v2/models/iris/infer",
        b'{"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32", '
        b'"data": [9, 9, 9, 9], "data": [5.1, 3.5, 1.4, 0.2]}]}',
    ),
    (
        "/v1/models/iris:classify",
        b'{"examples": [{"sepal_length": 9, "sepal_length": 5.1, "sepal_width": 3.5, '
        b'"petal_length": 1.4, "petal_width": 0.2}]}',
    ),
    (
        "/v1/models/iris:predict",
        b'{"inputs": {"sepal_length": [9], "sepal_width": [3.5], "petal_length": [1.4], '
        b'"petal_width": [0.2], "sepal_\\u006cength": [5.1]}}',
    ),
]


def attack_duplicate_keys(run: Run, server: ServerProcess) -> Outcome:
    """9. Was: escaped duplicate keys passed, the last one winning; likewise duplicate V2 input
    fields and TF Serving features."""
    statuses = []
    named = 0
    for path, body in DUPLICATES:
        response = httpx.post(server.url + path, content=body, headers=JSON, timeout=PATIENCE)
        statuses.append(response.status_code)
        named += "duplicate key" in response.text
    held = all(400 <= s < 500 for s in statuses) and named == len(DUPLICATES)
    return Outcome(
        sent='"\\u0069nstances" twice in /predict (either order), a V2 input with "name" or '
        '"data" twice, a TF Serving example and a columnar input with a feature twice',
        measured=f"statuses {statuses}, {named} of {len(DUPLICATES)} naming the duplicate key",
        bound="all 4xx naming the key",
        held=held,
    )


def error_of(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", ""))
    except ValueError:
        return response.text


def locked_from_children(path: Path) -> bool:
    """Whether a child process of this one is refused listing ``path``."""
    probe = [PYTHON, "-c", "import os, sys; os.listdir(sys.argv[1])", str(path)]
    return subprocess.run(probe, capture_output=True).returncode != 0


def attack_unreadable_directory(run: Run) -> Outcome:
    """10. Was: a PermissionError while listing versions was a 500 on /model and
    /admin/reload."""
    artifacts = run.artifacts("unreadable")
    model_dir = artifacts / "iris"
    model_dir.chmod(0)
    try:
        locked = locked_from_children(model_dir)
    finally:
        model_dir.chmod(0o755)
    if not locked:
        return unreadable_elsewhere(run)
    figures = []
    held = True
    with run.server("unreadable-served", artifacts, admin_token=TOKEN, poll_seconds=0.5) as server:
        model_dir.chmod(0)
        try:
            with contextlib.suppress(AssertionError):
                wait_until(
                    lambda: "cannot be read" in httpx.get(server.url + "/model").text,
                    "the poll noticing",
                    PATIENCE,
                )
            card = httpx.get(server.url + "/model", timeout=PATIENCE)
            predicted = httpx.post(
                server.url + "/predict", content=PREDICT, headers=JSON, timeout=PATIENCE
            )
            reload = httpx.post(server.url + "/admin/reload", headers=ADMIN, timeout=PATIENCE)
        finally:
            model_dir.chmod(0o755)
    held = (
        card.status_code in (200, 503)
        and "cannot be read" in card.text
        and "kept in memory" in card.text
        and predicted.status_code == 200
        and reload.status_code == 503
        and "cannot be read" in reload.text
    )
    figures.append(
        f"served, then made unreadable: /model {card.status_code} ('kept in memory': "
        f"{'kept in memory' in card.text}), /predict {predicted.status_code}, /admin/reload "
        f"{reload.status_code} ({one_line(error_of(reload), 90)})"
    )
    model_dir.chmod(0)
    try:
        with run.server(
            "unreadable-start", artifacts, wait="/healthz", admin_token=TOKEN
        ) as server:
            ready = httpx.get(server.url + "/readyz", timeout=PATIENCE)
            card = httpx.get(server.url + "/model", timeout=PATIENCE)
            reload = httpx.post(server.url + "/admin/reload", headers=ADMIN, timeout=PATIENCE)
    finally:
        model_dir.chmod(0o755)
    held = held and (
        ready.status_code == 503
        and "cannot be read" in ready.text
        and card.status_code in (200, 503)
        and "cannot be read" in card.text
        and reload.status_code == 503
        and "cannot be read" in reload.text
    )
    figures.append(
        f"unreadable at start: /readyz {ready.status_code}, /model {card.status_code}, "
        f"/admin/reload {reload.status_code}, each naming it"
    )
    return Outcome(
        sent="the model directory chmod 000 while served, and before a start"
        + (" (as root without CAP_DAC_OVERRIDE)" if os.geteuid() == 0 else ""),
        measured="; ".join(figures),
        bound="never 500: /model and /admin/reload 503 (or /model 200) naming it, loaded "
        "versions still answering",
        held=held,
    )


def drop_dac_override() -> None:
    """Drop the capabilities that let root read any file from the bounding set: the child
    processes (the servers) start without them, so a chmod 000 directory stops them."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"prctl(PR_CAPBSET_DROP): {os.strerror(errno)}")


def unreadable_elsewhere(run: Run) -> Outcome:
    """Item 10 where chmod 000 stops no child of this process (root): in a child of this script
    whose children lack CAP_DAC_OVERRIDE; else the in-process regression tests."""
    if not RESTRICTED_CHILD:
        command = [
            PYTHON,
            "-m",
            "tests.hardening.attacks",
            "--only",
            "10",
            "--artifacts",
            str(run.bundle.parent.parent),
            "--work",
            str(run.logs),  # the child's directory, its server logs included, is kept
            "--without-dac-override",
        ]
        child = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
        )
        (run.logs / "unreadable-child.log").write_text(child.stdout + child.stderr)
        for line in child.stdout.splitlines():
            if line.startswith(OUTCOME_JSON):
                return Outcome(**json.loads(line.removeprefix(OUTCOME_JSON)))
    code, summary = pytest_file(
        run, "tests/hardening/test_second_pass_bundles.py", "-k", "unreadable"
    )
    return Outcome(
        sent="chmod 000 stops no process here (root, and its capabilities cannot be dropped): "
        "ran the regression tests that deny listing the directory in process instead",
        measured=f"tests/hardening/test_second_pass_bundles.py -k unreadable: {summary}",
        bound="the tests pass",
        held=code == 0,
    )


def pytest_file(run: Run, path: str, *options: str) -> tuple[int, str]:
    """Run a regression test file; its exit code and the summary line."""
    name = Path(path).stem
    log = run.logs / f"pytest-{name}.log"
    (run.work / "pytest").mkdir(exist_ok=True)  # pytest makes the base, not its parents
    command = [
        PYTHON,
        "-m",
        "pytest",
        path,
        *options,
        "-p",
        "no:cacheprovider",
        "-q",
        f"--basetemp={run.work / 'pytest' / name}",
    ]
    with log.open("w") as out:
        code = subprocess.run(command, cwd=ROOT, stdout=out, stderr=out, timeout=600).returncode
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    return code, one_line(lines[-1] if lines else f"exit {code}", 100).strip("= ")


def staging_dirs(model_dir: Path) -> list[Path]:
    if not model_dir.is_dir():
        return []
    return sorted(model_dir.glob(bundle.TEMP_PREFIX + "*"))


def attack_killed_training(run: Run) -> Outcome:
    """11. Was: a training run killed with SIGKILL left its ``.tmp-*`` staging directory
    forever."""
    artifacts = run.work / "killed" / "artifacts"
    model_dir = artifacts / "iris"
    command = [PYTHON, "-m", "training", "--artifacts", str(artifacts), "--epochs", "5", "--quiet"]
    killed: Path | None = None
    with (run.logs / "training-killed.log").open("w") as out:
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=out)
        try:
            deadline = time.monotonic() + 300
            while process.poll() is None and time.monotonic() < deadline:
                writing = [p for p in staging_dirs(model_dir) if (p / bundle.MODEL_KERAS).exists()]
                if writing:
                    process.send_signal(signal.SIGKILL)
                    killed = writing[0]
                    break
                time.sleep(0.005)
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()
    if killed is None:
        raise RuntimeError("the training run ended before it wrote its model: nothing killed")
    contents = sorted(p.name for p in killed.iterdir())
    left = staging_dirs(model_dir)
    lock = lock_staging(killed, blocking=False)
    released = lock is not None
    if lock is not None:
        os.close(lock)
    old = time.time() - 2 * STALE_STAGING_SECONDS
    by_hand = model_dir / (bundle.TEMP_PREFIX + "by-hand")
    (by_hand / "report").mkdir(parents=True)
    for path in (*left, by_hand):
        os.utime(path, (old, old))
    run.other = train(artifacts, run.logs / "training-after-kill.log", seed=7)
    after = staging_dirs(model_dir)
    versions = bundle.list_versions(model_dir)
    held = len(left) == 1 and released and not after and versions == [1]
    return Outcome(
        sent="a training run SIGKILLed while it wrote its bundle, its staging directory and a "
        f"hand-made one aged {2 * STALE_STAGING_SECONDS / 3600:.0f} h, then another run",
        measured=f"killed with {contents} staged; {len(left)} .tmp-* left, its lock released: "
        f"{released}; after the next run: {len(after)} .tmp-* left, versions {versions}",
        bound="no .tmp-* left after the next run, which publishes version 1",
        held=held,
    )


def attack_full_disk(run: Run) -> Outcome:
    """12. Was: a full disk while publishing exited 1 with a traceback."""
    figures = []
    held = True
    for kib in (64, 320):
        mount = run.work / f"tiny-{kib}k"
        mount.mkdir()
        options = f"size={kib}k,mode=0755"
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], capture_output=True
        )
        if mounted.returncode != 0:
            mount.rmdir()
            return full_disk_in_process(run, mounted.stderr.decode(errors="replace"))
        try:
            command = [PYTHON, "-m", "training", "--artifacts", str(mount), "--epochs", "5"]
            command.append("--quiet")
            done = subprocess.run(
                command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
            )
            (run.logs / f"training-tmpfs-{kib}k.log").write_text(done.stdout + done.stderr)
            versions = bundle.list_versions(mount / "iris")
            left = staging_dirs(mount / "iris")
        finally:
            unmounted = subprocess.run(["umount", str(mount)], capture_output=True)
            if unmounted.returncode != 0:
                subprocess.run(["umount", "-l", str(mount)], capture_output=True)
        errors = [line for line in done.stderr.splitlines() if line.startswith("training: ")]
        names_file = bool(errors) and re.search(r"\(/[^)]+\)", errors[0]) is not None
        ok = (
            done.returncode == 2
            and len(errors) == 1
            and errors[0].startswith("training: error: ")
            and "No space left on device" in errors[0]
            and "Traceback" not in done.stderr
            and versions == []
            and not left
        )
        held = held and ok
        figures.append(
            f"{kib} KiB: exit {done.returncode}, {len(errors)} line "
            f"({one_line(errors[0] if errors else done.stderr[-200:], 130)}; names the file: "
            f"{names_file}), versions {versions}, {len(left)} .tmp-* left"
        )
    return Outcome(
        sent="python -m training into a 64 KiB and a 320 KiB tmpfs",
        measured="; ".join(figures),
        bound="exit 2 with one 'training: error:' line naming ENOSPC, no traceback, no "
        "version, no .tmp-*",
        held=held,
    )


def full_disk_in_process(run: Run, why: str) -> Outcome:
    code, summary = pytest_file(run, "tests/training/test_second_pass_publish.py")
    return Outcome(
        sent=f"no tmpfs could be mounted ({one_line(why, 60)}): ran the regression tests that "
        "fill the disk by monkeypatching the writes instead",
        measured=f"tests/training/test_second_pass_publish.py: {summary}",
        bound="the tests pass",
        held=code == 0,
    )


CSV_HEADER = ",".join(FEATURES)
CSV_CASES = [
    # name, body, status, text the answer holds, rows answered
    ("\\x1c between rows", "5.1,3.5,1.4,0.2\x1c4.9,3.0,1.4,0.2\n", 400, "7 fields", 0),
    ("U+2028 between rows", "5.1,3.5,1.4,0.2\u20284.9,3.0,1.4,0.2\n", 400, "7 fields", 0),
    ("U+0085 between rows", "5.1,3.5,1.4,0.2\x854.9,3.0,1.4,0.2\n", 400, "7 fields", 0),
    ("\\x1c ending a cell", "5.1,3.5,1.4,0.2\x1c\n", 422, "not a number", 0),
    ('quoted "5.\\n1"', '"5.\n1",3.5,1.4,0.2\n', 422, "holds a line break", 0),
    (
        "\\r\\n, \\r and \\n rows",
        "5.1,3.5,1.4,0.2\r\n4.9,3.0,1.4,0.2\r6.3,3.3,6.0,2.5\n",
        200,
        "",
        3,
    ),
]


def attack_csv(run: Run, server: ServerProcess) -> Outcome:
    """13. Was: \\x1c, U+2028 and U+0085 split rows; a quoted "5.\\n1" was read as 5.1; a quoted
    line break in the header got a misleading 422."""
    bodies = [(n, (CSV_HEADER + "\n" + b).encode(), s, t, r) for n, b, s, t, r in CSV_CASES]
    header = b'"sepal\nlength",sepal_width,petal_length,petal_width\n5.1,3.5,1.4,0.2\n'
    bodies.append(("quoted line break in the header", header, 422, "header column 1", 0))
    results = []
    held = True
    for name, body, status, text, rows in bodies:
        response = httpx.post(
            server.url + "/predict",
            content=body,
            headers={"Content-Type": "text/csv"},
            timeout=PATIENCE,
        )
        got = len(response.json().get("predictions", [])) if response.status_code == 200 else 0
        ok = response.status_code == status and text in response.text and got == rows
        held = held and ok
        what = f"{got} rows" if response.status_code == 200 else "naming it" if ok else "wrong"
        results.append(f"{name} {response.status_code} {what}")
    return Outcome(
        sent=f"{len(bodies)} CSV bodies: " + ", ".join(n for n, *_ in bodies),
        measured="; ".join(results),
        bound="400/422 naming the row, column or header column; 3 rows for the line ends",
        held=held,
    )


def attack_odd_input_cost(run: Run, server: ServerProcess) -> Outcome:
    """14. Was: 10k JSON rows outside the training range ~100k rows/s against ~363k in range;
    10k-row CSV-to-CSV ~440k rows/s."""
    rows, repeats = 10_000, 15
    metadata = bundle.read_metadata(run.bundle)
    inside = sample_rows(metadata, rows)
    outside = np.round(np.array(inside) * 3 + 10, 1).tolist()
    low = np.array([f.min for f in metadata.features])
    high = np.array([f.max for f in metadata.features])
    every_cell_out = bool(((np.array(outside) < low) | (np.array(outside) > high)).all())
    features = metadata.feature_names
    csv_headers = {"Content-Type": "text/csv", "Accept": "text/csv"}
    cases = {
        "JSON in range": (json_body(inside), JSON),
        "JSON outside": (json_body(outside), JSON),
        "CSV in range": (csv_body(features, inside), csv_headers),
        "CSV outside": (csv_body(features, outside), csv_headers),
    }
    seconds: dict[str, list[float]] = {name: [] for name in cases}
    connection = http.client.HTTPConnection(HOST, server.port, timeout=PATIENCE)
    try:
        for repeat in range(repeats + 1):  # the first round untimed, its answers checked
            for name, (body, headers) in cases.items():
                start = time.perf_counter()
                connection.request("POST", "/predict", body, headers)
                response = connection.getresponse()
                content = response.read()
                elapsed = time.perf_counter() - start
                if response.status != 200:
                    raise RuntimeError(f"{name}: {response.status} {content[:200]!r}")
                if repeat:
                    seconds[name].append(elapsed)
                elif name.startswith("CSV"):
                    assert content.count(b"\n") - 1 == rows, name
                else:
                    predictions = orjson.loads(content)["predictions"]
                    warned = {len(p["warnings"]) for p in predictions}
                    assert len(predictions) == rows, name
                    assert warned == ({len(features)} if "outside" in name else {0}), warned
    finally:
        connection.close()
    speed = {name: rows / median(times) for name, times in seconds.items()}
    ratio = median(seconds["JSON outside"]) / median(seconds["JSON in range"])
    csv_ratio = median(seconds["CSV outside"]) / median(seconds["CSV in range"])
    held = every_cell_out and ratio <= 1.5 and speed["CSV in range"] >= 500_000
    return Outcome(
        sent=f"{rows:,}-row /predict bodies, in range and with every cell outside it "
        f"(values*3+10), JSON and CSV in / CSV out, {repeats} each interleaved on one "
        "keep-alive connection",
        measured=", ".join(f"{name} {value:,.0f} rows/s" for name, value in speed.items())
        + f"; JSON outside/in-range time ratio {ratio:.2f} (CSV {csv_ratio:.2f})",
        bound="JSON ratio <= 1.5, CSV in range >= 500,000 rows/s",
        held=held,
    )


# -- the run -------------------------------------------------------------------------------------
SHARED = {  # on one server, in this order (the timing first, on a quiet server)
    14: ("cost of odd input", attack_odd_input_cost),
    1: ("many-key JSON", attack_many_keys),
    2: ("128 MiB header", attack_huge_header),
    9: ("duplicate keys", attack_duplicate_keys),
    13: ("CSV line breaks", attack_csv),
}
OWN = {  # each with its own servers or none; 11 before 5 (it trains the second bundle)
    3: ("slowloris", attack_slowloris),
    4: ("slow bodies", attack_slow_bodies),
    11: ("killed training run", attack_killed_training),
    5: ("reused version number", attack_reused_version),
    6: ("padded metadata.json", attack_padded_metadata),
    7: ("symlinked versions", attack_symlinked_versions),
    8: ("API_KEY as given", attack_credentials),
    10: ("unreadable model directory", attack_unreadable_directory),
    12: ("full disk in training", attack_full_disk),
}
OUTCOME_JSON = "outcome-json "
RESTRICTED_CHILD = False  # set by --without-dac-override


def report(number: int, title: str, outcome: Outcome, seconds: float) -> None:
    if RESTRICTED_CHILD:
        say(OUTCOME_JSON + json.dumps(asdict(outcome)))
        return
    verdict = "ok" if outcome.held else "FAILED"
    say(
        f"attack {number:>2} {title}: sent {outcome.sent}; measured {outcome.measured}; "
        f"bound {outcome.bound}: {verdict} ({seconds:.0f} s)"
    )


def attempt(number: int, title: str, attack: Callable[[], Outcome]) -> bool:
    start = time.monotonic()
    try:
        outcome = attack()
    except Exception as exc:
        outcome = Outcome(
            "-", f"error: {type(exc).__name__}: {one_line(str(exc), 300)}", "-", False
        )
    report(number, title, outcome, time.monotonic() - start)
    return outcome.held


def given_bundle(artifacts: Path) -> Path:
    versions = bundle.list_versions(artifacts / "iris")
    if not versions:
        raise SystemExit(f"{artifacts}: no iris/<version> bundle")
    return artifacts / "iris" / str(versions[-1])


def main(argv: list[str] | None = None) -> int:
    global RESTRICTED_CHILD
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="make the run's directory inside this one")
    parser.add_argument("--artifacts", type=Path, help="serve the Iris bundle here; no training")
    parser.add_argument("--only", help="the attacks to run, e.g. 1,3,14 (default: all)")
    parser.add_argument("--without-dac-override", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    selected = {int(n) for n in args.only.split(",")} if args.only else {*SHARED, *OWN}
    if args.without_dac_override:
        drop_dac_override()
        RESTRICTED_CHILD = True
    # Which models, versions and limits a server has is each attack's choice, not the shell's.
    for name in Settings.model_fields:
        os.environ.pop(name.upper(), None)
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    if args.work:
        args.work.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="attacks-", dir=args.work))
    (work / "logs").mkdir()
    started = time.monotonic()
    failed: list[int] = []
    if not RESTRICTED_CHILD:
        say(f"issue 18 attacks: {len(selected)} of 14; work directory {work}")
    try:
        if args.artifacts:
            iris = given_bundle(args.artifacts)
        else:
            iris = train(work / "bundle", work / "logs" / "training.log")
        run = Run(work, iris)
        shared = [n for n in SHARED if n in selected]
        if shared:
            done: set[int] = set()
            try:
                with run.server("shared", run.artifacts("shared")) as server:
                    for number in shared:
                        title, attack = SHARED[number]
                        done.add(number)
                        if not attempt(number, title, lambda a=attack: a(run, server)):
                            failed.append(number)
            except Exception as exc:
                for number in [n for n in shared if n not in done]:
                    failed.append(number)
                    outcome = Outcome(
                        "-", f"the server failed: {one_line(str(exc), 300)}", "-", False
                    )
                    report(number, SHARED[number][0], outcome, 0.0)
        for number, (title, attack) in OWN.items():
            if number in selected and not attempt(number, title, lambda a=attack: a(run)):
                failed.append(number)
    finally:
        for child in work.iterdir():
            if child.name != "logs":
                shutil.rmtree(child, ignore_errors=True)
        if not args.work and not failed and not RESTRICTED_CHILD:
            shutil.rmtree(work, ignore_errors=True)
    if RESTRICTED_CHILD:
        return 1 if failed else 0
    minutes = (time.monotonic() - started) / 60
    logs = f"logs in {work}" if work.exists() else "logs removed"
    if failed:
        say(f"attacks: FAILED {sorted(failed)} of {len(selected)}, in {minutes:.1f} min; {logs}")
        return 1
    say(f"attacks: all {len(selected)} held, in {minutes:.1f} min; {logs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
