"""``keras-serve predict``: score a CSV file offline from a bundle, or through a running service.

Only options and the progress bar here; the work is :mod:`keras_serve.predict` (offline) and
:mod:`keras_serve.remote` (with ``--url``), imported when the command runs so that ``--help``
stays fast.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from keras_serve.cli import (
    CONTEXT,
    BadInput,
    artifacts_option,
    missing_values_option,
    runtime_option,
)


class ServiceFailed(BadInput):
    """The service failed (a 5xx, 503s past the retries, an answer that does not fit): not the
    input's fault, so exit code 1."""

    exit_code = 1


class _Bar:
    """tqdm on stderr, in rows: rate, and an ETA from the share of the file's bytes read (the
    rows in the file are not known until it is read). Drawn from the first chunk on, so an
    error before any is one line; cleared when the run fails."""

    def __init__(self, size: int, quiet: bool) -> None:
        self.size = size
        self.quiet = quiet
        self.bar: Any = None
        self.read = 0

    def __call__(self, rows: int, read: int) -> None:
        if self.quiet:
            return
        self.read += read
        done = rows + (self.bar.n if self.bar is not None else 0)
        total = max(done, round(done * self.size / self.read)) if self.read and self.size else None
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="row", unit_scale=True, file=sys.stderr)
        else:
            self.bar.total = total
        self.bar.update(rows)

    def close(self, success: bool) -> None:
        if self.bar is None:
            return
        if success:
            self.bar.total = self.bar.n
            self.bar.refresh()
        else:
            self.bar.leave = False
        self.bar.close()


@click.command(
    "predict",
    context_settings=CONTEXT,
    short_help="Score a CSV file, offline or through a running service.",
    epilog="Examples: keras-serve predict --data in.csv --out out.csv --artifacts artifacts "
    "--model iris; keras-serve predict --data in.csv --out out.csv --url http://127.0.0.1:8000",
)
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    required=True,
    metavar="IN.csv",
    help="CSV file with a header row naming the model's features (any order; the columns the "
    "model ignores, such as its target, may be there too), as POST /predict takes it.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    metavar="OUT.csv",
    help="Where to write the answers: label, prob_<class>..., warnings, one row per input row "
    "in order. Written whole or not at all.",
)
@artifacts_option
@click.option(
    "--model",
    "name",
    metavar="NAME",
    default=None,
    help="Model name: required offline; with --url, /models/NAME/predict (default: the "
    "service's default model).",
)
@click.option(
    "--version",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Model version. Default: offline, the highest that verifies; with --url, the one the "
    "service serves.",
)
@runtime_option
@missing_values_option(
    "Offline: a blank in a feature that had none in training is refused or imputed, as "
    "the service's MISSING_VALUES says."
)
@click.option(
    "--url",
    metavar="URL",
    default=None,
    help="Score through the service at URL instead (API_KEY from the environment is sent as "
    "its bearer token).",
)
@click.option(
    "--chunk-rows",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    metavar="N",
    help="Rows read and scored (or sent) at a time: the service's default MAX_BATCH_ROWS. With "
    "--url, a service with a lower limit says so and the chunks are cut to it.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1, max=64),
    default=4,
    show_default=True,
    metavar="N",
    help="With --url: chunks in flight at once (written in input order; a 503 is retried "
    "after its Retry-After).",
)
@click.option("--quiet", is_flag=True, help="No progress bar or summary on stderr; only errors.")
def command(
    data: Path,
    out: Path,
    artifacts: Path,
    name: str | None,
    version: int | None,
    runtime: str | None,
    missing_values: str,
    url: str | None,
    chunk_rows: int,
    concurrency: int,
    quiet: bool,
) -> None:
    """Score every row of a CSV file and write the answers as a CSV file.

    Offline (--artifacts, --model): the bundle is verified and loaded as the service loads it,
    and the file is read, scored and written in chunks, in bounded memory, exactly as POST
    /predict with Accept: text/csv answers each chunk. With --url: the same chunks are sent to
    a running service. Either way the file is the same. A row the model cannot read stops the
    run (exit code 2) naming its row and line; OUT is then not written.
    """
    from keras_serve import predict, remote

    context = click.get_current_context()
    if url is not None:
        given = [
            f"--{option.replace('_', '-')}"
            for option in ("artifacts", "runtime", "missing_values")
            if context.get_parameter_source(option) is click.core.ParameterSource.COMMANDLINE
        ]
        if given:
            raise BadInput(
                f"{', '.join(given)}: for scoring offline only; with --url the service's own "
                "settings apply"
            )
    elif name is None:
        raise BadInput("--model is required to score offline (or give --url)")
    try:
        size = data.stat().st_size
    except OSError:
        size = 0  # the run names the problem
    bar = _Bar(size, quiet)
    success = False
    try:
        if url is None:
            assert name is not None
            note = None if quiet else (lambda text: click.echo(f"note: {text}", err=True))
            model = predict.load_model(artifacts, name, version, runtime, missing_values, note)
            summary = predict.predict_local(data, out, model, chunk_rows, progress=bar)
        else:
            summary = remote.predict_url(
                data,
                out,
                url,
                name,
                version,
                chunk_rows,
                concurrency,
                api_key=os.environ.get("API_KEY") or None,
                progress=bar,
            )
        success = True
    except predict.PredictError as exc:
        raise (BadInput if exc.bad_input else ServiceFailed)(str(exc)) from None
    finally:
        bar.close(success)
    if not quiet:
        click.echo(_summary_line(summary, out, url), err=True)


def _summary_line(summary: Any, out: Path, url: str | None) -> str:
    rate = summary.rows / summary.seconds if summary.seconds > 0 else 0.0
    if url is None:
        source = f"model {summary.model} version {summary.version} ({summary.runtime})"
    else:
        version = f" (version {summary.version})" if summary.version is not None else ""
        source = f"{url}{version}"
        if summary.retries:
            retries = "1 retry" if summary.retries == 1 else f"{summary.retries} retries"
            source += f", {retries} after a 503"
    return (
        f"{summary.rows:,} rows scored by {source} in {summary.seconds:.1f} s "
        f"({rate:,.0f} rows/s): {out}"
    )
