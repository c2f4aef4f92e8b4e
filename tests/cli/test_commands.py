"""``keras-serve train``, ``serve`` and ``models`` run as users run them (the console script, in a
process of its own), against ``python -m training``, ``python -m service`` and the service's own
bundle checks as oracles; and ``--quiet`` training that writes nothing on stderr."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import joblib
import pytest
from sklearn.preprocessing import LabelEncoder

import bundle
from keras_serve.cli import SERVE_ENVIRONMENT
from service.errors import BundleRejected
from service.model import load_version
from service.settings import Settings
from tests.conftest import make_binary_csv
from tests.support import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = str(Path(sys.executable).parent / "keras-serve")
TRAINING = (sys.executable, "-m", "training")
# What the commands read from the environment: each test says what it means instead. Not
# TF_CPP_MIN_LOG_LEVEL either: --quiet must be quiet in a plain shell.
OWN_VARIABLES = (
    "ARTIFACTS_DIR",
    "ARTIFACT_SIGNING_KEY",
    "API_KEY",
    "TF_CPP_MIN_LOG_LEVEL",
    *SERVE_ENVIRONMENT.values(),
)


def environment(**extra: str) -> dict[str, str]:
    """The test process's environment without the commands' own variables, plus ``extra``;
    columns fixed, so that help text wraps the same in every terminal."""
    env = {k: v for k, v in os.environ.items() if k not in OWN_VARIABLES}
    return env | {"COLUMNS": "100", "GRPC_PORT": "0"} | extra


def run(*command: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        cwd=ROOT,
        env=environment(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def one_error_line(result: subprocess.CompletedProcess[str], command: str) -> str:
    """The one line a bad input gives, checked: exit code 2, nothing on stdout, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith(f"{command}: error: "), result.stderr
    return result.stderr.removeprefix(f"{command}: error: ").rstrip("\n")


# -- the command and its subcommands ------------------------------------------------------------
def test_help_lists_the_subcommands() -> None:
    result = run(SCRIPT, "--help")
    assert result.returncode == 0, result.stderr
    for command in ("train", "serve", "models", "replay"):
        assert re.search(rf"^  {command}  ", result.stdout, re.MULTILINE), result.stdout


# -- train ----------------------------------------------------------------------------------------
def options_of(help_text: str) -> list[str]:
    return sorted(set(re.findall(r"--[a-z][a-z-]*", help_text)))


def test_train_help_is_trainings_own() -> None:
    ours = run(SCRIPT, "train", "--help")
    theirs = run(*TRAINING, "--help")
    assert ours.returncode == theirs.returncode == 0, ours.stderr
    assert ours.stderr == ""
    assert ours.stdout.startswith("usage: keras-serve train [-h] [--data DATA]")
    # The same options, described the same (the usage lines wrap after another program name).
    assert options_of(ours.stdout) == options_of(theirs.stdout)
    for option in ("--data", "--target", "--features", "--artifacts", "--epochs", "--quiet"):
        assert option in ours.stdout
    assert ours.stdout.split("\noptions:\n")[1] == theirs.stdout.split("\noptions:\n")[1]
    assert run(SCRIPT, "train", "-h").stdout == ours.stdout


@pytest.mark.parametrize(
    "arguments",
    [
        ["--bogus"],
        ["--epochs", "many"],
        ["--encoding", "dense"],
        ["--data"],
        ["--data", "{tmp}/absent.csv", "--target", "y"],
        ["--features", " , "],
        ["--data", "{csv}", "--target", "label", "--features", "a,q", "--test-size", "0.9"],
    ],
    ids=[
        "unknown-option",
        "not-a-number",
        "not-a-choice",
        "missing-value",
        "missing-file",
        "empty-list",
        "several-problems",
    ],
)
def test_train_bad_input_is_trainings_one_line(arguments: list[str], tmp_path: Path) -> None:
    """Exit code 2 and python -m training's message, named after this command; nothing
    trained, nothing published."""
    csv = make_binary_csv(tmp_path / "binary.csv")
    argv = [a.format(tmp=tmp_path, csv=csv) for a in arguments]
    artifacts = ["--artifacts", str(tmp_path / "artifacts")]
    ours = run(SCRIPT, "train", *argv, *artifacts)
    theirs = run(*TRAINING, *argv, *artifacts)
    assert one_error_line(ours, "keras-serve train") == one_error_line(theirs, "training")
    assert not (tmp_path / "artifacts").exists()


def same_bundle(first: Path, second: Path) -> None:
    """Two published versions from the same data, options and seed: the same model."""
    # model.keras is a zip archive holding the time it was written: its digest differs.
    differ = {"created_at", "model_sha256"}
    one, two = bundle.read_metadata(first), bundle.read_metadata(second)
    assert one.model_dump(exclude=differ) == two.model_dump(exclude=differ)
    for name in (bundle.MODEL_TFLITE, bundle.LABEL_ENCODER, bundle.METRICS_JSON):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


