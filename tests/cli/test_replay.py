"""``keras-serve replay``: a payload log written from real predictions, rescored with another
version; the report is checked against a comparison made here with numpy alone."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from keras_serve.cli import main
from keras_serve.replay import replay
from service.model import load_version
from tests.conftest import train

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(sys.executable).parent / "keras-serve"
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
CLASSES = ["setosa", "versicolor", "virginica"]
# What the command reads from the environment: each test says what it means instead.
OWN_VARIABLES = ("PAYLOAD_LOG_DIR", "ARTIFACTS_DIR", "MISSING_VALUES", "ARTIFACT_SIGNING_KEY")

# The requests of the log: (file under the log directory, rows of each request).
FILES = [
    ("payloads-17.jsonl", [5, 3, 8, 1, 6]),  # the file being written
    ("payloads-17-20261129T221500.jsonl", [4, 7, 2, 5]),  # rotated
    ("worker-2/payloads-23.jsonl", [6, 3, 5, 5]),  # another worker's, in a subdirectory
]
ROWS = sum(sum(sizes) for _, sizes in FILES)
REQUESTS = sum(len(sizes) for _, sizes in FILES)
# Among the requests of the first file: a failed request, another model's, a line cut short (a
# crash mid-write) and a blank line (passed over, not counted).
EXTRA_LINES = [
    {"inputs": None, "outputs": None, "status": 400, "error": "malformed JSON"},
    {"model": "churn", "inputs": [{"age": 30}], "outputs": [{"label": "no"}]},
    '{"model": "iris", "version": 1, "inputs": [{"sepal_length": 5.1, "sep',
    "",
]


@dataclass
class Logged:
    """The artifacts (``iris/1``, ``iris/2``), the log, and what version 1 answered."""

    artifacts: Path
    log: Path
    x: np.ndarray  # float32 [rows, 4], in the order written
    probabilities: np.ndarray  # version 1's, as logged
    where: list[tuple[str, int, int]]  # (file, line, row) of each row


def iris_rows(n_iris: int, n_between: int) -> np.ndarray:
    """Iris rows of every class, and rows part of the way from one class's centre to another's
    (near the boundaries, where two versions disagree)."""
    from training.data import load_iris_frame

    frame = load_iris_frame()
    iris = frame[FEATURES].to_numpy(dtype=np.float64)
    species = frame["species"].to_numpy()
    picked = iris[np.linspace(0, len(iris) - 1, n_iris).astype(int)]
    centres = [iris[species == s].mean(axis=0) for s in CLASSES]
    rng = np.random.default_rng(11)
    between = []
    for i in range(n_between):
        a, b = (centres[0], centres[1]) if i % 3 == 0 else (centres[1], centres[2])
        between.append(a + rng.uniform(0.3, 0.7) * (b - a) + rng.normal(0, 0.05, 4))
    return np.round(np.vstack([picked, *between]), 2).astype(np.float32)


def log_line(fields: dict[str, Any] | str) -> str:
    """One line of the payload log, as the service writes it (see DESIGN.md)."""
    if isinstance(fields, str):
        return fields
    line = {
        "time": "2026-11-29T22:15:03.123456+00:00",
        "request_id": "0f3c",
        "model": "iris",
        "version": 1,
        "protocol": "predict",
        "status": 200,
        "latency_ms": 0.41,
        "inputs": None,
        "outputs": None,
        "warnings": [],
        "error": None,
    }
    return json.dumps(line | fields)


def write_log(log: Path, x: np.ndarray, probabilities: np.ndarray) -> list[tuple[str, int, int]]:
    """Write the rows as requests in FILES, with EXTRA_LINES among the first file's; return the
    (file, line, row) of each row."""
    # Each float32 as its shortest decimal, as the service's log writes it.
    records = [
        {f: float(np.format_float_positional(v)) for f, v in zip(FEATURES, row, strict=True)}
        for row in x
    ]
    where: list[tuple[str, int, int]] = []
    start = 0
    for name, sizes in FILES:
        lines: list[str] = []
        for n, size in enumerate(sizes):
            if name == FILES[0][0] and n == 2:
                lines += [log_line(extra) for extra in EXTRA_LINES]
            rows = range(start, start + size)
            outputs = [
                {
                    "label": CLASSES[int(np.argmax(probabilities[i]))],
                    "probabilities": dict(zip(CLASSES, probabilities[i].tolist(), strict=True)),
                }
                for i in rows
            ]
            inputs = [records[i] for i in rows]
            lines.append(log_line({"inputs": inputs, "outputs": outputs, "warnings": [[]] * size}))
            where += [(name, len(lines), k) for k in range(size)]
            start += size
        path = log / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
    return where


@pytest.fixture(scope="module")
def logged(iris_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Logged:
    """``iris/1`` (the session bundle) and a log of 60 rows as it answered them."""
    root = tmp_path_factory.mktemp("replay")
    artifacts = root / "artifacts"
    shutil.copytree(iris_bundle, artifacts / "iris" / "1")
    version1 = load_version(artifacts / "iris" / "1", "litert")
    assert version1.class_keys == CLASSES
    x = iris_rows(24, ROWS - 24)
    probabilities = version1.probabilities_sync(x)
    where = write_log(root / "log", x, probabilities)
    return Logged(artifacts, root / "log", x, probabilities, where)


@pytest.fixture(scope="module")
def two_versions(logged: Logged, tmp_path_factory: pytest.TempPathFactory) -> Logged:
    """The same log, with artifacts holding ``iris/1`` and ``iris/2``: 3 epochs with another
    seed, a different model (its training makes the tests that use it slow)."""
    artifacts = tmp_path_factory.mktemp("two-versions") / "artifacts"
    shutil.copytree(logged.artifacts / "iris" / "1", artifacts / "iris" / "1")
    assert train(artifacts, epochs=3, seed=7) == artifacts / "iris" / "2"
    return dataclasses.replace(logged, artifacts=artifacts)


def offline(logged: Logged, version: int, runtime: str = "litert") -> dict[str, Any]:
    """The comparison, made here: the version's probabilities for the matrix (no parser), then
    labels, flips and the largest difference with numpy."""
    model = load_version(logged.artifacts / "iris" / str(version), runtime)
    replayed = model.probabilities_sync(logged.x).astype(np.float64)
    before = logged.probabilities.astype(np.float64)
    old, new = before.argmax(axis=1), replayed.argmax(axis=1)
    flips = Counter((CLASSES[a], CLASSES[b]) for a, b in zip(old, new, strict=True) if a != b)
    difference = np.abs(replayed - before)
    row, column = np.unravel_index(difference.argmax(), difference.shape)
    file, line, index = logged.where[row]
    by_source: dict[str, dict[str, int]] = {}
    for (source, target), count in sorted(flips.items()):
        by_source.setdefault(source, {})[target] = count
    return {
        "agree": int((old == new).sum()),
        "disagree": int((old != new).sum()),
        "flips": by_source,
        "largest_difference": {
            "value": float(difference[row, column]),
            "class": CLASSES[column],
            "logged": float(before[row, column]),
            "replayed": float(replayed[row, column]),
            "file": file,
            "line": line,
            "row": index,
        },
    }


def check_report(report: dict[str, Any], logged: Logged, version: int) -> dict[str, Any]:
    """The counts every run must give, and the offline comparison's figures."""
    expected = offline(logged, version)
    assert report["model"] == "iris" and report["replay_version"] == version
    assert report["runtime"] == "litert"
    assert report["files"] == len(FILES)
    assert report["lines_read"] == REQUESTS + 3  # the blank line is not one
    assert report["lines_replayed"] == REQUESTS
    assert report["lines_skipped"] == {"failed": 1, "other_model": 1, "malformed": 1}
    assert report["first_malformed"] == f"{FILES[0][0]} line 5: not valid JSON"
    assert report["rows"] == ROWS and report["rows_by_logged_version"] == {"1": ROWS}
    assert report["unscorable"] == 0 and report["first_unscorable"] is None
    assert report["agree"] == expected["agree"]
    assert report["disagree"] == expected["disagree"]
    assert report["flips"] == expected["flips"]
    largest, wanted = report["largest_difference"], expected["largest_difference"]
    assert largest["value"] == pytest.approx(wanted["value"], abs=1e-12)
    if wanted["value"] > 1e-6:  # else a tie of (near) zeros: any row may be named
        assert {k: largest[k] for k in ("class", "file", "line", "row")} == {
            k: wanted[k] for k in ("class", "file", "line", "row")
        }
        assert largest["logged"] == wanted["logged"]
        assert largest["replayed"] == pytest.approx(wanted["replayed"], abs=1e-12)
    return expected


