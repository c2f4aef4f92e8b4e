"""Atheris fuzzing of request parsing and validation, without a server.

The first byte picks the target (its value modulo 8); the rest is the request body:

    0  /predict JSON, Iris (numbers only)      4  V2 infer JSON, typed (one input per feature)
    1  /predict CSV, Iris                      5  V2 infer JSON + binary tensor data, typed
    2  /predict JSON rows or records, typed    6  TF Serving :predict (rows, records, columns)
    3  /predict CSV, typed                     7  TF Serving :classify

4 to 7 and "typed" use a model with numbers, categories and a true/false feature, some taking
blanks (``tests/hardening/typed_model.py``); target 5 reads the JSON header's length from the
two bytes after the first. Any exception other than a :class:`ServiceError` (which the service
answers with a 4xx) is a crash, and so is a parsed matrix that breaks the promises the model
relies on, or an error message long enough to echo the body.

    python fuzz/fuzz_inputs.py -runs=20000 -dict=fuzz/inputs.dict NEW_DIR fuzz/corpus

libFuzzer adds what it finds to the first directory; keep ``fuzz/corpus`` last so it stays small.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.hardening.typed_model

with atheris.instrument_imports(
    include=[
        "service.inputs",
        "service.typed",
        "service.protocols.v2",
        "service.protocols.tfserving",
    ]
):
    import numpy as np

    from service import inputs
    from service.errors import ServiceError
    from service.protocols import tfserving, v2
    from tests.hardening import typed_model

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
SCHEMA = inputs.Schema(FEATURES, max_rows=64, n_classes=3)
TYPED = typed_model.typed_model()
TYPED_SCHEMA = typed_model.schema(TYPED)


def _iris(parsed: inputs.Parsed) -> None:
    x = parsed.x
    assert x.dtype == np.float32 and x.ndim == 2, (x.dtype, x.shape)
    assert x.shape[1] == len(FEATURES) and 1 <= x.shape[0] <= SCHEMA.max_rows, x.shape
    assert np.isfinite(x).all() and np.abs(x).max() <= inputs.MAX_ABS_VALUE
    assert parsed.top_k is None or (type(parsed.top_k) is int and 1 <= parsed.top_k <= 3)


def _typed(parsed: inputs.Parsed) -> None:
    typed_model.check_matrix(parsed.x, TYPED, parsed.notes)
    assert parsed.top_k is None or (type(parsed.top_k) is int and 1 <= parsed.top_k <= 2)


def parse(target: int, body: bytes) -> None:
    """Parse ``body`` with ``target``'s parser and check what it gives."""
    max_rows = typed_model.MAX_ROWS
    if target == 0:
        _iris(inputs.parse_json_body(body, SCHEMA))
    elif target == 1:
        _iris(inputs.parse_csv_body(body, SCHEMA))
    elif target == 2:
        _typed(inputs.parse_json_body(body, TYPED_SCHEMA))
    elif target == 3:
        _typed(inputs.parse_csv_body(body, TYPED_SCHEMA))
    elif target == 4:
        typed_model.check_matrix(v2.parse_infer(body, None, TYPED, max_rows).x, TYPED)
    elif target == 5:
        length = str(int.from_bytes(body[:2], "little") % max(len(body) - 1, 1))
        typed_model.check_matrix(v2.parse_infer(body[2:], length, TYPED, max_rows).x, TYPED)
    elif target == 6:
        typed_model.check_matrix(tfserving.parse_predict(body, TYPED, max_rows)[0], TYPED)
    else:
        typed_model.check_matrix(tfserving.parse_classify(body, TYPED, max_rows), TYPED)


def check(data: bytes) -> None:
    """Parse one body; return quietly on a clean rejection, raise on anything else."""
    if not data:
        return
    try:
        parse(data[0] % 8, data[1:])
    except ServiceError as exc:
        assert 400 <= exc.status_code < 500, exc.status_code
        assert len(exc.message) < 600, exc.message  # names the field, never echoes the body


def main() -> None:
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
