"""Explanations (issue 17): what a row's Shapley values cost, and whether they point at the
features that matter.

``python -m bench.explain [--quick]`` runs it alone (full: replaces its section of
bench/RESULTS.md; ``--quick``: prints it); ``python -m bench`` runs it after the model
repository's phase (quickly with ``--smoke``) and writes the same section. Everything is
trained in a temporary directory (``python -m training``, a few seconds a model):

- wine (scikit-learn's ``load_wine``: 13 features, 3 classes, exact Shapley values at the
  default ``EXPLAIN_EVALUATIONS``) and breast cancer (``load_breast_cancer``: 30 features, 2
  classes, sampled), LiteRT runtime;
- in process, the explainer's own cost (``service.protocols.explain.explainer_of``, no HTTP):
  one row at a time, and in batches; the share of it in the model call; the additivity error;
  for sampled values the reported error bound, and the error actually made against a 32 times
  larger budget;
- end to end, ``POST /models/{name}/explain`` one row a request on one keep-alive connection
  to a ``python -m service`` process, with ``/predict`` of the same rows beside it;
- a quality figure: Iris plus one column of Gaussian noise, explained on held-out rows; the
  noise column's mean |attribution| against the petals'.

Medians and ratios only: the machine is shared, and the figures are noisy.
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

import bundle
from bench import large, report
from bench.servers import HOST, ROOT, Server
from service.explain import DEFAULT_EVALUATIONS, Explainer, Explanation
from service.model import LoadedModel, load_version
from service.protocols.explain import background_of, explainer_of

SECTION = "## Explanations (issue 17)"
RUNTIME = "litert"
EVALUATIONS = DEFAULT_EVALUATIONS  # the service's default EXPLAIN_EVALUATIONS
JSON = {"Content-Type": "application/json"}

# The goals: the explainer's median cost per explained row, one row at a time, in process.
EXACT_MS = 10.0  # exact Shapley values of a 13-feature model
SAMPLED_MS = 50.0  # sampled ones of a 30-feature model

EPOCHS = 20  # wine and breast cancer: enough for a sensible model, a few seconds each
NOISE_EPOCHS = 60
NOISE_TEST_ROWS = 50  # Iris rows held out of the noise model's training, and explained
WARM_ROWS = 3  # untimed explanations first: the runtime sizes its batch tensors on the first
CHECK_BUDGET = 32  # the sampled values are checked against a budget this many times larger
TRAIN_TIMEOUT = 900


@dataclass
class Options:
    quick: bool
    rows: int  # rows explained one at a time, in process (and the rows the requests cycle on)
    batch: int  # rows per batch, in process
    batches: int
    requests: int  # timed POST /explain (and /predict) per model, end to end
    check_rows: int  # sampled models: rows checked against CHECK_BUDGET times the evaluations
    noise: bool = True  # measure the noise column's attributions (trains a model)
    bundle: Path | None = None  # explain this version directory instead of wine and cancer
    pin: tuple[set[int], set[int]] | None = None  # (server CPUs, this process's CPUs)
    command: str = "python -m bench.explain"


@dataclass(frozen=True)
class Case:
    """One model to explain: its version directory and rows of its data, in its features'
    order (float32, the model's encoding)."""

    name: str
    source: str  # where the model and its rows come from, for the report
    version_dir: Path
    x: np.ndarray


@dataclass
class CaseResult:
    name: str
    source: str
    features: int
    classes: int
    method: str = ""
    background_rows: int = 0
    row_ms: list[float] = field(default_factory=list)  # one row at a time
    row_cpu_ms: list[float] = field(default_factory=list)  # the same, this thread's CPU time
    batch_ms: list[float] = field(default_factory=list)  # per row, each batch
    model_share: float = 0.0  # of the one-row-at-a-time time, in the explainer's model calls
    model_ms: float = 0.0  # median model call per explained row
    model_rows: float = 0.0  # model rows evaluated per explained row
    additivity: float = 0.0  # max |sum(attributions) + base_value - probability|
    bounds: list[float] = field(default_factory=list)  # sampled: the predicted class's bound
    # sampled: per checked row, the largest error over features of the predicted class's
    # attributions against the larger budget's, and that row's reported bound
    check: list[tuple[float, float]] = field(default_factory=list)
    explain_ms: list[float] = field(default_factory=list)  # POST /explain, end to end
    predict_ms: list[float] = field(default_factory=list)  # POST /predict, the same rows
    # the service process's CPU time per request (all its threads), over the timed requests
    explain_cpu_ms: float | None = None
    predict_cpu_ms: float | None = None


@dataclass
class NoiseResult:
    features: list[str]
    mean_abs: list[float]  # mean |attribution| of the predicted class, per feature
    rows: int
    accuracy: float  # of the noise model on the explained (held-out) rows
    method: str

    def of(self, name: str) -> float:
        return self.mean_abs[self.features.index(name)]

    @property
    def ratio(self) -> float:
        petals = (self.of("petal_length") + self.of("petal_width")) / 2
        return self.of("noise") / petals if petals else float("inf")

    @property
    def rank(self) -> int:
        """The noise column's place by mean |attribution|, 1 the largest."""
        order = sorted(range(len(self.features)), key=lambda j: -self.mean_abs[j])
        return order.index(self.features.index("noise")) + 1


@dataclass
class Results:
    options: Options
    machine: dict[str, str] = field(default_factory=dict)
    cases: list[CaseResult] = field(default_factory=list)
    noise: NoiseResult | None = None
    errors: int = 0
    seconds: float = 0.0


# -- the models ---------------------------------------------------------------------------------
def train(csv: Path, target: str, name: str, artifacts: Path, epochs: int) -> Path:
    """``python -m training`` on ``csv``; the published version directory."""
    command = [sys.executable, "-m", "training", "--data", str(csv), "--target", target]
    command += ["--name", name, "--artifacts", str(artifacts), "--epochs", str(epochs), "--quiet"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TRAIN_TIMEOUT
    )
    if done.returncode != 0:
        raise RuntimeError(f"training {name} failed: {done.stderr[-3000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


def _frame(loader: Callable[..., Any]) -> Any:
    """A scikit-learn data set as a frame, its target as the class names (strings)."""
    data = loader(as_frame=True)
    frame = data.frame.copy()
    frame["target"] = [str(data.target_names[i]) for i in frame["target"]]
    return frame


def _rows_of(frame: Any, version_dir: Path, rows: int, seed: int = 0) -> np.ndarray:
    """``rows`` rows of the frame (a seeded shuffle: every class), in the model's order."""
    names = bundle.read_metadata(version_dir).feature_names
    order = np.random.default_rng(seed).permutation(len(frame))[:rows]
    return frame[names].to_numpy(np.float32)[order]


def train_cases(work: Path, rows: int) -> list[Case]:
    """Wine (13 features) and breast cancer (30), trained under ``work``."""
    from sklearn.datasets import load_breast_cancer, load_wine

    cases = []
    for name, loader in (("wine", load_wine), ("breast_cancer", load_breast_cancer)):
        frame = _frame(loader)
        csv = work / f"{name}.csv"
        frame.to_csv(csv, index=False)
        report.say(f"training {name} ({frame.shape[1] - 1} features, {EPOCHS} epochs)")
        version_dir = train(csv, "target", name, work / "artifacts", EPOCHS)
        source = f"`sklearn.datasets.load_{name}`, {len(frame)} rows, {EPOCHS} epochs"
        cases.append(Case(name, source, version_dir, _rows_of(frame, version_dir, rows)))
    return cases


def bundle_case(version_dir: Path, rows: int) -> Case:
    """A given version directory, explained on rows drawn inside its training range."""
    metadata = bundle.read_metadata(version_dir)
    x = np.array(large.sample_rows(metadata, rows), dtype=np.float32)
    return Case(metadata.name, f"`{version_dir}`, rows drawn in its training range", version_dir, x)


# -- in process ---------------------------------------------------------------------------------
class _Timed:
    """The explainer's model call, timed: seconds and rows, added up."""

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray]) -> None:
        self.predict = predict
        self.seconds = 0.0
        self.rows = 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        started = time.perf_counter()
        try:
            return self.predict(x)
        finally:
            self.seconds += time.perf_counter() - started
            self.rows += len(x)


