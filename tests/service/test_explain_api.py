"""``/explain`` and KServe V1 ``:explain`` on real trained bundles: the attributions add up to
the probabilities ``/predict`` answers, every route answers alike, limits and mistakes are 4xx
naming what is wrong; an older bundle explains against its training means; a typed model's
categorical feature is one player; a noise column gets next to nothing; a real server process
honours EXPLAIN_EVALUATIONS and MAX_EXPLAIN_ROWS."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.conftest import FORMAT1_BUNDLE, train
from tests.service.typed_support import TYPED_FEATURES, TYPED_ROWS, serve
from tests.support import ServerProcess, delta, scrape

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.0, 2.7, 5.1, 1.6], [7.7, 3.0, 6.1, 2.3], [9.9, 1.0, 0.5, 3.0]]
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
CLASSES = ["setosa", "versicolor", "virginica"]


@pytest.fixture
def client(module_client: TestClient) -> TestClient:
    """Both runtimes, one app each for the module: the tests below only send requests (and
    count them as differences)."""
    return module_client


def explain(client: Any, path: str = "/explain", **body: Any) -> dict[str, Any]:
    response = client.post(path, json={"instances": ROWS, **body})
    assert response.status_code == 200, response.text
    return response.json()


def assert_adds_up(part: dict[str, Any], probability: float) -> None:
    assert part["probability"] == pytest.approx(probability, abs=1e-6)
    total = part["base_value"] + sum(part["attributions"].values())
    assert total == pytest.approx(part["probability"], abs=1e-6)


def test_attributions_add_up_to_the_predicted_probability(client: TestClient) -> None:
    predictions = client.post("/predict", json={"instances": ROWS}).json()["predictions"]
    answer = explain(client)
    assert answer["model"] == "iris" and answer["version"] == 1
    # Four features: 16 coalitions, so the whole 32-row background fits the default budget.
    assert answer["method"] == "exact"
    assert answer["background"] == "training sample" and answer["background_rows"] == 32
    for row, prediction in zip(answer["explanations"], predictions, strict=True):
        assert row["label"] == prediction["label"]
        assert list(row["attributions"]) == FEATURES
        assert_adds_up(row, prediction["probabilities"][row["label"]])
        assert row["warnings"] == prediction["warnings"]
        assert "classes" not in row and "error_bound" not in row
    assert answer["explanations"][3]["warnings"]  # out of range, said as /predict says it
    # The petals decide Iris: they carry most of the weight.
    weights = np.abs([[r["attributions"][f] for f in FEATURES] for r in answer["explanations"]])
    assert weights[:, 2:].sum() > weights[:, :2].sum()


@pytest.mark.parametrize("where", ["body", "query"])
def test_every_class_when_asked(client: TestClient, where: str) -> None:
    if where == "body":
        answer = explain(client, classes="all")
    else:
        answer = explain(client, "/explain?classes=all")
    predictions = client.post("/predict", json={"instances": ROWS}).json()["predictions"]
    for row, prediction in zip(answer["explanations"], predictions, strict=True):
        assert list(row["classes"]) == CLASSES
        for name, part in row["classes"].items():
            assert_adds_up(part, prediction["probabilities"][name])
        assert row["classes"][row["label"]]["attributions"] == row["attributions"]
        # The base values are the background's mean probabilities: they sum to one.
        assert sum(p["base_value"] for p in row["classes"].values()) == pytest.approx(1, abs=1e-5)
        # Every feature's values over the classes sum to zero (the probabilities sum to one).
        for feature in FEATURES:
            total = sum(p["attributions"][feature] for p in row["classes"].values())
            assert total == pytest.approx(0, abs=1e-5)


def test_every_route_and_format_answers_alike(client: TestClient) -> None:
    expected = explain(client)["explanations"]
    for path in [
        "/models/iris/explain",
        "/models/iris/versions/1/explain",
        "/v1/models/iris:explain",
        "/v1/models/iris/versions/1:explain",
    ]:
        assert explain(client, path)["explanations"] == expected, path
    text = io.StringIO()
    csv.writer(text).writerows([FEATURES, *ROWS])
    response = client.post(
        "/explain", content=text.getvalue(), headers={"content-type": "text/csv"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["explanations"] == expected
    records = [dict(zip(FEATURES, row, strict=True)) for row in ROWS]
    response = client.post("/explain", json={"instances": records})
    assert response.json()["explanations"] == expected


@pytest.mark.parametrize(
    ("body", "status", "named"),
    [
        ({"instances": [ROWS[0]] * 101}, 413, "MAX_EXPLAIN_ROWS"),
        ({"instances": ROWS, "classes": "some"}, 422, "classes"),
        ({"instances": ROWS, "classes": None}, 422, "classes"),
        ({"instances": ROWS, "top_k": 2}, 422, "top_k"),
        ({"rows": ROWS}, 422, "rows"),
        ({"instances": [[1.0, 2.0]]}, 422, "4"),
        ({"instances": [[1.0, 2.0, "x", 4.0]]}, 422, "petal_length"),
        ([ROWS], 422, "instances"),
    ],
)
def test_mistakes_are_4xx_naming_what_is_wrong(
    client: TestClient, body: Any, status: int, named: str
) -> None:
    response = client.post("/explain", json=body)
    assert response.status_code == status, response.text
    assert named in response.json()["error"]


def test_wrong_formats_and_names_are_refused(client: TestClient) -> None:
    assert client.post("/explain", content=b"{", headers={"content-type": "application/json"}).status_code == 400  # fmt: skip
    assert client.post("/explain", content=b"x", headers={"content-type": "text/plain"}).status_code == 415  # fmt: skip
    assert client.post("/models/nope/explain", json={"instances": ROWS}).status_code == 404
    assert client.post("/v1/models/nope:explain", json={"instances": ROWS}).status_code == 404
    response = client.post("/models/iris/versions/7/explain", json={"instances": ROWS})
    assert response.status_code == 404
    assert client.get("/explain").status_code == 405


def test_explanations_are_counted_as_requests(client: TestClient) -> None:
    before = scrape(client)
    explain(client)
    client.post("/explain", json={"instances": ROWS, "classes": "some"})
    after = scrape(client)
    ok = {"model": "iris", "version": "1", "protocol": "explain", "status": "200"}
    assert delta(before, after, "inference_requests_total", **ok) == 1
    refused = {"model": "iris", "version": "1", "protocol": "explain", "status": "422"}
    assert delta(before, after, "inference_requests_total", **refused) == 1


def test_an_older_bundle_explains_against_its_training_means(tmp_path: Path) -> None:
    shutil.copytree(FORMAT1_BUNDLE, tmp_path / "iris" / "1")
    with serve(tmp_path, "iris", "litert") as client:
        answer = explain(client)
        predictions = client.post("/predict", json={"instances": ROWS}).json()["predictions"]
    assert answer["background"] == "training means" and answer["background_rows"] == 1
    for row, prediction in zip(answer["explanations"], predictions, strict=True):
        assert_adds_up(row, prediction["probabilities"][row["label"]])


# -- slow: a typed model, a noise column, a real server process -------------------------------
@pytest.mark.slow
def test_a_categorical_feature_is_one_player(tmp_path: Path, typed_bundle: Path) -> None:
    shutil.copytree(typed_bundle, tmp_path / "churn" / "1")
    records = [dict(zip(TYPED_FEATURES, row, strict=True)) for row in TYPED_ROWS]
    with serve(tmp_path, "churn", "litert") as client:
        predictions = client.post("/predict", json={"instances": records}).json()["predictions"]
        response = client.post("/explain", json={"instances": records, "classes": "all"})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["method"] == "exact" and answer["background_rows"] == 32
    for row, prediction in zip(answer["explanations"], predictions, strict=True):
        assert list(row["attributions"]) == TYPED_FEATURES  # one value per feature, not per code
        for name, part in row["classes"].items():
            assert_adds_up(part, prediction["probabilities"][name])
        assert row["warnings"] == prediction["warnings"]  # blanks and unseen categories said


@pytest.mark.slow
def test_a_noise_column_gets_next_to_nothing(tmp_path: Path) -> None:
    from sklearn.datasets import load_iris

    data = load_iris(as_frame=True)
    frame = data.frame.rename(columns=dict(zip(data.feature_names, FEATURES, strict=True)))
    frame["noise"] = np.random.default_rng(0).normal(size=len(frame))
    frame["species"] = [data.target_names[t] for t in frame.pop("target")]
    path = tmp_path / "noisy.csv"
    frame.to_csv(path, index=False)
    train(tmp_path / "artifacts", data=path, target="species", name="noisy", epochs=80)
    rows = frame[[*FEATURES, "noise"]].sample(60, random_state=1).to_numpy().tolist()
    with serve(tmp_path / "artifacts", "noisy", "litert") as client:
        response = client.post("/explain", json={"instances": rows})
    assert response.status_code == 200, response.text
    explanations = response.json()["explanations"]
    weight = {
        f: float(np.mean([abs(e["attributions"][f]) for e in explanations]))
        for f in [*FEATURES, "noise"]
    }
    petals = (weight["petal_length"] + weight["petal_width"]) / 2
    assert weight["noise"] < 0.15 * petals, weight


@pytest.mark.slow
def test_a_server_process_honours_the_explain_settings(
    artifacts_copy: Path, tmp_path: Path
) -> None:
    server = ServerProcess(
        artifacts_copy,
        log_path=tmp_path / "server.log",
        model_name="iris",
        explain_evaluations=64,  # 16 coalitions: the background summarised to 4 rows
        max_explain_rows=2,
    )
    with server:
        server.wait_for("/readyz")
        response = httpx.post(server.url + "/explain", json={"instances": ROWS[:2]}, timeout=30)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["method"] == "exact" and answer["background_rows"] == 4
        for row in answer["explanations"]:
            total = row["base_value"] + sum(row["attributions"].values())
            assert total == pytest.approx(row["probability"], abs=1e-6)
        response = httpx.post(server.url + "/explain", json={"instances": ROWS[:3]}, timeout=30)
        assert response.status_code == 413
        assert "MAX_EXPLAIN_ROWS" in response.json()["error"]
