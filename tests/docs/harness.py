"""Run the manual's shell examples for real, as a reader pasting them into a terminal would.

Each example runs with ``bash`` (``set -euo pipefail``) in a working directory prepared with
what its text assumes (a trained bundle under ``artifacts/``, the CSV files the prose
describes, ``.venv`` pointing at the suite's own environment), with ``.venv/bin`` first on ``PATH`` after
two shims (``kubectl``: no cluster here; ``make``: never reinstalls the shared environment), and
a ``.curlrc`` that ends each answer with a line break, as a terminal shows it. Examples
of one *chain* share that directory, the port the service listens on and the variables they
export (``export ADMIN_TOKEN=...``), and the servers they start in the background keep running
until the chain ends, as in one terminal session. Port 8000 in an example becomes the port of
the server it talks to; absolute scratch paths (``/tmp/repo``) become paths in the working
directory. Every process an example starts carries a marker in its environment, and only
processes carrying it are stopped, by their id.

The manual's shown output is checked step by step: a marker line is printed after each step,
so each step's output is compared with the lines shown under it (:mod:`tests.docs.outputs`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from service.settings import Settings
from tests.docs import outputs
from tests.docs.markdown import ROOT, Block
from tests.support import ServerProcess, free_port

MARK = "@@docs-step@@"
BLOCK_TIMEOUT = 240.0  # a block that trains takes ~10 s; a hang is cut off here
READY_TIMEOUT = 90.0
# Trainings the examples run without --epochs stop after this many (the defaults' early stopping
# runs 30-60 on these tables): each still trains, exports and publishes for real, in less time.
EPOCHS = 10
# What a reader's shell would not have: the service's settings come from each example.
_DROPPED = {name.upper() for name in Settings.model_fields} | {"PROMETHEUS_MULTIPROC_DIR"}
_SESSION_NOISE = {"_", "SHLVL", "PWD", "OLDPWD", "DOCS_ENV_OUT", "DOCS_BLOCK", "DOCS_CHAIN"}


@dataclass(frozen=True)
class Plan:
    """How to run one example."""

    chain: str  # examples of a chain run in order, sharing a directory, a port and exports
    server: str | None = None  # the shared server port 8000 means; None: the chain's own port
    cwd: str = "work"  # "work": the chain's directory; "root": the repository
    serve: bool = False  # runs until stopped: checked by its first ready answer, then stopped
    env: dict[str, str] = field(default_factory=dict)  # {work} is the chain's directory
    exact: bool = False  # shown text lines compared as they are, numbers included
    check: Callable[[Run], list[str]] | None = None  # more to check once it ran
    steps: Callable[[Run], list[str]] | None = None  # replaces the step-by-step comparison
    docker: bool = False
    timeout: float = BLOCK_TIMEOUT  # for the whole block, and for a serving one to be ready


@dataclass
class Run:
    """What running one example gave."""

    block: Block
    plan: Plan
    script: str = ""
    returncode: int | None = None
    stdout: str = ""
    stderr: str = ""
    segments: list[str] = field(default_factory=list)  # each step's output
    ready: dict[str, Any] | None = None  # the first ready answer of a serving example
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    work: Path | None = None
    port: int = 0

    def report(self) -> str:
        return "\n".join(
            [
                f"{self.block.name} ({self.block.section}), chain {self.plan.chain!r}:",
                *(f"  - {p}" for p in self.problems),
                "--- script as run:",
                self.script,
                f"--- exit code {self.returncode}; stdout (tail):",
                self.stdout[-3000:],
                "--- stderr (tail):",
                self.stderr[-3000:],
            ]
        )


# -- processes ------------------------------------------------------------------------------------
def marked(name: str, token: str) -> list[int]:
    """The processes whose environment holds ``name=token`` (set by this harness only)."""
    needle = f"{name}={token}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def stop_marked(name: str, token: str, grace: float = 15.0) -> None:
    """SIGTERM every process carrying the marker, then SIGKILL what is left after ``grace``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = marked(name, token)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while pids and time.monotonic() < deadline:
            time.sleep(0.1)
            pids = marked(name, token)
        if not pids:
            return


