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
from training import data, evaluate, export
from training.errors import TrainingError
from training.model import Encoding, Head, build, class_probabilities, fit
from training.publish import publish, staging_area

# Test rows whose Keras probabilities are recorded; the service must reproduce them at load.
REFERENCE_ROWS = 5
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


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


def run(options: Options) -> Path:
    """Train, evaluate and publish one model; return the published version directory."""
    name = options.name or (Path(options.data).stem if options.data else "iris")
    if not NAME_PATTERN.match(name):
        raise TrainingError(f"model name {name!r} must be letters, digits, '.', '_' or '-'")
    if not 0 < options.test_size < 0.5:
        raise TrainingError(f"--test-size must be between 0 and 0.5, got {options.test_size}")
    if options.epochs < 1:
        raise TrainingError(f"--epochs must be at least 1, got {options.epochs}")
    dataset = data.load_dataset(options.data, options.target, options.features)
    parts = data.split(dataset.y, options.test_size, options.seed)
    encoder = LabelEncoder().fit(dataset.y)
    y = encoder.transform(dataset.y)
    classes = encoder.classes_.tolist()
    head = Head.choose(len(classes), options.encoding)

    # Nothing heavy is imported, and nothing written, until the input is known to be good.
    with staging_area(options.artifacts, name) as staging:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        _seed_everything(options.seed)
        x_train = dataset.x[parts.train]
        model = build(x_train, head)
        _say(
            options,
            f"training {name} on {len(parts.train)} rows, {len(dataset.features)} features, "
            f"{len(classes)} classes ({head.loss})",
        )
        epochs_run = fit(
            model,
            (x_train, head.targets(y[parts.train], len(classes))),
            (dataset.x[parts.validation], head.targets(y[parts.validation], len(classes))),
            options.epochs,
            options.quiet,
        )
        x_test = dataset.x[parts.test]
        probabilities = class_probabilities(model(x_test, training=False))
        metrics = evaluate.compute(y[parts.test], probabilities.argmax(axis=1), classes)
        _say(options, evaluate.format_table(metrics))

        model.save(staging / bundle.MODEL_KERAS)
        joblib.dump(encoder, staging / bundle.LABEL_ENCODER)
        export.export_litert(model, staging / bundle.MODEL_TFLITE)
        max_diff = export.check_equivalence(model, staging / bundle.MODEL_TFLITE, x_test)
        evaluate.save(metrics, staging / bundle.REPORT_DIR)

        metadata = bundle.Metadata(
            name=name,
            created_at=datetime.now(UTC),
            features=[
                bundle.FeatureStats(name=f, min=float(lo), max=float(hi), mean=float(mu))
                for f, lo, hi, mu in zip(
                    dataset.features, x_train.min(0), x_train.max(0), x_train.mean(0), strict=True
                )
            ],
            target=dataset.target,
            classes=classes,
            task="binary" if len(classes) == 2 else "multiclass",
            encoding=options.encoding,
            output_units=head.units,
            metrics={"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]},
            litert_max_abs_diff=max_diff,
            reference=bundle.Reference(
                inputs=x_test[:REFERENCE_ROWS].tolist(),
                probabilities=probabilities[:REFERENCE_ROWS].tolist(),
                tolerance=export.MAX_ABS_DIFF,
            ),
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
                "train_rows": len(parts.train),
                "validation_rows": len(parts.validation),
                "test_rows": len(parts.test),
                "loss": head.loss,
            },
        )
        published = publish(staging, options.artifacts, metadata, options.signing_key)
    _say(options, f"LiteRT export matches Keras (max abs diff {max_diff:.2e})")
    print(published, file=sys.stdout, flush=True)
    return published
