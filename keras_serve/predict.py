"""Score a CSV file with a model, offline or through a running service, in bounded memory.

The file is cut into chunks of whole records (a quoted field may hold a line break); each chunk
with the file's header is the body a ``POST /predict`` with ``Content-Type: text/csv`` carries.
Offline, a chunk is read by the service's own CSV parser (so typed features, blanks, unseen
categories, ignored columns and refusals are the service's), scored, and answered by the
service's own CSV writer (``service.outputs.predictions_csv``); with a URL, it is sent to the
service. Either way OUT gets the answer's header once and every chunk's rows in input order, so
both ways give the same file. OUT is written under a temporary name beside it and renamed at the
end: a failure leaves no partial OUT. No click, no progress bar here: the caller is told of each
chunk written.

Here: what both ways share (:class:`PredictError`, :class:`Summary`, :data:`CHUNK_ROWS`) and
scoring offline (:func:`load_model`, :func:`predict_local`). The rest has a module of its own:
:mod:`keras_serve.csv_chunks` reads the file in chunks of whole records,
:mod:`keras_serve.scored_file` writes OUT, and :mod:`keras_serve.remote` scores through a
running service (:func:`~keras_serve.remote.predict_url`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The service's default MAX_BATCH_ROWS: offline, larger chunks are no faster (the model's and
# numpy's working sets leave the CPU caches) and take more memory; with a URL, a service with a
# lower limit answers 413 naming it, and the chunks are cut to it.
CHUNK_ROWS = 10_000

Progress = Callable[[int, int], None]  # told (rows, bytes) of each chunk written
Note = Callable[[str], None]  # told what the user may want to know (a version passed over)


class PredictError(Exception):
    """Input the command cannot use (``bad_input``), or a service that failed; the message
    names the problem and, for a row, its number in the file."""

    def __init__(self, message: str, bad_input: bool = True) -> None:
        super().__init__(message)
        self.bad_input = bad_input


@dataclass(frozen=True)
class Summary:
    """What a run did: rows scored, by which model version, how long it took."""

    rows: int
    chunks: int
    seconds: float
    version: int | None  # the version that answered (None: a service that did not say)
    model: str | None = None
    runtime: str | None = None
    retries: int = 0  # 503s retried (with a URL)


def os_error_reason(exc: OSError) -> str:
    """Why a file could not be opened, read or written, in the OS's words."""
    return exc.strerror or str(exc) or type(exc).__name__


# -- offline --------------------------------------------------------------------------------------
def load_model(
    artifacts: Path,
    name: str,
    version: int | None,
    runtime: str | None = None,
    missing_values: str = "refuse",
    note: Note | None = None,
) -> Any:
    """``ARTIFACTS/NAME/VERSION`` verified and loaded as the service loads it; without a version,
    the highest one that verifies (the service's choice), each one passed over noted."""
    import bundle
    from bundle.versions import scan_versions
    from keras_serve.replay import ReplayError, load_replay_version

    def load(number: int) -> Any:
        with _native_stderr_silenced():  # LiteRT's "Created ... delegate" line, TF's chatter
            return load_replay_version(artifacts, name, number, runtime, missing_values)  # type: ignore[arg-type]

    try:
        if version is not None:
            return load(version)
        named = bundle.MODEL_NAME_PATTERN.fullmatch(name) and artifacts.is_dir()
        versions = scan_versions(bundle.model_dir(artifacts, name)).versions if named else []
        if not versions:
            return load(1)  # no version: it names the problem (name, directory, no version)
        first: ReplayError | None = None
        candidates = sorted(versions, reverse=True)
        for n, number in enumerate(candidates):
            try:
                return load(number)
            except ReplayError as exc:
                first = first or exc
                if note is not None and n + 1 < len(candidates):
                    note(f"{exc}; trying version {candidates[n + 1]}")
        raise PredictError(f"no version of model {name} verifies; the highest: {first}")
    except ReplayError as exc:
        raise PredictError(str(exc)) from None


@contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """File descriptor 2 to /dev/null for the block: native libraries write there directly."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def predict_local(
    data: Path,
    out: Path,
    model: Any,
    chunk_rows: int = CHUNK_ROWS,
    progress: Progress | None = None,
) -> Summary:
    """Score every row of ``data`` with a loaded model (:func:`load_model`) into ``out``.

    Each chunk is parsed on this thread while the one before it is scored on another (the
    runtimes release the GIL while they compute), then written: the two overlap."""
    import numpy as np

    # Here, not at the top: these modules import PredictError from this one.
    from keras_serve.csv_chunks import Chunk, CsvChunks, body_of, explain, open_data
    from keras_serve.scored_file import output
    from service.errors import ServiceError
    from service.outputs import predictions_csv
    from service.protocols.predict import parse

    started = time.perf_counter()
    chunks = 0

    def parsed(header: str, chunk: Chunk) -> Any:
        try:
            return parse(body_of(header, chunk), "csv", model, max(chunk.records, chunk_rows))
        except ServiceError as exc:
            raise PredictError(f"{data}: {explain(exc.message, chunk, header)}") from None

    with open_data(data) as stream, output(out, data) as answers:
        reader = CsvChunks(stream, chunk_rows)

        def write(chunk: Chunk, read: Any, scoring: Future[Any]) -> None:
            probabilities = scoring.result()
            finite = np.isfinite(probabilities).all(axis=1)
            if not finite.all():
                record = int(np.flatnonzero(~finite)[0]) + 1
                raise PredictError(
                    f"{data}: {chunk.where(record)}: the model's output is not finite: its values "
                    "are too far outside the training range"
                )
            text = predictions_csv(model, read.x, probabilities, read.notes)
            answers.write(text, len(read.x), chunk.where(1))
            if progress is not None:
                first = answers.rows == len(read.x)  # the header with the first chunk
                progress(len(read.x), len(chunk.text) + (len(reader.header) if first else 0))

        with ThreadPoolExecutor(1, thread_name_prefix="score") as scorer:
            waiting: tuple[Chunk, Any, Future[Any]] | None = None
            for chunk in reader:
                read = parsed(reader.header, chunk)
                scoring = scorer.submit(model.probabilities_sync, read.x)
                chunks += 1
                if waiting is not None:
                    write(*waiting)
                waiting = (chunk, read, scoring)
            if waiting is None:  # no data row: the parser says so, as the service would
                parsed(reader.header, Chunk([], "", 1, 2, None))
            else:
                write(*waiting)
        rows = answers.rows
    return Summary(
        rows,
        chunks,
        time.perf_counter() - started,
        model.version,
        model.name,
        model.runtime.name,
    )
