"""``keras-serve predict``: a CSV file scored offline in chunks gives, byte for byte, what the
service answers ``POST /predict`` with ``Accept: text/csv`` for the whole file; through a real
service (``--url``: several chunks in flight, 413s and 503s on the way) it gives the same file."""

from __future__ import annotations

import http.server
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from click.testing import CliRunner, Result

from keras_serve.cli import main
from tests.support import ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
# What the command reads from the environment: each test says what it means instead.
OWN_VARIABLES = ("ARTIFACTS_DIR", "MISSING_VALUES", "ARTIFACT_SIGNING_KEY", "API_KEY")
ERROR = "keras-serve predict: error: "

SCRIPT = [sys.executable, "-m", "keras_serve"]


def invoke(args: list[str], **env: str) -> Result:
    """The command in process, through click's runner, without the caller's variables."""
    return CliRunner().invoke(main, ["predict", *args], env=dict.fromkeys(OWN_VARIABLES) | env)


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The command in its own process, as a user runs it."""
    environment = {k: v for k, v in os.environ.items() if k not in OWN_VARIABLES} | env
    return subprocess.run(
        [*SCRIPT, "predict", *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )


def iris_csv(path: Path, rows: int = 90, newline: str = "\n") -> Path:
    """Iris rows with noise, some outside the training range (warnings), in shuffled column
    order with the target column (which the model ignores); some targets are quoted, one
    holding a line break and one a comma, so records and lines differ."""
    from training.data import load_iris_frame

    frame = load_iris_frame()
    rng = np.random.default_rng(5)
    picked = frame.iloc[rng.integers(0, len(frame), rows)]
    x = np.round(picked[FEATURES].to_numpy() + rng.normal(0, 0.15, (rows, 4)), 2)
    x[::13, 2] *= 3  # petal length far above the range
    x[5::17, 0] = 0.5  # sepal length below it
    species = picked["species"].tolist()
    species[3] = '"setosa\nor not"'
    species[40] = '"virginica, surely"'
    order = ["petal_width", "species", "sepal_length", "petal_length", "sepal_width"]
    lines = [",".join(order)]
    for i in range(rows):
        cells = {name: f"{x[i, j]:g}" for j, name in enumerate(FEATURES)} | {"species": species[i]}
        lines.append(",".join(cells[name] for name in order))
    path.write_bytes((newline.join(lines) + newline).encode())
    return path


@pytest.fixture(scope="module")
def artifacts(iris_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An artifacts directory holding the session's Iris bundle as ``iris/1``."""
    directory = tmp_path_factory.mktemp("predict") / "artifacts"
    shutil.copytree(iris_bundle, directory / "iris" / "1")
    return directory


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return iris_csv(tmp_path_factory.mktemp("data") / "iris.csv")


def service_answer(artifacts: Path, model: str, body: bytes, **settings: Any) -> bytes:
    """The service's CSV answer to ``POST /predict`` of the whole body, in process."""
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    config = Settings(artifacts_dir=artifacts, model_name=model, **settings)
    with TestClient(create_app(config)) as client:
        response = client.post(
            "/predict", content=body, headers={"Content-Type": "text/csv", "Accept": "text/csv"}
        )
    assert response.status_code == 200, response.text
    return response.content


def offline(artifacts: Path, data: Path, out: Path, *more: str, model: str = "iris") -> Result:
    args = ["--data", str(data), "--out", str(out), "--artifacts", str(artifacts)]
    result = invoke([*args, "--model", model, "--quiet", *more])
    assert result.exit_code == 0, result.output
    return result


# -- offline equals the service --------------------------------------------------------------------
@pytest.fixture(scope="module")
def expected(artifacts: Path, data: Path) -> bytes:
    return service_answer(artifacts, "iris", data.read_bytes())


@pytest.mark.parametrize("chunk_rows", [1, 7, 50_000])
def test_offline_matches_the_service_answer(
    chunk_rows: int, artifacts: Path, data: Path, expected: bytes, tmp_path: Path
) -> None:
    out = tmp_path / "out.csv"
    offline(artifacts, data, out, "--chunk-rows", str(chunk_rows))
    assert out.read_bytes() == expected
    text = expected.decode()
    assert text.startswith("label,prob_setosa,prob_versicolor,prob_virginica,warnings\n")
    assert text.count("\n") == 91 and "petal_length" in text and "sepal_length" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]  # no temporary file left


