"""Process-wide settings at a worker's start: glibc's allocator keeps freed memory, and the
soft open-file limit is raised to the hard one (checked in a real server process)."""

from __future__ import annotations

import platform
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from service import process
from tests.support import ServerProcess

GLIBC = platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_the_allocator_is_tuned_on_glibc() -> None:
    assert process.tune_allocator({}) is True


@pytest.mark.parametrize(
    "name", ["MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES"]
)
def test_an_operators_malloc_tunables_are_left_alone(name: str) -> None:
    assert process.tune_allocator({name: "1"}) is False


def _limits_after(soft: int) -> tuple[int, int]:
    """In a child whose soft limit starts at ``soft``: the limits after raise_open_file_limit."""
    code = (
        "import resource; from service import process; process.raise_open_file_limit();"
        "print(*resource.getrlimit(resource.RLIMIT_NOFILE))"
    )
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[2],
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard)),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return int(out[0]), int(out[1])


def test_the_soft_open_file_limit_is_raised_to_the_hard_one() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip(f"the hard limit ({hard}) leaves nothing to raise")
    soft, after_hard = _limits_after(256)
    assert after_hard == hard
    assert soft == (hard if hard != resource.RLIM_INFINITY else 1 << 20)


@pytest.mark.slow  # starts a server process
def test_a_server_process_runs_with_the_raised_limit(artifacts_copy: Path, tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 512:
        pytest.skip(f"the hard limit ({hard}) leaves nothing to raise")
    server = ServerProcess(artifacts_copy, log_path=tmp_path / "server.log", model_name="iris")
    resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))  # the server inherits it
    try:
        server.start(wait=None)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        server.wait_for("/readyz")
        assert server.process is not None
        limits = Path(f"/proc/{server.process.pid}/limits").read_text()
    finally:
        server.stop()
    fields = next(line for line in limits.splitlines() if line.startswith("Max open files"))
    raised = int(fields.split()[3])
    assert raised == (hard if hard != resource.RLIM_INFINITY else 1 << 20)
