"""``python -m training``: arguments, exit codes, stdout/stderr, through the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

import bundle
from tests.conftest import make_binary_csv
from tests.training.conftest import CLI, ROOT, cli_environment
from training.__main__ import EXIT_BAD_INPUT, main, parse_args

RunCli = Callable[..., subprocess.CompletedProcess[str]]


# --- argument parsing, in-process -------------------------------------------------------------


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ARTIFACTS_DIR", raising=False)
    args = parse_args([])
    assert args.data is None and args.target is None and args.features is None
    assert args.name is None
    assert args.artifacts == Path("artifacts")
    assert args.encoding == "sparse"
    assert (args.epochs, args.seed, args.test_size, args.quiet) == (200, 42, 0.2, False)


def test_artifacts_default_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARTIFACTS_DIR", "/srv/models")
    assert parse_args([]).artifacts == Path("/srv/models")
    assert parse_args(["--artifacts", "here"]).artifacts == Path("here")


def test_all_options() -> None:
    args = parse_args(
        [
            *("--data", "d.csv", "--target", "y", "--features", "a,b", "--name", "m"),
            *("--artifacts", "out", "--encoding", "onehot", "--epochs", "7", "--seed", "3"),
            *("--test-size", "0.25", "--quiet"),
        ]
    )
    assert args.data == Path("d.csv")
    assert (args.target, args.features, args.name) == ("y", "a,b", "m")
    assert (args.artifacts, args.encoding) == (Path("out"), "onehot")
    assert (args.epochs, args.seed, args.test_size, args.quiet) == (7, 3, 0.25, True)


@pytest.mark.parametrize(
    "argv",
    [
        ["--encoding", "ordinal"],
        ["--epochs", "many"],
        ["--test-size", "half"],
        ["--unknown"],
        ["positional"],
    ],
)
def test_usage_errors_exit_2_with_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as caught:
        parse_args(argv)
    assert caught.value.code == EXIT_BAD_INPUT == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("training: error: ")
    assert captured.err.count("\n") == 1


def test_main_reports_training_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    code = main(
        ["--data", str(tmp_path / "none.csv"), "--target", "y", "--artifacts", str(tmp_path)]
    )
    assert code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"training: error: data file not found: {tmp_path / 'none.csv'}\n"


def test_main_splits_and_trims_features(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    code = main(["--features", " petal_width , nope,", "--artifacts", str(tmp_path / "a")])
    assert code == 2
    assert capsys.readouterr().err == "training: error: --features names unknown column 'nope'\n"


# --- bad input through the real CLI --------------------------------------------------------------


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _rows(label: str, n: int, start: int = 0) -> str:
    return "".join(f"{i}.5,{(i * 7) % 5}.25,{label}\n" for i in range(start, start + n))


def _case(name: str, tmp: Path) -> tuple[list[str], str | tuple[str, ...]]:
    """Arguments (besides --artifacts) and the fragments the one stderr line must contain."""
    binary = make_binary_csv(tmp / "binary.csv")
    good = ["--data", str(binary), "--target", "label", "--features", "a,b,c"]
    cases: dict[str, tuple[list[str], str]] = {
        "missing-file": (
            ["--data", str(tmp / "absent.csv"), "--target", "label"],
            f"data file not found: {tmp / 'absent.csv'}",
        ),
        "data-is-directory": (["--data", str(tmp), "--target", "label"], "is a directory"),
        "missing-target": (
            ["--data", str(binary), "--target", "species"],
            "target column 'species' not found; columns are: note, b, label, a, c",
        ),
        "missing-feature": (
            [*good[:4], "--features", "a,b,d"],
            "--features names unknown column 'd'",
        ),
        "unknown-categorical-and-exclude": (
            [*good[:4], "--categorical", "zip", "--exclude", "label,e"],
            (
                "--categorical names unknown column 'zip'",
                "--exclude names unknown column 'e'",
                "target column 'label' is listed in --exclude",
            ),
        ),
        "several-bad-options": (
            [
                *good[:4],
                *("--features", "a,q", "--name", "a/b", "--test-size", "0.7"),
                *("--epochs", "0", "--threshold", "2"),
            ],
            (
                "model name 'a/b'",
                "--test-size must be between 0 and 0.5, got 0.7",
                "--epochs must be at least 1, got 0",
                "--threshold must be between 0 and 1, got 2",
                "--features names unknown column 'q'",
            ),
        ),
        "empty-file": (
            ["--data", str(_write(tmp / "empty.csv", "")), "--target", "label"],
            "data file is empty",
        ),
        "header-only": (
            ["--data", str(_write(tmp / "header.csv", "x,y,label\n")), "--target", "label"],
            "header but no rows",
        ),
        "single-class": (
            [
                "--data",
                str(_write(tmp / "one.csv", "x,y,label\n" + _rows("a", 30))),
                "--target",
                "label",
            ],
            "single class ('a')",
        ),
        "too-few-rows": (
            [
                "--data",
                str(_write(tmp / "few.csv", "x,y,label\n" + _rows("a", 30) + _rows("b", 2, 30))),
                "--target",
                "label",
            ],
            "class 'b' has 2 rows; each class needs at least 6",
        ),
        "blank-feature-column": (
            [
                "--data",
                str(_write(tmp / "nan.csv", "x,y,label\n1, ,a\n2.5,NA,b\n3,,a\n")),
                "--target",
                "label",
            ],
            "feature column 'y' has no values",
        ),
        "not-a-csv": (
            [
                "--data",
                str(_write(tmp / "ragged.csv", "x,label\n1,a\n1,a,b,c\n")),
                "--target",
                "label",
            ],
            "as CSV",
        ),
        "artifacts-is-a-file": (
            ["--artifacts", str(_write(tmp / "afile", "x"))],
            "Not a directory",
        ),
        "artifacts-under-a-file": (
            ["--artifacts", str(_write(tmp / "afile", "x") / "sub")],
            f"cannot write to artifacts directory {tmp / 'afile' / 'sub'}",
        ),
        "bad-encoding": (["--encoding", "ordinal"], "invalid choice: 'ordinal'"),
        "data-without-target": (["--data", str(binary)], "--target is required with --data"),
        "bad-name": ([*good, "--name", "../up"], "model name '../up'"),
        "bad-test-size": (["--test-size", "0.9"], "--test-size must be between 0 and 0.5"),
        "bad-epochs": (["--epochs", "0"], "--epochs must be at least 1"),
        "epochs-not-a-number": (["--epochs", "ten"], "invalid int value: 'ten'"),
    }
    return cases[name]


BAD_INPUTS = [
    "missing-file",
    "data-is-directory",
    "missing-target",
    "missing-feature",
    "unknown-categorical-and-exclude",
    "several-bad-options",
    "empty-file",
    "header-only",
    "single-class",
    "too-few-rows",
    "blank-feature-column",
    "not-a-csv",
    "artifacts-is-a-file",
    "artifacts-under-a-file",
    "bad-encoding",
    "data-without-target",
    "bad-name",
    "bad-test-size",
    "bad-epochs",
    "epochs-not-a-number",
]


def _published_anything(root: Path) -> list[str]:
    """Version or staging directories anywhere below ``root``."""
    if not root.is_dir():
        return []
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_dir() and (p.name.isdigit() or p.name.startswith(bundle.TEMP_PREFIX))
    )


@dataclass
class BadRun:
    result: subprocess.CompletedProcess[str]
    fragment: str | tuple[str, ...]
    artifacts: Path
    inputs: Path


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BadRun]:
    """Every bad input through the real CLI, the processes started together to save time."""
    started = {}
    for case in BAD_INPUTS:
        root = tmp_path_factory.mktemp(case)
        inputs = root / "inputs"
        inputs.mkdir()
        args, fragment = _case(case, inputs)
        artifacts = root / "artifacts"
        if "--artifacts" not in args:
            args = [*args, "--artifacts", str(artifacts)]
        if "--epochs" not in args:
            args = [*args, "--epochs", "3"]  # should validation ever let it through, keep it short
        process = subprocess.Popen(
            [*CLI, *args],
            cwd=ROOT,
            env=cli_environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started[case] = (process, fragment, artifacts, inputs)
    runs = {}
    for case, (process, fragment, artifacts, inputs) in started.items():
        try:
            stdout, stderr = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
        result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
        runs[case] = BadRun(result, fragment, artifacts, inputs)
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_exits_2_with_one_line_and_publishes_nothing(
    case: str, bad_runs: dict[str, BadRun]
) -> None:
    run = bad_runs[case]
    result = run.result
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert result.stderr == lines[0] + "\n"
    assert lines[0].startswith("training: error: ")
    fragments = (run.fragment,) if isinstance(run.fragment, str) else run.fragment
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in result.stderr
    assert not run.artifacts.exists()  # bad input is caught before anything is written
    assert _published_anything(run.inputs) == []


@pytest.mark.slow
def test_bad_input_is_detected_before_tensorflow_is_imported(tmp_path: Path) -> None:
    """Every kind of bad input fails fast: TensorFlow and Keras are never imported."""
    script = f"""