@pytest.mark.parametrize("newline", ["\r\n", "\r"])
def test_line_ends_and_a_byte_order_mark(
    newline: str, artifacts: Path, expected: bytes, tmp_path: Path
) -> None:
    data = iris_csv(tmp_path / "in.csv", newline=newline)
    data.write_bytes(b"\xef\xbb\xbf" + data.read_bytes() + newline.encode() * 2)
    out = tmp_path / "out.csv"
    offline(artifacts, data, out, "--chunk-rows", "4")
    assert out.read_bytes() == expected


def test_progress_and_summary_on_stderr_only(artifacts: Path, data: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    args = ["--data", str(data), "--out", str(out), "--artifacts", str(artifacts)]
    result = invoke([*args, "--model", "iris", "--chunk-rows", "30"])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "| 90.0/90.0 [" in result.stderr and "row/s]" in result.stderr  # tqdm's count, rate
    assert (
        result.stderr.rstrip()
        .splitlines()[-1]
        .startswith("90 rows scored by model iris version 1 (litert) in ")
    )


def test_quiet_process_writes_nothing_on_stderr(
    artifacts: Path, data: Path, tmp_path: Path
) -> None:
    """In a process of its own: LiteRT's native start-up line included."""
    out = tmp_path / "out.csv"
    args = ["--data", str(data), "--out", str(out), "--artifacts", str(artifacts)]
    result = run(*args, "--model", "iris", "--quiet")
    assert (result.returncode, result.stderr, result.stdout) == (0, "", "")
    assert out.read_bytes().count(b"\n") == 91


def test_an_existing_out_is_replaced_with_its_mode(
    artifacts: Path, data: Path, expected: bytes, tmp_path: Path
) -> None:
    out = tmp_path / "out.csv"
    out.write_text("old")
    out.chmod(0o640)
    offline(artifacts, data, out)
    assert out.read_bytes() == expected and out.stat().st_mode & 0o777 == 0o640


# -- bad input: exit 2, one line, no OUT --------------------------------------------------------------
def _rows(path: Path, lines: list[str]) -> Path:
    path.write_bytes("".join(lines).encode())
    return path


HEADER = "sepal_length,sepal_width,petal_length,petal_width\n"
ROW = "5.1,3.5,1.4,0.2\n"
# case: (lines of IN.csv (None: no file), options changed, the message's end)
BAD_INPUTS: dict[str, tuple[list[str] | None, dict[str, str], str]] = {
    "missing file": (None, {}, "data file {tmp}/in.csv does not exist"),
    "empty file": ([], {}, "empty CSV body; send a header row and at least one data row"),
    "header only": ([HEADER], {}, "CSV has a header but no data rows"),
    "only blank lines after the header": ([HEADER, "\n", " \n"], {}, "no data rows"),
    "no header": ([ROW] * 3, {}, "CSV header has unknown feature '5.1'"),
    "a column missing": (
        ["sepal_length,sepal_width,petal_length\n", "5.1,3.5,1.4\n"],
        {},
        "CSV header is missing feature 'petal_width'",
    ),
    "a word in row 12": (
        [HEADER, *[ROW] * 11, "5.1,three,1.4,0.2\n", *[ROW] * 8],
        {},
        "in.csv: row 12 (line 13), column 'sepal_width' is not a number",
    ),
    "a line break inside quotes before the bad row": (
        ["sepal_length,sepal_width,petal_length,petal_width,species\n"]
        + [f'{ROW.strip()},"set\nosa"\n'] * 3
        + ["5.1,3.5,,0.2,setosa\n", ROW.strip() + ",setosa\n"],
        {},
        "in.csv: row 4 (line 8), column 'petal_length' is empty",
    ),
    "a blank line between rows": (
        [HEADER, ROW, ROW, "\n", ROW],
        {},
        "in.csv: row 3 (line 4) has 0 fields; the header has 4",
    ),
    "a row too short": ([HEADER, ROW, "5.1,3.5\n"], {}, "in.csv: row 2 (line 3) has 2 fields"),
    "infinity": ([HEADER, ROW, "inf,3.5,1.4,0.2\n"], {}, "row 2 (line 3), column 'sepal_length'"),
    "invalid UTF-8": (
        [HEADER, ROW, ROW, "5.1,3.5,1.4,0.2\udcff\n"],
        {},
        "in.csv: row 3 (line 4) is not valid UTF-8",
    ),
    "an unterminated quote": (
        [HEADER, ROW, '5.1,"3.5,1.4,0.2\n', ROW],
        {},
        "in.csv: row 2 (line 3): malformed CSV: unexpected end of data",
    ),
    "unknown model": ([HEADER, ROW], {"--model": "tulip"}, "model tulip has no published version"),
    "unknown version": ([HEADER, ROW], {"--version": "4"}, "model iris has no version 4"),
    "no model offline": ([HEADER, ROW], {"--model": None}, "--model is required"),  # type: ignore[dict-item]
    "a missing directory for OUT": ([HEADER, ROW], {"--out": "{tmp}/no/out.csv"}, "does not exist"),
    "OUT is IN": ([HEADER, ROW], {"--out": "{tmp}/in.csv"}, "is the data file"),
    "--runtime with --url": (
        [HEADER, ROW],
        {"--url": "http://127.0.0.1:9", "--runtime": "keras"},
        "--runtime: for scoring offline only",
    ),
    "a URL that is not one": ([HEADER, ROW], {"--url": "localhost:8000"}, "is not an http://"),
    "--version without --model": (
        [HEADER, ROW],
        {"--url": "http://127.0.0.1:9", "--model": None, "--version": "2"},  # type: ignore[dict-item]
        "--version needs --model",
    ),
}


def bad_arguments(tmp: Path, artifacts: Path, change: dict[str, str | None]) -> list[str]:
    options: dict[str, str | None] = {
        "--data": "{tmp}/in.csv",
        "--out": "{tmp}/out.csv",
        "--artifacts": str(artifacts),
        "--model": "iris",
        "--chunk-rows": "5",
    }
    if "--url" in change:
        del options["--artifacts"]
    args = []
    for flag, value in (options | change).items():
        if value is not None:
            args += [flag, value.format(tmp=tmp)]
    return args


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input(case: str, artifacts: Path, tmp_path: Path) -> None:
    lines, change, message = BAD_INPUTS[case]
    if lines is not None:
        (tmp_path / "in.csv").write_bytes("".join(lines).encode("utf-8", "surrogateescape"))
    result = invoke(bad_arguments(tmp_path, artifacts, change))
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # not an error escaping the command
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    shown = result.stderr.split("\r")[-1]  # a progress bar drawn before is cleared
    assert shown.startswith(ERROR)
    assert message.format(tmp=tmp_path) in shown
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ([] if lines is None else ["in.csv"])  # no OUT, no temporary file


def test_a_bad_row_late_in_a_file_leaves_the_old_out(artifacts: Path, tmp_path: Path) -> None:
    data = _rows(tmp_path / "in.csv", [HEADER, *[ROW] * 2000, "5.1,3.5,1.4,x\n", ROW])
    out = tmp_path / "out.csv"
    out.write_text("the answers of last week\n")
    args = ["--data", str(data), "--out", str(out), "--artifacts", str(artifacts)]
    result = run(*args, "--model", "iris", "--chunk-rows", "100", "--quiet")
    assert result.returncode == 2
    assert result.stderr == (
        f"{ERROR}{data}: row 2001 (line 2002), column 'petal_width' is not a number\n"
    )
    assert out.read_text() == "the answers of last week\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "out.csv"]


def test_the_highest_version_that_verifies(artifacts: Path, data: Path, tmp_path: Path) -> None:
    """As the service chooses: version 2 fails verification, so version 1 answers (noted)."""
    copy = tmp_path / "artifacts"
    shutil.copytree(artifacts, copy)
    shutil.copytree(copy / "iris" / "1", copy / "iris" / "2")
    (copy / "iris" / "2" / "metadata.json").write_text("{}")
    out = tmp_path / "out.csv"
    args = ["--data", str(data), "--out", str(out), "--artifacts", str(copy), "--model", "iris"]
    result = invoke(args)
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith("note: version 2 of model iris is rejected: ")
    assert "90 rows scored by model iris version 1 (litert)" in result.stderr
    pinned = invoke([*args, "--version", "2", "--quiet"])
    assert pinned.exit_code == 2
    assert pinned.stderr.startswith(f"{ERROR}version 2 of model iris is rejected: ")


def test_an_output_that_is_not_finite_names_its_row(artifacts: Path, tmp_path: Path) -> None:
    from keras_serve.predict import PredictError, load_model, predict_local

    model = load_model(artifacts, "iris", 1)
    score = model.probabilities_sync

    def broken(x: np.ndarray) -> np.ndarray:
        probabilities = score(x)
        probabilities[x[:, 0] > 7] = np.nan  # sepal_length above 7
        return probabilities

    model.probabilities_sync = broken
    data = _rows(tmp_path / "in.csv", [HEADER, *[ROW] * 6, "7.7,3.8,6.7,2.2\n", ROW])
    with pytest.raises(PredictError, match=r"in\.csv: row 7 \(line 8\): the model's output is "):
        predict_local(data, tmp_path / "out.csv", model, chunk_rows=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


def test_an_unreachable_url(data: Path, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = invoke(["--data", str(data), "--out", str(tmp_path / "out.csv"), "--url", url])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"{ERROR}cannot reach {url}: ")
    assert result.stderr.count("\n") == 1
    assert not (tmp_path / "out.csv").exists()


def test_help() -> None:
    result = invoke(["--help"])
    assert result.exit_code == 0
    for option in ("--data", "--out", "--artifacts", "--model", "--version", "--url", "--quiet"):
        assert option in result.stdout
    assert "--chunk-rows" in result.stdout and "--concurrency" in result.stdout


# -- 503s: a stand-in service in front of the real one, or alone --------------------------------------
class _Proxy(http.server.ThreadingHTTPServer):
    """Answers the first ``refusals`` POSTs with 503 and ``Retry-After``, then forwards each to
    ``target`` (None: refuses every one)."""

    daemon_threads = True

    def __init__(self, target: str | None, refusals: int, retry_after: str) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.target = target
        self.refusals = refusals
        self.retry_after = retry_after
        self.posts: list[bytes] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    server: _Proxy
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.server.lock:
            self.server.posts.append(body)
            refuse = self.server.target is None or len(self.server.posts) <= self.server.refusals
        if refuse:
            self._answer(503, b'{"error":"busy"}', {"Retry-After": self.server.retry_after})
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
        answer = httpx.post(self.server.target + self.path, content=body, headers=headers)
        keep = ("content-type", "x-model-version")
        self._answer(
            answer.status_code,
            answer.content,
            {k: answer.headers[k] for k in keep if k in answer.headers},
        )

    def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def proxy(target: str | None, refusals: int, retry_after: str = "1") -> Iterator[_Proxy]:
    server = _Proxy(target, refusals, retry_after)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_503s_past_the_retries_stop_the_run(data: Path, tmp_path: Path) -> None:
    with proxy(None, 0, retry_after="0") as always:
        out = tmp_path / "out.csv"
        result = invoke(["--data", str(data), "--out", str(out), "--url", always.url, "--quiet"])
        assert result.exit_code == 1, result.output
        assert result.stderr == (
            f"{ERROR}{data} rows 1-90: the service answered 503: busy (after 10 retries)\n"
        )
        assert len(always.posts) == 11
        assert not out.exists()


# -- through a real service ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def service(artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """``python -m service`` with a small MAX_BATCH_ROWS and an API key."""
    log = tmp_path_factory.mktemp("service") / "service.log"
    with ServerProcess(artifacts, log, max_batch_rows=25, api_key="k3y") as server:
        yield server


@pytest.mark.slow
@pytest.mark.parametrize(
    "more",
    [
        ["--chunk-rows", "25"],
        ["--chunk-rows", "10", "--concurrency", "1", "--model", "iris", "--version", "1"],
        [],  # 10,000 rows a chunk: the service's 413 names its limit, and chunks are cut to it
    ],
)
def test_url_gives_the_offline_file(
    more: list[str], service: ServerProcess, data: Path, expected: bytes, tmp_path: Path
) -> None:
    out = tmp_path / "out.csv"
    args = ["--data", str(data), "--out", str(out), "--url", service.url, "--quiet", *more]
    result = invoke(args, API_KEY="k3y")
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == expected


@pytest.mark.slow
def test_url_in_a_process_with_progress(service: ServerProcess, data: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    result = run("--data", str(data), "--out", str(out), "--url", service.url, API_KEY="k3y")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and "| 90.0/90.0 [" in result.stderr
    assert f"90 rows scored by {service.url} (version 1) in " in result.stderr


@pytest.mark.slow
def test_url_refusals_name_the_rows(service: ServerProcess, tmp_path: Path) -> None:
    data = _rows(tmp_path / "in.csv", [HEADER, *[ROW] * 60, "5.1,3.5,1.4,x\n", ROW])
    out = tmp_path / "out.csv"
    args = ["--data", str(data), "--out", str(out), "--url", service.url, "--chunk-rows", "20"]
    result = invoke([*args, "--quiet"], API_KEY="k3y")
    assert result.exit_code == 2
    assert result.stderr == (
        f"{ERROR}{data} rows 61-62: the service answered 422: row 61 (line 62), column "
        "'petal_width' is not a number\n"
    )
    no_key = invoke(args)
    assert no_key.exit_code == 2
    assert no_key.stderr.startswith(f"{ERROR}{data} rows 1-20: the service answered 401: ")
    assert no_key.stderr.endswith("(the command sends $API_KEY as the bearer token)\n")
    unknown = invoke([*args, "--model", "tulip"], API_KEY="k3y")
    assert unknown.exit_code == 2 and "answered 404" in unknown.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


@pytest.mark.slow
def test_a_503_is_retried_after_its_retry_after(
    service: ServerProcess, data: Path, expected: bytes, tmp_path: Path
) -> None:
    import time

    with proxy(service.url, refusals=1) as busy:
        out = tmp_path / "out.csv"
        started = time.monotonic()
        args = ["--data", str(data), "--out", str(out), "--url", busy.url, "--chunk-rows", "25"]
        result = invoke([*args, "--concurrency", "1"], API_KEY="k3y")
        assert result.exit_code == 0, result.output
        assert time.monotonic() - started >= 1.0  # Retry-After: 1
        assert out.read_bytes() == expected
        assert len(busy.posts) == 5 and busy.posts[0] == busy.posts[1]  # 4 chunks, one twice
        assert "(version 1), 1 retry after a 503 in " in result.stderr


# -- typed features --------------------------------------------------------------------------------
@pytest.mark.slow
def test_typed_features_read_as_the_service_reads_them(
    typed_bundle: Path, typed_csv: Path, tmp_path: Path
) -> None:
    """Blanks, unseen categories, true/false, ID columns left out, out of range numbers."""
    artifacts = tmp_path / "artifacts"
    shutil.copytree(typed_bundle, artifacts / "churn" / "1")
    lines = typed_csv.read_text().splitlines(keepends=True)
    lines += [
        "901,customer 00901,,platinum,mars,,20.5,no\n",  # blanks, unseen categories
        '902,"customer, 00902",130,pro,south,TRUE,9999,yes\n',  # out of range, quoted
        "903,customer 00903,44,basic,north,false,,\n",  # no target: ignored anyway
    ]
    data = _rows(tmp_path / "churn.csv", lines)
    expected = service_answer(artifacts, "churn", data.read_bytes(), missing_values="impute")
    assert b"region" in expected and b"monthly_spend" in expected  # warnings were written
    out = tmp_path / "out.csv"
    offline(artifacts, data, out, "--chunk-rows", "37", "--missing-values", "impute", model="churn")
    assert out.read_bytes() == expected
