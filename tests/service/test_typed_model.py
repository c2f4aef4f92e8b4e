"""What a typed model shows and decides beyond one answer: its binary threshold on every route,
its card and request schemas, a format-1 bundle still served as before, and a real server."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

import bundle
from tests.conftest import FORMAT1_BUNDLE, train
from tests.service.reference import (
    IRIS_FEATURES,
    answered,
    answered_csv,
    copy_bundle,
    iris_rows,
    keras_inputs,
    reference,
)
from tests.service.typed_support import (
    CLASSES,
    TOLERANCE,
    TYPED_FEATURES,
    TYPED_ROWS,
    columns,
    csv_body,
    flagged,
    records,
    serve,
    triton_request,
    triton_result,
    v2_json_body,
    v2_outputs,
    warned_features,
)
from tests.support import ServerProcess

pytestmark = pytest.mark.slow  # every test here serves a trained bundle or starts a process

CSV = {"content-type": "text/csv"}
IRIS_CLASSES = ["setosa", "versicolor", "virginica"]
THRESHOLD = 0.3


# -- the binary threshold ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def threshold_bundle(typed_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The typed table trained with ``--threshold 0.3``: ``<artifacts>/churn/1``."""
    artifacts = tmp_path_factory.mktemp("threshold") / "artifacts"
    return train(
        artifacts,
        data=typed_csv,
        target="churned",
        name="churn",
        epochs=60,
        threshold=str(THRESHOLD),
    )


def candidate_rows(count: int = 240, seed: int = 5) -> list[list[Any]]:
    """Rows across the table's range, some with blanks and unseen categories."""
    rng = np.random.default_rng(seed)
    plans = ["basic", "plus", "pro", None, "gold"]
    regions = ["north", "south", "east", "west"]
    return [
        [
            None if i % 9 == 0 else float(rng.integers(20, 70)),
            plans[int(rng.integers(0, len(plans)))],
            regions[int(rng.integers(0, len(regions)))],
            [True, False, None][int(rng.integers(0, 3))],
            float(round(rng.uniform(5, 200), 2)),
        ]
        for i in range(count)
    ]


@pytest.fixture(scope="module")
def threshold_rows(threshold_bundle: Path) -> list[list[Any]]:
    """Rows whose P(yes) is in [threshold, 0.5): labelled "yes" only through the threshold,
    then as many other rows."""
    rows = candidate_rows()
    _, probabilities = reference(threshold_bundle, rows)
    between = [r for r, p in zip(rows, probabilities[:, 1], strict=True) if THRESHOLD <= p < 0.49]
    other = [r for r, p in zip(rows, probabilities[:, 1], strict=True) if not 0.29 < p < 0.51]
    assert len(between) >= 2, "no row between the threshold and 0.5: the test could not fail"
    chosen = between[:6] + other[:6]
    labels, probabilities = reference(threshold_bundle, chosen)
    argmax = [CLASSES[i] for i in probabilities.argmax(axis=1)]
    assert labels[: len(between[:6])] == ["yes"] * len(between[:6])
    assert labels != argmax  # the threshold changes some labels
    return chosen


def test_threshold_is_used_by_every_route_and_shown(
    threshold_bundle: Path, threshold_rows: list[list[Any]], tmp_path: Path, runtime: str
) -> None:
    rows = threshold_rows
    expected_labels, expected = reference(threshold_bundle, rows)
    assert bundle.read_metadata(threshold_bundle).threshold == THRESHOLD
    copy_bundle(threshold_bundle, tmp_path / "artifacts", "churn")
    with serve(tmp_path / "artifacts", "churn", runtime) as client:
        card = client.get("/model").json()
        assert card["threshold"] == THRESHOLD
        assert card["metadata"]["threshold"] == THRESHOLD

        labels: dict[str, list[Any]] = {}
        for count in (1, len(rows)):  # one row and many take different paths
            answer = client.post("/predict", json={"instances": rows[:count]})
            got, probabilities = answered(answer.json()["predictions"], CLASSES)
            np.testing.assert_allclose(probabilities, expected[:count], rtol=0, atol=TOLERANCE)
            labels[f"predict json {count}"] = got
        as_csv = client.post(
            "/predict", content=csv_body(rows), headers={**CSV, "accept": "text/csv"}
        )
        labels["predict csv"] = answered_csv(as_csv.text, CLASSES)[0]
        labels["v2 json"] = v2_outputs(
            client.post("/v2/models/churn/infer", json=v2_json_body(rows)).json()
        )[0]
        body, headers = triton_request(rows)
        binary = client.post("/v2/models/churn/infer", content=body, headers=headers)
        labels["v2 binary"] = [
            v.decode() for v in triton_result(binary.content, binary.headers).as_numpy("label")
        ]
        tf_rows = client.post("/v1/models/churn:predict", json={"instances": records(rows)})
        labels["tf instances"] = [p["label"] for p in tf_rows.json()["predictions"]]
        tf_columns = client.post("/v1/models/churn:predict", json={"inputs": columns(rows)})
        labels["tf columns"] = tf_columns.json()["outputs"]["label"]
    assert labels.pop("predict json 1") == expected_labels[:1]
    for route, got in labels.items():
        assert got == expected_labels, route


