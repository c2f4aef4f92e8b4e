"""``keras-serve``: one command for the project's tools, a subcommand each.

Each subcommand here only reads its options and prints; the work is done by a module that
knows nothing of the command line (``keras_serve.replay``, ``keras_serve.models``,
``training.__main__``, ``service.__main__``), imported when the subcommand runs so
that ``--help`` stays fast. To add one: a function under ``@main.command()`` that raises
:class:`BadInput` for input it cannot use; the options shared by several subcommands are below.

Bad input of any kind (an unknown option, a missing directory, a version that does not
verify) is one line on stderr and exit code 2, as ``python -m training`` does.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

# TensorFlow reads this at import (the Keras runtime); quiet its C++ start-up chatter.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

EXIT_BAD_INPUT = 2
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

F = TypeVar("F", bound=Callable[..., Any])


class BadInput(click.ClickException):
    """Input a subcommand cannot use; the message names it."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.ctx = click.get_current_context(silent=True)  # names the subcommand in the message


def _one_line(exc: click.ClickException) -> str:
    """A click error as ``<command>: error: <message>``, with where to look for a usage error."""
    context = getattr(exc, "ctx", None)
    command = context.command_path if context is not None else "keras-serve"
    message = " ".join(exc.format_message().split())
    if isinstance(exc, click.UsageError) and context is not None:
        message = f"{message.rstrip('.')} (see '{command} --help')"
    return f"{command}: error: {message}"