def arguments(logged: Logged, version: int, *more: str) -> list[str]:
    return [
        *("replay", "--log", str(logged.log), "--artifacts", str(logged.artifacts)),
        *("--model", "iris", "--version", str(version), *more),
    ]


def invoke(args: list[str]):
    """The command in process, through click's runner, without the caller's variables."""
    return CliRunner().invoke(main, args, env=dict.fromkeys(OWN_VARIABLES))


def run(*command: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in OWN_VARIABLES}
    environment["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return subprocess.run(
        command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120
    )


# -- the report equals the offline comparison ---------------------------------------------------
def test_in_process_against_the_version_that_answered(logged: Logged) -> None:
    result = invoke(arguments(logged, 1, "--json"))
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    check_report(report, logged, 1)
    assert report["agree"] == ROWS and report["flips"] == {}
    assert report["largest_difference"]["value"] < 1e-5


@pytest.mark.slow
def test_in_process_against_another_version(two_versions: Logged) -> None:
    result = invoke(arguments(two_versions, 2, "--json"))
    assert result.exit_code == 0, result.stderr
    expected = check_report(json.loads(result.stdout), two_versions, 2)
    assert expected["disagree"] > 0  # else the comparison would prove little


@pytest.mark.parametrize("version", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_python_m_matches_the_offline_comparison(
    logged: Logged, version: int, request: pytest.FixtureRequest
) -> None:
    if version == 2:
        logged = request.getfixturevalue("two_versions")
    result = run(sys.executable, "-m", "keras_serve", *arguments(logged, version, "--json"))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    check_report(json.loads(result.stdout), logged, version)


def test_json_is_one_object_and_nothing_else(logged: Logged) -> None:
    result = run(str(SCRIPT), *arguments(logged, 1, "--json"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("}\n") and result.stdout.count("\n") == 1
    assert isinstance(json.loads(result.stdout), dict)


@pytest.mark.slow
def test_readable_report(two_versions: Logged) -> None:
    logged = two_versions
    expected = offline(logged, 2)
    result = invoke(arguments(logged, 2))
    assert result.exit_code == 0, result.stderr
    text = result.stdout
    assert "Replayed model iris version 2 (litert)" in text
    assert f"lines: {REQUESTS + 3} read, {REQUESTS} replayed" in text
    assert "skipped 1 failed, 1 other model, 1 malformed" in text
    assert f"rows: {ROWS} compared (logged version 1: {ROWS})" in text
    assert f"agree: {expected['agree']} (" in text and f"disagree: {expected['disagree']}" in text
    largest = expected["largest_difference"]
    assert f"largest probability difference: {largest['value']:.6f}, class {largest['class']}" in (
        text
    )
    assert f"at {largest['file']} line {largest['line']}, row {largest['row']}" in text
    for source, targets in expected["flips"].items():
        for target, count in targets.items():
            assert f"    {source} -> {target}: {count}\n" in text + "\n"
    assert not result.stderr


def test_keras_runtime_agrees_with_the_logged_litert_answers(logged: Logged) -> None:
    result = invoke(arguments(logged, 1, "--runtime", "keras", "--json"))
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["runtime"] == "keras"
    assert report["agree"] == ROWS and report["largest_difference"]["value"] < 1e-5


@pytest.mark.slow
def test_batches_give_the_same_report(two_versions: Logged) -> None:
    """Batches of 7 rows split requests across batches: the same report as one batch."""
    logged = two_versions
    whole = replay(logged.log, logged.artifacts, "iris", 2).as_dict()
    assert replay(logged.log, logged.artifacts, "iris", 2, batch_rows=7).as_dict() == whole


# -- rows the replay version cannot read ----------------------------------------------------
def test_unscorable_rows_are_counted_with_the_first_reason(logged: Logged, tmp_path: Path) -> None:
    good = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
    output = {"label": "setosa", "probabilities": {"setosa": 0.9, "versicolor": 0.05}}
    no_petal_width = {k: v for k, v in good.items() if k != "petal_width"}
    rows = [
        good,
        no_petal_width,
        good,
        good | {"sepal_width": "wide"},
        good | {"petal_length": None},
    ]
    log = tmp_path / "log"
    log.mkdir()
    (log / "payloads-1.jsonl").write_text(
        log_line({"inputs": rows, "outputs": [output] * len(rows)}) + "\n"
    )
    for batch_rows in (10_000, 2):
        report = replay(log, logged.artifacts, "iris", 1, batch_rows=batch_rows).as_dict()
        assert (report["rows"], report["unscorable"]) == (2, 3)
        reason = report["first_unscorable"]
        assert reason.startswith("payloads-1.jsonl line 1, row 1: ")
        assert "'petal_width'" in reason and "instances" not in reason
        # Classes absent from the logged answer (virginica) are not compared.
        assert report["largest_difference"]["class"] in ("setosa", "versicolor")


# -- bad input: exit code 2, one line on stderr naming it, no traceback -----------------------
@pytest.fixture
def broken(logged: Logged, tmp_path: Path) -> Path:
    """Artifacts with ``iris/1`` whole and ``iris/3``, a copy whose metadata was edited."""
    artifacts = tmp_path / "artifacts"
    shutil.copytree(logged.artifacts / "iris" / "1", artifacts / "iris" / "1")
    shutil.copytree(logged.artifacts / "iris" / "1", artifacts / "iris" / "3")
    metadata = artifacts / "iris" / "3" / "metadata.json"
    metadata.write_text(metadata.read_text() + " ")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not a log\n")
    (tmp_path / "others").mkdir()
    (tmp_path / "others" / "p.jsonl").write_text(log_line({"model": "churn"}) + "\n")
    return tmp_path


# What each case changes in a good command line (None: a flag without a value), and what
# stderr must say; {tmp} is the ``broken`` directory.
BAD_INPUTS: dict[str, tuple[dict[str, str | None], str]] = {
    "missing log": ({"--log": "{tmp}/nowhere"}, "log directory {tmp}/nowhere does not exist"),
    "log is a file": ({"--log": "{tmp}/empty/notes.txt"}, "is not a directory"),
    "empty log": ({"--log": "{tmp}/empty"}, "log directory {tmp}/empty holds no *.jsonl file"),
    "no line for the model": (
        {"--log": "{tmp}/others"},
        "the log has no line for model iris (1 line read; models in it: churn)",
    ),
    "version that does not exist": (
        {"--version": "9"},
        "model iris has no version 9 under {tmp}/artifacts (versions: 1, 3)",
    ),
    "version that fails verification": (
        {"--version": "3"},
        "version 3 of model iris is rejected: metadata.json",
    ),
    "unknown model": ({"--model": "penguins"}, "model penguins has no published version"),
    "not a model name": ({"--model": "../iris"}, "'../iris' is not a model name"),
    "missing artifacts": ({"--artifacts": "{tmp}/nothing"}, "artifacts directory"),
    "unknown runtime": ({"--runtime": "tflite"}, "Invalid value for '--runtime': 'tflite'"),
    "version not a number": ({"--version": "two"}, "Invalid value for '--version'"),
    "version zero": ({"--version": "0"}, "Invalid value for '--version'"),
    "unknown option": ({"--verbose": None}, "--verbose"),
}


def bad_arguments(broken: Path, logged: Logged, change: dict[str, str | None]) -> list[str]:
    options: dict[str, str | None] = {
        "--log": str(logged.log),
        "--artifacts": str(broken / "artifacts"),
        "--model": "iris",
        "--version": "1",
    }
    args = ["replay"]
    for flag, value in (options | change).items():
        args += [flag] if value is None else [flag, value.format(tmp=broken)]
    return args


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_in_process(case: str, broken: Path, logged: Logged) -> None:
    change, message = BAD_INPUTS[case]
    result = invoke(bad_arguments(broken, logged, change))
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # not an error escaping the command
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("keras-serve replay: error: ")
    assert message.format(tmp=broken) in result.stderr


@pytest.mark.parametrize("case", ["missing log", "version that fails verification"])
def test_bad_input_in_a_process(case: str, broken: Path, logged: Logged) -> None:
    change, message = BAD_INPUTS[case]
    result = run(str(SCRIPT), *bad_arguments(broken, logged, change))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("keras-serve replay: error: ")
    assert message.format(tmp=broken) in result.stderr


def test_missing_required_option() -> None:
    result = invoke(["replay", "--log", "somewhere", "--version", "1"])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert "Missing option '--model'" in result.stderr


# -- help ---------------------------------------------------------------------------------------
def test_help_names_the_commands_and_options() -> None:
    top = run(str(SCRIPT), "--help")
    assert top.returncode == 0 and "replay" in top.stdout, top.stderr
    sub = run(sys.executable, "-m", "keras_serve", "replay", "--help")
    assert sub.returncode == 0, sub.stderr
    assert sub.stdout.startswith("Usage: keras-serve replay [OPTIONS]")
    for option in ("--log", "--artifacts", "--model", "--version", "--runtime", "--json"):
        assert option in sub.stdout
    assert invoke(["replay", "-h"]).stdout == invoke(["replay", "--help"]).stdout


def test_no_command_shows_the_help() -> None:
    result = invoke([])
    assert "replay" in result.output
    assert result.exit_code in (0, 2)  # click 8.2 made it 2


def test_readable_report_against_the_version_that_answered(logged: Logged) -> None:
    result = invoke(arguments(logged, 1))
    assert result.exit_code == 0, result.stderr
    assert f"agree: {ROWS} (100.0%), disagree: 0" in result.stdout
    assert "label flips" not in result.stdout and "unscorable" not in result.stdout


# -- typed features: blanks, unseen categories, true/false, ignored columns -------------------
@pytest.mark.slow
def test_typed_rows_are_read_as_the_service_reads_them(typed_bundle: Path, tmp_path: Path) -> None:
    """The logged answers come from the service itself (MISSING_VALUES=impute); replaying the
    same version reads every kind of value the same way."""
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    artifacts = tmp_path / "artifacts"
    shutil.copytree(typed_bundle, artifacts / "churn" / "1")
    base = {"age": 30, "plan": "basic", "region": "north", "member": True, "monthly_spend": 20.5}
    rows = [
        base,
        base | {"age": None, "plan": None, "member": None},  # blanks where training had them
        base | {"plan": "platinum", "member": False},  # a category training did not see
        base | {"plan": "<unseen>", "member": False},  # the same, as the payload log writes it
        base | {"id": 7, "name": "customer 00007"},  # columns training left out
        base | {"age": 71, "region": "south", "monthly_spend": 300.0},
        base | {"monthly_spend": None},  # a blank where training had none: imputed
    ]
    settings = Settings(artifacts_dir=artifacts, model_name="churn", missing_values="impute")
    with TestClient(create_app(settings)) as client:
        answer = client.post("/predict", json={"instances": rows})
    assert answer.status_code == 200, answer.text
    outputs = [
        {"label": p["label"], "probabilities": p["probabilities"]}
        for p in answer.json()["predictions"]
    ]
    refused = base | {"age": "old"}  # text where a number belongs: no version reads it
    log = tmp_path / "log"
    log.mkdir()
    lines = [
        {"model": "churn", "inputs": rows, "outputs": outputs},
        {"model": "churn", "inputs": [refused], "outputs": outputs[:1]},
    ]
    (log / "payloads-1.jsonl").write_text("".join(log_line(line) + "\n" for line in lines))

    imputed = replay(log, artifacts, "churn", 1, missing_values="impute").as_dict()
    assert (imputed["rows"], imputed["agree"], imputed["unscorable"]) == (7, 7, 1)
    assert imputed["largest_difference"]["value"] < 1e-5
    assert imputed["first_unscorable"].startswith("payloads-1.jsonl line 2, row 0: ")
    assert "age" in imputed["first_unscorable"]

    result = invoke(
        [
            *("replay", "--log", str(log), "--artifacts", str(artifacts)),
            *("--model", "churn", "--version", "1", "--json"),
        ]
    )
    refusing = json.loads(result.stdout)  # the default: MISSING_VALUES=refuse
    assert (refusing["rows"], refusing["agree"], refusing["unscorable"]) == (6, 6, 2)
    assert refusing["first_unscorable"].startswith("payloads-1.jsonl line 1, row 6: ")
    assert "monthly_spend" in refusing["first_unscorable"]