def load(version_dir: Path) -> tuple[LoadedModel, Explainer]:
    model = load_version(version_dir, RUNTIME)
    return model, explainer_of(model, EVALUATIONS)


def _additivity(explanation: Explanation, probabilities: np.ndarray) -> float:
    total = explanation.attributions.sum(axis=1) + explanation.base_values[None, :]
    return float(np.abs(total - probabilities.astype(np.float64)).max())


def measure_in_process(options: Options, case: Case, result: CaseResult) -> None:
    """One row at a time, then in batches; the model call's share; additivity; bounds."""
    model, explainer = load(case.version_dir)
    timed = _Timed(explainer.predict)
    explainer.predict = timed
    x = case.x
    for i in range(WARM_ROWS):
        explainer.explain(x[i : i + 1], model.probabilities_sync(x[i : i + 1]))
    timed.seconds, timed.rows = 0.0, 0
    total = 0.0
    model_ms = []
    for i in range(min(options.rows, len(x))):
        row = x[i : i + 1]
        before = timed.seconds
        started, cpu = time.perf_counter(), time.thread_time()
        probabilities = model.probabilities_sync(row)
        explanation = explainer.explain(row, probabilities)
        elapsed = time.perf_counter() - started
        result.row_cpu_ms.append((time.thread_time() - cpu) * 1e3)
        total += elapsed
        result.row_ms.append(elapsed * 1e3)
        model_ms.append((timed.seconds - before) * 1e3)
        result.additivity = max(result.additivity, _additivity(explanation, probabilities))
        if explanation.error_bounds is not None:
            label = model.label_indices(probabilities)[0]
            result.bounds.append(float(explanation.error_bounds[0, label]))
    explained = len(result.row_ms)
    result.method = explanation.method
    result.background_rows = explanation.background_rows
    result.model_share = timed.seconds / total
    result.model_ms = statistics.median(model_ms)
    result.model_rows = timed.rows / explained
    for b in range(options.batches):
        rows = x[(b * options.batch) % len(x) :][: options.batch]
        started = time.perf_counter()
        probabilities = model.probabilities_sync(rows)
        explanation = explainer.explain(rows, probabilities)
        result.batch_ms.append((time.perf_counter() - started) * 1e3 / len(rows))
        result.additivity = max(result.additivity, _additivity(explanation, probabilities))
    if not explainer.exact:
        check_sampled(options, model, explainer, case, result)


