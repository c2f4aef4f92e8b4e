"""Probabilities to answers: decoded labels, per-class probabilities, range warnings, CSV.

Fast on both ends: a few rows are handled with plain Python (each numpy call costs about a
microsecond, more than the work on one row), many rows with numpy and C-level string building.
"""

from __future__ import annotations

import csv
import functools
import io
from itertools import chain, repeat
from typing import Any

import numpy as np
import orjson

from service.model import LoadedModel
from service.typed import Notes

# Up to this many rows, plain Python beats numpy's per-call overhead.
SMALL = 8


def argmax_labels(model: LoadedModel, probabilities: np.ndarray) -> list[Any]:
    """``encoder.inverse_transform(argmax(p))`` through the labels decoded at load time (for a
    binary model with a threshold: class 1 where its probability reaches the threshold)."""
    labels = model.labels
    return [labels[i] for i in model.label_indices(probabilities)]


def _warning(name: str, value: float, low: float, high: float) -> str:
    side = "below" if value < low else "above"
    return f"{name}={value:.6g} is {side} the training range [{low:.6g}, {high:.6g}]"


def range_warnings(model: LoadedModel, x: np.ndarray) -> list[list[str]]:
    """For each row, a message per feature outside the training range (mostly empty lists)."""
    if len(x) > SMALL:
        out: list[list[str]] = [[] for _ in range(len(x))]
        for i, messages in _outside_rows(model, x).items():
            out[i] = messages
        return out
    names = model.feature_names
    # float32 values as Python floats: comparisons and formatting give what numpy's would.
    lows, highs = model.feature_bounds
    return [
        [
            _warning(names[j], value, lows[j], highs[j])
            for j, value in enumerate(row)
            if value < lows[j] or value > highs[j]
        ]
        for row in x.tolist()
    ]


