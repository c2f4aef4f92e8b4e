"""The training run: load, split, fit, evaluate, export, publish."""

from __future__ import annotations

import os
import platform
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import joblib
import numpy as np
from sklearn.preprocessing import LabelEncoder

import bundle
from bundle import distributions
from training import data, evaluate, export, features
from training.errors import TrainingError
from training.model import (
    Encoding,
    Head,
    build_core,
    class_probabilities,
    fit,
    sample_weights,
    wrap,
)
from training.publish import publish, staging_area

# Test rows whose Keras probabilities are recorded; the service must reproduce them at load.
REFERENCE_ROWS = 5
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# --class-weight auto balances the classes when the rarest has under this share of the
# commonest one's rows.
AUTO_BALANCE_RATIO = 0.1
CLASS_WEIGHTS = ("auto", "balanced", "none")
# A category no training table has: the extra reference row sends it to the unseen bucket.
UNSEEN_PROBE = "\x00reference-unseen"


@dataclass(frozen=True)
class Options:
    """Everything a training run needs; the CLI fills it from its arguments."""

    data: Path | None = None
    target: str | None = None
    features: list[str] | None = None
    name: str | None = None
    artifacts: Path = Path("artifacts")
    encoding: Encoding = "sparse"
    epochs: int = 200
    seed: int = 42
    test_size: float = 0.2
    quiet: bool = False
    signing_key: str | None = None
    categorical: list[str] | None = None
    exclude: list[str] | None = None
    class_weight: str = "auto"
    threshold: str | None = None  # None: 0.5 for a binary target; refused for a multi-class one


def _say(options: Options, message: str) -> None:
    if not options.quiet:
        print(message, flush=True)


def _seed_everything(seed: int) -> None:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def _library_versions() -> dict[str, str]:
    import keras
    import sklearn
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
    }


def class_weight_mode(option: str, y: np.ndarray, n_classes: int) -> str:
    """``--class-weight``: ``balanced`` or ``none``; ``auto`` balances a strongly imbalanced target."""
    if option not in CLASS_WEIGHTS:
        raise TrainingError(f"--class-weight must be auto, balanced or none, got {option!r}")
    if option != "auto":
        return option
    counts = np.bincount(y, minlength=n_classes)
    return "balanced" if counts.min() < AUTO_BALANCE_RATIO * counts.max() else "none"


def reference_rows(
    dataset: data.Dataset, specs: list[bundle.FeatureStats], test: np.ndarray
) -> tuple[list[list], dict[str, np.ndarray]]:
    """A few test rows as raw values, plus one row of blanks and unseen categories when the model
    has typed features, so the service's encoding is checked against the model's at load."""
    rows = features.raw_rows(dataset, test[:REFERENCE_ROWS])
    raw = features.raw_inputs(dataset, test[:REFERENCE_ROWS])
    if not all(s.kind == "numeric" and not s.nullable for s in specs):
        edge: list = []
        for spec, values in zip(specs, raw.values(), strict=True):
            if spec.kind == "categorical":
                edge.append(UNSEEN_PROBE)
            elif spec.nullable:
                edge.append(None)
            else:
                edge.append(values[0].item())
        rows.append(edge)
        for spec, value in zip(specs, edge, strict=True):
            column = raw[spec.name]
            item = np.asarray([np.nan if value is None else value])
            item = item.astype(np.float32) if column.dtype.kind == "f" else item.astype(str)
            raw[spec.name] = np.concatenate([column, item])
    return rows, raw


