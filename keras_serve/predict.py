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
"""

from __future__ import annotations

import csv
import email.utils
import os
import re
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import accumulate, islice
from pathlib import Path
from typing import IO, Any

# The service's default MAX_BATCH_ROWS: offline, larger chunks are no faster (the model's and
# numpy's working sets leave the CPU caches) and take more memory; with a URL, a service with a
# lower limit answers 413 naming it, and the chunks are cut to it.
CHUNK_ROWS = 10_000
URL_MAX_BYTES = 8 * 1024 * 1024  # the service's default MAX_BODY_BYTES
CONCURRENCY = 4
RETRIES = 10  # 503s answered for one chunk before giving up
MAX_RETRY_AFTER = 60.0  # seconds: a longer Retry-After is waited this long
DEFAULT_RETRY_AFTER = 1.0  # a 503 without Retry-After (a model still loading)
TIMEOUT = 120.0  # seconds for one request (the service answers 503 past its own timeout)
READ_BUFFER = 1 << 20

Progress = Callable[[int, int], None]  # told (rows, bytes) of each chunk written
Note = Callable[[str], None]  # told what the user may want to know (a version passed over)

_CSV_ROW = re.compile(r"CSV row (\d+)")
_ROW_LIMIT = re.compile(r"rows; the limit is (\d+)")
_BYTE_LIMIT = re.compile(r"MAX_BODY_BYTES=(\d+)")


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


# -- reading the file in chunks -----------------------------------------------------------------
@dataclass(frozen=True)
class Chunk:
    """Whole records of the file: its lines (with their ends) and where they start."""

    lines: list[str]
    text: str  # the lines joined
    first_row: int  # the file's row number of the first record (1: the one after the header)
    first_line: int  # its line number in the file (the header is line 1)
    ends: list[int] | None  # lines through the end of each record; None: a record a line

    @property
    def records(self) -> int:
        return len(self.lines) if self.ends is None else len(self.ends)

    @property
    def last_row(self) -> int:
        return self.first_row + self.records - 1

    def where(self, record: int) -> str:
        """``row R (line L)`` of the chunk's 1-based ``record``."""
        record = min(max(record, 1), self.records)
        before = record - 1 if self.ends is None else ([0, *self.ends][record - 1])
        return f"row {self.first_row + record - 1} (line {self.first_line + before})"

    def record_of(self, line: int) -> int:
        """The 1-based record holding the chunk's 0-based ``line``."""
        if self.ends is None:
            return line + 1
        return next((k + 1 for k, end in enumerate(self.ends) if end > line), self.records)

    def split(self, rows: int, max_bytes: int | None, header: str) -> list[Chunk]:
        """The chunk as chunks of at most ``rows`` records and ``max_bytes`` bytes with the
        header (a service answered 413 for it)."""
        ends = self.ends if self.ends is not None else list(range(1, len(self.lines) + 1))
        parts, start = [], 0
        while start < len(ends):
            line_start = ends[start - 1] if start else 0
            stop = min(start + rows, len(ends))
            if max_bytes is not None:
                stop = start + _fitting(self.lines, ends[start:stop], line_start, max_bytes, header)
                if stop == start:
                    raise PredictError(
                        f"{self.where(start + 1)} is larger than the service's MAX_BODY_BYTES "
                        f"({max_bytes}) with the header"
                    )
            lines = self.lines[line_start : ends[stop - 1]]
            parts.append(
                Chunk(
                    lines,
                    "".join(lines),
                    self.first_row + start,
                    self.first_line + line_start,
                    None if self.ends is None else [e - line_start for e in ends[start:stop]],
                )
            )
            start = stop
        return parts


def _fitting(lines: list[str], ends: list[int], start: int, max_bytes: int, header: str) -> int:
    """How many of the records ending after ``ends`` lines (counted from line ``start``) fit in
    ``max_bytes`` bytes with the header."""
    if not ends:
        return 0
    chars = len(header) + sum(map(len, lines[start : ends[-1]]))
    if chars * 4 <= max_bytes:  # UTF-8 takes at most 4 bytes a character: all fit
        return len(ends)
    room = max_bytes - len(header.encode("utf-8", "surrogateescape"))
    sizes = list(
        accumulate(len(line.encode("utf-8", "surrogateescape")) for line in lines[start : ends[-1]])
    )
    return sum(1 for end in ends if sizes[end - start - 1] <= room)