def check_sampled(
    options: Options, model: LoadedModel, explainer: Explainer, case: Case, result: CaseResult
) -> None:
    """The sampled attributions of a few rows against CHECK_BUDGET times the evaluations'."""
    kinds = [f.kind for f in model.metadata.features]
    reference = Explainer(
        model.probabilities_sync, background_of(model), kinds, EVALUATIONS * CHECK_BUDGET
    )
    for i in range(min(options.check_rows, len(case.x))):
        row = case.x[i : i + 1]
        probabilities = model.probabilities_sync(row)
        label = model.label_indices(probabilities)[0]
        sampled = explainer.explain(row, probabilities)
        truth = reference.explain(row, probabilities).attributions[0, :, label]
        error = float(np.abs(sampled.attributions[0, :, label] - truth).max())
        assert sampled.error_bounds is not None
        result.check.append((error, float(sampled.error_bounds[0, label])))


# -- end to end ---------------------------------------------------------------------------------
def _timed_requests(
    connection: http.client.HTTPConnection, path: str, bodies: list[bytes], method: str | None
) -> tuple[list[float], int]:
    """Milliseconds of each POST, one after another; failed requests (or the wrong method)
    counted."""
    times, errors = [], 0
    for body in bodies:
        started = time.perf_counter()
        connection.request("POST", path, body, JSON)
        response = connection.getresponse()
        answer = response.read()
        elapsed = time.perf_counter() - started
        if response.status != 200 or (
            method is not None and orjson.loads(answer).get("method") != method
        ):
            errors += 1
            report.say(f"POST {path} answered {response.status}: {answer[:300]!r}")
            continue
        times.append(elapsed * 1e3)
    return times, errors


def _cpu_seconds(server: Server) -> float | None:
    """The service process's CPU time so far, every thread's, in nanoseconds' resolution
    (``/proc/<pid>/task/*/schedstat``; the clock ticks of ``Server.cpu_seconds`` are too coarse
    for a few dozen requests), or None where it cannot be read."""
    if server.process is None:
        return None
    try:
        tasks = list(Path(f"/proc/{server.process.pid}/task").iterdir())
    except OSError:
        return None
    nanoseconds = 0
    for task in tasks:
        try:
            nanoseconds += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):  # a thread that has just ended
            continue
    return nanoseconds / 1e9


def _per_request(before: float | None, after: float | None, requests: int) -> float | None:
    if before is None or after is None:
        return None
    return (after - before) / requests * 1e3