@pytest.mark.slow
def test_train_publishes_what_python_m_training_publishes(tmp_path: Path) -> None:
    """The same CSV and options through both commands, at once (ours with ARTIFACTS_DIR from
    the environment): the path printed, nothing on stderr with --quiet, the same model."""
    csv = make_binary_csv(tmp_path / "binary.csv")
    options = ["--data", str(csv), "--target", "label", "--epochs", "4", "--seed", "3", "--quiet"]
    commands = {
        "ours": ([SCRIPT, "train", *options], environment(ARTIFACTS_DIR=str(tmp_path / "ours"))),
        "theirs": ([*TRAINING, *options, "--artifacts", str(tmp_path / "theirs")], environment()),
    }
    processes = {
        who: subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for who, (command, env) in commands.items()
    }
    results = {who: process.communicate(timeout=300) for who, process in processes.items()}
    for who, (out, err) in results.items():
        assert processes[who].returncode == 0, err
        assert err == ""
        assert out == f"{tmp_path / who / 'binary' / '1'}\n"
    published = tmp_path / "ours" / "binary" / "1"
    bundle.verify_manifest(published)
    assert bundle.read_metadata(published).training["epochs_requested"] == 4
    same_bundle(published, tmp_path / "theirs" / "binary" / "1")


# -- --quiet --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_quiet_training_writes_nothing_on_stderr(tmp_path: Path) -> None:
    """The embedded Iris, --quiet, in a plain environment (no TF_CPP_MIN_LOG_LEVEL): the
    published path on stdout and not one byte on stderr (TensorFlow's, absl's and LiteRT's
    C++ lines included)."""
    artifacts = tmp_path / "artifacts"
    result = run(*TRAINING, "--artifacts", str(artifacts), "--epochs", "2", "--quiet")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout == f"{artifacts / 'iris' / '1'}\n"
    bundle.verify_manifest(artifacts / "iris" / "1")


def native_noise_then(outcome: BaseException | None):
    """A stand-in for training's run that writes to file descriptor 2 as C++ libraries do,
    then ends with ``outcome``."""

    def fake_run(options: object) -> Path:
        os.write(2, b"I0000 port.cc:153] oneDNN custom operations are on.\n")
        if outcome is not None:
            raise outcome
        return Path("/published")

    return fake_run