def _is_blank(line: str) -> bool:
    return not line.strip()


def _record_ends(lines: list[str]) -> tuple[list[int], bool]:
    """After how many of ``lines`` each record ends, as the service's csv.reader reads them, and
    whether the last record is complete (False: the lines end inside a quoted field). A
    malformed record ends its line; the service's parser names it."""
    reader = csv.reader(lines, strict=True)
    ends: list[int] = []
    try:
        for _ in reader:
            ends.append(reader.line_num)
    except csv.Error as exc:
        if reader.line_num >= len(lines) and "unexpected end of data" in str(exc):
            return ends, False
        ends.extend(range(max(reader.line_num, ends[-1] + 1 if ends else 1), len(lines) + 1))
    return ends, True


class CsvChunks:
    """The records of a CSV file after its header, in chunks of at most ``rows`` records (and
    ``max_bytes`` bytes with the header, if given), each chunk whole records.

    Read as the service reads a body: UTF-8 (a BOM dropped), lines ended by LF, CRLF or CR.
    Blank lines the service would drop at the end of a body stay with the records after them
    (as rows, which the service refuses unless a one-feature model reads them as blanks); only
    the file's last blank lines are dropped, as they are at the end of a body."""

    def __init__(self, stream: IO[str], rows: int, max_bytes: int | None = None) -> None:
        self.stream = stream
        self.rows = rows
        self.max_bytes = max_bytes
        self.header = next(stream, "")
        if self.header and not self.header.endswith(("\n", "\r")):
            self.header += "\n"

    def __iter__(self) -> Iterator[Chunk]:
        pending: list[str] = []
        eof = False
        row, line = 1, 2
        more = 0  # lines to read past a chunk's worth: a record or blank run longer than one
        while True:
            want = max(self.rows - len(pending), 0) + more
            if want and not eof:
                read = list(islice(self.stream, want))
                eof = len(read) < want
                pending += read
            if not pending:
                return
            chunk = self._cut(pending, eof, row, line)
            if chunk is None:
                if eof:
                    return  # the file's last lines are blank
                more = max(len(pending), 1)  # grows geometrically: the file is read once
                continue
            more = 0
            del pending[: len(chunk.lines)]
            row, line = chunk.last_row + 1, line + len(chunk.lines)
            yield chunk

    def _cut(self, pending: list[str], eof: bool, row: int, line: int) -> Chunk | None:
        """The next chunk from the lines read, or None when they hold no record that may go
        yet (part of a record, or blank lines that may be the file's last)."""
        ends: list[int] | None = None
        joined = "".join(pending)
        if '"' in joined:
            ends, complete = _record_ends(pending)
            if not complete and eof:
                ends.append(len(pending))  # an unterminated quote: the parser names it
        records = len(pending) if ends is None else len(ends)

        def through(k: int) -> int:  # lines through the k-th record
            return k if ends is None or not k else ends[k - 1]

        def blank(k: int) -> bool:  # the k-th record is a blank line
            return through(k) - through(k - 1) == 1 and _is_blank(pending[through(k) - 1])

        take = min(records, self.rows)
        if self.max_bytes is not None:
            take = self._fit(pending, [through(k) for k in range(1, take + 1)], row, line)
        # The parser drops the blank lines that end a body: they go with the records after
        # them (as rows), or, the file's last lines, nowhere.
        keep = take
        while keep and blank(keep):
            keep -= 1
        if keep == 0 and take:
            later = next((k for k in range(take + 1, records + 1) if not blank(k)), None)
            if later is None:
                return None  # more lines to read, or the file's last lines (eof)
            keep = later  # a run of blank lines longer than a chunk, with the record after it
        if not keep:
            return None
        cut = through(keep)
        text = joined if cut == len(pending) else "".join(pending[:cut])
        return Chunk(pending[:cut], text, row, line, None if ends is None else ends[:keep])

    def _fit(self, pending: list[str], ends: list[int], row: int, line: int) -> int:
        """How many of the records ending at ``ends`` fit in ``max_bytes`` with the header."""
        assert self.max_bytes is not None
        fitting = _fitting(pending, ends, 0, self.max_bytes, self.header)
        if ends and not fitting:
            raise PredictError(
                f"{Chunk(pending, '', row, line, None).where(1)} is larger than the service's "
                f"MAX_BODY_BYTES ({self.max_bytes}) with the header"
            )
        return fitting