# -- shims ----------------------------------------------------------------------------------------
_KUBECTL = '''#!{python}
"""kubectl for the examples: no cluster here. It checks what a real apply would read: the
kustomization and every manifest it lists exist and parse as Kubernetes objects (the properties
tests/deploy/test_k8s_manifests.py validates strictly), and that a Job deleted by name is one
the manifests define. Anything else is refused."""
import sys
from pathlib import Path

import yaml

ROOT = Path({root!r})


def documents(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    for doc in docs:
        missing = [k for k in ("apiVersion", "kind", "metadata") if k not in doc]
        if missing or not doc["metadata"].get("name"):
            sys.exit(f"kubectl (shim): {{path}}: a document without {{missing or ['metadata.name']}}")
    return docs


def kustomize(directory):
    kustomization = directory / "kustomization.yaml"
    if not kustomization.is_file():
        sys.exit(f"kubectl (shim): error: {{kustomization}} does not exist")
    (config,) = documents_or_plain(kustomization)
    found = []
    for name in config.get("resources", []):
        target = directory / name
        if target.is_dir():
            found += kustomize(target)
        elif target.is_file():
            found += documents(target)
        else:
            sys.exit(f"kubectl (shim): error: {{target}} (listed in {{kustomization}}) does not exist")
    return found


def documents_or_plain(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def all_objects():
    found = []
    for kustomization in sorted((ROOT / "deploy" / "k8s").rglob("kustomization.yaml")):
        found += kustomize(kustomization.parent)
    return found


args = [a for a in sys.argv[1:] if a != "--ignore-not-found"]
if args[:1] == ["apply"] and len(args) == 3 and args[1] == "-k":
    for doc in kustomize(Path(args[2])):
        print(f"{{doc['kind'].lower()}}/{{doc['metadata']['name']}} configured (shim: parsed, not applied)")
elif args[:2] == ["delete", "job"] and len(args) == 3:
    jobs = {{d["metadata"]["name"] for d in all_objects() if d["kind"] == "Job"}}
    if args[2] not in jobs:
        sys.exit(f"kubectl (shim): no Job {{args[2]!r}} in deploy/k8s (there are {{sorted(jobs)}})")
else:
    sys.exit(f"kubectl (shim): {{' '.join(sys.argv[1:])}} is not an example this shim knows")
'''

_MAKE = """#!/bin/sh
# make for the examples: the suite's own virtual environment as the Makefile's VENV, never
# reinstalled (the suite runs in it), and no apt-get from inside a test (make test-tools).
exec {make} VENV={venv} -o {venv}/.installed -o test-tools "$@"
"""


def write_shims(directory: Path) -> Path:
    """``bin/`` with the ``kubectl`` and ``make`` shims, and ``curlrc/.curlrc``, which ends each
    curl answer with a line break so that answers print one per line."""
    bin_dir = directory / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir / "kubectl").write_text(_KUBECTL.format(python=sys.executable, root=str(ROOT)))
    make = shutil.which("make") or "/usr/bin/make"
    venv = shlex.quote(sys.prefix)
    (bin_dir / "make").write_text(_MAKE.format(make=shlex.quote(make), venv=venv))
    for shim in bin_dir.iterdir():
        shim.chmod(0o755)
    (directory / "curlrc").mkdir(exist_ok=True)
    (directory / "curlrc" / ".curlrc").write_text('write-out = "\\n"\n')
    return directory


