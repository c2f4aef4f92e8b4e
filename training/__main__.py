"""``python -m training``: train a classifier and publish a bundle."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn

from training.errors import TrainingError

# TensorFlow reads these at import; quiet its C++ start-up chatter unless the user asks for it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"training: error: {message} (see --help)\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = _Parser(
        prog="python -m training",
        description="Train a Keras classifier on tabular data and publish a versioned bundle. "
        "With no arguments, trains on the embedded Iris data set as model 'iris'.",
    )
    parser.add_argument(
        "--data", type=Path, help="CSV file with a header row (default: embedded Iris)"
    )
    parser.add_argument("--target", help="target column (required with --data)")
    parser.add_argument(
        "--features",
        help="comma-separated feature columns (default: all others, less ID-like columns)",
    )
    parser.add_argument(
        "--categorical",
        help="comma-separated columns to treat as categories even if they hold numbers "
        "(zip codes, area codes)",
    )
    parser.add_argument("--exclude", help="comma-separated columns to leave out")
    parser.add_argument("--name", help="model name (default: iris, or the CSV file's stem)")
    parser.add_argument(
        "--artifacts",
        type=Path,
        default=Path(os.environ.get("ARTIFACTS_DIR", "artifacts")),
        help="artifacts directory (default: $ARTIFACTS_DIR or ./artifacts)",
    )
    parser.add_argument(
        "--encoding",
        choices=["sparse", "onehot"],
        default="sparse",
        help="integer labels + sparse loss (default), or one-hot + categorical loss",
    )
    parser.add_argument(
        "--class-weight",
        choices=["auto", "balanced", "none"],
        default="auto",
        help="weigh classes by inverse frequency: auto (default) does when the rarest class has "
        "under a tenth of the commonest one's rows",
    )
    parser.add_argument(
        "--threshold",
        default=None,
        help="binary targets: probability of the positive class (the second in label order) at "
        "or above which it is the label; a number, or 'f1' to pick the best F1 on the "
        "validation split (default 0.5)",
    )
    parser.add_argument("--epochs", type=int, default=200, help="maximum epochs (early stopping)")
    parser.add_argument("--seed", type=int, default=42, help="random seed; same seed, same model")
    parser.add_argument("--test-size", type=float, default=0.2, help="held-out test share")
    parser.add_argument("--quiet", action="store_true", help="print only the published path")
    return parser.parse_args(argv)


def _names(value: str | None, flag: str) -> list[str] | None:
    """A comma-separated list of column names; None when the flag is absent."""
    if value is None:
        return None
    names = [f.strip() for f in value.split(",") if f.strip()]
    if not names:
        raise TrainingError(f"{flag} names no column")
    return names


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        features = _names(args.features, "--features")
        categorical = _names(args.categorical, "--categorical")
        exclude = _names(args.exclude, "--exclude")
    except TrainingError as exc:
        print(f"training: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    from training.pipeline import Options, run

    options = Options(
        data=args.data,
        target=args.target,
        features=features,
        name=args.name,
        artifacts=args.artifacts,
        encoding=args.encoding,
        epochs=args.epochs,
        seed=args.seed,
        test_size=args.test_size,
        quiet=args.quiet,
        categorical=categorical,
        exclude=exclude,
        class_weight=args.class_weight,
        threshold=args.threshold,
        signing_key=os.environ.get("ARTIFACT_SIGNING_KEY") or None,
    )
    try:
        run(options)
    except TrainingError as exc:
        print(f"training: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:  # a full disk, a read-only or vanished directory, an I/O error
        # The staging directory is already removed (training.publish.staging_area): no version.
        print(f"training: error: {_os_problem(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


def _os_problem(exc: OSError) -> str:
    """An OSError as one line: what failed and on which file, without a traceback."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    where = f" ({exc.filename})" if exc.filename else ""
    stopped = "the run stopped and its staging directory was removed"
    return f"{reason}{where}; {stopped}".replace("\n", " ")


if __name__ == "__main__":
    sys.exit(main())
