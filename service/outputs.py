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
    after comes twice too, closing the row (``…"]``) and then not."""
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
        _bytes([t + b"]" for t in tails_json] + tails_json),
    )


def _bytes(items: list[bytes]) -> np.ndarray:
    """A fixed-width bytes array (none of these texts ends in a NUL byte, which numpy drops)."""
    return np.array(items, dtype=np.bytes_)


def _outside_cells(
    model: LoadedModel, x: np.ndarray, json: bool = False
) -> tuple[np.ndarray, np.ndarray] | None:
    """The cells outside the training range, row by row and in feature order within a row: the
    row of each, and its message (an object array of str); None if every cell is in range. If
    ``json``, each message is a piece of its row's JSON array (``_message_parts``): a row's
    pieces end to end are its array.

    Computed by column, not by cell: each distinct message (a value with the text around it,
    which is the same for every value of a feature on one side) is made once, by numpy's string
    ufuncs, and the cells take theirs by reference (no Python code per cell)."""
    below = x < model.feature_min
    rows, cols = np.nonzero(below | (x > model.feature_max))
    if not len(rows):
        return None
    n = len(model.feature_names)
    # Which text goes around each cell's value: its feature, its side of the range and (JSON)
    # whether it opens or closes its row, as one code.
    code = cols.astype(np.uint64) * np.uint64(8) + below[rows, cols] * np.uint64(4)
    if json:
        first, last = _row_bounds(rows)
        code += ~first * np.uint64(2) + ~last * np.uint64(1)
    # A distinct message is a distinct value (by its bits: 0.0 and -0.0 print differently)
    # with a distinct code.
    keys = (x[rows, cols].view(np.uint32).astype(np.uint64) << np.uint64(32)) | code
    distinct, inverse = np.unique(keys, return_inverse=True)
    values = (distinct >> np.uint64(32)).astype(np.uint32).view(np.float32)
    # Formatted from Python floats as _warning's f-string formats them.
    shown = _bytes([f"{v:.6g}".encode() for v in values.tolist()])
    lows, highs = model.feature_bounds
    leads, tails = _message_parts(tuple(model.feature_names), tuple(lows), tuple(highs), json)
    codes = (distinct & np.uint64(0xFFFFFFFF)).astype(np.intp)
    column, side = codes >> 3, (codes >> 2) & 1
    lead = column + n * ((codes >> 1) & 1)
    tail = column + n * side + 2 * n * (codes & 1)
    messages = np.strings.add(np.strings.add(leads[lead], shown), tails[tail]).tolist()
    return rows, _objects([m.decode() for m in messages])[inverse.reshape(-1)]


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
    texts = messages.tolist()
    first, _ = _row_bounds(rows)
    starts = np.flatnonzero(first).tolist()
    ends = [*starts[1:], len(texts)]
    return {
        i: texts[start:end]
        for i, start, end in zip(rows[first].tolist(), starts, ends, strict=True)
    }


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
    keys = [orjson.dumps(key).decode() for key in model.class_keys]
    # Each row: ,{"label":L,"probabilities":{"a":1.0,"b":0.0},"warnings":[]} from the text
    # before each column, the columns (one fragment a row), the row's warnings (one fragment
    # per message) and the closing brace: joined by C-level iteration when every row has one
    # warnings fragment, else placed in one array of every row's fragments.
    fixed: list[str | list[str]] = [
        ',{"label":',
        [labels[i] for i in model.label_indices(probabilities)],
        ',"probabilities":{' + keys[0] + ":",
    ]
    for j in range(probabilities.shape[1]):
        if j:
            fixed.append(f",{keys[j]}:")
        fixed.append(orjson.dumps(probabilities[:, j].tolist()).decode()[1:-1].split(","))
    fixed.append('},"warnings":')
    counts, rows, warnings = _warning_fragments(model, x, notes)
    start = orjson.dumps(head).decode()[:-1] + ',"predictions":['
    if counts.max() == 1:  # one warnings fragment a row (all of them "[]" for plain input)
        fixed.append(warnings.tolist())
        fixed.append("}")
        iterables = [repeat(part) if isinstance(part, str) else part for part in fixed]
        iterables[0] = chain(['{"label":'], iterables[0])  # no comma before the first row
        # zip stops at the end of the columns (the repeats are endless).
        body = chain.from_iterable(zip(*iterables, strict=False))
        return "".join(chain([start], body, ["]}"])).encode()
    fragments = _rows_of_fragments(fixed, counts, rows, warnings)
    fragments[0] = '{"label":'  # no comma before the first row
    return (start + "".join(fragments.tolist()) + "]}").encode()


def _warning_fragments(
    model: LoadedModel, x: np.ndarray, notes: Notes | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's warnings as JSON fragments: (fragments per row, the row of each fragment in
    row order, the fragments). A row without warnings has one, ``[]``; a row with range
    warnings one per message; a row with a typed model's reading warnings (few) one, its
    whole array, with its range warnings after the reading ones."""
    n = len(x)
    cells = _outside_cells(model, x, json=True)
    rows, pieces = cells if cells is not None else (np.zeros(0, np.intp), _objects([]))
    noted = sorted(i for i, found in (notes or {}).items() if found)
    if noted:  # those rows' range warnings are rewritten below, with their reading ones
        keep = ~np.isin(rows, noted)
        rows, pieces = rows[keep], pieces[keep]
    counts = np.bincount(rows, minlength=n)
    bare = np.flatnonzero(counts == 0)
    texts = ["[]"] * len(bare)
    for i in noted:
        assert notes is not None
        messages = [message for _, message in notes[i]] + range_warnings(model, x[i : i + 1])[0]
        texts[int(np.searchsorted(bare, i))] = orjson.dumps(messages).decode()
    if not len(rows):  # nothing outside the range (but maybe a noted row): one fragment a row
        return np.ones(n, dtype=np.intp), bare, _objects(texts)
    order = np.argsort(np.concatenate([rows, bare]), kind="stable")
    fragment_rows = np.concatenate([rows, bare])[order]
    return np.maximum(counts, 1), fragment_rows, np.concatenate([pieces, _objects(texts)])[order]


def _rows_of_fragments(
    fixed: list[str | list[str]], counts: np.ndarray, rows: np.ndarray, warnings: np.ndarray
) -> np.ndarray:
    """An object array of every row's fragments in order: the ``fixed`` ones (a text the same
    for every row, or a column with one per row), then the row's ``warnings`` (``counts[i]``
    of them for row i, ``rows`` giving each one's row), then ``}``."""
    width = len(fixed)
    lengths = width + counts + 1
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    fragments = np.empty(int(lengths.sum()), dtype=object)
    for j, part in enumerate(fixed):
        fragments[starts + j] = part if isinstance(part, str) else _objects(part)
    # The k-th warning of a row goes k places after the row's fixed fragments.
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(len(rows)) - first[rows]
    fragments[starts[rows] + width + rank] = warnings
    fragments[starts + lengths - 1] = "}"
    return fragments


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