class CommandGroup(click.Group):
    """A click group whose errors are one line on stderr (no usage block), exit code 2 for bad
    input. ``CliRunner`` and the console script both go through :meth:`main`."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except click.ClickException as exc:
            # Click >= 8.2: a group run with no subcommand shows its help, as an error.
            if type(exc).__name__ == "NoArgsIsHelpError":
                exc.show()
            else:
                click.echo(_one_line(exc), err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted.", err=True)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(
    "keras-serve",
    cls=CommandGroup,
    context_settings=CONTEXT,
    no_args_is_help=True,
    epilog="Run 'keras-serve COMMAND --help' for a command's options.",
)
def main() -> None:
    """Train, serve and check Keras classifiers on tabular data.

    Models live in an artifacts directory as verified bundles, one directory per version:
    ARTIFACTS/NAME/VERSION.
    """


# -- options more than one subcommand takes --------------------------------------------------
def artifacts_option(function: F) -> F:
    return click.option(
        "--artifacts",
        type=click.Path(path_type=Path),
        metavar="DIR",
        envvar="ARTIFACTS_DIR",
        default="artifacts",
        show_default=True,
        show_envvar=True,
        help="Directory of model bundles: ARTIFACTS/NAME/VERSION.",
    )(function)


def model_option(function: F) -> F:
    return click.option("--model", "name", required=True, metavar="NAME", help="Model name.")(
        function
    )


def runtime_option(function: F) -> F:
    return click.option(
        "--runtime",
        type=click.Choice(["litert", "keras"]),
        default=None,
        help="Runtime to score with: litert (no TensorFlow) or keras. Default: litert when the "
        "bundle has model.tflite and LiteRT is installed, as the service chooses.",
    )(function)


def missing_values_option(help_text: str) -> Callable[[F], F]:
    """``--missing-values refuse|impute`` (``MISSING_VALUES``), as the service reads blanks."""
    return click.option(
        "--missing-values",
        type=click.Choice(["refuse", "impute"]),
        envvar="MISSING_VALUES",
        default="refuse",
        show_default=True,
        show_envvar=True,
        help=help_text,
    )


def json_option(function: F) -> F:
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        help="Print one JSON object on stdout (for scripts) instead of the readable report.",
    )(function)


# -- subcommands ------------------------------------------------------------------------------
@main.command(
    context_settings=CONTEXT,
    epilog="Example: keras-serve replay --log payloads/ --artifacts artifacts --model iris "
    "--version 2",
)
@click.option(
    "--log",
    type=click.Path(path_type=Path),
    metavar="DIR",
    envvar="PAYLOAD_LOG_DIR",
    required=True,
    show_envvar=True,
    help="The service's payload log: every *.jsonl file under it (rotated ones too), read in "
    "path order.",
)
@artifacts_option
@model_option
@click.option(
    "--version",
    type=click.IntRange(min=1),
    required=True,
    metavar="N",
    help="Version to rescore with: ARTIFACTS/NAME/N, verified as the service verifies it.",
)
@runtime_option
@missing_values_option(
    "A blank in a feature that had none in training: refuse the row (it counts as "
    "unscorable) or impute it, as the service's MISSING_VALUES does."
)
@json_option
def replay(
    log: Path,
    artifacts: Path,
    name: str,
    version: int,
    runtime: str | None,
    missing_values: str,
    as_json: bool,
) -> None:
    """Rescore logged requests with another model version, offline.

    Reads the rows of model NAME from the payload log, scores them with version N and compares
    with the answers logged: rows, agree, disagree, the largest probability difference (with
    its row and class), label flips by class, rows by logged version. Failed requests, other
    models' lines and malformed lines are counted and skipped; a row version N cannot read
    (a feature it lacks) is counted as unscorable.
    """
    import orjson

    from keras_serve.replay import ReplayError
    from keras_serve.replay import replay as run

    try:
        report = run(log, artifacts, name, version, runtime, missing_values)  # type: ignore[arg-type]
    except ReplayError as exc:
        raise BadInput(str(exc)) from None
    if as_json:
        click.echo(orjson.dumps(report.as_dict()).decode())
    else:
        click.echo(report.text())


@main.command(
    context_settings={"ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
    short_help="Train a classifier on a CSV (or Iris) and publish a version.",
)
@click.argument("arguments", nargs=-1, type=click.UNPROCESSED)
def train(arguments: tuple[str, ...]) -> int:
    """Train a classifier and publish a bundle: python -m training's options, parsed by it.

    Run 'keras-serve train --help' for them.
    """
    # One definition of the options: training's own parser reads them, names this command in
    # its help and errors, and gives the exit codes (2 for bad input).
    from training.__main__ import main as run

    return run(list(arguments), prog=click.get_current_context().command_path)


# What each option of `serve` sets; every other setting is read from the environment as is.
SERVE_ENVIRONMENT = {
    "artifacts": "ARTIFACTS_DIR",
    "model": "MODEL_NAME",
    "host": "HOST",
    "port": "PORT",
    "workers": "WORKERS",
    "runtime": "MODEL_RUNTIME",
    "poll": "POLL_SECONDS",
}


@main.command(
    context_settings=CONTEXT,
    short_help="Serve the models of an artifacts directory over HTTP and gRPC.",
    epilog="Every other setting (MODEL_VERSION, MODEL_VERSIONS, DEFAULT_MODEL, API_KEY, "
    "ADMIN_TOKEN, GRPC_PORT, MAX_BATCH_ROWS, LOG_LEVEL and the rest of the README's settings "
    "table) is read from the environment, as 'python -m service' reads it. "
    "Example: keras-serve serve --artifacts artifacts --model iris --port 8000",
)
@click.option("--artifacts", metavar="DIR", help="Directory of model bundles (ARTIFACTS_DIR).")
@click.option(
    "--model",
    metavar="NAME",
    help="Model to serve, a comma-separated list, or * for every model directory (MODEL_NAME).",
)
@click.option("--host", metavar="HOST", help="Address to bind (HOST; default 127.0.0.1).")
@click.option("--port", metavar="PORT", help="HTTP port (PORT; default 8000).")
@click.option("--workers", metavar="N", help="Worker processes, each loading the models (WORKERS).")
@click.option(
    "--runtime",
    type=click.Choice(["litert", "keras"]),
    help="litert (no TensorFlow) or keras (MODEL_RUNTIME; default litert when the bundle has "
    "model.tflite).",
)
@click.option(
    "--poll",
    metavar="SECONDS",
    help="Look for new versions this often; 0 turns polling off (POLL_SECONDS).",
)
def serve(**options: str | None) -> int:
    """Serve the models of an artifacts directory over HTTP (and gRPC), in this process.

    Each option sets the environment variable named beside it; an option left out leaves
    that variable as it is. Stops cleanly on SIGTERM or Ctrl-C.
    """
    from service.__main__ import grpc_port_problem, read_settings
    from service.__main__ import main as run

    given = {SERVE_ENVIRONMENT[key]: value for key, value in options.items() if value is not None}
    os.environ.update(given)
    settings = read_settings()
    if isinstance(settings, str):
        # The service's own message, each variable an option set named by its option too.
        for key, variable in SERVE_ENVIRONMENT.items():
            if variable in given:
                settings = re.sub(rf"(^|; ){variable}:", rf"\1--{key} ({variable}):", settings)
        raise BadInput(settings)
    problem = grpc_port_problem(settings)
    if problem is not None:
        raise BadInput(problem)
    return run()


@main.command(
    context_settings=CONTEXT,
    epilog="A version verifies when the service's checks before loading pass: every file "
    "matches manifest.json (and its signature, with ARTIFACT_SIGNING_KEY set), metadata.json is "
    "valid and names these model files, the label encoder's classes are the metadata's. No "
    "model is loaded, so a verified version can still be refused at load. Exit code 0 even when "
    "some version does not verify; 2 when the artifacts directory cannot be read.",
)
@artifacts_option
@json_option
def models(artifacts: Path, as_json: bool) -> None:
    """List every model under the artifacts directory, with its versions.

    For each version: whether it verifies (and if not, why), when it was created, its test
    accuracy, its number of features and classes, and the labels (serving.json) naming it.
    """
    import orjson

    from keras_serve.models import ListingError, list_artifacts

    try:
        listing = list_artifacts(artifacts, os.environ.get("ARTIFACT_SIGNING_KEY") or None)
    except ListingError as exc:
        raise BadInput(str(exc)) from None
    if as_json:
        click.echo(orjson.dumps(listing.as_dict()).decode())
    else:
        click.echo(listing.text())


# Commands defined in their own modules (they import the options above: registered last).
from keras_serve.predict_command import command as predict  # noqa: E402

main.add_command(predict, "predict")