@functools.lru_cache(maxsize=256)
def _message_parts(
    names: tuple[str, ...], lows: tuple[float, ...], highs: tuple[float, ...], json: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The UTF-8 text of ``_warning`` before each feature's value (``name=``), and after it on
    each side (``above`` for features 0..n-1, then ``below``). Made once per model: the cache is
    keyed by its names and bounds.

    If ``json``, each piece is JSON (orjson escapes character by character: a message's JSON is
    its parts' JSON) with what goes around a message in a row's JSON array: the text before
    comes twice, opening the row (``["name=``) and then after a comma (``,"name=``); the text
    after comes twice too, closing the row with a line break (``…"]\n``) and then not."""
    leads = [f"{name}=" for name in names]
    tails = [
        f" is {side} the training range [{low:.6g}, {high:.6g}]"
        for side in ("above", "below")
        for low, high in zip(lows, highs, strict=True)
    ]
    if not json:
        return _bytes([t.encode() for t in leads]), _bytes([t.encode() for t in tails])
    leads_json = [orjson.dumps(t)[:-1] for t in leads]  # '"name=' with its opening quote
    tails_json = [orjson.dumps(t)[1:] for t in tails]  # '… 7.9]"' with its closing quote
    return (
        _bytes([b"[" + t for t in leads_json] + [b"," + t for t in leads_json]),
        _bytes([t + b"]\n" for t in tails_json] + tails_json),
    )


def _bytes(items: list[bytes]) -> np.ndarray:
    """A fixed-width bytes array (none of these texts ends in a NUL byte, which numpy drops)."""
    return np.array(items, dtype=np.bytes_)


def _outside_cells(
    model: LoadedModel, x: np.ndarray, json: bool = False
) -> tuple[np.ndarray, np.ndarray] | None:
    """The cells outside the training range, row by row and in feature order within a row: the
    row of each, and its message as UTF-8; None if every cell is in range. If ``json``, each
    message is a piece of its row's JSON array (``_message_parts``): the pieces of all rows, end
    to end, are the rows' arrays, each ended by a line break.

    Computed by column, not by cell: each distinct value is formatted once, the text around it
    once per model, and the messages are joined by numpy's string ufuncs (no Python per cell)."""
    below = x < model.feature_min
    rows, cols = np.nonzero(below | (x > model.feature_max))
    if not len(rows):
        return None
    # Distinct values by their bits (0.0 and -0.0 print differently), formatted from Python
    # floats as _warning's f-string formats them.
    bits, inverse = np.unique(x[rows, cols].view(np.uint32), return_inverse=True)
    shown = _bytes([f"{v:.6g}".encode() for v in bits.view(np.float32).tolist()])
    lows, highs = model.feature_bounds
    leads, tails = _message_parts(tuple(model.feature_names), tuple(lows), tuple(highs), json)
    n = len(lows)
    lead, tail = cols, cols + n * below[rows, cols]
    if json:
        first, last = _row_bounds(rows)
        lead = lead + n * ~first
        tail = tail + 2 * n * ~last
    messages = np.strings.add(np.strings.add(leads[lead], shown[inverse.reshape(-1)]), tails[tail])
    return rows, messages


def _objects(items: list[Any]) -> np.ndarray:
    """A 1-D object array of the items (numpy keeps Python strings as they are)."""
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


def _row_bounds(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which cells start a row's run, and which end it."""
    change = rows[1:] != rows[:-1]
    return np.r_[True, change], np.r_[change, True]


def _outside_rows(model: LoadedModel, x: np.ndarray) -> dict[int, list[str]]:
    """The warnings of the rows with features outside the training range, by row (numpy)."""
    cells = _outside_cells(model, x)
    if cells is None:
        return {}
    rows, messages = cells
    texts = [m.decode() for m in messages.tolist()]
    first, _ = _row_bounds(rows)
    starts = np.flatnonzero(first).tolist()
    ends = [*starts[1:], len(texts)]
    return {
        i: texts[start:end]
        for i, start, end in zip(rows[first].tolist(), starts, ends, strict=True)
    }


def _outside_json(model: LoadedModel, x: np.ndarray) -> tuple[list[int], list[str]]:
    """The rows with features outside the training range and, for each, its warnings as the JSON
    array orjson writes for ``_outside_rows(model, x)[row]`` (joined by numpy, not per cell)."""
    cells = _outside_cells(model, x, json=True)
    if cells is None:
        return [], []
    rows, pieces = cells
    # Fixed-width strings are padded with NUL bytes, which JSON text never holds (orjson writes
    # \u0000): the array's bytes without them are the rows' arrays, each ended by a line break
    # (a raw one is never in JSON text either: orjson writes \n).
    joined = pieces.tobytes().replace(b"\0", b"").decode()
    last = np.r_[rows[1:] != rows[:-1], True]
    return rows[last].tolist(), joined.split("\n")[:-1]


def with_notes(warnings: list[list[str]], notes: Notes | None) -> list[list[str]]:
    """Each row's reading warnings (blanks, unseen categories) before its range warnings."""
    if notes:
        for i, found in notes.items():
            warnings[i] = [message for _, message in found] + warnings[i]
    return warnings


def predictions(
    model: LoadedModel,
    x: np.ndarray,
    probabilities: np.ndarray,
    top_k: int | None = None,
    notes: Notes | None = None,
) -> list[dict[str, Any]]:
    """One ``{"label", "probabilities", "warnings"}`` object per row (plus ``top_k`` if asked)."""
    keys = model.class_keys
    rows = probabilities.tolist()
    if len(rows) <= SMALL and model.threshold is None:  # first maximum, as numpy's argmax
        decoded = model.labels
        labels = [decoded[row.index(max(row))] for row in rows]
    else:
        labels = argmax_labels(model, probabilities)
    warnings = with_notes(range_warnings(model, x), notes)
    result = [
        {"label": label, "probabilities": dict(zip(keys, row, strict=True)), "warnings": warn}
        for label, row, warn in zip(labels, rows, warnings, strict=True)
    ]
    if top_k is not None:
        order = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k].tolist()
        decoded = model.labels
        for item, indices, row in zip(result, order, rows, strict=True):
            item["top_k"] = [{"label": decoded[i], "probability": row[i]} for i in indices]
    return result


def answer_json(
    model: LoadedModel,
    x: np.ndarray,
    probabilities: np.ndarray,
    top_k: int | None = None,
    notes: Notes | None = None,
) -> bytes:
    """The ``/predict`` JSON answer, exactly as ``orjson.dumps`` writes it from
    ``{"model", "version", "predictions": predictions(...)}``.

    Many rows are written column by column instead: orjson formats each column of numbers at
    once, and the objects around them are joined from constant pieces by C-level iteration,
    with no Python code and no dict per row (5x faster for 10,000 rows).
    """
    head = {"model": model.name, "version": model.version}
    if len(x) <= SMALL or top_k is not None:
        answer = predictions(model, x, probabilities, top_k, notes)
        return orjson.dumps({**head, "predictions": answer})
    labels = [orjson.dumps(label).decode() for label in model.labels]
    columns: list[list[str]] = [[labels[i] for i in model.label_indices(probabilities)]]
    for j in range(probabilities.shape[1]):
        columns.append(orjson.dumps(probabilities[:, j].tolist()).decode()[1:-1].split(","))
    warnings = ["[]"] * len(x)
    for i, text in zip(*_outside_json(model, x), strict=True):
        warnings[i] = text
    for i, found in (notes or {}).items():  # a typed model's reading warnings first
        if found:
            read = orjson.dumps([message for _, message in found]).decode()
            warnings[i] = read if warnings[i] == "[]" else f"{read[:-1]},{warnings[i][1:]}"
    columns.append(warnings)
    keys = [orjson.dumps(key).decode() for key in model.class_keys]
    # Each row: ,{"label":L,"probabilities":{"a":1.0,"b":0.0},"warnings":[]} from the text
    # before each column, the columns, and the closing brace.
    before = [',{"label":', ',"probabilities":{' + keys[0] + ":"]
    before += [f",{key}:" for key in keys[1:]]
    before.append('},"warnings":')
    iterables: list[Any] = []
    for text, column in zip(before, columns, strict=True):
        iterables += [repeat(text), column]
    iterables[0] = chain(['{"label":'], iterables[0])  # no comma before the first row
    iterables.append(repeat("}"))
    start = orjson.dumps(head).decode()[:-1] + ',"predictions":['
    # zip stops at the end of the columns (the repeats are endless).
    rows = chain.from_iterable(zip(*iterables, strict=False))
    return "".join(chain([start], rows, ["]}"])).encode()


# -- CSV --------------------------------------------------------------------------------------
def float_rows_text(probabilities: np.ndarray) -> list[str] | None:
    """Each row's values joined by commas, spelled as in the JSON answer (orjson's shortest
    round-trip digits: ``1e-7``, ``0.00001``); None if one is not finite."""
    text = orjson.dumps(probabilities.tolist()).decode()
    if "null" in text:  # orjson writes NaN and infinity as null
        return None
    return text[2:-2].split("],[")


def csv_cell(value: Any) -> str:
    """``value`` as csv.writer writes it inside a row (quoted when it must be)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow([value, "x"])  # never a lone empty field
    return buffer.getvalue()[: -len(",x\n")]


def _outside_names_csv(model: LoadedModel, x: np.ndarray) -> list[str]:
    """Each row's ``warnings`` cell: the names of its features outside the training range,
    ``;``-joined and quoted as csv.writer quotes them; made once per distinct set of features."""
    outside = (x < model.feature_min) | (x > model.feature_max)
    flagged = np.flatnonzero(outside.any(axis=1))
    cells = np.full(len(x), "", dtype=object)
    if len(flagged):
        sets, inverse = np.unique(
            np.packbits(outside[flagged], axis=1), axis=0, return_inverse=True
        )
        names = model.feature_names
        found = np.unpackbits(sets, axis=1, count=len(names)).astype(bool)
        texts = [
            csv_cell(";".join(n for n, o in zip(names, row, strict=True) if o)) for row in found
        ]
        cells[flagged] = _objects(texts)[inverse.reshape(-1)]
    return cells.tolist()


def predictions_csv(
    model: LoadedModel, x: np.ndarray, probabilities: np.ndarray, notes: Notes | None = None
) -> str:
    """CSV answer: ``label``, one ``prob_<class>`` column per class, then ``warnings`` (the
    names of the features read with a warning or outside the training range, ``;``-joined).

    Labels and warnings are quoted as csv.writer quotes them; probabilities are spelled as in
    the JSON answer (a float's shortest round-trip digits, which any CSV reader parses)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["label", *(f"prob_{k}" for k in model.class_keys), "warnings"])
    numbers = float_rows_text(probabilities)
    if numbers is None:  # the model's answers are checked finite before they get here
        raise ValueError("probabilities must be finite to be written as CSV")
    cells = [csv_cell(label) for label in model.labels]
    labels = [cells[i] for i in model.label_indices(probabilities)]
    warnings = _outside_names_csv(model, x)
    if notes:  # a typed model's reading warnings first (few rows): row by row
        lows, highs = model.feature_bounds
        for i, found in notes.items():
            names = [name for name, _ in found]
            names += [
                name
                for name, value, low, high in zip(
                    model.feature_names, x[i].tolist(), lows, highs, strict=True
                )
                if value < low or value > high
            ]
            warnings[i] = csv_cell(";".join(dict.fromkeys(names)))
    lines = map(",".join, zip(labels, numbers, warnings, strict=True))
    return buffer.getvalue() + "\n".join(lines) + "\n"
