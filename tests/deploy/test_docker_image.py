"""The Docker image, built and run for real: ready, /predict, V2 infer, retrain, clean stop.

Runs whenever a Docker engine answers ``docker info`` and otherwise skips, saying why; with
``REQUIRE_DOCKER=1`` (CI, see .ci/run) a missing engine is a failure instead. The image is built
on ``$DOCKER_BASE_IMAGE`` when set (CI: ``local/debian:bookworm``, made by .ci/docker-engine.sh),
else on the Dockerfile's default ``python:3.11-slim-bookworm``. Containers use the host network
(an engine started with ``--bridge=none`` ignores ``-p``) on a free loopback port.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import ROOT, free_port, require

pytestmark = [pytest.mark.docker, pytest.mark.slow]

DEFAULT_BASE = "python:3.11-slim-bookworm"
IMAGE = "keras-serve:test"
TRAIN_IMAGE = "keras-serve-train:test"
SIZE_GOAL_MB = 450
BUILD_TIMEOUT = 60 * 60
READY_TIMEOUT = 120.0
STOP_TIMEOUT = 30  # docker stop's grace period here; the image drains within 8 s
SETOSA = [5.1, 3.5, 1.4, 0.2]


def docker(
    *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=check
    )


def engine_problem() -> str | None:
    """Why no Docker engine can be used, or None when ``docker info`` answers."""
    if shutil.which("docker") is None:
        return "no docker command on PATH"
    try:
        info = docker("info", "--format", "{{.ServerVersion}}", timeout=30, check=False)
    except subprocess.TimeoutExpired:
        return "docker info timed out"
    if info.returncode != 0:
        lines = (info.stderr or info.stdout).strip().splitlines()
        return (
            "no Docker engine reachable (docker info: " + (lines[-1] if lines else "failed") + ")"
        )
    return None


@pytest.fixture(scope="module")
def report(pytestconfig: pytest.Config):
    """Write a line to the terminal even while pytest captures output."""
    terminal = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    capture = pytestconfig.pluginmanager.get_plugin("capturemanager")

    def write(message: str) -> None:
        if terminal is None or capture is None:
            print(f"[docker] {message}")
            return
        with capture.global_and_fixture_disabled():
            terminal.write_line(f"[docker] {message}")

    return write


@pytest.fixture(scope="module")
def base_image() -> str:
    require(engine_problem(), "REQUIRE_DOCKER", "Docker image tests")
    return os.environ.get("DOCKER_BASE_IMAGE") or DEFAULT_BASE


def build(target: str, tag: str, base: str, log: Path) -> float:
    """``docker build --target`` on the repository; returns the seconds it took."""
    start = time.monotonic()
    with log.open("w") as out:
        result = subprocess.run(
            [
                *("docker", "build", "--network", "host", "--build-arg", f"BASE_IMAGE={base}"),
                *("--target", target, "--tag", tag, str(ROOT)),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=BUILD_TIMEOUT,
            check=False,
        )
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        pytest.fail(f"docker build --target {target} failed ({result.returncode}):\n{tail}")
    return time.monotonic() - start


@pytest.fixture(scope="module")
def image(base_image: str, report, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The final ``serve`` image on ``base_image``; the ``train`` stage is built and tagged first,
    so the serve build reuses its cached layers."""
    logs = tmp_path_factory.mktemp("docker-build")
    report(f"building on base image {base_image} (build logs: {logs})")
    seconds = build("train", TRAIN_IMAGE, base_image, logs / "train.log")
    report(f"built {TRAIN_IMAGE} (target train, TensorFlow, baked Iris bundle) in {seconds:.0f} s")
    seconds = build("serve", IMAGE, base_image, logs / "serve.log")
    size = int(docker("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout)
    report(f"built {IMAGE} (target serve) in {seconds:.0f} s; image size {size / 1e6:.0f} MB")
    return IMAGE


@pytest.fixture(scope="module")
def train_image(image: str) -> str:
    """The ``train`` stage, tagged on its own (built by the ``image`` fixture)."""
    return TRAIN_IMAGE


class Container:
    """A detached ``docker run --network host`` of an image, removed on exit."""

    def __init__(self, image: str, *args: str, **env: object) -> None:
        self.name = f"keras-serve-test-{uuid.uuid4().hex[:8]}"
        self.port = free_port()
        self.grpc_port = free_port()  # host network: each container needs ports of its own
        self.url = f"http://127.0.0.1:{self.port}"
        ports = {"PORT": self.port, "GRPC_PORT": self.grpc_port}
        env_args = [f"--env={k}={v}" for k, v in {**ports, **env}.items()]
        docker("run", "--detach", "--network", "host", "--name", self.name, *env_args, *args, image)

    def state(self) -> dict:
        return json.loads(docker("inspect", "--format", "{{json .State}}", self.name).stdout)

    def logs(self) -> str:
        result = docker("logs", self.name, check=False)
        return (result.stdout + result.stderr)[-4000:]

    def wait_ready(self, timeout: float = READY_TIMEOUT, version: int | None = None) -> dict:
        """Wait until /readyz answers 200 (for ``version`` when given); return its body."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            try:
                response = httpx.get(self.url + "/readyz", timeout=2)
                last = response.status_code
                if response.status_code == 200:
                    body = response.json()
                    if version is None or body["version"] == version:
                        return body
                    last = body
            except httpx.HTTPError as exc:
                last = exc
            if not self.state()["Running"]:
                pytest.fail(f"container exited ({self.state()['ExitCode']}):\n{self.logs()}")
            time.sleep(0.25)
        pytest.fail(f"/readyz not ready within {timeout:.0f} s ({last}):\n{self.logs()}")

    def remove(self) -> None:
        docker("rm", "--force", self.name, check=False)


@pytest.fixture
def container(image: str) -> Iterator[Callable[..., Container]]:
    """Start containers with ``container(image, *docker_run_args, **env)``; all removed after."""
    started: list[Container] = []

    def start(image: str, *args: str, **env: object) -> Container:
        started.append(Container(image, *args, **env))
        return started[-1]

    yield start
    for each in started:
        each.remove()


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A host directory the container user (uid 10001) can read, mounted as /app/artifacts."""
    path = Path(tempfile.mkdtemp(prefix="keras-serve-artifacts-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_image_is_slim_non_root_without_tensorflow(image: str, report) -> None:
    config = json.loads(docker("image", "inspect", "--format", "{{json .Config}}", image).stdout)
    assert config["Cmd"] == ["python", "-m", "service"]  # exec form: SIGTERM reaches the server
    assert config["User"] == "10001:10001"
    assert {"8000/tcp", "8081/tcp"} <= set(config["ExposedPorts"])
    assert "HOST=0.0.0.0" in config["Env"]
    assert "/readyz" in " ".join(config["Healthcheck"]["Test"])
    probe = docker(
        "run", "--rm", "--network", "host", "--entrypoint", "python", image, "-c",
        "import importlib.util as u, os; "
        "print(u.find_spec('tensorflow') is None, u.find_spec('sklearn') is None, os.getuid())",
    )  # fmt: skip
    assert probe.stdout.split() == ["True", "True", "10001"]
    # The keras-serve command is installed (keras-serve replay runs in the image).
    usage = docker("run", "--rm", "--entrypoint", "keras-serve", image, "replay", "--help")
    assert "--version" in usage.stdout and "--log" in usage.stdout
    size_mb = int(docker("image", "inspect", "--format", "{{.Size}}", image).stdout) / 1e6
    report(
        f"serve image: no TensorFlow or scikit-learn, runs as uid 10001, {size_mb:.0f} MB (goal <= {SIZE_GOAL_MB})"
    )
    assert size_mb <= SIZE_GOAL_MB


def test_container_serves_and_stops_cleanly_on_sigterm(image: str, container, report) -> None:
    server = container(image, "--health-interval=2s", "--health-start-period=60s")
    started = time.monotonic()
    ready = server.wait_ready()
    report(f"container ready in {time.monotonic() - started:.1f} s on port {server.port}: {ready}")
    assert ready["model"] == "iris" and ready["runtime"] == "litert"

    predicted = httpx.post(server.url + "/predict", json={"instances": [SETOSA]}, timeout=10)
    assert predicted.status_code == 200, predicted.text
    (row,) = predicted.json()["predictions"]
    report(f"POST /predict {SETOSA} -> {row['label']} {row['probabilities']}")
    assert row["label"] == "setosa"
    assert set(row["probabilities"]) == {"setosa", "versicolor", "virginica"}
    assert abs(sum(row["probabilities"].values()) - 1) < 1e-4

    # The model page and the API docs, whose files the image carries (no CDN).
    page = httpx.get(server.url + "/", timeout=10)
    assert page.status_code == 200 and "<form id='try'" in page.text, page.text[:500]
    assert "content-security-policy" in page.headers
    for asset in ("/docs", "/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css"):
        served = httpx.get(server.url + asset, timeout=10)
        assert served.status_code == 200 and len(served.content) > 500, asset
    report("GET / (model page) and /docs with its Swagger UI files: 200")

    # V2 clients take the input's name from the model metadata.
    metadata = httpx.get(server.url + "/v2/models/iris", timeout=10)
    assert metadata.status_code == 200, metadata.text
    (tensor,) = metadata.json()["inputs"]
    assert tensor["datatype"] == "FP32" and tensor["shape"][-1] == 4
    name = tensor["name"]
    request = {"inputs": [{"name": name, "shape": [1, 4], "datatype": "FP32", "data": SETOSA}]}
    inferred = httpx.post(server.url + "/v2/models/iris/infer", json=request, timeout=10)
    assert inferred.status_code == 200, inferred.text
    outputs = {output["name"]: output for output in inferred.json()["outputs"]}
    report(f"POST /v2/models/iris/infer (input {name!r}) -> {outputs['label']['data']}")
    assert outputs["label"]["datatype"] == "BYTES" and outputs["label"]["data"] == ["setosa"]
    assert outputs["probabilities"]["datatype"] == "FP32"
    assert outputs["probabilities"]["shape"] == [1, 3]

    # The same over gRPC, with Triton's client, and the standard health service.
    import grpc
    import numpy as np
    import tritonclient.grpc as grpcclient
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    features = grpcclient.InferInput(name, [1, 4], "FP32")
    features.set_data_from_numpy(np.array([SETOSA], dtype=np.float32))
    label = client.infer("iris", [features]).as_numpy("label").tolist()
    report(f"gRPC ModelInfer on port {server.grpc_port} -> {label}")
    assert label == [b"setosa"]
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        check = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
    assert check.status == health_pb2.HealthCheckResponse.SERVING

    deadline = time.monotonic() + 60
    while server.state().get("Health", {}).get("Status") != "healthy":
        assert time.monotonic() < deadline, f"HEALTHCHECK never passed: {server.state()}"
        time.sleep(0.5)

    stopping = time.monotonic()
    docker("stop", "--time", str(STOP_TIMEOUT), server.name, timeout=STOP_TIMEOUT + 30)
    took = time.monotonic() - stopping
    state = server.state()
    report(f"docker stop (SIGTERM): exit code {state['ExitCode']} after {took:.1f} s")
    # 0, not 137: it drained and exited on SIGTERM, before docker's SIGKILL (how long it took is
    # reported above, not asserted).
    assert state["ExitCode"] == 0, server.logs()
    assert not state["OOMKilled"]


def test_mounted_volume_replaces_the_bundle_and_train_stage_retrains_into_it(
    image: str, train_image: str, container, shared_dir: Path, report, tmp_path: Path
) -> None:
    # The baked bundle (version 1) copied out as version 5: a mount holding only that shows it
    # replaced the baked one.
    holder = f"keras-serve-copy-{uuid.uuid4().hex[:8]}"
    docker("create", "--name", holder, image)
    try:
        docker("cp", f"{holder}:/app/artifacts/iris/1", str(tmp_path / "baked"))
    finally:
        docker("rm", holder, check=False)
    (shared_dir / "iris").mkdir(mode=0o755)
    shutil.copytree(tmp_path / "baked", shared_dir / "iris" / "5")

    # Read-only root filesystem with a tmpfs at /tmp, as in deploy/k8s.
    locked = ("--read-only", "--tmpfs=/tmp")
    mount = f"--volume={shared_dir}:/app/artifacts:ro"
    server = container(image, mount, *locked, POLL_SECONDS=1)
    assert server.wait_ready()["version"] == 5

    started = time.monotonic()
    trained = docker(
        "run", "--rm", "--network", "host", f"--user={os.getuid()}:{os.getgid()}", *locked,
        f"--volume={shared_dir}:/app/artifacts", train_image,
        "python", "-m", "training", "--quiet", "--epochs", "60",
        timeout=900, check=False,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert trained.stdout.strip().endswith("iris/6"), trained.stdout
    report(
        f"retrained in the train image in {time.monotonic() - started:.0f} s: {trained.stdout.strip()}"
    )

    ready = server.wait_ready(timeout=30, version=6)
    report(f"the serving container hot-reloaded the mounted volume: {ready}")
    predicted = httpx.post(server.url + "/predict", json={"instances": [SETOSA]}, timeout=10)
    assert predicted.json()["version"] == 6
    assert predicted.json()["predictions"][0]["label"] == "setosa"