def measure_http(options: Options, cases: list[Case], results: Results, logs: Path) -> None:
    """One ``python -m service`` serving every case's model; per model, POST /explain and
    /predict one row a request, the rows cycled, on one keep-alive connection."""
    artifacts = {case.version_dir.parent.parent for case in cases}
    if len(artifacts) != 1:
        raise ValueError("the models measured over HTTP must share an artifacts directory")
    env = {
        "ARTIFACTS_DIR": str(artifacts.pop()),
        "MODEL_NAME": ",".join(case.name for case in cases),
        "MODEL_RUNTIME": RUNTIME,
        "EXPLAIN_EVALUATIONS": str(EVALUATIONS),
    }
    cpus = None if options.pin is None else options.pin[0]
    with Server(["-m", "service"], env, logs / "explain-service.log", cpus=cpus) as server:
        server.wait_ready()
        connection = http.client.HTTPConnection(HOST, server.port, timeout=120)
        try:
            for case, result in zip(cases, results.cases, strict=True):
                rows = [case.x[i % len(case.x)].tolist() for i in range(options.requests)]
                bodies = [orjson.dumps({"instances": [row]}) for row in rows]
                base = f"/models/{case.name}"
                # untimed: the first builds the explainer (a background prediction)
                _, errors = _timed_requests(
                    connection, base + "/explain", bodies[:WARM_ROWS], result.method
                )
                cpu = _cpu_seconds(server)
                result.explain_ms, failed = _timed_requests(
                    connection, base + "/explain", bodies, result.method
                )
                result.explain_cpu_ms = _per_request(cpu, _cpu_seconds(server), len(bodies))
                cpu = _cpu_seconds(server)
                result.predict_ms, failed_predict = _timed_requests(
                    connection, base + "/predict", bodies, None
                )
                result.predict_cpu_ms = _per_request(cpu, _cpu_seconds(server), len(bodies))
                results.errors += errors + failed + failed_predict
        finally:
            connection.close()


# -- quality: a noise column ---------------------------------------------------------------------
IRIS_COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def measure_noise(work: Path) -> NoiseResult:
    """Iris plus a column of standard Gaussian noise: trained on 100 rows, the other 50 (a
    stratified split) explained; the predicted class's mean |attribution| per feature."""
    from sklearn.datasets import load_iris
    from sklearn.model_selection import train_test_split

    frame = _frame(load_iris)
    frame.columns = [*IRIS_COLUMNS, "target"]
    frame.insert(4, "noise", np.random.default_rng(0).normal(size=len(frame)).round(4))
    fit, held_out = train_test_split(
        frame, test_size=NOISE_TEST_ROWS, stratify=frame["target"], random_state=0
    )
    csv = work / "iris_noise.csv"
    fit.to_csv(csv, index=False)
    report.say(f"training iris_noise (4 Iris features and a noise column, {NOISE_EPOCHS} epochs)")
    version_dir = train(csv, "target", "iris_noise", work / "noise-artifacts", NOISE_EPOCHS)
    model, explainer = load(version_dir)
    x = held_out[model.feature_names].to_numpy(np.float32)
    probabilities = model.probabilities_sync(x)
    labels = model.label_indices(probabilities)
    explanation = explainer.explain(x, probabilities)
    predicted = explanation.attributions[np.arange(len(x)), :, labels]  # [rows, features]
    truth = held_out["target"].tolist()
    accuracy = float(np.mean([model.labels[k] == t for k, t in zip(labels, truth, strict=True)]))
    return NoiseResult(
        features=list(model.feature_names),
        mean_abs=np.abs(predicted).mean(axis=0).tolist(),
        rows=len(x),
        accuracy=accuracy,
        method=explanation.method,
    )


def measure(options: Options) -> Results:
    """Every measurement of this phase, in a temporary directory removed after."""
    results = Results(options, {**report.machine_basics(), "load_before": report.loadavg()})
    results.machine["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-explain-") as tmp:
        work = Path(tmp)
        if options.bundle is not None:
            cases = [bundle_case(options.bundle, max(options.rows, options.batch))]
        else:
            cases = train_cases(work, max(options.rows, options.batch * options.batches))
        for case in cases:
            metadata = bundle.read_metadata(case.version_dir)
            result = CaseResult(
                case.name, case.source, len(metadata.features), len(metadata.classes)
            )
            results.cases.append(result)
            report.say(f"explaining {case.name} in process")
            measure_in_process(options, case, result)
        report.say("explaining over HTTP")
        measure_http(options, cases, results, work)
        if options.noise:
            results.noise = measure_noise(work)
    results.machine["load_after"] = report.loadavg()
    results.seconds = time.monotonic() - started
    return results


