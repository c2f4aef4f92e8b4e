"""Start a server process on loopback, time it to ready (``/readyz`` 200, or a gRPC ServerReady
for a server with no HTTP port), read its memory, stop it."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc

from service.grpc_api import grpc_predict_v2_pb2 as pb
from service.grpc_api import grpc_predict_v2_pb2_grpc as pb_grpc
from service.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"

# The service's settings are its defaults (LOG_LEVEL=info: access log on) plus the few set
# here; inherited values (WORKERS=4, API_KEY=...) would skew the comparison, so they are dropped.
_SERVICE_ENV = {name.upper() for name in Settings.model_fields}


def free_port(taken: tuple[int, ...] = ()) -> int:
    """A port nothing listens on now (none of ``taken``)."""
    while True:
        with socket.socket() as sock:
            sock.bind((HOST, 0))
            port = sock.getsockname()[1]
        if port not in taken:
            return port


class Server:
    """One server process (``python -m ...``) on a free loopback port, always stopped on exit.

    The service serves gRPC too (GRPC_PORT, default 8081): ``grpc=True`` gives it a free port of
    its own (``grpc_target``), so that servers running side by side never ask for the same one;
    ``grpc=False`` sets GRPC_PORT=0 (off). Apps other than the service ignore it.
    ``http=False`` (with ``grpc=True``): a server with no HTTP port (bench/grpc_ceiling.py), ready
    when a gRPC ``ServerReady`` answers ready; PORT=0 and ``url`` empty.
    """

    def __init__(
        self,
        module_args: list[str],
        env: dict[str, str],
        log_path: Path,
        cpus: set[int] | None = None,
        grpc: bool = False,
        http: bool = True,
    ) -> None:
        if not (http or grpc):
            raise ValueError("a server with no HTTP port must serve gRPC")
        self.http = http
        self.port = free_port() if http else 0
        self.url = f"http://{HOST}:{self.port}" if http else ""
        self.grpc_port = free_port(taken=(self.port,)) if grpc else 0
        self.grpc_target = f"{HOST}:{self.grpc_port}" if grpc else None
        self.module_args = module_args
        self.env = {k: v for k, v in os.environ.items() if k.upper() not in _SERVICE_ENV}
        self.env.update(
            {
                "HOST": HOST,
                "PORT": str(self.port),
                "WORKERS": "1",
                "GRPC_PORT": str(self.grpc_port),
                "TF_CPP_MIN_LOG_LEVEL": "3",
                **env,
            }
        )
        self.log_path = log_path
        self.cpus = cpus
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def start(self) -> Server:
        with open(self.log_path, "ab") as log:
            self.started = time.perf_counter()
            self.process = subprocess.Popen(
                [sys.executable, *self.module_args],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if self.cpus is not None:
            # Right after exec, long before the interpreter starts any thread (its threads
            # inherit the mask). Not preexec_fn: unsafe in a parent with threads (numpy's).
            os.sched_setaffinity(self.process.pid, self.cpus)
        return self

    def cpu_seconds(self) -> float | None:
        """User plus system CPU time of the server process so far (Linux), else None."""
        if self.process is None:
            return None
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def wait_ready(self, timeout: float = 120.0) -> float:
        """Seconds from process start to the first ``/readyz`` 200, or without HTTP the first
        gRPC ServerReady answering ready (polled every 5 ms)."""
        deadline = self.started + timeout
        while time.perf_counter() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}: {self.log()}")
            if self._ready():
                return time.perf_counter() - self.started
            time.sleep(0.005)
        what = "/readyz did not answer 200" if self.http else "ServerReady did not answer ready"
        raise TimeoutError(f"{what} within {timeout}s: {self.log()}")

    def _ready(self) -> bool:
        if not self.http:
            return self._grpc_ready()
        connection = http.client.HTTPConnection(HOST, self.port, timeout=2)
        try:
            connection.request("GET", "/readyz")
            return connection.getresponse().status == 200
        except OSError:
            return False
        finally:
            connection.close()

    def _grpc_ready(self) -> bool:
        # A new channel each time: a channel that failed to connect waits (backs off) before
        # trying again, which would count as start time.
        assert self.grpc_target is not None
        with grpc.insecure_channel(self.grpc_target) as channel:
            ready = pb_grpc.GRPCInferenceServiceStub(channel).ServerReady
            try:
                return bool(ready(pb.ServerReadyRequest(), timeout=2).ready)
            except grpc.RpcError:
                return False

    def rss_mb(self) -> float | None:
        """Resident memory of the server process in MB (Linux), None where it cannot be read."""
        if self.process is None:
            return None
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s; the process runs in its own session."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(15)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
