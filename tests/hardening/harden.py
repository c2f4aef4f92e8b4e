"""``make harden``: run every hardening check, larger than the test suite does, and print figures.

    python -m tests.hardening.harden            # a fresh random seed, printed for replay
    HARDEN_SEED=1234 python -m tests.hardening.harden

Steps: the hardening tests (hostile list, broken bundles, schemathesis through its pytest
integration, then a larger schemathesis CLI run, each against the Iris model and a typed one with
text, true/false and blank features; hypothesis over the typed parsers) against real server
processes; the atheris harness over request parsing (Iris and typed, every protocol); the
overload and graceful-shutdown tests when they exist; the second-pass attacks of issue 18
(``tests/hardening/attacks.py``: many-key JSON, a 128 MiB header, slowloris, slow bodies, a
reused version number, padded metadata, symlinked versions, API_KEY as given, duplicate keys, an
unreadable model directory, a killed and a disk-full training run, CSV line breaks, the cost of
rows outside the training range) at the scale the outside attacker used, against real servers,
each printing its figure and bound; pip-audit over the installed serving dependencies. Exit
status 1 if any step fails.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.hardening.figures import ENV, read

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
FUZZ_RUNS = int(os.environ.get("HARDEN_FUZZ_RUNS", "100000"))
PYTEST_EXAMPLES = os.environ.get("HARDEN_SCHEMATHESIS_EXAMPLES", "25")
CLI_EXAMPLES = os.environ.get("HARDEN_SCHEMATHESIS_CLI_EXAMPLES", "150")
# Cases per test of the hypothesis fuzzing of the typed parsers (test_typed_parsers.py).
TYPED_EXAMPLES = os.environ.get("HARDEN_TYPED_EXAMPLES", "2000")
OTHER_TESTS = ["tests/service/test_overload.py", "tests/service/test_shutdown.py"]
# Known vulnerabilities judged not to apply: {id: why}. Empty: none is known.
NOT_APPLICABLE: dict[str, str] = {}


def say(message: str) -> None:
    print(message, flush=True)


def run(name: str, command: list[str], log: Path, env: dict[str, str] | None = None) -> int:
    """Run one step with its output in ``log``; print its duration and, on failure, its tail."""
    say(f"-- {name}")
    start = time.monotonic()
    with log.open("w") as out:
        code = subprocess.run(
            command, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=out, stderr=out
        ).returncode
    say(f"   {'ok' if code == 0 else f'FAILED (exit {code})'} in {time.monotonic() - start:.0f} s")
    if code != 0:
        say("   " + "\n   ".join(log.read_text(errors="replace").splitlines()[-40:]))
    return code


# -- the installed serving dependencies -------------------------------------------------------
def serving_dependencies() -> dict[str, str]:
    """Name -> installed version of everything ``keras-serve[serve]`` pulls in, transitively."""
    found: dict[str, str] = {}
    todo: list[tuple[str, frozenset[str]]] = [("keras-serve", frozenset({"serve"}))]
    while todo:
        name, extras = todo.pop()
        distribution = metadata.distribution(name)
        key = canonicalize_name(distribution.metadata["Name"])
        if key in found and not extras:
            continue
        found[key] = distribution.version
        for line in distribution.requires or []:
            requirement = Requirement(line)
            contexts = [{"extra": e} for e in extras] or [{"extra": ""}]
            if requirement.marker is not None and not any(
                requirement.marker.evaluate(c) for c in contexts
            ):
                continue
            if canonicalize_name(requirement.name) in found and not requirement.extras:
                continue
            try:
                metadata.distribution(requirement.name)
            except metadata.PackageNotFoundError:
                continue  # an optional dependency not installed is not served
            todo.append((requirement.name, frozenset(requirement.extras)))
    found.pop("keras-serve", None)
    return found


def audit(work: Path) -> tuple[int, str]:
    """pip-audit over the serving dependencies: (exit code for the run, one-line result)."""
    dependencies = serving_dependencies()
    requirements = work / "serving-requirements.txt"
    requirements.write_text("".join(f"{n}=={v}\n" for n, v in sorted(dependencies.items())))
    report = work / "pip-audit.json"
    command = [
        str(Path(PYTHON).with_name("pip-audit")),
        f"--requirement={requirements}",
        "--no-deps",
        "--disable-pip",
        "--progress-spinner=off",
        "--format=json",
        f"--output={report}",
    ]
    for vulnerability in NOT_APPLICABLE:
        command.append(f"--ignore-vuln={vulnerability}")
    code = run("pip-audit over the serving dependencies", command, work / "pip-audit.log")
    if not report.exists():
        return 1, f"pip-audit did not run (exit {code}); see {work / 'pip-audit.log'}"
    results = json.loads(report.read_text())["dependencies"]
    skipped = [d["name"] for d in results if d.get("skip_reason")]
    vulnerable = {
        f"{d['name']} {d['version']}": [v["id"] for v in d.get("vulns", [])]
        for d in results
        if d.get("vulns")
    }
    audited = len(results) - len(skipped)
    if vulnerable:
        return 1, f"{audited}/{len(dependencies)} audited; KNOWN VULNERABILITIES: {vulnerable}"
    if not audited:
        strict = os.environ.get("HARDEN_AUDIT_STRICT") == "1"
        return int(strict), (
            f"NOT AUDITED: 0/{len(dependencies)} dependencies could be looked up (the "
            "vulnerability service is unreachable from here)"
        )
    note = f", {len(skipped)} not found on PyPI: {', '.join(skipped)}" if skipped else ""
    return 0, f"{audited}/{len(dependencies)} audited, no known vulnerabilities{note}"


# -- the steps ----------------------------------------------------------------------------------
def fuzz(work: Path, seed: int) -> tuple[int, int, int]:
    """The atheris harness for FUZZ_RUNS inputs: (exit code, runs done, crashes)."""
    new = work / "fuzz-new"
    new.mkdir()
    command = [
        PYTHON,
        "fuzz/fuzz_inputs.py",
        f"-runs={FUZZ_RUNS}",
        f"-seed={seed}",
        "-max_len=8192",
        "-dict=fuzz/inputs.dict",
        f"-artifact_prefix={work}/",
        str(new),
        "fuzz/corpus",
    ]
    log = work / "fuzz.log"
    code = run(f"atheris over request parsing, {FUZZ_RUNS} runs", command, log)
    done = re.search(r"Done (\d+) runs", log.read_text(errors="replace"))
    crashes = len(list(work.glob("crash-*")))
    return code, int(done.group(1)) if done else 0, crashes


def other_tests(work: Path) -> tuple[int, list[str], int | None]:
    """The overload and shutdown tests, if present: (exit code, their figure lines, lost)."""
    present = [t for t in OTHER_TESTS if (ROOT / t).exists()]
    if not present:
        return 0, [], None
    log = work / "overload-shutdown.log"
    command = [PYTHON, "-m", "pytest", *present, "-p", "no:cacheprovider", "-q", "-s"]
    code = run("overload and graceful shutdown tests", command, log)
    text = log.read_text(errors="replace")
    lines = [
        line.strip()
        for line in text.splitlines()
        if re.match(r"\s*(SIGTERM under load|limit \d|\d+ clients|RSS |a request stalled)", line)
    ]
    lost = re.search(r"(\d+) lost", text)
    return code, lines, int(lost.group(1)) if lost else None


def attacks(work: Path) -> tuple[int, list[str]]:
    """The second-pass attacks (issue 18) against real servers: (exit code, their lines)."""
    log = work / "attacks.log"
    command = [PYTHON, "-m", "tests.hardening.attacks", "--work", str(work)]
    code = run("second-pass attacks (issue 18), with their figures", command, log)
    text = log.read_text(errors="replace")
    lines = [line.strip() for line in text.splitlines() if re.match(r"attacks?[ :]", line)]
    return code, lines


def main() -> int:
    seed = int(os.environ.get("HARDEN_SEED") or random.randrange(1, 2**31))
    work = Path(tempfile.mkdtemp(prefix="harden-"))
    figures_path = work / "figures.jsonl"
    say(f"hardening run, seed {seed}; logs in {work}")
    failed = []

    env = {
        ENV: str(figures_path),
        "HARDEN_SCHEMATHESIS_SEED": str(seed),
        "HARDEN_SCHEMATHESIS_EXAMPLES": PYTEST_EXAMPLES,
        "HARDEN_SCHEMATHESIS_CLI_EXAMPLES": CLI_EXAMPLES,
        "HARDEN_TYPED_EXAMPLES": TYPED_EXAMPLES,
    }
    command = [PYTHON, "-m", "pytest", "tests/hardening", "-p", "no:cacheprovider", "-q", "-s"]
    if run(
        "hardening tests (hostile, broken bundles, schemathesis, typed parsers)",
        command,
        work / "tests.log",
        env,
    ):
        failed.append("hardening tests")

    code, runs, crashes = fuzz(work, seed)
    if code or crashes:
        failed.append("fuzzing")

    code, lines, lost = other_tests(work)
    if code:
        failed.append("overload/shutdown tests")

    code, attack_lines = attacks(work)
    if code:
        failed.append("second-pass attacks")

    code, audit_result = audit(work)
    if code:
        failed.append("pip-audit")

    figures = read(str(figures_path))
    served = "see the failures" if "hardening tests" in failed else "0 broken served"
    lost_text = "n/a (tests/service/test_shutdown.py absent)" if lost is None else str(lost)
    if lines and lost is None:
        lost_text = "n/a (not in the shutdown test's output)"
    rows = [
        ("schemathesis cases tried", figures.get("schemathesis_cases", 0)),
        ("hostile inputs tried", figures.get("hostile_inputs", 0)),
        ("fuzzing inputs tried (atheris)", f"{runs}, {crashes} crashes"),
        ("5xx seen", figures.get("server_errors", 0)),
        ("artifacts rejected", f"{figures.get('artifacts_rejected', 0)}, {served}"),
        ("requests lost at shutdown", lost_text),
        ("pip-audit", audit_result),
    ]
    say("\n== hardening figures " + "=" * 50)
    for label, value in rows:
        say(f"{label:32} {value}")
    for line in lines:
        say(f"  {line}")
    say("second-pass attacks (issue 18):")
    for line in attack_lines or ["none ran; see attacks.log"]:
        say(f"  {line}")
    say(f"seed {seed}; logs in {work}")
    if failed:
        say("FAILED: " + ", ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
