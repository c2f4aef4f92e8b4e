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


# Runs ``python -m training`` once per case, each in a process of its own forked from one
# interpreter that has already imported what every run past its arguments imports (pandas,
# scikit-learn: ~1.3 s a process). Each child runs training/__main__.py as ``__main__`` with the
# case's arguments, its stdout and stderr on files of their own, and exits as that process would
# (SystemExit, atexit, flushing). Twenty fresh interpreters at once took 45-60 s on two cores;
# test_forked_runs_are_those_of_fresh_processes checks that the two give the same.
FORKED_RUNS = """
import gc, json, os, runpy, sys

cases = json.loads(sys.argv[1])
import training.pipeline  # what every run past its arguments imports
gc.freeze()  # else each child's collections at exit touch (copy) every page it shares: ~0.4 s

codes = {}
for case in cases:
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        with open(case["stdout"], "wb") as out, open(case["stderr"], "wb") as err:
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
        sys.argv = ["training", *case["args"]]
        runpy.run_module("training", run_name="__main__", alter_sys=True)
        sys.exit(0)  # not reached: training/__main__.py ends with sys.exit(main())
    codes[case["name"]] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
print(json.dumps(codes))
"""


def run_forked(
    cases: dict[str, list[str]], directory: Path
) -> dict[str, subprocess.CompletedProcess[str]]:
    """``python -m training ARGS`` for each case, as FORKED_RUNS runs them."""
    plan = [
        {
            "name": name,
            "args": args,
            "stdout": str(directory / f"{index}.out"),
            "stderr": str(directory / f"{index}.err"),
        }
        for index, (name, args) in enumerate(cases.items())
    ]
    driver = subprocess.run(
        [sys.executable, "-c", FORKED_RUNS, json.dumps(plan)],
        cwd=ROOT,
        env=cli_environment(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert driver.returncode == 0 and driver.stderr == "", driver.stderr
    codes = json.loads(driver.stdout)
    return {
        case["name"]: subprocess.CompletedProcess(
            [*CLI, *case["args"]],
            codes[case["name"]],
            Path(case["stdout"]).read_text(),
            Path(case["stderr"]).read_text(),
        )
        for case in plan
    }


def bad_arguments(case: str, root: Path) -> tuple[list[str], str | tuple[str, ...], Path, Path]:
    """The case's arguments (with --artifacts and a short --epochs), what stderr must say, and
    the artifacts and inputs directories under ``root``."""
    inputs = root / "inputs"
    inputs.mkdir()
    args, fragment = _case(case, inputs)
    artifacts = root / "artifacts"
    if "--artifacts" not in args:
        args = [*args, "--artifacts", str(artifacts)]
    if "--epochs" not in args:
        args = [*args, "--epochs", "3"]  # should validation ever let it through, keep it short
    return args, fragment, artifacts, inputs


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BadRun]:
    """Every bad input through the real CLI, each in a process of its own (FORKED_RUNS)."""
    planned = {case: bad_arguments(case, tmp_path_factory.mktemp(case)) for case in BAD_INPUTS}
    results = run_forked(
        {case: args for case, (args, *_) in planned.items()}, tmp_path_factory.mktemp("outputs")
    )
    return {
        case: BadRun(results[case], fragment, artifacts, inputs)
        for case, (_, fragment, artifacts, inputs) in planned.items()
    }


@pytest.mark.slow
def test_forked_runs_are_those_of_fresh_processes(
    bad_runs: dict[str, BadRun], run_cli: RunCli
) -> None:
    """The harness of ``bad_runs`` against ``python -m training`` started afresh: a usage error
    (argparse) and one found in the data, the same exit code, stdout and stderr."""
    for case in ("bad-encoding", "missing-target"):
        forked = bad_runs[case].result
        fresh = run_cli(*forked.args[len(CLI) :])
        assert (forked.returncode, forked.stdout, forked.stderr) == (
            fresh.returncode,
            fresh.stdout,
            fresh.stderr,
        )


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


@dataclass
class GoodRun:
    result: subprocess.CompletedProcess[str]
    root: Path  # the run's own directory: its data, and its artifacts unless the environment's


@pytest.fixture(scope="module")
def good_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, GoodRun]:
    """The two successful runs of the tests below, through the real CLI, started together: each
    spends most of its ~10 s importing TensorFlow on one core, so two at once take about the
    time of one."""
    quiet = tmp_path_factory.mktemp("quiet")
    frame = pd.read_csv(make_binary_csv(quiet / "raw.csv")).drop(columns="note")
    frame.to_csv(quiet / "X.csv", index=False)
    environment = tmp_path_factory.mktemp("environment")
    data = make_binary_csv(environment / "binary.csv")
    runs = {
        "quiet": (
            quiet,
            [
                *("--data", str(quiet / "X.csv"), "--target", "label", "--quiet"),
                *("--artifacts", str(quiet / "artifacts"), "--epochs", "3"),
            ],
            {},
        ),
        "environment": (
            environment,
            [
                *("--data", str(data), "--target", "label", "--features", "a,b,c"),
                *("--name", "yn", "--encoding", "onehot", "--epochs", "3", "--quiet"),
            ],
            {
                "ARTIFACTS_DIR": str(environment / "from-env"),
                "ARTIFACT_SIGNING_KEY": "cli-key",
            },
        ),
    }
    processes = {
        name: subprocess.Popen(
            [*CLI, *args],
            cwd=ROOT,
            env=cli_environment(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (_, args, env) in runs.items()
    }
    done = {}
    for name, process in processes.items():
        try:
            stdout, stderr = process.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
        result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
        done[name] = GoodRun(result, runs[name][0])
    return done


@pytest.mark.slow
def test_quiet_prints_only_the_published_path(good_runs: dict[str, GoodRun]) -> None:
    result, artifacts = good_runs["quiet"].result, good_runs["quiet"].root / "artifacts"
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{artifacts / 'X' / '1'}\n"
    published = Path(result.stdout.strip())
    bundle.verify_manifest(published)
    metadata = bundle.read_metadata(published)
    assert (metadata.name, metadata.version) == ("X", 1)
    assert metadata.feature_names == ["b", "a", "c"]  # file order when --features is absent
    assert metadata.training["epochs_requested"] == 3


@pytest.mark.slow
def test_environment_sets_artifacts_and_signing_key(good_runs: dict[str, GoodRun]) -> None:
    result, artifacts = good_runs["environment"].result, good_runs["environment"].root / "from-env"
    assert result.returncode == 0, result.stderr
    published = artifacts / "yn" / "1"
    assert result.stdout == f"{published}\n"
    bundle.verify_manifest(published, signing_key="cli-key")
    with pytest.raises(bundle.BundleError, match="signature does not match"):
        bundle.verify_manifest(published, signing_key="wrong")
    metadata = bundle.read_metadata(published)
    assert (metadata.task, metadata.encoding, metadata.output_units) == ("binary", "onehot", 2)
    assert metadata.classes == ["no", "yes"]
