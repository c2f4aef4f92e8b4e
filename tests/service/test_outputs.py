"""The fast answer builders give exactly what the plain versions give, byte for byte."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from service import outputs
from service.model import LoadedModel


def fake_model(labels: list[Any]) -> LoadedModel:
    return LoadedModel(
        name="m",
        version=1,
        path=Path("."),
        metadata=None,  # type: ignore[arg-type]
        runtime=None,  # type: ignore[arg-type]
        labels=labels,
        class_keys=[str(c) for c in labels],
        feature_names=['odd "name", here', "b", "c"],
        feature_min=np.array([0.1, -2.0, 3.3], dtype=np.float32),
        feature_max=np.array([1.7, 2.0, 7.9], dtype=np.float32),
    )


def reference_json(model: LoadedModel, x: np.ndarray, p: np.ndarray, top_k: int | None) -> bytes:
    """The straightforward version: numpy comparisons, a dict per row, orjson."""
    low, high = x < model.feature_min, x > model.feature_max
    result = []
    for i, row in enumerate(p.tolist()):
        warnings = [
            f"{model.feature_names[j]}={float(x[i, j]):.6g} is "
            f"{'below' if low[i, j] else 'above'} the training range "
            f"[{float(model.feature_min[j]):.6g}, {float(model.feature_max[j]):.6g}]"
            for j in range(x.shape[1])
            if low[i, j] or high[i, j]
        ]
        item: dict[str, Any] = {
            "label": model.labels[int(np.argmax(p[i]))],
            "probabilities": dict(zip(model.class_keys, row, strict=True)),
            "warnings": warnings,
        }
        if top_k is not None:
            order = np.argsort(-p[i], kind="stable")[:top_k].tolist()
            item["top_k"] = [{"label": model.labels[k], "probability": row[k]} for k in order]
        result.append(item)
    return orjson.dumps(result)


def reference_csv(model: LoadedModel, x: np.ndarray, p: np.ndarray) -> str:
    """The straightforward version: csv.writer for labels and warnings, and each probability
    spelled as the JSON answer spells it."""
    outside = (x < model.feature_min) | (x > model.feature_max)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["label", *(f"prob_{k}" for k in model.class_keys), "warnings"])
    for i, row in enumerate(p.tolist()):
        names = [model.feature_names[j] for j in np.flatnonzero(outside[i]).tolist()]
        numbers = [orjson.dumps(v).decode() for v in row]  # strings csv.writer never quotes
        writer.writerow([model.labels[int(np.argmax(p[i]))], *numbers, ";".join(names)])
    return buffer.getvalue()


def probabilities(rng: np.random.Generator, rows: int, classes: int, scale: float) -> np.ndarray:
    logits = rng.normal(size=(rows, classes)) * scale
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)


LABELS = [
    ["setosa", "versicolor", "virginica"],
    [0, 1],
    ["", 'a,"b"', "c\nd"],
    [1.5, 2.25, True],
]


@pytest.mark.parametrize("labels", LABELS, ids=["strings", "ints", "csv-special", "mixed"])
@pytest.mark.parametrize("rows", [1, 2, outputs.SMALL, outputs.SMALL + 1, 300])
def test_answers_match_the_plain_versions(labels: list[Any], rows: int) -> None:
    model = fake_model(labels)
    rng = np.random.default_rng(rows)
    for scale in (1.0, 8.0, 40.0):  # confident models give tiny probabilities: 1e-9, 3e-5
        x = (rng.normal(size=(rows, 3)) * [1, 3, 4] + [1, 0, 5]).astype(np.float32)
        x[0] = model.feature_min  # on the boundary: inside the range
        p = probabilities(rng, rows, len(labels), scale)
        p[-1] = np.float32(1 / len(labels))  # a tie: the first class wins, as with argmax
        for top_k in (None, 1, len(labels)):
            assert orjson.dumps(outputs.predictions(model, x, p, top_k)) == reference_json(
                model, x, p, top_k
            )
            answer = {"model": "m", "version": 1, "predictions": orjson.loads(reference_json(model, x, p, top_k))}  # fmt: skip
            assert outputs.answer_json(model, x, p, top_k) == orjson.dumps(answer)
        assert outputs.predictions_csv(model, x, p) == reference_csv(model, x, p)


def test_float_text_is_the_json_spelling_across_magnitudes() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate(
        [
            rng.random(20_000),
            10.0 ** rng.uniform(-46, 0, 20_000),  # every exponent, subnormals included
            10.0 ** rng.uniform(-5, -4, 20_000),  # orjson: 0.000015 (repr would say 1.5e-05)
            -rng.random(1_000),
            [0.0, -0.0, 1.0, 1e-5, 1e-4, 1e-6, 1e-10, 10.00001, 100.000051, 1e16, 1.5e17],
        ]
    ).astype(np.float32)
    values = values[: len(values) // 2 * 2].reshape(-1, 2)
    text = outputs.float_rows_text(values)
    assert text == [
        f"{orjson.dumps(a).decode()},{orjson.dumps(b).decode()}" for a, b in values.tolist()
    ]
    # Every value reads back as the float it was: the CSV answer loses nothing.
    assert [[float(v) for v in row.split(",")] for row in text] == values.tolist()


def test_float_text_refuses_non_finite_values() -> None:
    assert outputs.float_rows_text(np.array([[np.nan, 1.0]], dtype=np.float32)) is None


def test_reading_warnings_come_first_in_every_answer() -> None:
    """A typed model's reading warnings (blank, unseen category) lead each noted row's warnings,
    before its range warnings, in the column-wise JSON and CSV builders as in the plain ones."""
    model = fake_model(["x", "y"])
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(300, 3)) * [1, 3, 4] + [1, 0, 5]).astype(np.float32)
    x[7] = model.feature_min  # noted, nothing outside
    p = probabilities(rng, 300, 2, 4.0)
    outside = ((x < model.feature_min) | (x > model.feature_max)).any(axis=1)
    noted = [7, *np.flatnonzero(outside)[:5].tolist()]
    notes = {i: [("b", "b is blank"), ("c", 'c has an unseen "value"')] for i in noted}
    plain = outputs.predictions(model, x, p, None, {i: list(v) for i, v in notes.items()})
    assert plain[7]["warnings"] == ["b is blank", 'c has an unseen "value"']
    assert len(plain[noted[1]]["warnings"]) > 2
    answer = outputs.answer_json(model, x, p, None, notes)
    assert answer == orjson.dumps({"model": "m", "version": 1, "predictions": plain})
    rows = list(csv.reader(io.StringIO(outputs.predictions_csv(model, x, p, notes))))[1:]
    low, high = x < model.feature_min, x > model.feature_max
    for i, row in enumerate(rows):
        names = [name for name, _ in notes.get(i, [])]
        names += [n for j, n in enumerate(model.feature_names) if low[i, j] or high[i, j]]
        assert row[-1] == ";".join(dict.fromkeys(names))