def body_of(header: str, chunk: Chunk) -> bytes:
    """The ``text/csv`` body of a chunk: the header and its lines, the file's bytes as read."""
    return (header + chunk.text).encode("utf-8", "surrogateescape")


@contextmanager
def open_data(path: Path) -> Iterator[IO[str]]:
    """The data file for reading, or :class:`PredictError` naming why it cannot be read."""
    try:
        if path.is_dir():
            raise PredictError(f"data file {path} is a directory")
        stream = open(  # noqa: SIM115 - closed below
            path,
            encoding="utf-8-sig",
            errors="surrogateescape",  # invalid UTF-8 is refused by the parser, with its row
            newline="",
            buffering=READ_BUFFER,
        )
    except FileNotFoundError:
        raise PredictError(f"data file {path} does not exist") from None
    except OSError as exc:
        raise PredictError(f"data file {path} cannot be read: {_reason(exc)}") from None
    try:
        yield stream
    except OSError as exc:
        raise PredictError(f"data file {path} cannot be read: {_reason(exc)}") from None
    finally:
        stream.close()


# -- what a row's error says ---------------------------------------------------------------------
def explain(message: str, chunk: Chunk, header: str) -> str:
    """The parser's message for a chunk (``CSV row 3, column 'x' is not a number``) with the
    row's number and line in the file instead (``row 10003 (line 10004), column ...``)."""
    found = _CSV_ROW.match(message)
    if found:
        return chunk.where(int(found.group(1))) + message[found.end() :]
    if message == "CSV body is not valid UTF-8":
        if not _utf8(header):
            return "the header is not valid UTF-8"
        bad = next((i for i, line in enumerate(chunk.lines) if not _utf8(line)), None)
        if bad is not None:
            return f"{chunk.where(chunk.record_of(bad))} is not valid UTF-8"
    if message.startswith("malformed CSV"):
        reader = csv.reader(chunk.lines, strict=True)
        records = 0
        try:
            for _ in reader:
                records += 1
        except csv.Error:
            return f"{chunk.where(records + 1)}: {message}"
    return message


def _utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _header_end(answer: str) -> int:
    """Where the header line of a CSV answer ends (after its newline). csv.writer quotes a
    field with a line break and doubles its quotes, so a newline outside quotes ends it."""
    start = 0
    while True:
        end = answer.find("\n", start)
        if end < 0:
            return len(answer)
        if answer.count('"', 0, end) % 2 == 0:
            return end + 1
        start = end + 1


