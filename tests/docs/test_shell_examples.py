"""Every shell example of README.md and docs/ runs for real, and shows what it really prints.

As LitServe's tests/test_readme.py runs its README's code, these tests run each ```sh, ```bash,
```shell and ```console block with bash (``set -euo pipefail``), against real trained bundles
and real ``python -m service`` processes (tests/docs/harness.py says how). ``PLANS`` says how
each block is run; a block without a plan fails the fast tier, so a new example cannot go
unrun. Outputs shown in ``# `` lines (or in a ```json block right after the command) are
compared without depending on the trained weights (tests/docs/outputs.py).

Tiers: the fast one checks the extraction, the plans and the output comparison itself; the slow
one runs every example but the Docker ones (one module fixture runs the chains of examples side
by side, sharing servers and bundles, so selecting one example still runs them all, in about a
minute); the docker one runs the Docker examples against a real engine. Python blocks run in
this process against the same servers.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.docs import harness, outputs, prepared
from tests.docs.harness import Chain, Plan, Run
from tests.docs.markdown import (
    ROOT,
    SHELL,
    Block,
    count_fences,
    pages,
    python_blocks,
    shell_blocks,
)
from tests.support import ServerProcess, free_port, require


# -- checks some examples need beyond their shown output ------------------------------------------
def _last_json(run: Run, segment: int = -2) -> Any:
    lines = [line for line in run.segments[segment].splitlines() if line.strip()]
    return json.loads(lines[-1]) if lines else None


def trained_files_exist(run: Run) -> list[str]:
    """Training on your own CSV: the three models it names are published as it says."""
    assert run.work is not None
    artifacts = run.work / "artifacts"
    problems = []
    for model, version, check in [
        ("churn", 1, lambda m: m["target"] == "churned"),
        ("wine", 1, lambda m: [f["name"] for f in m["features"]] == ["alcohol", "ph"]),
        ("iris", 2, lambda m: m["encoding"] == "onehot"),
    ]:
        metadata = artifacts / model / str(version) / "metadata.json"
        if not metadata.is_file():
            problems.append(f"{metadata.relative_to(run.work)} was not published")
        elif not check(json.loads(metadata.read_text())):
            problems.append(f"{metadata.relative_to(run.work)} is not what the example trains")
    return problems


def new_version_served(run: Run) -> list[str]:
    """Retraining without downtime: the published version is served within ~POLL_SECONDS."""
    published = run.segments[0].strip().splitlines()[-1]
    match = re.fullmatch(r"artifacts/iris/(\d+)", published)
    if not match:
        return [f"training printed {published!r}, not the published path"]
    version = int(match.group(1))
    deadline, last = time.monotonic() + 30, ""
    while time.monotonic() < deadline:
        try:
            answer = httpx.get(f"http://127.0.0.1:{run.port}/readyz", timeout=5)
            if answer.status_code == 200 and answer.json().get("version") == version:
                return []
            last = answer.text
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.2)
    return [f"version {version} was not served within 30 s: /readyz {last}"]


def shadow_metrics(run: Run) -> list[str]:
    """Shadow: the answer as shown; then the shadow's series, of which only the split between
    agreeing and disagreeing rows depends on the weights (both rows are counted)."""
    steps = outputs.steps(run.block.text, run.block.language)
    problems = [f"step 1: {p}" for p in outputs.check(steps[0].shown, run.segments[0])]
    shown = {outputs.masked(line) for line in steps[1].shown}
    lines = [line for line in run.segments[1].splitlines() if line.strip()]
    values: dict[str, float] = {}
    for line in lines:
        if outputs.masked(line) not in shown:
            problems.append(f"step 2: {line!r} is not among the lines shown")
        name, _, value = line.rpartition(" ")
        values[name] = float(value)
    for line in steps[1].shown:
        name = line.rpartition(" ")[0]
        if "predictions_total" not in name and name not in values:
            problems.append(f"step 2: no {name}")
    agree = sum(v for k, v in values.items() if k.startswith("model_shadow_predictions_total"))
    counted = [v for k, v in values.items() if "_count{" in k]
    if agree != 2 or counted != [2.0]:
        problems.append(f"step 2: {agree:g} rows counted as shadowed, count {counted}; 2 were sent")
    return problems


def replay_report(run: Run) -> list[str]:
    """Replay: the --json report is one JSON object covering the four logged rows."""
    report = _last_json(run)
    if not isinstance(report, dict) or report.get("rows") != 4:
        return [f"--json printed {report!r:.300}; the log holds 4 rows"]
    return []


def suite_passed(run: Run) -> list[str]:
    return [] if re.search(r"\b\d+ passed\b", run.stdout) else ["pytest did not report a pass"]


# -- how each example runs -------------------------------------------------------------------------
README = "README.md"
TRAINING = "docs/training.md"
REPOSITORY = "docs/repository.md"
# `make test` runs the suite, which holds this test: here it runs the fast link check only.
MAKE_TEST = "-q -p no:cacheprovider --basetemp={work}/pytest tests/docs/test_links.py"

SECTIONS: dict[tuple[str, str], Plan] = {
    (README, "Calling the service"): Plan("iris", server="iris"),
    ("docs/protocols.md", "Open Inference Protocol (KServe V2)"): Plan("iris", server="iris"),
    ("docs/protocols.md", "TensorFlow Serving REST API"): Plan("iris", server="iris"),
    ("docs/explanations.md", "Explaining a prediction"): Plan("iris", server="iris"),
    ("docs/cli.md", "Scoring a file"): Plan("cli", server="iris"),
    (TRAINING, "Training on your own CSV"): Plan("train-csv", check=trained_files_exist),
    (TRAINING, "A real table end to end"): Plan("penguins", server="penguins"),
    (REPOSITORY, "Retraining without downtime"): Plan("retraining"),
    (REPOSITORY, "A model repository"): Plan("repository"),
    (REPOSITORY, "Labels, canary and shadow"): Plan("repository"),
    (REPOSITORY, "serving.json"): Plan("repository"),
    ("docs/observability.md", "The monitoring loop: payload log, drift, replay"): Plan(
        "replay", check=replay_report
    ),
    ("docs/deployment.md", "Kubernetes (scale-out)"): Plan("kubectl", cwd="root"),
}
BLOCKS: dict[tuple[str, str, int], Plan] = {
    (README, "Quick start", 1): Plan(
        "make-run", cwd="root", serve=True, env={"ARTIFACTS_DIR": "{work}/artifacts"}
    ),
    (README, "Quick start", 2): Plan(
        "make-test", cwd="root", env={"PYTEST_ADDOPTS": MAKE_TEST}, check=suite_passed
    ),
    (TRAINING, "A real table end to end", 1): Plan("train-penguins"),
    (TRAINING, "A real table end to end", 2): Plan("train-titanic"),
    (REPOSITORY, "Retraining without downtime", 1): Plan("retraining", check=new_version_served),
    (REPOSITORY, "A model repository", 1): Plan("repository-no-default", server="repository"),
    (REPOSITORY, "Labels, canary and shadow", 1): Plan("repository", exact=True),
    (REPOSITORY, "Labels, canary and shadow", 2): Plan("repository", steps=shadow_metrics),
}
# The Docker examples: run in the docker tier (test_docker_example below).
DOCKER_SECTIONS = {("docs/deployment.md", "Docker")}
# What a chain's directory holds beyond prepared.base, and the chains that need the penguins
# bundle for it.
NEEDS_PENGUINS = {"repository"}
CHAIN_SETUP = {
    "retraining": lambda work, bundles: prepared.iris_versions(work, bundles, 4),
    "repository": prepared.repository,
    "replay": prepared.payload_log,
}


def plan_of(block: Block) -> Plan | None:
    if (block.page, block.section) in DOCKER_SECTIONS:
        return Plan("docker", cwd="root", docker=True)
    return BLOCKS.get(block.key) or SECTIONS.get((block.page, block.section))


SHELL_BLOCKS = shell_blocks()
RUN_BLOCKS = [b for b in SHELL_BLOCKS if (plan := plan_of(b)) is not None and not plan.docker]
DOCKER_BLOCKS = [b for b in SHELL_BLOCKS if (plan := plan_of(b)) is not None and plan.docker]


# -- fast tier ------------------------------------------------------------------------------------
def test_every_shell_fence_is_extracted() -> None:
    for page in map(str, pages()):
        found = [b for b in SHELL_BLOCKS if b.page == page]
        assert len(found) == count_fences(page, SHELL), page
    assert len(SHELL_BLOCKS) >= 30  # README.md and docs/ hold about 31 today


def test_every_shell_example_has_a_plan() -> None:
    missing = [f"{b.name} ({b.section})" for b in SHELL_BLOCKS if plan_of(b) is None]
    assert not missing, f"add these examples to SECTIONS or BLOCKS: {missing}"
    keys = {b.key for b in SHELL_BLOCKS}
    sections = {(b.page, b.section) for b in SHELL_BLOCKS}
    assert not set(BLOCKS) - keys, f"plans for blocks that are gone: {set(BLOCKS) - keys}"
    stale = set(SECTIONS) - sections
    assert not stale, f"plans for sections without shell examples: {stale}"


def test_shown_output_is_parsed_as_shown() -> None:
    """The steps keep every line of each example, and every JSON line shown parses."""
    for block in SHELL_BLOCKS:
        steps = outputs.steps(block.text, block.language)
        kept = "".join(step.script for step in steps).splitlines()
        kept += [line for step in steps for line in step.shown]
        assert len(kept) == len(block.text.splitlines()), block.name
        for step in steps:
            for line in step.shown:
                if line.startswith("{") and "..." not in line:
                    body = re.sub(r" \d{3}$", "", line)  # a status after the body
                    assert outputs.parse_json(body) is not None, (block.name, line)


def test_output_check_fails_on_a_different_answer() -> None:
    shown = [
        '{"model":"iris","version":1,"predictions":[{"label":"setosa","probabilities":'
        '{"setosa":0.99,"versicolor":0.01,"virginica":0.0},"warnings":[]}]}'
    ]
    same = shown[0].replace("0.99", "0.97").replace("0.01", "0.03")
    assert outputs.check(shown, same) == []
    assert outputs.check(shown, "noise\n" + same) == []  # an earlier command's output
    assert outputs.check(shown, same.replace('"setosa",', '"virginica",', 1))  # a certain label
    assert outputs.check(shown, same.replace('"version":1', '"version":2'))
    assert outputs.check(shown, same.replace('"warnings":[]', '"warnings":["x"]'))
    assert outputs.check(shown, same.replace(',"warnings":[]', ""))
    uncertain = shown[0].replace("0.99", "0.6").replace("0.01", "0.4")
    assert outputs.check([uncertain], uncertain.replace('"setosa",', '"versicolor",', 1)) == []
    csv = ["label,prob_a,prob_b,warnings", "a,0.99,0.01,x", "b,0.4,0.6,"]
    assert outputs.check(csv, "label,prob_a,prob_b,warnings\na,0.9,0.1,x\na,0.5,0.5,") == []
    assert outputs.check(csv, "label,prob_a,prob_b,warnings\nb,0.1,0.9,x\na,0.5,0.5,")
    assert outputs.check(csv, "label,prob_a,prob_b,warnings\na,0.9,0.1,\na,0.5,0.5,")
    assert outputs.check(['{"error":"x"} 400'], '{"error":"x"} 422')
    assert outputs.check(["accuracy 0.97 on 30 rows", "..."], "accuracy 1.0 on 30 rows\nmore") == []
    assert outputs.check(["accuracy 0.97 on 30 rows", "..."], "precision 1.0 on 30 rows\nmore")
    assert outputs.check(["accuracy 0.97 on 30 rows"], "accuracy 0.97 on 30 rows\nmore")


def test_kubectl_shim_checks_what_it_is_given(tmp_path: Path) -> None:
    kubectl = harness.write_shims(tmp_path) / "bin" / "kubectl"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([kubectl, *args], capture_output=True, text=True, check=False)

    applied = run("apply", "-k", str(ROOT / "deploy" / "k8s"))
    assert applied.returncode == 0, applied.stderr
    assert "deployment/" in applied.stdout and "job/keras-serve-train" in applied.stdout
    assert run("delete", "job", "keras-serve-train").returncode == 0
    assert run("delete", "job", "no-such-job", "--ignore-not-found").returncode != 0
    assert run("apply", "-k", str(tmp_path)).returncode != 0  # no kustomization.yaml
    assert run("get", "pods").returncode != 0


# -- slow tier: every example but Docker's ---------------------------------------------------------
@pytest.fixture(scope="module")
def docs_tools(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return harness.write_shims(tmp_path_factory.mktemp("docs-tools"))


@pytest.fixture(scope="module")
def docs_runs(
    request: pytest.FixtureRequest,
    default_iris_bundle: Path,
    docs_tools: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[tuple[str, str, int], Run]:
    """Every example run once, chains side by side. The chains that need only the Iris bundle
    start at once; the others once the penguins bundle is trained and the servers are up."""
    chains: dict[str, list[tuple[Block, Plan]]] = {}
    for block in RUN_BLOCKS:
        plan = plan_of(block)
        assert plan is not None
        chains.setdefault(plan.chain, []).append((block, plan))
    later = {
        name for name, examples in chains.items()
        if name in NEEDS_PENGUINS or any(plan.server for _, plan in examples)
    }  # fmt: skip
    root = tmp_path_factory.mktemp("docs-chains")
    shared: dict[str, Any] = {"bundles": prepared.Bundles(default_iris_bundle), "servers": {}}

    def meanwhile() -> None:
        shared["bundles"] = request.getfixturevalue("docs_bundles")
        shared["servers"] = request.getfixturevalue("docs_servers")

    def make_chain(name: str) -> Chain:
        bundles = shared["bundles"]

        def prepare(work: Path) -> None:
            prepared.base(work, bundles)
            if name in CHAIN_SETUP:
                CHAIN_SETUP[name](work, bundles)

        return Chain(name, root / name, docs_tools, shared["servers"], prepare)

    started = time.monotonic()
    runs = harness.run_chains(chains, make_chain, later, meanwhile)
    # Where the time goes (pytest -s shows it): the chains ran side by side.
    for chain in sorted(chains):
        seconds = sum(run.seconds for run in runs.values() if run.plan.chain == chain)
        print(f"docs examples: chain {chain}: {seconds:.1f} s")
    print(f"docs examples: {len(runs)} examples in {time.monotonic() - started:.1f} s")
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("block", RUN_BLOCKS, ids=lambda b: b.name)
def test_shell_example(block: Block, docs_runs: dict[tuple[str, str, int], Run]) -> None:
    run = docs_runs[block.key]
    assert not run.problems, run.report()
    if run.plan.serve:
        assert run.ready and run.ready.get("status") == "ready", run.report()


# -- Python examples: run in this process, against the same servers --------------------------------
def _penguins_keras(namespace: dict[str, Any]) -> list[str]:
    probabilities, encoder = namespace["probabilities"], namespace["encoder"]
    labels = encoder.inverse_transform(probabilities.argmax(axis=1))
    problems = []
    if probabilities.shape != (2, 3) or not np.allclose(probabilities.sum(axis=1), 1, atol=1e-5):
        problems.append(f"probabilities {probabilities!r}")
    if labels[0] != "Gentoo":  # certain in the example (1.0); the second row is not
        problems.append(f"labels {labels!r}; the example shows 'Gentoo' first")
    return problems


def _triton_labels(namespace: dict[str, Any]) -> list[str]:
    labels = namespace["result"].as_numpy("label").tolist()
    return [] if labels == [b"setosa", b"virginica"] else [f"labels {labels}"]


PYTHON: dict[tuple[str, str, int], Any] = {
    (TRAINING, "A real table end to end", 1): _penguins_keras,
    ("docs/protocols.md", "Open Inference Protocol (KServe V2)", 1): _triton_labels,
    ("docs/protocols.md", "Open Inference Protocol over gRPC", 1): _triton_labels,
}


def test_every_python_example_has_a_check() -> None:
    assert {b.key for b in python_blocks()} == set(PYTHON)


@pytest.mark.slow
@pytest.mark.parametrize("block", python_blocks(), ids=lambda b: b.name)
def test_python_example(
    block: Block, docs_bundles: prepared.Bundles, docs_servers: dict[str, ServerProcess]
) -> None:
    iris = docs_servers["iris"]
    code = block.text.replace("127.0.0.1:8000", f"127.0.0.1:{iris.port}")
    code = code.replace("127.0.0.1:8081", f"127.0.0.1:{iris.env['GRPC_PORT']}")
    assert docs_bundles.penguins is not None
    code = code.replace('"artifacts/', f'"{docs_bundles.penguins.parent.parent}/')
    ast.parse(code)
    namespace: dict[str, Any] = {"__name__": "docs_example"}
    try:
        exec(compile(code, block.name, "exec"), namespace)
        problems = PYTHON[block.key](namespace)
    finally:
        for value in namespace.values():
            if type(value).__name__ == "InferenceServerClient":
                value.close()
    assert not problems, f"{block.name}: {problems}\n{code}"


# -- docker tier ----------------------------------------------------------------------------------
class DockerChain(Chain):
    """The Docker examples' session. They build from the repository (``docker build .``) and
    mount ``$PWD/artifacts`` and ``$PWD/data``: they run in the repository with ``$PWD/``
    pointing at the prepared directory instead. The CI engine has no bridge network (``-p``
    would be ignored): containers use the host network on free ports, as
    tests/deploy/test_docker_image.py runs them. Builds use the host network and
    ``$DOCKER_BASE_IMAGE``; every container is labelled, to be removed after. The train image
    trains as written (no shorter ``--epochs``)."""

    def __init__(self, work: Path, tools: Path, prepare: Callable[[Path], None]) -> None:
        super().__init__("docker", work, tools, {}, prepare)
        self.epochs = None
        self.grpc_port = free_port()
        self.label = uuid.uuid4().hex

    def rewrite(self, text: str, plan: Plan) -> str:
        text = super().rewrite(text, plan).replace('"$PWD/', f'"{self.work}/')
        base = os.environ.get("DOCKER_BASE_IMAGE")
        build = "docker build --network host" + (f" --build-arg BASE_IMAGE={base}" if base else "")
        text = text.replace("docker build", build)
        text = text.replace("docker run", f"docker run --label docs-example={self.label}")
        host = f"--network host -e PORT={self.port} -e GRPC_PORT={self.grpc_port}"
        return re.sub(r"\s*-p 8081:8081", "", text.replace("-p 8000:8000", host))

    def remove_containers(self) -> None:
        remove_containers(f"label=docs-example={self.label}")


def remove_containers(*filters: str) -> None:
    """Remove the containers matching every filter (each carries a docs-example label)."""
    arguments = [f"--filter={f}" for f in filters]
    listed = subprocess.run(
        ["docker", "ps", "-aq", *arguments], capture_output=True, text=True, check=False
    )
    if listed.stdout.split():
        subprocess.run(["docker", "rm", "--force", *listed.stdout.split()], check=False)


@pytest.fixture(scope="session")  # session: set up before the session's bundles
def docker_engine() -> None:
    """Skip (or fail, with REQUIRE_DOCKER=1) without a Docker engine, before anything is built."""
    from tests.deploy.test_docker_image import engine_problem

    require(engine_problem(), "REQUIRE_DOCKER", "Docker examples")


@pytest.fixture(scope="module")
def docker_chain(
    docker_engine: None, docs_bundles: prepared.Bundles, docs_tools: Path
) -> Iterator[DockerChain]:
    # The container user (uid 10001) reads the mounted directories.
    work = Path(tempfile.mkdtemp(prefix="keras-serve-docs-"))
    work.chmod(0o755)

    def prepare(directory: Path) -> None:
        prepared.base(directory, docs_bundles)
        subprocess.run(["chmod", "-R", "a+rX", str(directory)], check=True)

    remove_containers("label=docs-example", "name=keras-serve")  # left by an earlier run
    chain = DockerChain(work / "work", docs_tools, prepare)
    try:
        yield chain
    finally:
        chain.close()
        chain.remove_containers()
        shutil.rmtree(work, ignore_errors=True)


def _model_served(port: int, model: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            answer = httpx.get(f"http://127.0.0.1:{port}/models", timeout=5)
            if any(m["name"] == model for m in answer.json().get("models", [])):
                return True
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(1)
    return False


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize("block", DOCKER_BLOCKS, ids=lambda b: b.name)
def test_docker_example(block: Block, docker_chain: DockerChain) -> None:
    # The first example ends serving the image in the foreground: checked by its first ready
    # answer, then stopped. The second leaves a container serving the mounted volume.
    serving = "docker run --rm -p" in block.text.splitlines()[-1]
    run = docker_chain.run(block, Plan("docker", cwd="root", serve=serving, timeout=3600.0))
    try:
        assert not run.problems, run.report()
        if serving:
            assert run.ready and run.ready["model"] == "iris", run.report()
        else:  # retrained into the mounted volume: the container serves it from a poll
            assert _model_served(docker_chain.port, "churn", timeout=90), run.report()
    finally:
        docker_chain.remove_containers()  # the next example's container takes the port