@pytest.mark.parametrize(
    ("outcome", "code", "err"),
    [
        (None, 0, ""),
        (
            OSError(28, "No space left on device"),
            2,
            "training: error: No space left on device; the run stopped and its staging "
            "directory was removed\n",
        ),
        (RuntimeError("a bug"), None, "I0000 port.cc:153] oneDNN custom operations are on.\n"),
    ],
    ids=["success", "expected-error", "unexpected-error"],
)
def test_quiet_holds_native_output_and_gives_it_back_on_a_crash(
    outcome: BaseException | None,
    code: int | None,
    err: str,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Descriptor 2 is held while the run runs and put back after: a run that ends well or
    with bad input shows none of it (only its own one line); one that fails unexpectedly
    shows it before the exception goes on."""
    import training.pipeline
    from training.__main__ import main

    monkeypatch.setattr(training.pipeline, "run", native_noise_then(outcome))
    if code is None:
        with pytest.raises(RuntimeError, match="a bug"):
            main(["--quiet"])
    else:
        assert main(["--quiet"]) == code
    assert capfd.readouterr().err == err
    os.write(2, b"after\n")  # the descriptor is back
    assert capfd.readouterr().err == "after\n"


# -- models ---------------------------------------------------------------------------------------
def corrupt(version: Path, how: str) -> None:
    """Break a copied version as a disk, an editor or an attacker might."""
    if how == "model file changed":
        with (version / bundle.MODEL_TFLITE).open("ab") as file:
            file.write(b"\0")
    elif how == "metadata removed":
        (version / bundle.METADATA).unlink()
    elif how == "manifest not JSON":
        (version / bundle.MANIFEST).write_text("{")
    elif how == "model swapped, manifest rewritten":
        (version / bundle.MODEL_TFLITE).write_bytes(b"TFL3" + b"\0" * 64)
        bundle.write_manifest(version)
    elif how == "encoder of other classes, manifest rewritten":
        joblib.dump(LabelEncoder().fit(["a", "b", "c"]), version / bundle.LABEL_ENCODER)
        bundle.write_manifest(version)
    elif how == "metrics not JSON, manifest rewritten":
        (version / bundle.METRICS_JSON).write_text("not json")
        bundle.write_manifest(version)
    else:
        raise AssertionError(how)


CORRUPTIONS = [
    "model file changed",
    "metadata removed",
    "manifest not JSON",
    "model swapped, manifest rewritten",
    "encoder of other classes, manifest rewritten",
    "metrics not JSON, manifest rewritten",
]


def models_json(artifacts: Path, **env: str) -> dict:
    result = run(SCRIPT, "models", "--artifacts", str(artifacts), "--json", **env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return json.loads(result.stdout)  # one JSON object and nothing else


@pytest.fixture
def repository(tmp_path: Path, iris_bundle: Path) -> Path:
    """iris/1 (good), iris/2..7 (each broken one way), iris/8 (a link to 1), a label naming a
    version that is not there, a model directory with no version, a hidden directory."""
    artifacts = tmp_path / "artifacts"
    shutil.copytree(iris_bundle, artifacts / "iris" / "1")
    for number, how in enumerate(CORRUPTIONS, start=2):
        shutil.copytree(iris_bundle, artifacts / "iris" / str(number))
        corrupt(artifacts / "iris" / str(number), how)
    (artifacts / "iris" / "8").symlink_to("1")
    bundle.write_serving(artifacts / "iris", bundle.ServingConfig(labels={"stable": 1, "old": 9}))
    (artifacts / "waiting").mkdir()
    (artifacts / ".tmp-staging").mkdir()
    return artifacts


def test_models_json_lists_every_version_with_the_services_reasons(
    repository: Path, iris_bundle: Path
) -> None:
    listing = models_json(repository)
    assert listing["artifacts"] == str(repository)
    assert listing["signature_checked"] is False
    assert [m["name"] for m in listing["models"]] == ["iris", "waiting"]
    iris, waiting = listing["models"]
    assert waiting["versions"] == [] and waiting["newest_verified"] is None

    assert iris["labels"] == {"stable": 1, "old": 9}
    assert iris["problems"] == ["label old names version 9, which does not exist"]
    assert iris["newest_verified"] == 1
    versions = {v["version"]: v for v in iris["versions"]}
    assert sorted(versions) == list(range(1, 9))

    metadata = bundle.read_metadata(iris_bundle)
    good = versions[1]
    assert good["verified"] is True and good["problem"] is None
    assert good["labels"] == ["stable"]
    assert good["accuracy"] == metadata.metrics["accuracy"]
    assert (good["features"], good["classes"]) == (4, 3)
    assert good["created_at"] == metadata.created_at.isoformat()
    assert good["format_version"] == bundle.FORMAT_VERSION
    load_version(repository / "iris" / "1")  # the oracle agrees: it loads

    # Each broken version: refused, with the reason the service gives when it refuses to load it.
    for number, how in enumerate(CORRUPTIONS, start=2):
        version = versions[number]
        assert version["verified"] is False, how
        with pytest.raises(BundleRejected) as refused:
            load_version(repository / "iris" / str(number))
        assert version["problem"] == str(refused.value), how
    # What it says of itself is still shown, when its metadata can be read.
    assert versions[2]["accuracy"] == metadata.metrics["accuracy"]
    assert versions[3]["accuracy"] is None  # metadata removed
    link = versions[8]
    assert link["verified"] is False and "symbolic link" in link["problem"]


def test_models_table(repository: Path) -> None:
    result = run(SCRIPT, "models", "--artifacts", str(repository))
    assert result.returncode == 0 and result.stderr == "", result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        *("MODEL", "VERSION", "VERIFIED", "CREATED", "(UTC)", "ACCURACY", "FEATURES"),
        *("CLASSES", "LABELS"),
    ]
    rows = {tuple(line.split()[:3]) for line in lines if line.startswith(("iris", "waiting"))}
    assert ("iris", "1", "yes") in rows
    assert {("iris", str(n), "NO") for n in range(2, 9)} <= rows
    assert ("waiting", "-", "-") in rows
    assert "  ! iris 2: model.tflite does not match its sha256 in manifest.json" in lines
    assert "  ! iris 3: metadata.json is listed in manifest.json but missing" in lines
    assert "  ! iris: label old names version 9, which does not exist" in lines
    assert "  ! waiting: no published version" in lines
    assert "staging" not in result.stdout


def test_models_checks_signatures_with_the_services_key(tmp_path: Path, iris_bundle: Path) -> None:
    artifacts = tmp_path / "artifacts"
    shutil.copytree(iris_bundle, artifacts / "iris" / "1")
    (version,) = models_json(artifacts, ARTIFACT_SIGNING_KEY="k")["models"][0]["versions"]
    assert version["problem"] == "manifest.json is not signed"
    bundle.write_manifest(artifacts / "iris" / "1", signing_key="k")
    listing = models_json(artifacts, ARTIFACT_SIGNING_KEY="k")
    assert listing["signature_checked"] is True
    assert listing["models"][0]["versions"][0]["verified"] is True


def test_models_of_an_empty_directory(tmp_path: Path) -> None:
    assert models_json(tmp_path) == {
        "artifacts": str(tmp_path),
        "signature_checked": False,
        "models": [],
    }
    result = run(SCRIPT, "models", "--artifacts", str(tmp_path))
    assert result.returncode == 0 and result.stdout == f"no model under {tmp_path}\n"


def test_models_reads_artifacts_dir_from_the_environment(tmp_path: Path) -> None:
    (tmp_path / "churn").mkdir()
    result = run(SCRIPT, "models", "--json", ARTIFACTS_DIR=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert [m["name"] for m in json.loads(result.stdout)["models"]] == ["churn"]


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("{tmp}/absent", "artifacts directory {tmp}/absent does not exist"),
        ("{tmp}/file", "artifacts {tmp}/file is not a directory"),
    ],
)
def test_models_of_no_directory_is_one_line(tmp_path: Path, where: str, message: str) -> None:
    (tmp_path / "file").write_text("")
    result = run(SCRIPT, "models", "--artifacts", where.format(tmp=tmp_path))
    assert one_error_line(result, "keras-serve models") == message.format(tmp=tmp_path)


# -- serve ----------------------------------------------------------------------------------------
def test_serve_help_says_the_rest_comes_from_the_environment() -> None:
    result = run(SCRIPT, "serve", "--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "is read from the environment" in text
    for option, variable in SERVE_ENVIRONMENT.items():
        assert f"--{option}" in text and variable in text
    listed = re.search(r"Every other setting \(([^)]*)\)", text)
    assert listed is not None, text
    named = set(re.findall(r"\b[A-Z][A-Z_]+\b", listed.group(1))) - {"README"}
    assert named and named <= {name.upper() for name in Settings.model_fields}, named


@pytest.mark.parametrize(
    ("arguments", "env", "message"),
    [
        (["--workers", "0"], {}, "--workers (WORKERS): Input should be greater than or equal to 1"),
        (["--port", "70000"], {}, "--port (PORT): Input should be less than or equal to 65535"),
        (
            ["--port", "http", "--poll", "-1"],
            {},
            "--port (PORT): Input should be a valid integer, unable to parse string as an "
            "integer; --poll (POLL_SECONDS): Input should be greater than or equal to 0",
        ),
        (["--model", "a/b"], {}, "--model (MODEL_NAME): 'a/b' is not a model name: letters"),
        ([], {"MAX_BATCH_ROWS": "0"}, "MAX_BATCH_ROWS: Input should be greater than or equal to 1"),
        (
            ["--runtime", "tf"],
            {},
            "Invalid value for '--runtime': 'tf' is not one of 'litert', 'keras' "
            "(see 'keras-serve serve --help')",
        ),
    ],
    ids=["workers", "port-range", "two-at-once", "model-name", "from-environment", "runtime"],
)
def test_serve_bad_setting_is_one_line(
    arguments: list[str], env: dict[str, str], message: str, tmp_path: Path
) -> None:
    result = run(SCRIPT, "serve", "--artifacts", str(tmp_path), *arguments, timeout=60, **env)
    assert one_error_line(result, "keras-serve serve").startswith(message)


def test_serve_refuses_a_busy_grpc_port(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run(SCRIPT, "serve", "--artifacts", str(tmp_path), timeout=60, GRPC_PORT=str(port))
    assert one_error_line(result, "keras-serve serve").startswith(
        f"cannot listen for gRPC on 127.0.0.1:{port}"
    )


@pytest.mark.slow
def test_serve_answers_and_stops_on_sigterm(tmp_path: Path, artifacts_copy: Path) -> None:
    """Options win over the environment (a wrong ARTIFACTS_DIR and PORT in it); every other
    setting is the environment's (API_KEY here)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [
            *(SCRIPT, "serve", "--artifacts", str(artifacts_copy), "--model", "iris"),
            *("--host", "127.0.0.1", "--port", str(port), "--runtime", "litert", "--poll", "0"),
        ],
        cwd=ROOT,
        env=environment(ARTIFACTS_DIR=str(tmp_path / "nowhere"), PORT="1", API_KEY="secret"),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    try:

        def ready() -> bool:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, "keras-serve serve ready")
        ready_body = httpx.get(f"{url}/readyz").json()
        assert (ready_body["model"], ready_body["version"], ready_body["runtime"]) == (
            "iris",
            1,
            "litert",
        )
        body = {"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}
        assert httpx.post(f"{url}/predict", json=body).status_code == 401
        answer = httpx.post(f"{url}/predict", json=body, headers={"Authorization": "Bearer secret"})
        assert answer.status_code == 200, answer.text
        labels = [p["label"] for p in answer.json()["predictions"]]
        assert labels == ["setosa", "virginica"]
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
    assert code == 0, (tmp_path / "serve.log").read_text()
    assert "Traceback" not in (tmp_path / "serve.log").read_text()