# -- the answer file -----------------------------------------------------------------------------
class Output:
    """OUT, written under a temporary name in its directory and renamed when all is written;
    the header of the first answer only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.header: str | None = None
        self.rows = 0
        directory = path.parent
        if not directory.is_dir():
            raise PredictError(f"the directory of {path} does not exist")
        if path.is_dir():
            raise PredictError(f"output {path} is a directory")
        try:
            self.file = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed by commit/discard
                "wb", dir=directory, prefix=f".{path.name}.", suffix=".part", delete=False
            )
        except OSError as exc:
            raise PredictError(f"cannot write in {directory}: {_reason(exc)}") from None

    def write(self, answer: str, rows: int, where: str) -> None:
        """One chunk's CSV answer; its header must be the first answer's."""
        end = _header_end(answer)
        if self.header is None:
            self.header = answer[:end]
            start = 0
        elif answer[:end] != self.header:
            raise PredictError(
                f"the answer for {where} has another header than the rows before it "
                f"({answer[: end - 1][:200]!r}): another model answered them",
                bad_input=False,
            )
        else:
            start = end
        try:
            self.file.write(answer[start:].encode())
        except OSError as exc:
            raise PredictError(f"cannot write {self.path}: {_reason(exc)}") from None
        self.rows += rows

    def commit(self) -> None:
        """Flush, give the file the mode a new file gets (or the old OUT's) and rename it."""
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            os.chmod(self.file.name, _mode_for(self.path))
            os.replace(self.file.name, self.path)
        except OSError as exc:
            self.discard()
            raise PredictError(f"cannot write {self.path}: {_reason(exc)}") from None

    def discard(self) -> None:
        self.file.close()
        Path(self.file.name).unlink(missing_ok=True)


def _mode_for(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextmanager
def output(path: Path, data: Path) -> Iterator[Output]:
    """An :class:`Output` renamed to ``path`` when the block ends well, removed otherwise."""
    if path.exists() and data.exists() and os.path.samefile(path, data):
        raise PredictError(f"--out {path} is the data file; write the answers elsewhere")
    out = Output(path)
    try:
        yield out
    except BaseException:
        out.discard()
        raise
    out.commit()


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


# -- through a service ----------------------------------------------------------------------------
def predict_url(
    data: Path,
    out: Path,
    url: str,
    name: str | None = None,
    version: int | None = None,
    chunk_rows: int = CHUNK_ROWS,
    concurrency: int = CONCURRENCY,
    api_key: str | None = None,
    progress: Progress | None = None,
    retries: int = RETRIES,
) -> Summary:
    """Send ``data`` to the service at ``url`` in chunks, ``concurrency`` of them in flight,
    and write the CSV answers to ``out`` in input order."""
    import httpx

    endpoint = _endpoint(url, name, version)
    headers = {"Content-Type": "text/csv", "Accept": "text/csv"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    started = time.perf_counter()
    chunks = 0
    with open_data(data) as stream, output(out, data) as answers:
        reader = CsvChunks(stream, chunk_rows, URL_MAX_BYTES)
        client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(TIMEOUT, connect=10.0),
            limits=httpx.Limits(max_connections=concurrency),
        )
        sender = _Sender(client, endpoint, url, data, reader, retries)
        pool = ThreadPoolExecutor(concurrency, thread_name_prefix="send")
        in_flight: deque[tuple[Chunk, Future[list[tuple[str, Chunk]]]]] = deque()

        def write(chunk: Chunk, sending: Future[list[tuple[str, Chunk]]]) -> None:
            for answer, piece in sending.result():
                answers.write(answer, piece.records, chunk.where(1))
            if progress is not None:
                first = answers.rows == chunk.records  # the header with the first chunk
                progress(chunk.records, len(chunk.text) + (len(reader.header) if first else 0))

        try:
            for chunk in reader:
                in_flight.append((chunk, pool.submit(sender.send, chunk)))
                chunks += 1
                if len(in_flight) >= concurrency:
                    write(*in_flight.popleft())
            if not chunks:  # no data row: the service says so
                empty = Chunk([], "", 1, 2, None)
                in_flight.append((empty, pool.submit(sender.send, empty)))
            while in_flight:
                write(*in_flight.popleft())
        except BaseException:
            sender.stop()  # no more retries; requests under way finish, then the client closes
            for _, future in in_flight:
                future.cancel()
            raise
        finally:
            pool.shutdown()
            client.close()
        rows = answers.rows
    return Summary(
        rows, chunks, time.perf_counter() - started, sender.version, name, None, sender.retries
    )


def _endpoint(url: str, name: str | None, version: int | None) -> str:
    base = url.rstrip("/")
    if not re.match(r"https?://[^/\s]+", base):
        raise PredictError(f"--url {url[:200]!r} is not an http:// or https:// URL")
    if version is not None and name is None:
        raise PredictError("--version needs --model: /models/NAME/versions/N/predict")
    if name is None:
        return f"{base}/predict"
    if version is None:
        return f"{base}/models/{name}/predict"
    return f"{base}/models/{name}/versions/{version}/predict"


class _Sender:
    """Sends chunks from worker threads: retries 503s after their Retry-After, splits a chunk
    the service finds too large (413) to its limit, checks one version answers them all."""

    def __init__(
        self, client: Any, endpoint: str, url: str, data: Path, reader: CsvChunks, retries: int
    ) -> None:
        self.client = client
        self.endpoint = endpoint
        self.url = url
        self.data = data
        self.reader = reader  # its limits are lowered when the service answers 413
        self.max_retries = retries
        self.version: int | None = None
        self.answered: str | None = None  # the rows the first answer was for
        self.retries = 0
        self.lock = threading.Lock()
        self.stopped = threading.Event()

    def stop(self) -> None:
        """No more retries: a chunk waiting out a Retry-After gives up at once. Requests under
        way finish (within their timeout) before the client is closed, so that every
        connection is closed with it."""
        self.stopped.set()

    def send(self, chunk: Chunk) -> list[tuple[str, Chunk]]:
        """The chunk's CSV answer (one per piece of a chunk the service split) with its rows."""
        response = self._post(body_of(self.reader.header, chunk), chunk)
        if response.status_code == 413:
            pieces = self._split(chunk, response)
            if pieces is not None:
                return [answer for piece in pieces for answer in self.send(piece)]
        if response.status_code != 200:
            raise self._refused(response, chunk)
        media = response.headers.get("content-type", "")
        if not media.startswith("text/csv"):
            raise PredictError(
                f"{self._rows(chunk)}: the service answered {media or 'no content type'}, not "
                "CSV: is it a keras-serve service?",
                bad_input=False,
            )
        self._check_version(response, chunk)
        return [(response.text, chunk)]

    def _post(self, body: bytes, chunk: Chunk) -> Any:
        import httpx

        attempt = 0
        while True:
            try:
                response = self.client.post(self.endpoint, content=body)
            except httpx.TimeoutException:
                raise PredictError(
                    f"{self._rows(chunk)}: no answer from {self.url} within {TIMEOUT:g} s",
                    bad_input=False,
                ) from None
            except (httpx.HTTPError, RuntimeError) as exc:  # RuntimeError: a closed client
                raise PredictError(f"cannot reach {self.url}: {_transport_reason(exc)}") from None
            if response.status_code != 503 or attempt >= self.max_retries:
                return response
            attempt += 1
            with self.lock:
                self.retries += 1
            if self.stopped.wait(_retry_after(response.headers.get("retry-after"))):
                return response

    def _split(self, chunk: Chunk, response: Any) -> list[Chunk] | None:
        """The chunk cut to the limit a 413 names (rows or bytes); None if it names none."""
        message = _error_text(response)
        rows = _ROW_LIMIT.search(message)
        size = _BYTE_LIMIT.search(message)
        reader = self.reader
        with self.lock:
            if rows and int(rows.group(1)) < chunk.records:
                reader.rows = min(reader.rows, int(rows.group(1)))
            elif size and len(body_of(reader.header, chunk)) > int(size.group(1)):
                reader.max_bytes = min(reader.max_bytes or URL_MAX_BYTES, int(size.group(1)))
            else:
                return None
            rows_limit, bytes_limit = reader.rows, reader.max_bytes
        return chunk.split(rows_limit, bytes_limit, reader.header)

    def _check_version(self, response: Any, chunk: Chunk) -> None:
        given = response.headers.get("x-model-version")
        version = int(given) if given and given.isdigit() else None
        with self.lock:
            if self.answered is None:
                self.version, self.answered = version, self._rows(chunk)
                return
            first, answered = self.version, self.answered
        if version != first:
            raise PredictError(
                f"the service answered {self._rows(chunk)} with version {version} and "
                f"{answered} with version {first} (a new version or a canary mid-file): pin "
                "one with --model NAME --version N",
                bad_input=False,
            )

    def _rows(self, chunk: Chunk) -> str:
        if chunk.records <= 1:
            return f"{self.data} row {chunk.first_row}"
        return f"{self.data} rows {chunk.first_row}-{chunk.last_row}"

    def _refused(self, response: Any, chunk: Chunk) -> PredictError:
        status = response.status_code
        message = explain(_error_text(response), chunk, self.reader.header)
        if status == 401:
            message += " (the command sends $API_KEY as the bearer token)"
        text = f"{self._rows(chunk)}: the service answered {status}: {message}"
        if status == 503:
            text += f" (after {self.max_retries} retries)"
        return PredictError(text, bad_input=400 <= status < 500)


def _error_text(response: Any) -> str:
    """The service's ``{"error": ...}``, or the start of whatever else it answered."""
    try:
        document = response.json()
    except ValueError:
        document = None
    if isinstance(document, dict) and isinstance(document.get("error"), str):
        return document["error"]
    text = " ".join(response.text.split())
    return text[:200] or response.reason_phrase or "no message"


def _retry_after(value: str | None) -> float:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date), bounded."""
    if value is None:
        return DEFAULT_RETRY_AFTER
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return DEFAULT_RETRY_AFTER
    return min(max(when.timestamp() - time.time(), 0.0), MAX_RETRY_AFTER)


def _transport_reason(exc: Exception) -> str:
    reason = str(exc).strip() or type(exc).__name__
    return reason.splitlines()[0][:200]


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__
