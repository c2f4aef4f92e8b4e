"""Structured fuzzing (hypothesis) of every typed parser, without a server or a trained model.

Well-formed requests carrying values of every JSON kind, every V2 datatype (JSON and binary
tensor data), CSV cells of any text: each is answered (a matrix the model core can take, see
``typed_model.check_matrix``) or refused with a 4xx whose message names the field and never
echoes a value. Any other exception is a bug.
"""

from __future__ import annotations

import csv
import io
import json
import os
import struct
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service import inputs
from service.errors import ServiceError
from service.protocols import tfserving, v2
from tests.hardening.typed_model import MAX_ROWS, NAMES, check_matrix, schema, typed_model

EXAMPLES = int(os.environ.get("HARDEN_TYPED_EXAMPLES", "300"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
MODELS = {missing: typed_model(missing) for missing in ("refuse", "impute")}
# Every text the strategies make starts with this mark, so an echo in an error is easy to see.
MARK = "\u2603"

texts = st.one_of(
    st.sampled_from(["", " ", "NA", "?", "n/a", "true", " FALSE ", "0", "1", "1e3", "nan"]),
    st.sampled_from(["basic", "plus", "west", " north ", "gold", "\u0665", "1_0", "-0"]),
    st.text(max_size=10).map(lambda s: MARK + s),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1, 0.0, 1.0, -0.0, 1e15, -1e15, 1e15 + 1, 3.4e38, 65504.0, 65520.0]),
    st.floats(allow_nan=False, allow_infinity=False),
    texts,
)
values = st.one_of(
    scalars,
    scalars,
    st.lists(scalars, max_size=2),
    st.dictionaries(st.sampled_from(["a", "age"]), scalars, max_size=1),
)
rows = st.lists(st.lists(values, min_size=5, max_size=5), min_size=1, max_size=4)


def refused_cleanly(exc: ServiceError, *, named: bool = True) -> None:
    assert 400 <= exc.status_code < 500, (exc.status_code, exc.message)
    assert MARK not in exc.message, exc.message  # never an echo of a value
    if named:  # the message names the feature at fault
        assert any(name in exc.message for name in NAMES), exc.message


def outcome(parse: Any, model: Any, *, named: bool = True) -> None:
    try:
        result = parse()
    except ServiceError as exc:
        refused_cleanly(exc, named=named)
        return
    x, notes = result if isinstance(result, tuple) else (result, None)
    check_matrix(x, model, notes)


def dumps(document: Any) -> bytes:
    return json.dumps(document, ensure_ascii=False).encode("utf-8", "surrogatepass")


# -- /predict ---------------------------------------------------------------------------------
@pytest.mark.parametrize("missing", MODELS)
@SETTINGS
@given(rows=rows, as_records=st.booleans())
def test_predict_json_rows_and_records(missing: str, rows: list[list[Any]], as_records: bool):
    model = MODELS[missing]
    instances = [dict(zip(NAMES, row, strict=True)) for row in rows] if as_records else rows
    body = dumps({"instances": instances})

    def parse() -> Any:
        parsed = inputs.parse_json_body(body, schema(model))
        return parsed.x, parsed.notes

    outcome(parse, model)


cells = st.one_of(texts, st.integers(-(10**20), 10**20).map(str), st.floats().map(repr))


@pytest.mark.parametrize("missing", MODELS)
@SETTINGS
@given(
    table=st.lists(st.lists(cells, min_size=5, max_size=5), min_size=1, max_size=4),
    order=st.permutations(range(5)),
)
def test_predict_csv(missing: str, table: list[list[str]], order: list[int]):
    model = MODELS[missing]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([NAMES[k] for k in order])
    writer.writerows([[row[k] for k in order] for row in table])
    body = out.getvalue().encode("utf-8", "surrogatepass")

    def parse() -> Any:
        parsed = inputs.parse_csv_body(body, schema(model))
        return parsed.x, parsed.notes

    # A cell holding a line break makes a row of the wrong width: refused without a feature.
    named = not any("\n" in c or "\r" in c for row in table for c in row)
    outcome(parse, model, named=named)


# -- Open Inference Protocol (V2), one input per feature ---------------------------------------
DATATYPES = [*v2.DATATYPES, "BYTES", "FP8", "STRING"]


@st.composite
def v2_tensor(draw: st.DrawFn, name: str, count: int) -> dict[str, Any]:
    datatype = draw(st.sampled_from(DATATYPES))
    data = draw(st.lists(scalars, min_size=count, max_size=count))
    if draw(st.booleans()):
        data = [[v] for v in data]
    shape = draw(st.sampled_from([[count], [count, 1], [count, 2], [], [count + 1]]))
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


