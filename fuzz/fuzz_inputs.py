"""Atheris fuzzing of request parsing and validation (``service.inputs``), without a server.

The first byte picks the parser (even: JSON, odd: CSV); the rest is the request body. Any
exception other than a :class:`ServiceError` (which the service answers with a 4xx) is a crash,
and so is a parsed matrix that breaks the promises the model relies on.

    python fuzz/fuzz_inputs.py -runs=20000 -dict=fuzz/inputs.dict NEW_DIR fuzz/corpus

libFuzzer adds what it finds to the first directory; keep ``fuzz/corpus`` last so it stays small.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["service.inputs"]):
    import numpy as np

    from service import inputs
    from service.errors import ServiceError

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
SCHEMA = inputs.Schema(FEATURES, max_rows=64, n_classes=3)


def check(data: bytes) -> None:
    """Parse one body; return quietly on a clean rejection, raise on anything else."""
    if not data:
        return
    parse = inputs.parse_csv_body if data[0] % 2 else inputs.parse_json_body
    try:
        parsed = parse(data[1:], SCHEMA)
    except ServiceError as exc:
        assert 400 <= exc.status_code < 500, exc.status_code
        return
    x = parsed.x
    assert x.dtype == np.float32 and x.ndim == 2, (x.dtype, x.shape)
    assert x.shape[1] == len(FEATURES) and 1 <= x.shape[0] <= SCHEMA.max_rows, x.shape
    assert np.isfinite(x).all() and np.abs(x).max() <= inputs.MAX_ABS_VALUE
    assert parsed.top_k is None or (type(parsed.top_k) is int and 1 <= parsed.top_k <= 3)


def main() -> None:
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
