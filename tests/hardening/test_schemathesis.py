"""Schemathesis against the OpenAPI schema of a running service: every route, every check.

A bounded run (about two minutes at most); ``make harden`` runs a larger one with the CLI.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.transport.requests import ManagedCookiesSession

from tests.hardening.conftest import AUTH
from tests.hardening.figures import record
from tests.support import ServerProcess

pytestmark = pytest.mark.slow

# Cases per operation in the fuzzing phase (the coverage and examples phases add their own).
MAX_EXAMPLES = int(os.environ.get("HARDEN_SCHEMATHESIS_EXAMPLES", "25"))
MIN_CASES = 500
SEED = int(os.environ.get("HARDEN_SCHEMATHESIS_SEED", "20260917"))
# Set by `make harden`: cases per operation of a larger run through the schemathesis CLI.
CLI_EXAMPLES = os.environ.get("HARDEN_SCHEMATHESIS_CLI_EXAMPLES")

TRIED: Counter[str] = Counter()
SERVER_ERRORS: Counter[str] = Counter()


def _load(
    server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> schemathesis.BaseSchema:
    # The crash cache (replayed first by the next run) lives with this session, not in ./
    cache = tmp_path_factory.mktemp("schemathesis-cache")
    config = SchemathesisConfig.from_dict({"seed": SEED, "cache": {"directory": str(cache)}})
    return schemathesis.openapi.from_url(server.url + "/openapi.json", config=config)


@pytest.fixture(scope="session")
def api_schema(
    server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> schemathesis.BaseSchema:
    return _load(server, tmp_path_factory)


@pytest.fixture(scope="session")
def typed_api_schema(
    typed_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> schemathesis.BaseSchema:
    """The typed model's document: per-feature value schemas, V2 one input per feature."""
    return _load(typed_server, tmp_path_factory)


@pytest.fixture(scope="session")
def http() -> Iterator[ManagedCookiesSession]:
    """One keep-alive session for every case, as ``schemathesis run`` keeps one per worker (and
    drops each answer's cookies as it does). Without it each of the ~15,000 cases opens a session
    and a connection of its own: about a tenth of these tests' time."""
    with ManagedCookiesSession() as session:
        yield session


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request: pytest.FixtureRequest) -> None:
    # NOTE: schemathesis 4.32's lazy loader reads ``node._nodeid``, which pytest 9.2 no longer
    # has (it keeps ``_id``); give it the attribute it reads and rewrites for its reports.
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


schema = schemathesis.pytest.from_fixture("api_schema")
typed_schema = schemathesis.pytest.from_fixture("typed_api_schema")


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_route_conforms(case: schemathesis.Case, http: ManagedCookiesSession) -> None:
    """No 5xx, responses match the documented schema, valid data accepted, invalid refused."""
    TRIED[case.operation.label] += 1
    response = case.call(headers=AUTH, timeout=30, session=http)
    if response.status_code >= 500:
        SERVER_ERRORS[case.operation.label] += 1
    case.validate_response(response, headers=AUTH)


@typed_schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_route_conforms_for_a_typed_model(
    case: schemathesis.Case, http: ManagedCookiesSession
) -> None:
    """The same against a model with text, true/false and blank features."""
    TRIED["typed " + case.operation.label] += 1
    response = case.call(headers=AUTH, timeout=30, session=http)
    if response.status_code >= 500:
        SERVER_ERRORS["typed " + case.operation.label] += 1
    case.validate_response(response, headers=AUTH)


def test_enough_cases_and_no_server_error() -> None:
    """Runs after the generated tests: the total they tried, and zero 5xx among them."""
    if not TRIED:
        pytest.skip("the generated tests were deselected")
    total = sum(TRIED.values())
    record("schemathesis_cases", total)
    record("server_errors", sum(SERVER_ERRORS.values()))
    assert not SERVER_ERRORS, dict(SERVER_ERRORS)
    assert total >= MIN_CASES, f"only {total} cases: {dict(TRIED)}"


@pytest.mark.skipif(not CLI_EXAMPLES, reason="the larger CLI run belongs to `make harden`")
@pytest.mark.parametrize("which", ["server", "typed_server"])
def test_schemathesis_cli_run(which: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """`schemathesis run` with every check and phase: zero failures, zero 5xx; against the Iris
    model and the typed one."""
    server: ServerProcess = request.getfixturevalue(which)
    har = tmp_path / "schemathesis.har"
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        server.url + "/openapi.json",
        "--checks=all",
        f"--max-examples={CLI_EXAMPLES}",
        f"--seed={SEED}",
        f"--header=Authorization: {AUTH['Authorization']}",
        "--workers=1",
        "--request-timeout=30",
        "--report=har",
        f"--report-har-path={har}",
        "--output-truncate=true",
    ]
    # In a scratch directory: the CLI keeps a crash cache under ./.schemathesis
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    output = result.stdout + result.stderr
    generated = re.findall(r"(\d+) generated", output)  # the last one is the summary's
    assert generated, output[-3000:]
    entries = json.loads(har.read_text())["log"]["entries"]
    server_errors = sum(1 for e in entries if e["response"]["status"] >= 500)
    record("schemathesis_cases", int(generated[-1]))
    record("server_errors", server_errors)
    print(
        f"\nschemathesis CLI ({which}), seed {SEED}: {generated[-1]} cases, {len(entries)} requests"
    )
    assert result.returncode == 0, output[-5000:]
    assert server_errors == 0