# -- the report ---------------------------------------------------------------------------------
def _yes(met: bool, context: bool = False) -> str:
    word = "yes" if met else "no"
    if context:
        return f"({word})"
    return word if met else f"**{word}**"


def _p90(values: list[float]) -> float:
    return float(np.percentile(values, 90))


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}" if values else "n/a"


def goals(results: Results) -> list[tuple[str, str, bool, bool]]:
    """(goal, measured, met, context) for each goal: the in-process median one row at a time
    is judged; the batched and end-to-end figures are context."""
    out = []
    for case in results.cases:
        if not case.row_ms:
            continue
        exact = case.method == "exact"
        label, bound = ("17a", EXACT_MS) if exact else ("17b", SAMPLED_MS)
        what = f"{case.method} explanations of a {case.features}-feature model ({case.name})"
        median = statistics.median(case.row_ms)
        out.append(
            (
                f"{label}. {what}: <= {bound:g} ms a row (in process, one row at a time, "
                f"{RUNTIME})",
                f"{median:.2f} ms (p90 {_p90(case.row_ms):.2f} ms; {median / bound:.2f}x the goal)",
                median <= bound,
                False,
            )
        )
        if case.batch_ms:
            per_row = statistics.median(case.batch_ms)
            out.append(
                (
                    f"({label} in {results.options.batch}-row batches, per row)",
                    f"{per_row:.2f} ms",
                    per_row <= bound,
                    True,
                )
            )
        if case.explain_ms:
            e2e = statistics.median(case.explain_ms)
            out.append(
                (
                    f"({label} end to end: `POST /models/{case.name}/explain`, one row a request)",
                    f"{e2e:.2f} ms (p90 {_p90(case.explain_ms):.2f} ms)",
                    e2e <= bound,
                    True,
                )
            )
    return out


def section(results: Results) -> str:
    """This phase's section of RESULTS.md, from its heading to the next."""
    options, machine = results.options, results.machine
    mode = "QUICK (few rows: the figures mean little)" if options.quick else "full"
    out = [
        SECTION,
        "",
        f"Measured by `.venv/bin/{options.command}` (`make bench` runs it too); mode: {mode}; "
        f"{machine['date']}; wall time {results.seconds / 60:.1f} min. CPU: {machine['cpu']}, "
        f"{machine['cores']} cores; {_pinning(options)}. Load average (1, 5, 15 min) before: "
        f"{machine['load_before']}; after: {machine.get('load_after', 'n/a')}. "
        f"{RUNTIME} runtime, EXPLAIN_EVALUATIONS={EVALUATIONS}.",
        "",
        "| goal | measured (median) | met |",
        "| --- | --- | --- |",
    ]
    rows = goals(results)
    for title, measured, met, context in rows:
        out.append(f"| {title} | {measured} | {_yes(met, context)} |")
    failed = [title for title, _, met, context in rows if not met and not context]
    out += ["", "Every goal holds." if not failed else "Not met: " + "; ".join(failed) + "."]
    if results.errors:
        out += ["", f"**{results.errors} FAILED REQUESTS** during this phase."]
    out += _cost_table(results)
    out += _accuracy(results)
    out += _noise(results)
    out += _how(results)
    return "\n".join(out) + "\n"


def _pinning(options: Options) -> str:
    if options.pin is None:
        return "not pinned"
    server, here = (",".join(map(str, sorted(c))) for c in options.pin)
    return f"the service on CPU {server}, the in-process timings and the client on CPU {here}"


def _cpu(ms: float | None) -> str:
    return "n/a" if ms is None else f"{ms:.2f}"