def background_rows(
    dataset: data.Dataset, train: np.ndarray, y: np.ndarray, seed: int
) -> list[list]:
    """Up to ``bundle.BACKGROUND_ROWS`` rows of the training split as raw values, stratified by
    class (each class in proportion to its rows, at least one), for explanations."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y[train], return_counts=True)
    total = min(bundle.BACKGROUND_ROWS, len(train))
    shares = np.maximum(1, np.floor(counts / counts.sum() * total)).astype(int)
    for k in np.argsort(-(counts / counts.sum() * total - shares), kind="stable"):
        if shares.sum() >= total:
            break
        shares[k] += 1
    chosen = [
        rng.permutation(train[y[train] == c])[: min(n, count)]
        for c, n, count in zip(classes, shares, counts, strict=True)
    ]
    return features.raw_rows(dataset, np.sort(np.concatenate(chosen)))


def run(options: Options) -> Path:
    """Train, evaluate and publish one model; return the published version directory."""
    name = options.name or (Path(options.data).stem if options.data else "iris")
    # Every problem with the options and the data is reported at once, in one message.
    problems: list[str] = []
    if not NAME_PATTERN.match(name):
        problems.append(f"model name {name!r} must be letters, digits, '.', '_' or '-'")
    if not 0 < options.test_size < 0.5:
        problems.append(f"--test-size must be between 0 and 0.5, got {options.test_size}")
    if options.epochs < 1:
        problems.append(f"--epochs must be at least 1, got {options.epochs}")
    if options.class_weight not in CLASS_WEIGHTS:
        problems.append(
            f"--class-weight must be auto, balanced or none, got {options.class_weight!r}"
        )
    if options.threshold not in (None, "f1"):
        try:
            evaluate.choose_threshold(options.threshold, np.zeros(0), np.zeros((0, 2)))
        except TrainingError as exc:
            problems.append(str(exc))
    choices = data.Choices(
        features=options.features,
        categorical=list(options.categorical or []),
        exclude=list(options.exclude or []),
    )
    try:
        dataset = data.load_dataset(options.data, options.target, choices)
    except TrainingError as exc:
        raise TrainingError("; ".join([*problems, str(exc)])) from None
    n_classes = len(np.unique(dataset.y))
    if n_classes > 2 and options.threshold is not None:
        problems.append(f"--threshold applies to a binary target; this one has {n_classes} classes")
    if problems:
        raise TrainingError("; ".join(problems))
    for note in dataset.notes:
        _say(options, note)
    parts = data.split(dataset.y, options.test_size, options.seed)
    encoder = LabelEncoder().fit(dataset.y)
    y = encoder.transform(dataset.y)
    classes = encoder.classes_.tolist()
    head = Head.choose(len(classes), options.encoding)
    binary = len(classes) == 2
    weighting = class_weight_mode(options.class_weight, y[parts.train], len(classes))
    specs = features.fit_specs(dataset, parts.train)
    x = features.encode(dataset, specs)

    # Nothing heavy is imported, and nothing written, until the input is known to be good.
    with staging_area(options.artifacts, name) as staging:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        _seed_everything(options.seed)
        core = build_core(specs, x[parts.train], head)
        kinds = {
            kind: sum(s.kind == kind for s in specs)
            for kind in ("numeric", "categorical", "boolean")
        }
        _say(
            options,
            f"training {name} on {len(parts.train)} rows, {len(specs)} features "
            f"({', '.join(f'{n} {k}' for k, n in kinds.items() if n)}), "
            f"{len(classes)} classes ({head.loss}, class weights {weighting})",
        )
        epochs_run = fit(
            core,
            (x[parts.train], head.targets(y[parts.train], len(classes))),
            (x[parts.validation], head.targets(y[parts.validation], len(classes))),
            options.epochs,
            options.quiet,
            weights=sample_weights(y[parts.train], len(classes), weighting),
            validation_weights=sample_weights(y[parts.validation], len(classes), weighting),
        )
        threshold = None
        if binary:
            p_validation = class_probabilities(core(x[parts.validation], training=False))
            threshold = evaluate.choose_threshold(
                options.threshold or "0.5", y[parts.validation], p_validation
            )
        probabilities = class_probabilities(core(x[parts.test], training=False))
        metrics = evaluate.compute(
            y[parts.test],
            evaluate.decide(probabilities, threshold),
            classes,
            probabilities,
            threshold,
        )
        _say(options, evaluate.format_table(metrics))

        model = wrap(specs, core)
        model.save(staging / bundle.MODEL_KERAS)
        joblib.dump(encoder, staging / bundle.LABEL_ENCODER)
        export.export_litert(core, staging / bundle.MODEL_TFLITE)
        test_raw = features.raw_inputs(dataset, parts.test)
        max_diff = export.check_equivalence(
            model, staging / bundle.MODEL_TFLITE, test_raw, x[parts.test]
        )
        evaluate.save(metrics, staging / bundle.REPORT_DIR)
        rows, raw = reference_rows(dataset, specs, parts.test)
        reference_probabilities = class_probabilities(model(raw, training=False))

        summary = {
            key: metrics[key]
            for key in ("accuracy", "baseline_accuracy", "macro_f1", "roc_auc", "pr_auc")
            if key in metrics
        }
        metadata = bundle.Metadata(
            name=name,
            created_at=datetime.now(UTC),
            features=specs,
            target=dataset.target,
            classes=classes,
            task="binary" if binary else "multiclass",
            encoding=options.encoding,
            output_units=head.units,
            metrics=summary,
            litert_max_abs_diff=max_diff,
            distributions=[
                distributions.fit(spec.kind, x[parts.train, j], len(spec.vocabulary or []))
                for j, spec in enumerate(specs)
            ],
            background=bundle.BackgroundSample(
                inputs=background_rows(dataset, parts.train, y, options.seed)
            ),
            reference=bundle.Reference(
                inputs=rows,
                probabilities=reference_probabilities.tolist(),
                tolerance=export.MAX_ABS_DIFF * 10,
            ),
            threshold=threshold,
            columns_left_out=dataset.left_out,
            model_sha256={
                name: bundle.sha256_file(staging / name)
                for name in (bundle.MODEL_KERAS, bundle.MODEL_TFLITE)
            },
            library_versions=_library_versions(),
            data_sha256=dataset.sha256,
            training={
                "epochs_requested": options.epochs,
                "epochs_run": epochs_run,
                "seed": options.seed,
                "test_size": options.test_size,
                "rows": dataset.rows,
                "rows_dropped_blank_target": dataset.dropped_rows,
                "train_rows": len(parts.train),
                "validation_rows": len(parts.validation),
                "test_rows": len(parts.test),
                "loss": head.loss,
                "class_weight": weighting,
                "threshold_option": (options.threshold or "0.5") if binary else None,
            },
        )
        published = publish(staging, options.artifacts, metadata, options.signing_key)
    _say(options, f"LiteRT export matches Keras (max abs diff {max_diff:.2e})")
    print(published, file=sys.stdout, flush=True)
    return published
