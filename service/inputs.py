"""Request bodies to a validated float32 matrix: JSON rows, JSON records or CSV. No HTTP here.

A model whose features are all numeric and never blank (format 1, or Iris) takes numbers only,
read by the fast paths below. A model with typed features (text, true/false, blanks) reads each
feature's column through :mod:`service.typed`. Either way: every value finite, every feature
named once; messages name the row and feature at fault and never echo the input back.
"""

from __future__ import annotations

import csv
import io
import json
import math
import operator
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
import orjson

from service.errors import InvalidInput, MalformedBody, PayloadTooLarge
from service.typed import (
    MAX_ABS_VALUE,
    Notes,
    TypedSchema,
    bounded_array,
    encode,
    encode_csv_cells,
    finite_number,
    kind_name,
)

_NUMBER_TYPES = frozenset({int, float})
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


@dataclass(frozen=True)
class Schema:
    """What a request must fit: the model's features in order and the limits."""

    features: Sequence[str]
    max_rows: int
    n_classes: int
    typed: TypedSchema | None = None  # None: numbers only
    # Columns of the training table the model does not use (its target, columns left out as
    # IDs or by --exclude): a record or CSV header may carry them, and they are ignored.
    ignored: frozenset[str] = frozenset()


@dataclass
class Parsed:
    """A validated request: the matrix and the options that shape the answer."""

    x: np.ndarray
    top_k: int | None = None
    notes: Notes | None = None  # warnings by row from reading typed values


# -- JSON -------------------------------------------------------------------------------------
class _NonFinite(ValueError):
    pass


def _reject_constant(name: str) -> float:
    raise _NonFinite(name)


def _nan_is_blank(name: str) -> None:
    """``NaN`` (what Python's json module writes for a float NaN: pandas' blank) is a blank."""
    if name == "NaN":
        return None
    raise _NonFinite(name)


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):  # linear: counted once, not once per key
        counts = Counter(k for k, _ in pairs)
        duplicate = next(k for k, _ in pairs if counts[k] > 1)  # the first key that repeats
        raise InvalidInput(f"duplicate key {duplicate[:64]!r} in a JSON object")
    return document