def _cost_table(results: Results) -> list[str]:
    out = [
        "",
        "### Where the time goes (medians; ms per explained row)",
        "",
        "| model | features | classes | method | background rows | model rows a row | one row "
        "at a time (p90) | its CPU time | in the model call | numpy around it | "
        f"{results.options.batch}-row batch, per row | `POST /explain` (service CPU) | "
        "`POST /predict` (service CPU) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for case in results.cases:
        if not case.row_ms:
            continue
        median = statistics.median(case.row_ms)
        out.append(
            f"| {case.name} | {case.features} | {case.classes} | {case.method} | "
            f"{case.background_rows} | {case.model_rows:,.0f} | {median:.2f} "
            f"({_p90(case.row_ms):.2f}) | {_median(case.row_cpu_ms)} | {case.model_ms:.2f} "
            f"({case.model_share:.0%}) | {max(median - case.model_ms, 0.0):.2f} | "
            f"{_median(case.batch_ms)} | {_median(case.explain_ms)} "
            f"({_cpu(case.explain_cpu_ms)}) | {_median(case.predict_ms)} "
            f"({_cpu(case.predict_cpu_ms)}) |"
        )
    out += [
        "",
        "In the model call: the explainer's `predict` (`LoadedModel.probabilities_sync`: the "
        "LiteRT interpreter, one thread, on the coalitions' rows), its median per explained "
        "row and its share of the one-row-at-a-time time; numpy around it: the rest (building "
        "the rows, the Shapley formula, the row's own prediction). Its CPU time: the measuring "
        "thread's, which other work on the machine barely changes (wall time well above it: "
        "the thread waited for a CPU). `POST /explain` less the in-process time is the HTTP, "
        "parsing and answer-building cost; `POST /predict` of the same rows is the service's "
        "floor; service CPU: the service process's CPU time (every thread) per timed request.",
    ]
    return out


def _accuracy(results: Results) -> list[str]:
    out = [
        "",
        "### Accuracy",
        "",
        "| model | method | max additivity error | median error bound (predicted class) | "
        f"against {CHECK_BUDGET}x the evaluations |",
        "| --- | --- | --- | --- | --- |",
    ]
    for case in results.cases:
        if not case.row_ms:
            continue
        bound = f"{statistics.median(case.bounds):.4f}" if case.bounds else "- (exact)"
        check = "-"
        if case.check:
            within = sum(error <= b for error, b in case.check)
            ratios = [error / b for error, b in case.check if b > 0]
            ratio = statistics.median(ratios) if ratios else float("nan")
            largest = max(error for error, _ in case.check)
            check = (
                f"largest error over features within the bound on {within} of "
                f"{len(case.check)} rows; median error / bound {ratio:.2f}; largest error "
                f"{largest:.4f}"
            )
        out.append(f"| {case.name} | {case.method} | {case.additivity:.1e} | {bound} | {check} |")
    out += [
        "",
        "Additivity: max over the explained rows (one at a time and batched) and every class of "
        "|sum(attributions) + base_value - probability|. The error bound is the answer's "
        "`error_bound` (95 %, the largest over features); the check explains a few rows again "
        f"with {CHECK_BUDGET} times the evaluations and compares the predicted class's "
        "attributions (the larger run's error is about a sixth of this one's; it shares its "
        "first permutations, so the error measured is a little low).",
    ]
    return out


def _noise(results: Results) -> list[str]:
    noise = results.noise
    if noise is None:
        return []
    cells = " | ".join(f"{value:.4f}" for value in noise.mean_abs)
    return [
        "",
        "### Quality: a column of pure noise",
        "",
        f"Iris plus a column of standard Gaussian noise, trained on 100 rows ({NOISE_EPOCHS} "
        f"epochs), {noise.method} explanations of the {noise.rows} held-out rows (accuracy "
        f"{noise.accuracy:.2f}); mean |attribution| to the predicted class's probability:",
        "",
        "| " + " | ".join(noise.features) + " |",
        "| " + " | ".join("---" for _ in noise.features) + " |",
        f"| {cells} |",
        "",
        f"The noise column's mean |attribution| is {noise.ratio:.3f}x the petals' (the mean of "
        f"petal_length's and petal_width's); it ranks {noise.rank} of {len(noise.features)} "
        "features. A quality figure, with no goal.",
    ]


def _how(results: Results) -> list[str]:
    options = results.options
    return [
        "",
        "### How it is measured",
        "",
        "- In process: each bundle loaded by `service.model.load_version(dir, "
        f'"{RUNTIME}")`, its explainer built by `service.protocols.explain.explainer_of(model, '
        f"{EVALUATIONS})`; after {WARM_ROWS} untimed rows, {options.rows} rows of the data set "
        "(a seeded shuffle) timed one at a time, each as `explainer.explain(row, "
        "model.probabilities_sync(row))`; then "
        f"{options.batches} batch(es) of {options.batch} rows, timed whole and divided by "
        "their rows. The goals judge the one-row-at-a-time median.",
        "- End to end: one `python -m service` (LOG_LEVEL=info, one worker, gRPC off, "
        f"MODEL_RUNTIME={RUNTIME}) serving every model; per model, {WARM_ROWS} untimed then "
        f"{options.requests} timed `POST /models/{{name}}/explain` of one row each "
        '(`{"instances": [[...]]}`, the rows above in turn), one after another on one '
        "keep-alive connection (http.client), then the same for `/predict`.",
        "- The models: "
        + (
            "a given bundle"
            if options.bundle is not None
            else f"`python -m training --epochs {EPOCHS}` on scikit-learn's data sets, the "
            "target as its class names"
        )
        + "; "
        + "; ".join(f"{case.name}: {case.source}" for case in results.cases)
        + ".",
    ]


def with_section(text: str, new: str) -> str:
    """``text`` (a RESULTS.md) with this phase's section replaced by ``new``, or ``new``
    appended when it has none."""
    return report.replace_section(text, SECTION, new)


# -- running it ---------------------------------------------------------------------------------
FULL = {"rows": 50, "batch": 20, "batches": 5, "requests": 30, "check_rows": 10}
QUICK = {"rows": 10, "batch": 5, "batches": 1, "requests": 10, "check_rows": 2}


def options_for_bench(config: Any, version_dir: Path | None = None) -> Options:
    """This phase's options inside ``python -m bench`` (its pinning). With ``--smoke``: quick,
    on the bench's own bundle (``version_dir``) and without the noise model, so that the smoke
    run trains nothing more."""
    quick = bool(config.smoke)
    sizes = QUICK if quick else FULL
    if quick and version_dir is not None:
        return Options(quick=True, **sizes, noise=False, bundle=version_dir, pin=config.pin, command=config.command)  # fmt: skip
    return Options(quick=quick, **sizes, pin=config.pin, command=config.command)


def parse_args(argv: list[str]) -> tuple[Options, Path | None]:
    from bench.run import cpu_split  # bench.run imports this module

    parser = argparse.ArgumentParser(prog="python -m bench.explain", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="few rows and requests")
    parser.add_argument("--rows", type=int, help="rows explained one at a time (50; quick 10)")
    parser.add_argument("--batch", type=int, help="rows per batch (20; quick 5)")
    parser.add_argument("--batches", type=int, help="batches (5; quick 1)")
    parser.add_argument("--requests", type=int, help="timed requests per model (30; quick 10)")
    parser.add_argument("--check-rows", type=int, help="sampled rows checked (10; quick 2)")
    parser.add_argument(
        "--bundle",
        type=Path,
        help="explain this version directory (rows drawn in its training range) instead of "
        "training wine and breast cancer",
    )
    parser.add_argument("--no-noise", action="store_true", help="skip the noise column figure")
    parser.add_argument("--pin", choices=["auto", "off"], default="auto")
    parser.add_argument(
        "--out", type=Path, help="results file whose section is replaced (default "
        "bench/RESULTS.md; quick: stdout only)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    sizes = dict(QUICK if args.quick else FULL)
    for key in sizes:
        value = getattr(args, key)
        if value is not None:
            if not 1 <= value <= 1000:
                parser.error(f"--{key.replace('_', '-')} must be 1-1000")
            sizes[key] = value
    if args.bundle is not None and not (
        args.bundle.name.isdigit()
        and int(args.bundle.name) in bundle.list_versions(args.bundle.parent)
    ):
        parser.error(f"{args.bundle} is not a version directory of a bundle")
    out = args.out if args.out is not None or args.quick else ROOT / "bench" / "RESULTS.md"
    options = Options(
        quick=args.quick,
        **sizes,
        noise=not args.no_noise,
        bundle=args.bundle.resolve() if args.bundle is not None else None,
        pin=cpu_split() if args.pin == "auto" else None,
        command=" ".join(["python -m bench.explain", *argv]),
    )
    return options, out


def main(argv: list[str] | None = None) -> int:

    options, out = parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, report.stop_on_signal)
    if options.pin is not None:  # this process on the CPUs the service is not on
        os.sched_setaffinity(0, options.pin[1])
    results = measure(options)
    report.publish(section(results), out, SECTION)
    if results.errors:
        print(f"bench: {results.errors} requests failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