# -- the model card and the request schemas ---------------------------------------------------
@pytest.fixture
def typed_client(typed_bundle: Path, tmp_path: Path, runtime: str) -> Iterator[TestClient]:
    copy_bundle(typed_bundle, tmp_path / "artifacts", "churn")
    with serve(tmp_path / "artifacts", "churn", runtime) as client:
        yield client


def test_model_card_lists_kinds_vocabularies_medians_and_blanks(
    typed_client: TestClient, typed_bundle: Path
) -> None:
    metadata = bundle.read_metadata(typed_bundle)
    card = typed_client.get("/model").json()
    assert card["missing_values"] == "refuse"
    assert card["threshold"] == metadata.threshold
    features = {f["name"]: f for f in card["features"]}
    assert list(features) == TYPED_FEATURES
    for spec in metadata.features:
        shown = features[spec.name]
        assert shown["kind"] == spec.kind
        assert shown["nullable"] == spec.nullable
        if spec.kind == "categorical":
            assert shown["vocabulary"] == spec.vocabulary
            assert "median" not in shown
        else:
            assert shown["median"] == spec.median
            assert (shown["min"], shown["max"]) == (spec.min, spec.max)
    assert features["plan"]["vocabulary"] == ["", "basic", "plus", "pro"]  # "" : blank seen
    assert features["region"]["vocabulary"] == ["east", "north", "south", "west"]
    assert [f["nullable"] for f in card["features"]] == [True, True, False, True, False]


def test_protocol_metadata_declares_one_input_per_feature(typed_client: TestClient) -> None:
    declared = [("age", "FP32"), ("plan", "BYTES"), ("region", "BYTES"), ("member", "BOOL")]
    declared.append(("monthly_spend", "FP32"))
    v2 = typed_client.get("/v2/models/churn").json()
    assert v2["inputs"] == [{"name": n, "datatype": d, "shape": [-1]} for n, d in declared]
    assert v2["outputs"][0] == {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]}
    metadata = typed_client.get("/v1/models/churn/metadata").json()["metadata"]
    signature = metadata["signature_def"]["signature_def"]["serving_default"]
    dtypes = {name: tensor["dtype"] for name, tensor in signature["inputs"].items()}
    assert dtypes == {
        "age": "DT_FLOAT",
        "plan": "DT_STRING",
        "region": "DT_STRING",
        "member": "DT_BOOL",
        "monthly_spend": "DT_FLOAT",
    }


def _types(schema: dict[str, Any]) -> set[str]:
    """The JSON types a value schema allows (through anyOf)."""
    if "anyOf" in schema:
        return set().union(*(_types(s) for s in schema["anyOf"]))
    return {schema["type"]}


# The JSON types the schema admits for each feature: what the reader takes, no more.
EXPECTED_TYPES = {
    "age": {"number", "string", "null"},  # numeric, nullable: a blank marker such as "NA" too
    "plan": {"string", "number", "boolean", "null"},  # categorical, nullable
    "region": {"string", "number", "boolean"},  # categorical, no blanks in training
    "member": {"boolean", "number", "string", "null"},  # boolean (0/1, "true"), nullable
    "monthly_spend": {"number"},  # numeric, no blanks in training
}


@pytest.mark.parametrize("missing_values", ["refuse", "impute"])
def test_openapi_request_schema_types_each_feature(
    typed_bundle: Path, tmp_path: Path, runtime: str, missing_values: str
) -> None:
    copy_bundle(typed_bundle, tmp_path / "artifacts", "churn")
    with serve(tmp_path / "artifacts", "churn", runtime, missing_values=missing_values) as client:
        document = client.get("/openapi.json").json()
        ready = client.post("/predict", json={"instances": [TYPED_ROWS[0]]})
    assert ready.status_code == 200
    expected = {name: set(types) for name, types in EXPECTED_TYPES.items()}
    if missing_values == "impute":  # every feature takes a blank: null, or a blank marker
        for types in expected.values():
            types.update({"null", "string"})
    request = document["components"]["schemas"]["PredictRequest"]
    rows, record = request["properties"]["instances"]["anyOf"]
    by_position = rows["items"]["prefixItems"]
    assert rows["items"]["minItems"] == rows["items"]["maxItems"] == len(TYPED_FEATURES)
    assert {n: _types(s) for n, s in zip(TYPED_FEATURES, by_position, strict=True)} == expected
    properties = dict(record["items"]["properties"])
    # The training table's target and ID columns may come along; they are ignored, any value.
    ignored = {name: properties.pop(name) for name in ("churned", "id", "name")}
    assert all(
        "ignored" in schema["description"] and "type" not in schema for schema in ignored.values()
    )
    assert list(properties) == TYPED_FEATURES
    assert record["items"]["required"] == TYPED_FEATURES
    assert {n: _types(s) for n, s in properties.items()} == expected
    assert "basic" in properties["plan"]["description"]  # the vocabulary is named
    classify = document["components"]["schemas"]["TFClassifyRequest"]
    example = classify["properties"]["examples"]["items"]
    assert set(example["properties"]) == {*TYPED_FEATURES, *ignored}
    assert example["required"] == TYPED_FEATURES