# -- chains ---------------------------------------------------------------------------------------
class Chain:
    """One terminal session: a working directory, a port and the variables exported so far."""

    def __init__(
        self,
        name: str,
        work: Path,
        tools: Path,
        servers: dict[str, ServerProcess],
        prepare: Callable[[Path], None],
    ) -> None:
        self.name = name
        self.work = work
        self.tools = tools
        self.servers = servers
        self.port = free_port()
        self.token = uuid.uuid4().hex
        self.exported: dict[str, str] = {}
        self.epochs: int | None = EPOCHS
        work.mkdir(parents=True, exist_ok=True)
        prepare(work)

    def environment(self, plan: Plan, block_token: str, env_out: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k.upper() not in _DROPPED}
        env.update(
            PATH=os.pathsep.join(
                [str(self.tools / "bin"), str(Path(sys.executable).parent), env.get("PATH", "")]
            ),
            CURL_HOME=str(self.tools / "curlrc"),
            PORT=str(self.port),
            GRPC_PORT="0",
            TF_CPP_MIN_LOG_LEVEL="3",
            DOCS_CHAIN=self.token,
            DOCS_BLOCK=block_token,
            DOCS_ENV_OUT=str(env_out),
        )
        env.pop("VIRTUAL_ENV", None)
        env.update({k: v.format(work=self.work) for k, v in plan.env.items()})
        env.update(self.exported)
        return env

    def rewrite(self, text: str, plan: Plan) -> str:
        """Port 8000 to the port of the server meant; scratch paths into the working directory;
        a training without ``--epochs`` gets ``--epochs EPOCHS`` (real training, shorter)."""
        if self.epochs is not None:
            text = re.sub(
                r"(-m training|keras-serve train)\b(?![^\n]*--epochs)",
                rf"\1 --epochs {self.epochs}",
                text,
            )
        port = self.servers[plan.server].port if plan.server else self.port
        text = re.sub(r"\b(?:localhost|127\.0\.0\.1):8000\b", f"127.0.0.1:{port}", text)
        text = text.replace("/tmp/repo", str(self.work / "repo"))
        return text.replace("/var/log/keras-serve", str(self.work / "payload-log"))

    def script(self, block: Block, plan: Plan, steps: list[outputs.Step]) -> str:
        parts = ["set -euo pipefail", "trap 'env -0 > \"$DOCS_ENV_OUT\"' EXIT"]
        for step in steps:
            parts.append(self.rewrite(step.script, plan).rstrip("\n"))
            parts.append(f"printf '\\n%s\\n' '{MARK}'")
        return "\n".join(parts) + "\n"

    def run(self, block: Block, plan: Plan) -> Run:
        run = Run(block, plan, work=self.work, port=self.port)
        steps = outputs.steps(block.text, block.language)
        run.script = self.script(block, plan, steps)
        token = uuid.uuid4().hex
        logs = self.work / ".docs-runs"
        logs.mkdir(exist_ok=True)
        stem = f"{Path(block.page).stem}-{block.line}"
        env_out = logs / f"{stem}.env"
        cwd = ROOT if plan.cwd == "root" else self.work
        env = self.environment(plan, token, env_out)
        started = time.monotonic()
        with open(logs / f"{stem}.out", "wb") as out, open(logs / f"{stem}.err", "wb") as err:
            process = subprocess.Popen(
                ["bash", "-c", run.script],
                cwd=cwd,
                env=env,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            try:
                if plan.serve:
                    run.ready = self._first_ready(process, run)
                    stop_marked("DOCS_BLOCK", token)
                process.wait(timeout=plan.timeout)
            except subprocess.TimeoutExpired:
                run.problems.append(f"still running after {plan.timeout:.0f} s: stopped")
                stop_marked("DOCS_BLOCK", token)
                process.wait()
        run.seconds = time.monotonic() - started
        run.returncode = process.returncode
        run.stdout = (logs / f"{stem}.out").read_text(errors="replace")
        run.stderr = (logs / f"{stem}.err").read_text(errors="replace")
        self._keep_exports(env_out, env)
        run.segments = run.stdout.split(f"\n{MARK}\n")
        if not plan.serve and run.returncode != 0:
            run.problems.append(f"exit code {run.returncode}")
        if not plan.serve and len(run.segments) != len(steps) + 1:
            run.problems.append(f"{len(run.segments) - 1} of {len(steps)} steps ran")
        elif not plan.serve:
            run.problems += self._compare(block, plan, steps, run)
        if plan.check is not None and not run.problems:
            try:
                run.problems += plan.check(run)
            except Exception as exc:  # a check that breaks is reported with its example
                run.problems.append(f"check {plan.check.__name__} raised {exc!r}")
        return run

    def _first_ready(self, process: subprocess.Popen[bytes], run: Run) -> dict[str, Any] | None:
        url = f"http://127.0.0.1:{self.port}/readyz"
        wait = max(READY_TIMEOUT, run.plan.timeout)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if process.poll() is not None:
                run.problems.append(f"exited with {process.returncode} before it was ready")
                return None
            try:
                answer = httpx.get(url, timeout=2)
                if answer.status_code == 200:
                    return answer.json()
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        run.problems.append(f"{url} did not answer 200 within {wait:.0f} s")
        return None

    def _keep_exports(self, env_out: Path, given: dict[str, str]) -> None:
        """What the example exported stays for the next ones of the chain."""
        if not env_out.exists():
            return
        for item in env_out.read_bytes().split(b"\0"):
            name, sep, value = item.decode(errors="replace").partition("=")
            if sep and name not in _SESSION_NOISE and given.get(name) != value:
                self.exported[name] = value

    @staticmethod
    def _compare(block: Block, plan: Plan, steps: list[outputs.Step], run: Run) -> list[str]:
        if plan.steps is not None:
            try:
                return plan.steps(run)
            except Exception as exc:
                return [f"check {plan.steps.__name__} raised {exc!r}"]
        problems = []
        for number, (step, output) in enumerate(zip(steps, run.segments, strict=False), 1):
            if step.shown:
                problems += [
                    f"step {number}: {p}" for p in outputs.check(step.shown, output, plan.exact)
                ]
        if block.following is not None and block.following.language == "json":
            problems += [
                f"answer: {p}"
                for p in outputs.check_document(block.following.text, run.segments[-2])
            ]
        return problems

    def close(self) -> None:
        stop_marked("DOCS_CHAIN", self.token)


def run_chains(
    chains: dict[str, list[tuple[Block, Plan]]],
    make_chain: Callable[[str], Chain],
    later: set[str] = frozenset(),  # type: ignore[assignment]
    meanwhile: Callable[[], None] = lambda: None,
    workers: int = 3,
) -> dict[tuple[str, str, int], Run]:
    """Run each chain's examples in order, chains side by side (``workers`` at once, the longest
    first: one more than the cores, as some chains wait on a poll). The chains in ``later`` start
    once ``meanwhile()`` (what they need: servers, bundles) has run in this thread, while the
    others already run. Every chain is closed (its servers stopped) once its examples ran."""

    def one(name: str) -> list[Run]:
        runs = []
        chain = None
        try:
            chain = make_chain(name)
            for block, plan in chains[name]:
                runs.append(chain.run(block, plan))
        except Exception as exc:  # reported by each example left, not by the whole session
            for block, plan in chains[name][len(runs) :]:
                runs.append(Run(block, plan, problems=[f"chain {name!r} failed: {exc!r}"]))
        finally:
            if chain is not None:
                chain.close()
        return runs

    def by_weight(names: Iterable[str]) -> list[str]:
        return sorted(names, key=lambda name: -_weight(chains[name]))

    results: dict[tuple[str, str, int], Run] = {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(one, name) for name in by_weight(set(chains) - later)]
        try:
            meanwhile()
        finally:  # even if it failed, the later chains report it, each of their examples
            futures += [pool.submit(one, name) for name in by_weight(later & set(chains))]
        for future in futures:
            results.update({run.block.key: run for run in future.result()})
    return results


def _weight(examples: Iterable[tuple[Block, Plan]]) -> int:
    """A rough cost: trainings and servers first."""
    text = " ".join(block.text for block, _ in examples)
    return 10 * len(re.findall(r"-m training|keras-serve train", text)) + text.count("-m service")