import io, json, sys, contextlib
from tests.training.test_cli import BAD_INPUTS, _case
from pathlib import Path
from training.__main__ import main
root = Path({str(tmp_path)!r})
codes = {{}}
for i, case in enumerate(BAD_INPUTS):
    inputs = root / str(i)
    inputs.mkdir()
    args, _ = _case(case, inputs)
    if "--artifacts" not in args:
        args = [*args, "--artifacts", str(root / "artifacts")]
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            codes[case] = main(args)
        except SystemExit as exc:
            codes[case] = exc.code
print(json.dumps({{"codes": codes, "tf": "tensorflow" in sys.modules,
                  "keras": "keras" in sys.modules}}))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["codes"] == dict.fromkeys(BAD_INPUTS, 2)
    assert report["tf"] is False
    assert report["keras"] is False


# --- successful runs through the real CLI ----------------------------------------------------------


@pytest.mark.slow
def test_quiet_prints_only_the_published_path(tmp_path: Path, run_cli: RunCli) -> None:
    frame = pd.read_csv(make_binary_csv(tmp_path / "raw.csv")).drop(columns="note")
    data = tmp_path / "X.csv"
    frame.to_csv(data, index=False)
    artifacts = tmp_path / "artifacts"

    result = run_cli(
        "--data",
        str(data),
        "--target",
        "label",
        "--quiet",
        "--artifacts",
        str(artifacts),
        "--epochs",
        "3",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{artifacts / 'X' / '1'}\n"
    published = Path(result.stdout.strip())
    bundle.verify_manifest(published)
    metadata = bundle.read_metadata(published)
    assert (metadata.name, metadata.version) == ("X", 1)
    assert metadata.feature_names == ["b", "a", "c"]  # file order when --features is absent
    assert metadata.training["epochs_requested"] == 3


@pytest.mark.slow
def test_environment_sets_artifacts_and_signing_key(tmp_path: Path, run_cli: RunCli) -> None:
    data = make_binary_csv(tmp_path / "binary.csv")
    artifacts = tmp_path / "from-env"
    result = run_cli(
        "--data",
        str(data),
        "--target",
        "label",
        "--features",
        "a,b,c",
        "--name",
        "yn",
        "--encoding",
        "onehot",
        "--epochs",
        "3",
        "--quiet",
        env={"ARTIFACTS_DIR": str(artifacts), "ARTIFACT_SIGNING_KEY": "cli-key"},
    )
    assert result.returncode == 0, result.stderr
    published = artifacts / "yn" / "1"
    assert result.stdout == f"{published}\n"
    bundle.verify_manifest(published, signing_key="cli-key")
    with pytest.raises(bundle.BundleError, match="signature does not match"):
        bundle.verify_manifest(published, signing_key="wrong")
    metadata = bundle.read_metadata(published)
    assert (metadata.task, metadata.encoding, metadata.output_units) == ("binary", "onehot", 2)
    assert metadata.classes == ["no", "yes"]
