"""Columns of the training table the model does not use (its target, columns left out as IDs or
by --exclude) may come with a request, as when a user scores the training file itself: they are
ignored. Any other unknown column is still refused, naming it."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import bundle
from tests.service.reference import copy_bundle, iris_rows
from tests.service.typed_support import serve

pytestmark = pytest.mark.slow  # serves freshly trained bundles

CSV = {"content-type": "text/csv"}


def serve_copy(source: Path, tmp_path: Path, name: str) -> TestClient:
    copy_bundle(source, tmp_path / "artifacts", name)
    return serve(tmp_path / "artifacts", name)


@pytest.fixture
def typed(tmp_path: Path, typed_bundle: Path) -> Iterator[TestClient]:
    with serve_copy(typed_bundle, tmp_path, "churn") as client:
        yield client


def test_the_training_file_itself_can_be_scored(
    typed: TestClient, typed_bundle: Path, typed_csv: Path
) -> None:
    metadata = bundle.read_metadata(typed_bundle)
    assert set(metadata.columns_left_out) == {"id", "name"}
    table = list(csv.DictReader(io.StringIO(typed_csv.read_text())))[:25]
    whole = typed_csv.read_text().splitlines()[:26]  # the header and 25 rows, every column
    features = metadata.feature_names
    lines = [",".join(features)] + [",".join(row[f] for f in features) for row in table]
    only_features = typed.post("/predict", content="\n".join(lines).encode(), headers=CSV)
    everything = typed.post("/predict", content="\n".join(whole).encode(), headers=CSV)
    assert only_features.status_code == everything.status_code == 200, everything.text
    assert everything.json() == only_features.json()

    records = [dict(row) for row in table[:3]]  # every column, as text: id, name, churned too
    for record in records:
        for name in ("age", "monthly_spend"):
            record[name] = float(record[name]) if record[name] else None
        record["member"] = {"true": True, "false": False}.get(record["member"])
        record["plan"] = record["plan"] or None
    trimmed = [{f: record[f] for f in features} for record in records]
    with_extra = typed.post("/predict", json={"instances": records})
    without = typed.post("/predict", json={"instances": trimmed})
    assert with_extra.status_code == without.status_code == 200, with_extra.text
    assert with_extra.json() == without.json()


def test_another_unknown_column_is_still_refused(typed: TestClient) -> None:
    record = {"age": 40, "plan": "pro", "region": "east", "member": True, "monthly_spend": 50.0}
    response = typed.post("/predict", json={"instances": [{**record, "plann": "pro"}]})
    assert response.status_code == 422
    assert response.json()["error"] == "instances[0] has unknown feature 'plann'"
    body = "age,plan,region,member,monthly_spend,colour\n40,pro,east,true,50,red\n"
    response = typed.post("/predict", content=body.encode(), headers=CSV)
    assert response.status_code == 422
    assert response.json()["error"] == "CSV header has unknown feature 'colour'"
    columns = {name: [value] for name, value in record.items()}
    ok = typed.post("/v1/models/churn:predict", json={"inputs": {**columns, "churned": ["no"]}})
    assert ok.status_code == 200, ok.text
    refused = typed.post("/v1/models/churn:predict", json={"inputs": {**columns, "x": [1]}})
    assert refused.status_code == 400
    assert "unknown input 'x'" in refused.json()["error"]


def test_iris_rows_with_their_species_column(tmp_path: Path, iris_bundle: Path) -> None:
    rows = iris_rows()[:20]
    names = bundle.read_metadata(iris_bundle).feature_names
    with serve_copy(iris_bundle, tmp_path, "iris") as client:
        plain = ["\n".join([",".join(names), *(",".join(map(str, r)) for r in rows)])]
        labelled = ["\n".join([",".join([*names, "species"]), *(",".join([*map(str, r), "setosa"]) for r in rows)])]  # fmt: skip
        a = client.post("/predict", content=plain[0].encode(), headers=CSV)
        b = client.post("/predict", content=labelled[0].encode(), headers=CSV)
        assert a.status_code == b.status_code == 200, b.text
        assert a.json() == b.json()
        records = [{**dict(zip(names, r, strict=True)), "species": "setosa"} for r in rows]
        c = client.post("/predict", json={"instances": records})
        assert c.status_code == 200, c.text
        assert c.json() == a.json()
