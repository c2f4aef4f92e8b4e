"""``python -m training``: train a classifier and publish a bundle."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, NoReturn

from training.errors import TrainingError

# TensorFlow reads these at import; quiet its C++ start-up chatter unless the user asks for it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

EXIT_BAD_INPUT = 2
PROG = "python -m training"
# What --quiet gives back on stderr when a run fails unexpectedly: the end of what the native
# libraries wrote meanwhile, which may say why.
NATIVE_TAIL_BYTES = 16 * 1024


def _error_name(prog: str) -> str:
    """How error lines start: ``training: error: ...``, or ``keras-serve train: error: ...``."""
    return "training" if prog == PROG else prog


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{_error_name(self.prog)}: error: {message} (see --help)\n")


def parse_args(argv: list[str] | None = None, prog: str = PROG) -> argparse.Namespace:
    """The options of a training run; ``prog`` names the command in help and errors (the
    ``keras-serve train`` subcommand hands its arguments here)."""
    parser = _Parser(
        prog=prog,
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
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="print only the published path (and errors): no progress, report or library logs",
    )
    return parser.parse_args(argv)


def _names(value: str | None, flag: str) -> list[str] | None:
    """A comma-separated list of column names; None when the flag is absent."""
    if value is None:
        return None
    names = [f.strip() for f in value.split(",") if f.strip()]
    if not names:
        raise TrainingError(f"{flag} names no column")
    return names


def _quiet_python_logs() -> None:
    """Errors only from the Python loggers of TensorFlow and absl (set before either runs)."""
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    with contextlib.suppress(ImportError):  # absl comes with TensorFlow
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
        absl_logging.set_stderrthreshold("error")


@contextlib.contextmanager
def _native_stderr_captured() -> Iterator[None]:
    """Send file descriptor 2 to a temporary file while inside, then put it back.

    TensorFlow's and absl's C++ start-up lines and LiteRT's XNNPACK line are written straight to
    descriptor 2, before (or beside) any log level that could stop them. Python's ``sys.stderr``
    writes there too, so warnings are held as well; the CLI prints its errors after the run,
    once the descriptor is back. A run that fails unexpectedly gets the end of what was held
    written back before its traceback, so --quiet never hides why it crashed."""
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2 (closed by the caller): nothing to silence
        yield
        return
    try:
        held = tempfile.TemporaryFile()  # noqa: SIM115 (closed below)
    except OSError:  # no writable temporary directory: run as without --quiet
        os.close(saved)
        yield
        return
    os.dup2(held.fileno(), 2)
    unexpected = False
    try:
        yield
    except (TrainingError, OSError):
        raise  # main prints them as one line; what was held is noise
    except Exception:
        unexpected = True
        raise
    finally:
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()  # what Python wrote meanwhile goes to the file, not the terminal
        os.dup2(saved, 2)
        os.close(saved)
        if unexpected:
            _write_tail(held)
        held.close()


def _write_tail(held: IO[bytes]) -> None:
    """The last :data:`NATIVE_TAIL_BYTES` of what was held, to the real stderr."""
    with contextlib.suppress(OSError):
        size = held.seek(0, os.SEEK_END)
        held.seek(max(0, size - NATIVE_TAIL_BYTES))
        tail = memoryview(held.read())
        while tail:
            tail = tail[os.write(2, tail) :]


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    """Run ``python -m training`` (or ``keras-serve train``) with ``argv``; the exit code."""
    args = parse_args(argv, prog)
    name = _error_name(prog)
    try:
        features = _names(args.features, "--features")
        categorical = _names(args.categorical, "--categorical")
        exclude = _names(args.exclude, "--exclude")
    except TrainingError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    from training.pipeline import Options, run

    quiet: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    if args.quiet:  # TF_CPP_MIN_LOG_LEVEL is 3 unless the user set it (top of this module)
        _quiet_python_logs()
        quiet = _native_stderr_captured()

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
        with quiet:  # TensorFlow is imported inside the run, once the input is known to be good
            run(options)
    except TrainingError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:  # a full disk, a read-only or vanished directory, an I/O error
        # The staging directory is already removed (training.publish.staging_area): no version.
        print(f"{name}: error: {_os_problem(exc)}", file=sys.stderr)
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
