"""Score a CSV file through a running keras-serve service (``keras-serve predict --url``).

The file's chunks are sent ``concurrency`` at a time and their CSV answers written in input
order: a 503 is retried after its Retry-After, a 413 cuts the chunks to the limit it names, and
one model version must answer them all. httpx is imported when a run starts.
"""

from __future__ import annotations

import email.utils
import re
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from keras_serve.csv_chunks import Chunk, CsvChunks, body_of, explain, open_data
from keras_serve.predict import CHUNK_ROWS, PredictError, Progress, Summary
from keras_serve.scored_file import output

URL_MAX_BYTES = 8 * 1024 * 1024  # the service's default MAX_BODY_BYTES
CONCURRENCY = 4
RETRIES = 10  # 503s answered for one chunk before giving up
MAX_RETRY_AFTER = 60.0  # seconds: a longer Retry-After is waited this long
DEFAULT_RETRY_AFTER = 1.0  # a 503 without Retry-After (a model still loading)
TIMEOUT = 120.0  # seconds for one request (the service answers 503 past its own timeout)

_ROW_LIMIT = re.compile(r"rows; the limit is (\d+)")
_BYTE_LIMIT = re.compile(r"MAX_BODY_BYTES=(\d+)")


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