@pytest.mark.parametrize("missing", MODELS)
@SETTINGS
@given(st.data())
def test_v2_json_inputs(missing: str, data: st.DataObject):
    model = MODELS[missing]
    count = data.draw(st.integers(1, 3))
    tensors = [data.draw(v2_tensor(name, count)) for name in NAMES]
    tensors = data.draw(st.permutations(tensors))
    body = dumps({"inputs": tensors})
    outcome(lambda: v2.parse_infer(body, None, model, MAX_ROWS).x, model, named=False)


def _binary_values(draw: st.DrawFn, datatype: str, count: int) -> bytes:
    if datatype == "BYTES":
        elements = draw(
            st.lists(
                st.one_of(texts.map(str.encode), st.binary(max_size=6)),
                min_size=count,
                max_size=count,
            )
        )
        return b"".join(struct.pack("<I", len(e)) + e for e in elements)
    dtype = v2.DATATYPES[datatype]
    if dtype.kind == "f":
        special = [0.0, 1.0, np.nan, np.inf, -np.inf, 1e15, 7e4]
        floats = st.one_of(st.sampled_from(special), st.floats(width=dtype.itemsize * 8))
        items = draw(st.lists(floats, min_size=count, max_size=count))
    elif dtype.kind == "b":
        items = draw(st.lists(st.booleans(), min_size=count, max_size=count))
    else:
        info = np.iinfo(dtype)
        ints = st.one_of(st.sampled_from([0, 1]), st.integers(int(info.min), int(info.max)))
        items = draw(st.lists(ints, min_size=count, max_size=count))
    with np.errstate(over="ignore"):  # 1e15 as FP16 is inf: a value to send too
        return np.array(items, dtype=dtype).tobytes()


@pytest.mark.parametrize("missing", MODELS)
@SETTINGS
@given(st.data())
def test_v2_binary_tensor_data(missing: str, data: st.DataObject):
    model = MODELS[missing]
    count = data.draw(st.integers(1, 3))
    tensors, chunks = [], []
    for name in NAMES:
        datatype = data.draw(st.sampled_from([*v2.DATATYPES, "BYTES"]))
        if data.draw(st.booleans()):  # this input as binary data
            chunk = _binary_values(data.draw, datatype, count)
            size = len(chunk) + data.draw(st.sampled_from([0, 0, 0, -1, 1]))
            parameters = {"binary_data_size": max(size, 0)}
            tensors.append(
                {"name": name, "datatype": datatype, "shape": [count], "parameters": parameters}
            )
            chunks.append(chunk)
        else:
            tensors.append(data.draw(v2_tensor(name, count)))
    header = dumps({"inputs": tensors})
    body = header + b"".join(chunks)
    length = str(len(header))
    outcome(lambda: v2.parse_infer(body, length, model, MAX_ROWS).x, model, named=False)


# -- TensorFlow Serving -----------------------------------------------------------------------
@pytest.mark.parametrize("missing", MODELS)
@SETTINGS
@given(rows=rows, form=st.sampled_from(["records", "features", "columns", "singletons"]))
def test_tf_serving_predict(missing: str, rows: list[list[Any]], form: str):
    model = MODELS[missing]
    if form == "records":
        document: dict[str, Any] = {"instances": [dict(zip(NAMES, r, strict=True)) for r in rows]}
    elif form == "features":
        document = {"instances": [{"features": r} for r in rows]}
    else:
        columns = {name: [r[j] for r in rows] for j, name in enumerate(NAMES)}
        if form == "singletons":
            columns = {name: [[v] for v in column] for name, column in columns.items()}
        document = {"inputs": columns}
    body = dumps(document)
    outcome(lambda: tfserving.parse_predict(body, model, MAX_ROWS)[0], model)


@pytest.mark.parametrize("missing", MODELS)
@SETTINGS
@given(rows=rows, shared=st.sets(st.sampled_from(NAMES), max_size=2), lists=st.booleans())
def test_tf_serving_classify(missing: str, rows: list[list[Any]], shared: set[str], lists: bool):
    model = MODELS[missing]
    examples = [
        {n: [v] if lists else v for n, v in zip(NAMES, r, strict=True) if n not in shared}
        for r in rows
    ]
    context = {n: [rows[0][NAMES.index(n)]] for n in shared}
    body = dumps({"examples": examples, "context": context})
    # A context value meets every example: a bad one may be refused at any of them.
    outcome(lambda: tfserving.parse_classify(body, model, MAX_ROWS), model, named=not shared)
