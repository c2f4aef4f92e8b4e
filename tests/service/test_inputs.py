"""The fast paths of request parsing accept exactly what the exact paths accept, with the same
matrix, and leave every refusal (and its message) to the exact paths."""

from __future__ import annotations

import random

import numpy as np
import pytest

from service import inputs
from service.errors import ServiceError

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
SCHEMA = inputs.Schema(FEATURES, 40, 3)


def outcome(function: object, *args: object) -> tuple[object, ...]:
    try:
        result = function(*args)  # type: ignore[operator]
    except ServiceError as exc:
        return ("refused", type(exc).__name__, exc.message)
    matrix = getattr(result, "x", result)
    assert isinstance(matrix, np.ndarray)
    return ("ok", matrix.dtype.str, matrix.shape, matrix.tobytes(), matrix.flags.c_contiguous)


def fast_and_exact(
    monkeypatch: pytest.MonkeyPatch, function: object, *args: object
) -> tuple[tuple[object, ...], tuple[object, ...]]:
    fast = outcome(function, *args)
    with monkeypatch.context() as patch:
        patch.setattr(inputs, "_plain_csv", lambda *a: None)
        patch.setattr(inputs, "plain_numbers", lambda *a: False)
        exact = outcome(function, *args)
    return fast, exact


CELLS = ["5.1", "3", "-0", "+1.5", ".5", "5.", "1e5", "1E-3", "1e400", "1e15", "1e16", "nan",
         "inf", "1_0", "\u0661\u0662", "", " ", " 1.5", '"1.5"', '"1,5"', "abc", "1e", "-",
         "0x10", "1\x1f", "\t2", "9" * 30]  # fmt: skip
HEADERS = [
    ",".join(FEATURES),
    ",".join(reversed(FEATURES)),
    " sepal_length , sepal_width,petal_length,petal_width",
    ",".join(FEATURES[:3]),
    ",".join([*FEATURES, "extra"]),
    ",".join(FEATURES[:3] + FEATURES[:1]),
    '"sepal_length",sepal_width,petal_length,petal_width',
]


def test_csv_fast_path_agrees_with_the_csv_module(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(0)
    fast_hits = 0
    for _ in range(3000):
        lines = [rng.choice(HEADERS[:2] if rng.random() < 0.5 else HEADERS)]
        for _ in range(rng.choice([1, 9, 12, 41])):
            width = rng.choice([3, 5]) if rng.random() < 0.01 else 4
            lines.append(
                ",".join(
                    rng.choice(CELLS) if rng.random() < 0.005 else f"{rng.uniform(-9, 9):.2f}"
                    for _ in range(width)
                )
            )
        if rng.random() < 0.05:
            lines.insert(rng.randrange(1, len(lines) + 1), rng.choice(["", "  ", "\t"]))
        newline = rng.choice(["\n", "\r\n"])
        body = (newline.join(lines) + rng.choice(["", newline, newline * 2])).encode()
        fast, exact = fast_and_exact(monkeypatch, inputs.parse_csv_body, body, SCHEMA)
        assert fast == exact, body[:300]
        fast_hits += fast[0] == "ok" and len(lines) > 9
    assert fast_hits > 100  # the fast path was exercised, not just the fallbacks


VALUES = [1, 0, -3, 5.1, 1e15, -1e15, 1e15 + 1, 10**15, 10**15 + 1, 10**400, True, None, "1",
          [1], {}, float("inf"), float("nan"), 1e308, 2**53 + 1, -0.0, 3.4e38]  # fmt: skip


def test_small_json_fast_path_agrees_with_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(1)
    for _ in range(3000):
        rows = [
            [rng.choice(VALUES) if rng.random() < 0.1 else rng.uniform(-9, 9) for _ in FEATURES]
            for _ in range(rng.choice([1, 2, 8, 9]))
        ]
        fast, exact = fast_and_exact(monkeypatch, inputs.rows_matrix, rows, FEATURES, "instances")
        assert fast == exact, rows


@pytest.mark.parametrize("cell", ["1_0", "\u0665", "\uff15.\uff11", "1.5\u00a0"])
@pytest.mark.parametrize("rows", [1, 12])  # the exact path and the fast one
def test_csv_cells_python_alone_reads_are_not_numbers(rows: int, cell: str) -> None:
    """Python's float() reads "1_0" as 10 and Arabic-Indic or full-width digits as digits; the
    CSV reader names the cell instead."""
    lines = [",".join(FEATURES)] + ["5.1,3.5,1.4,0.2"] * (rows - 1) + [f"5.1,{cell},1.4,0.2"]
    with pytest.raises(
        inputs.InvalidInput, match=rf"CSV row {rows}, column 'sepal_width' is not a number"
    ):
        inputs.parse_csv_body("\n".join(lines).encode(), SCHEMA)