# -- a format-1 bundle, as published before typed features ------------------------------------
@pytest.fixture
def format1_artifacts(tmp_path: Path) -> Path:
    target = tmp_path / "artifacts" / "iris" / "1"
    shutil.copytree(FORMAT1_BUNDLE, target)
    return tmp_path / "artifacts"


def test_format1_bundle_loads_and_answers_as_before(format1_artifacts: Path, runtime: str) -> None:
    version_dir = format1_artifacts / "iris" / "1"
    metadata = bundle.read_metadata(version_dir)
    assert metadata.format_version == 1
    rows = iris_rows()
    # The old behaviour: model.keras takes one float matrix.
    assert isinstance(keras_inputs(metadata, rows), np.ndarray)
    expected_labels, expected = reference(version_dir, rows)
    with serve(format1_artifacts, "iris", runtime) as client:
        assert client.get("/readyz").json()["runtime"] == runtime
        answer = client.post("/predict", json={"instances": rows})
        assert answer.status_code == 200, answer.text
        labels, probabilities = answered(answer.json()["predictions"], IRIS_CLASSES)
        assert labels == expected_labels
        np.testing.assert_allclose(probabilities, expected, rtol=0, atol=TOLERANCE)

        v2 = client.get("/v2/models/iris").json()
        assert v2["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}]
        tensor = {"name": "features", "datatype": "FP32", "shape": [len(rows), 4], "data": rows}
        infer = client.post("/v2/models/iris/infer", json={"inputs": [tensor]}).json()
        v2_labels, v2_probabilities = v2_outputs(infer)
        assert v2_labels == expected_labels
        np.testing.assert_allclose(v2_probabilities, expected, rtol=0, atol=TOLERANCE)

        signature = client.get("/v1/models/iris/metadata").json()["metadata"]["signature_def"]
        inputs = signature["signature_def"]["serving_default"]["inputs"]
        assert list(inputs) == ["features"]
        assert inputs["features"]["dtype"] == "DT_FLOAT"
        tf = client.post("/v1/models/iris:predict", json={"instances": rows}).json()
        assert [p["label"] for p in tf["predictions"]] == expected_labels
        card = client.get("/model").json()
        assert card["threshold"] is None
        assert [f["name"] for f in card["features"]] == IRIS_FEATURES
        assert {f["kind"] for f in card["features"]} == {"numeric"}


# -- a real server process --------------------------------------------------------------------
def test_typed_json_and_csv_over_http(typed_bundle: Path, tmp_path: Path) -> None:
    copy_bundle(typed_bundle, tmp_path / "artifacts", "churn")
    metadata = bundle.read_metadata(typed_bundle)
    expected_labels, expected = reference(typed_bundle, TYPED_ROWS)
    server = ServerProcess(
        tmp_path / "artifacts", log_path=tmp_path / "server.log", model_name="churn"
    )
    with server, httpx.Client(base_url=server.url, timeout=30) as http:
        server.wait_for("/readyz")
        answer = http.post("/predict", json={"instances": records(TYPED_ROWS)})
        assert answer.status_code == 200, answer.text
        predictions = answer.json()["predictions"]
        labels, probabilities = answered(predictions, CLASSES)
        assert labels == expected_labels
        np.testing.assert_allclose(probabilities, expected, rtol=0, atol=TOLERANCE)
        warned = [warned_features(p["warnings"]) for p in predictions]
        assert warned == [flagged(metadata, row) for row in TYPED_ROWS]

        as_csv = http.post(
            "/predict",
            content=csv_body(TYPED_ROWS),
            headers={**CSV, "accept": "text/csv"},
        )
        assert as_csv.status_code == 200, as_csv.text
        labels, probabilities, warnings = answered_csv(as_csv.text, CLASSES)
        assert labels == expected_labels
        np.testing.assert_allclose(probabilities, expected, rtol=0, atol=TOLERANCE)
        assert warnings == [";".join(flagged(metadata, row)) for row in TYPED_ROWS]

        blank = http.post("/predict", json={"instances": [[*TYPED_ROWS[0][:4], None]]})
        assert blank.status_code == 422
        assert "monthly_spend" in blank.json()["error"]
    assert server.process is not None and server.process.returncode == 0, server.log()
