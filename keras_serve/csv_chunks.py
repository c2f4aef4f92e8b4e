"""Read a CSV file in chunks of whole records, as the service's parser reads a body.

A quoted field may hold a line break, so a chunk ends only where a record does; each chunk with
the file's header is the body of one ``POST /predict`` with ``Content-Type: text/csv``. Also
here: opening the data file, and a parser message turned into the row and line in the file.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import accumulate, islice
from pathlib import Path
from typing import IO

from keras_serve.predict import PredictError, os_error_reason

READ_BUFFER = 1 << 20

_CSV_ROW = re.compile(r"CSV row (\d+)")


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
        raise PredictError(f"data file {path} cannot be read: {os_error_reason(exc)}") from None
    try:
        yield stream
    except OSError as exc:
        raise PredictError(f"data file {path} cannot be read: {os_error_reason(exc)}") from None
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