def _strict_json(body: bytes, nan_is_blank: bool = False) -> Any:
    """The slow, exact parser: names NaN/Infinity and duplicate keys (used only when needed)."""
    try:
        # Decode strictly: given bytes, json.loads would also take UTF-16/32 and let UTF-8
        # encoded surrogates through, which no JSON encoder can write back.
        return json.loads(
            body.decode("utf-8"),
            parse_constant=_nan_is_blank if nan_is_blank else _reject_constant,
            object_pairs_hook=_reject_duplicates,
        )
    except _NonFinite as exc:
        raise InvalidInput(
            f"{exc} is not a number this service accepts; send finite numbers"
        ) from None
    except RecursionError:
        raise MalformedBody("JSON nesting is too deep") from None
    except UnicodeDecodeError:
        raise MalformedBody("body is not valid UTF-8") from None
    except json.JSONDecodeError as exc:
        raise MalformedBody(
            f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except ValueError:  # an integer literal past Python's 4300-digit conversion limit
        raise InvalidInput("a number in the body has too many digits") from None


def load_json(body: bytes, nan_is_blank: bool = False) -> Any:
    """Parse JSON strictly: orjson on the fast path, the exact parser to explain a failure.

    ``nan_is_blank`` (a model with typed features): the literal ``NaN``, which Python's json
    module and httpx write for a float NaN (pandas' blank), reads as null; Infinity is refused."""
    if not body.strip():
        raise MalformedBody('empty body; send JSON such as {"instances": [[...]]}')
    try:
        document = orjson.loads(body)
        exact = False
    except orjson.JSONDecodeError:
        # Raises with a precise message, or parses 1e309 as inf (refused later); it also
        # refuses repeated keys.
        document = _strict_json(body, nan_is_blank)
        exact = True
    if _SURROGATE_ESCAPE.search(body):  # rare: only then walk the strings
        _reject_lone_surrogates(document)
    if not exact and _may_repeat_keys(body, document):
        document = _strict_json(body, nan_is_blank)
    return document


# The end of an object key: a closing quote, (blanks,) then the colon. Without a backslash in
# the text every quote opens or closes a string, so counting these counts each key once, plus
# any string value that starts with (blanks and) a colon.
_KEY_END = b'":'
_KEY_END_SPACED = re.compile(rb'"[ \t\n\r]+:')
# A whole JSON string, and the colon after it if it is a key: scanning left to right, each
# match starts at an opening quote (outside strings, valid JSON has no quote or backslash).
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"([ \t\n\r]*:)?', re.DOTALL)


def _count_keys(text: bytes, exact: bool) -> int:
    """Object keys in valid JSON text: exactly (a tokenising scan) or, for text without a
    backslash, keys plus the string values that start with a colon (a faster scan)."""
    if exact:
        return sum(1 for match in _STRING.finditer(text) if match.group(1))
    found = text.count(_KEY_END)
    # Rare: a blank after a quote (tested inline: a generator costs more than the four scans).
    if b'" ' in text or b'"\n' in text or b'"\r' in text or b'"\t' in text:
        found += len(_KEY_END_SPACED.findall(text))
    return found


def _keys_at_least(document: Any) -> int:
    """A lower bound on the keys of the decoded document, cheaply: the top-level object's,
    those of objects directly in it and those of lists of objects directly in it (records)."""
    if type(document) is not dict:
        return 0
    count = len(document)
    for value in document.values():
        kind = type(value)
        if kind is dict:
            count += len(value)
        elif (
            kind is list
            and value
            and type(value[0]) is dict  # rows are lists: skipped at the first
            and all(type(item) is dict for item in value)
        ):
            count += sum(map(len, value))
    return count


def _may_repeat_keys(body: bytes, document: Any) -> bool:
    """orjson silently keeps the last of repeated keys, at any depth, however a key is spelled
    (``"\\u0069d"`` is ``"id"``). Repeated keys are the only way the body can hold more keys
    than the decoded document, so count both, in linear time (scans, not a parse): the body's
    keys, then, unless they match the document's lower bound, the keys of the document written
    back by orjson (the same strings, so the same count, when nothing was dropped)."""
    exact = b"\\" in body  # escapes: the strings written back differ; tokenise both
    found = _count_keys(body, exact)
    if found == _keys_at_least(document):  # the body has at least the document's keys
        return False
    try:
        written = orjson.dumps(document)
    except orjson.JSONEncodeError:  # nesting orjson cannot write back: let the parser look
        return True
    return found != _count_keys(written, exact)


def _reject_lone_surrogates(document: Any) -> None:
    """JSON may escape half of a UTF-16 pair ("\\ud800"); such a string is not Unicode text and
    no JSON encoder writes it back (an echoed V2 ``id`` would fail the answer). Refuse it."""
    stack = [document]
    while stack:
        item = stack.pop()
        if type(item) is str:
            try:
                item.encode()
            except UnicodeEncodeError:
                raise MalformedBody(
                    "a string in the body is not valid Unicode (a lone \\ud800-\\udfff escape)"
                ) from None
        elif type(item) is dict:
            stack.extend(item)
            stack.extend(item.values())
        elif type(item) is list:
            stack.extend(item)


def _check_top_k(value: Any, n_classes: int) -> int | None:
    if value is None:
        return None
    if type(value) is float and value.is_integer():
        value = int(value)  # JSON Schema counts 3.0 as an integer, so the API accepts it too
    if type(value) is not int:
        raise InvalidInput("top_k must be an integer")
    if not 1 <= value <= n_classes:
        shown = value if abs(value) < 10**9 else "a number out of range"
        raise InvalidInput(f"top_k must be between 1 and {n_classes}, got {shown}")
    return value


def parse_json_body(body: bytes, schema: Schema) -> Parsed:
    """``{"instances": [...], "top_k": k}`` with rows or records."""
    x, notes, document = read_json_body(body, schema, ("top_k",))
    return Parsed(x, _check_top_k(document.get("top_k"), schema.n_classes), notes)


def read_json_body(
    body: bytes, schema: Schema, optional: tuple[str, ...]
) -> tuple[np.ndarray, Notes | None, dict[str, Any]]:
    """``{"instances": [...]}`` with rows or records, and the ``optional`` fields only: the
    matrix, the warnings by row, and the document (for its optional fields)."""
    document = load_json(body, nan_is_blank=schema.typed is not None)
    if not isinstance(document, dict):
        raise InvalidInput('body must be a JSON object with "instances"')
    allowed = {"instances", *optional}
    # The first unknown field, in the body's order: no sort of a document's keys (a 6 MB body
    # may hold half a million of them).
    unknown = next((key for key in document if key not in allowed), None)
    if unknown is not None:
        named = " and ".join(f"'{name}'" for name in optional)
        raise InvalidInput(
            f"unknown field {unknown[:64]!r}; expected 'instances' and optional {named}"
        )
    if "instances" not in document:
        raise InvalidInput("missing field 'instances'")
    x, notes = read_instances(document["instances"], schema, "instances")
    return x, notes, document


def read_instances(instances: Any, schema: Schema, where: str) -> tuple[np.ndarray, Notes | None]:
    """Rows or records as the model's matrix, with warnings by row for a typed model."""
    if schema.typed is None:
        return instances_matrix(instances, schema, where), None
    _check_instances(instances, schema, where)
    if isinstance(instances[0], dict):
        _check_records(instances, schema.features, where, schema.ignored)
        columns = [list(map(operator.itemgetter(f), instances)) for f in schema.features]
        return encode(columns, schema.typed, lambda i, j: f"{where}[{i}].{schema.features[j]}")
    return read_rows(instances, schema, where)


def read_rows(rows: list[Any], schema: Schema, where: str) -> tuple[np.ndarray, Notes | None]:
    """Rows of values in feature order; numbers only unless the schema is typed."""
    if schema.typed is None:
        return rows_matrix(rows, schema.features, where), None
    _check_rows(rows, schema.features, where)
    columns = list(zip(*rows, strict=True)) if rows else [[] for _ in schema.features]
    return encode(columns, schema.typed, lambda i, j: f"{where}[{i}][{j}] ({schema.features[j]})")


def read_columns(
    columns: list[list[Any]], schema: Schema, where: str
) -> tuple[np.ndarray, Notes | None]:
    """One list of values per feature (in feature order), all of one length."""
    if schema.typed is None:
        rows = [list(row) for row in zip(*columns, strict=True)]
        return rows_matrix(rows, schema.features, where), None
    return encode(columns, schema.typed, lambda i, j: f"{where}.{schema.features[j]}[{i}]")


def _check_instances(instances: Any, schema: Schema, where: str) -> None:
    if not isinstance(instances, list):
        raise InvalidInput(f"{where} must be an array of rows or records")
    if not instances:
        raise InvalidInput(f"{where} is empty; send at least one row")
    if len(instances) > schema.max_rows:
        raise PayloadTooLarge(f"{where} has {len(instances)} rows; the limit is {schema.max_rows}")


def instances_matrix(instances: Any, schema: Schema, where: str) -> np.ndarray:
    """A list of rows (feature order) or of records (feature names) of numbers as a float32
    matrix."""
    _check_instances(instances, schema, where)
    if isinstance(instances[0], dict):
        return _records_matrix(instances, schema.features, where, schema.ignored)
    return rows_matrix(instances, schema.features, where)


def rows_matrix(rows: list[Any], features: Sequence[str], where: str) -> np.ndarray:
    """Rows of numbers in feature order."""
    _check_rows(rows, features, where)
    return _to_matrix(rows, lambda i, j: f"{where}[{i}][{j}] ({features[j]})")


def _check_rows(rows: list[Any], features: Sequence[str], where: str) -> None:
    width = len(features)
    for i, row in enumerate(rows):
        if type(row) is not list:
            raise InvalidInput(
                f"{where}[{i}] must be an array of {width} numbers (or every instance a record)"
            )
        if len(row) != width:
            raise InvalidInput(
                f"{where}[{i}] has {len(row)} values; the model takes {width}: {', '.join(features)}"
            )


def _records_matrix(
    records: list[Any], features: Sequence[str], where: str, ignored: frozenset[str] = frozenset()
) -> np.ndarray:
    _check_records(records, features, where, ignored)
    getter = operator.itemgetter(*features)
    rows = (
        [list(getter(r)) for r in records]
        if len(features) > 1
        else [[r[features[0]]] for r in records]
    )
    return _to_matrix(rows, lambda i, j: f"{where}[{i}].{features[j]}")


def _check_records(
    records: list[Any], features: Sequence[str], where: str, ignored: frozenset[str] = frozenset()
) -> None:
    expected = set(features)
    for i, record in enumerate(records):
        if type(record) is not dict:
            raise InvalidInput(
                f"{where}[{i}] must be an object like {where}[0] (no mixing rows and records)"
            )
        if len(record) != len(expected) or record.keys() != expected:
            unknown = next((k for k in record if k not in expected and k not in ignored), None)
            if unknown is not None:
                raise InvalidInput(f"{where}[{i}] has unknown feature {unknown[:64]!r}")
            missing = [f for f in features if f not in record]
            if missing:
                raise InvalidInput(
                    f"{where}[{i}] is missing feature {missing[0]!r} (send null for a blank)"
                )


def _to_matrix(rows: list[list[Any]], locate: Any) -> np.ndarray:
    """Strict numbers to float32; on failure find and name the first bad cell."""
    if len(rows) <= SMALL_ROWS and plain_numbers(rows):
        return np.array(rows, dtype=np.float32)
    if set(map(type, chain.from_iterable(rows))) <= _NUMBER_TYPES:
        matrix = bounded_array(rows)
        if matrix is not None:
            return matrix.astype(np.float32)
    for i, row in enumerate(rows):
        for j, value in enumerate(row):
            kind = type(value)
            if kind not in _NUMBER_TYPES:
                hint = (
                    " (the model saw no blanks in training; MISSING_VALUES=impute answers them)"
                    if value is None
                    else ""
                )
                raise InvalidInput(f"{locate(i, j)} must be a number, not {kind_name(value)}{hint}")
            finite_number(value, locate(i, j))
    raise InvalidInput("instances could not be read as numbers")  # unreachable in practice


# Up to this many rows, checking values in plain Python beats numpy's per-call overhead.
SMALL_ROWS = 8


def plain_numbers(rows: list[list[Any]]) -> bool:
    """True when every value is an int or a float within ±MAX_ABS_VALUE (hence finite): what
    the numpy checks accept, for a few rows at a fraction of their cost."""
    low, high = -MAX_ABS_VALUE, MAX_ABS_VALUE
    for row in rows:
        for value in row:
            kind = type(value)
            if (kind is not float and kind is not int) or not low <= value <= high:
                return False
    return True


# -- CSV --------------------------------------------------------------------------------------
# Characters of data lines that np.loadtxt reads exactly as float() reads them (no spaces,
# underscores, quotes, words or non-ASCII digits, where the two parsers differ).
_PLAIN_CSV_BYTES = b"0123456789.eE+-,"


# The line ends of a CSV file (RFC 4180's CRLF, and LF or CR alone).
_CSV_LINE_END = re.compile(r"\r\n|\r|\n")


def parse_csv_body(body: bytes, schema: Schema) -> Parsed:
    """A CSV body whose header names every feature once (any order; other columns only those
    the model ignores)."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise MalformedBody("CSV body is not valid UTF-8") from None
    # Only \n, \r\n and \r end a line: str.splitlines() would also break at \x0b, \x0c,
    # \x1c-\x1e, \x85, \u2028 and \u2029, which are text in a cell (refused in a number).
    lines = _CSV_LINE_END.split(text)
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise MalformedBody("empty CSV body; send a header row and at least one data row")
    fast = _plain_csv(lines, schema) if len(lines) > SMALL_ROWS and schema.typed is None else None
    if fast is not None:
        return Parsed(fast)
    try:
        # Each line with its end: csv.reader keeps a line break inside quotes in the field
        # (given lines without their ends, it would join "5.\n1" into "5.1").
        table = list(csv.reader(io.StringIO("\n".join(lines), newline=""), strict=True))
    except csv.Error as exc:
        raise MalformedBody(f"malformed CSV: {exc}") from None
    for k, name in enumerate(table[0]):
        if "\n" in name or "\r" in name:
            raise InvalidInput(
                f"CSV header column {k + 1} holds a line break inside quotes; the header names "
                "each column on its first line"
            )
    header = [h.strip() for h in table[0]]
    rows = table[1:]
    _check_header(header, schema.features, schema.ignored)
    if not rows:
        raise InvalidInput("CSV has a header but no data rows")
    if len(rows) > schema.max_rows:
        raise PayloadTooLarge(f"CSV has {len(rows)} rows; the limit is {schema.max_rows}")
    width = len(header)
    for i, row in enumerate(rows):
        if len(row) != width:
            raise MalformedBody(f"CSV row {i + 1} has {len(row)} fields; the header has {width}")
    order = [header.index(f) for f in schema.features]
    data_lines = lines[1:]
    if width != len(order):  # ignored columns (the target, an ID): keep the features only
        rows = [[row[k] for k in order] for row in rows]
        header, order = list(schema.features), list(range(len(order)))
        data_lines = [",".join(row) for row in rows]
    if schema.typed is not None:
        columns = [[row[k] for row in rows] for k in order]
        x, notes = encode_csv_cells(
            columns,
            schema.typed,
            lambda i, j: f"CSV row {i + 1}, column {schema.features[j][:64]!r}",
        )
        return Parsed(x, notes=notes)
    if '"' in text:  # only a quoted field holds a line break, which float() would skip
        _refuse_line_breaks(rows, header)
    try:
        # float() also reads "1_0" (as 10) and non-ASCII digits ("\u0665"); no CSV writer means them.
        strange = any("_" in line or not line.isascii() for line in data_lines)
        matrix = None if strange else np.array(rows, dtype=np.float64)
    except ValueError:
        matrix = None
    if matrix is None or not np.isfinite(matrix).all() or np.abs(matrix).max() > MAX_ABS_VALUE:
        _explain_csv(rows, header)
    return Parsed(np.ascontiguousarray(matrix[:, order], dtype=np.float32))


def _plain_csv(lines: list[str], schema: Schema) -> np.ndarray | None:
    """The common large CSV, parsed by numpy's C reader: no quotes, no blank lines, a header
    of the features, only plain numbers. None sends anything else down the exact path above,
    which gives the same matrix or the precise error."""
    if len(lines) - 1 > schema.max_rows or '"' in lines[0] or "" in lines:
        return None
    header = [h.strip() for h in lines[0].split(",")]  # what csv.reader gives without quotes
    if len(header) != len(schema.features) or set(header) != set(schema.features):
        return None
    data = lines[1:]
    joined = "".join(data)
    if not joined.isascii() or joined.encode().translate(None, _PLAIN_CSV_BYTES):
        return None
    try:
        matrix = np.loadtxt(data, delimiter=",", comments=None, dtype=np.float64, ndmin=2)
    except ValueError:  # an empty cell, a row of another width, "1e" or "-"
        return None
    if matrix.shape != (len(data), len(header)):
        return None
    if not np.isfinite(matrix).all() or np.abs(matrix).max() > MAX_ABS_VALUE:
        return None
    order = [header.index(f) for f in schema.features]
    return np.ascontiguousarray(matrix[:, order], dtype=np.float32)


def _check_header(
    header: list[str], features: Sequence[str], ignored: frozenset[str] = frozenset()
) -> None:
    seen = set()
    for name in header:
        if name in seen:
            raise InvalidInput(f"CSV header names {name[:64]!r} twice")
        seen.add(name)
        if name not in features and name not in ignored:
            raise InvalidInput(f"CSV header has unknown feature {name[:64]!r}")
    missing = [f for f in features if f not in seen]
    if missing:
        raise InvalidInput(f"CSV header is missing feature {missing[0]!r}")


def _refuse_line_breaks(rows: list[list[str]], header: list[str]) -> None:
    for i, row in enumerate(rows):
        for j, cell in enumerate(row):
            if "\n" in cell or "\r" in cell:
                raise InvalidInput(
                    f"CSV row {i + 1}, column {header[j][:64]!r} holds a line break inside "
                    "quotes; a number is written on one line"
                )


def _explain_csv(rows: list[list[str]], header: list[str]) -> None:
    for i, row in enumerate(rows):
        for j, cell in enumerate(row):
            where = f"CSV row {i + 1}, column {header[j][:64]!r}"
            try:
                if "_" in cell or not cell.isascii():
                    raise ValueError(cell)
                number = float(cell)
            except ValueError:
                raise InvalidInput(
                    f"{where} is not a number" if cell.strip() else f"{where} is empty"
                ) from None
            if not math.isfinite(number):
                raise InvalidInput(f"{where} must be a finite number")
            if abs(number) > MAX_ABS_VALUE:
                raise InvalidInput(f"{where} is out of the accepted range, ±{MAX_ABS_VALUE:g}")
    raise InvalidInput("CSV values could not be read as numbers")
