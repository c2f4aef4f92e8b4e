"""The two runtimes: same answers within 1e-5, the choice between them, LiteRT without TensorFlow."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

import bundle
from service import runtimes
from service.app import create_app
from service.settings import Settings
from tests.service.reference import (
    IRIS_FEATURES,
    answered,
    binary_rows,
    copy_bundle,
    csv_body,
    iris_rows,
    records,
)
from tests.support import ROOT


def serve(artifacts: Path, name: str, runtime: str | None) -> TestClient:
    return TestClient(
        create_app(Settings(artifacts_dir=artifacts, model_name=name, model_runtime=runtime))
    )


@pytest.fixture
def both(tmp_path: Path, iris_bundle: Path, binary_bundle: Path) -> Iterator[dict[str, TestClient]]:
    """One app per runtime over the same Iris and binary bundles."""
    artifacts = tmp_path / "artifacts"
    copy_bundle(iris_bundle, artifacts, "iris")
    copy_bundle(binary_bundle, artifacts, "binary")
    with (
        serve(artifacts, "iris", "litert") as litert,
        serve(artifacts, "iris", "keras") as keras,
        serve(artifacts, "binary", "litert") as binary_litert,
        serve(artifacts, "binary", "keras") as binary_keras,
    ):
        yield {
            "litert": litert,
            "keras": keras,
            "binary-litert": binary_litert,
            "binary-keras": binary_keras,
        }


@pytest.mark.slow
def test_each_app_serves_the_runtime_it_was_asked_for(both: dict[str, TestClient]) -> None:
    for key, client in both.items():
        assert client.get("/readyz").json()["runtime"] == key.removeprefix("binary-")


@pytest.mark.slow
@pytest.mark.parametrize("form", ["rows", "records", "csv"])
def test_runtimes_agree_on_iris(both: dict[str, TestClient], form: str) -> None:
    rows = iris_rows()
    answers = {}
    for runtime in ("litert", "keras"):
        client = both[runtime]
        if form == "csv":
            body = csv_body(rows, IRIS_FEATURES, IRIS_FEATURES)
            response = client.post("/predict", content=body, headers={"content-type": "text/csv"})
        else:
            instances = rows if form == "rows" else records(rows, IRIS_FEATURES)
            response = client.post("/predict", json={"instances": instances})
        assert response.status_code == 200
        answers[runtime] = answered(
            response.json()["predictions"], ["setosa", "versicolor", "virginica"]
        )
    (litert_labels, litert_p), (keras_labels, keras_p) = answers["litert"], answers["keras"]
    assert litert_labels == keras_labels
    np.testing.assert_allclose(litert_p, keras_p, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_runtimes_agree_on_the_binary_model(both: dict[str, TestClient]) -> None:
    rows = binary_rows(200, seed=3)
    litert = both["binary-litert"].post("/predict", json={"instances": rows}).json()
    keras = both["binary-keras"].post("/predict", json={"instances": rows}).json()
    litert_labels, litert_p = answered(litert["predictions"], ["no", "yes"])
    keras_labels, keras_p = answered(keras["predictions"], ["no", "yes"])
    assert litert_labels == keras_labels
    assert set(litert_labels) == {"no", "yes"}
    np.testing.assert_allclose(litert_p, keras_p, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_runtimes_agree_row_by_row_and_in_batches(both: dict[str, TestClient]) -> None:
    """LiteRT keeps one interpreter for single rows and one for batches: both give one answer."""
    rows = iris_rows()[::15]
    batch = both["litert"].post("/predict", json={"instances": rows}).json()["predictions"]
    for row, expected in zip(rows, batch, strict=True):
        for runtime in ("litert", "keras"):
            single = both[runtime].post("/predict", json={"instances": [row]}).json()
            (prediction,) = single["predictions"]
            assert prediction["label"] == expected["label"]
            for cls, p in expected["probabilities"].items():
                assert prediction["probabilities"][cls] == pytest.approx(p, abs=1e-5)


@pytest.mark.slow
def test_default_runtime_is_litert_when_the_bundle_has_it(artifacts_copy: Path) -> None:
    with serve(artifacts_copy, "iris", None) as client:
        assert client.get("/readyz").json()["runtime"] == "litert"
        assert client.get("/model").json()["runtime"] == "litert"


def test_choose_prefers_litert_and_falls_back_to_keras() -> None:
    assert runtimes.litert_available()
    assert runtimes.choose(None, has_tflite=True) == "litert"
    assert runtimes.choose(None, has_tflite=False) == "keras"
    assert runtimes.choose("keras", has_tflite=True) == "keras"
    assert runtimes.choose("litert", has_tflite=True) == "litert"


def test_model_runtime_setting_is_checked() -> None:
    with pytest.raises(ValueError, match="model_runtime"):
        Settings(model_runtime="onnx")  # type: ignore[arg-type]


LITERT_ONLY = """
import sys
from pathlib import Path
from fastapi.testclient import TestClient
from service.app import create_app
from service.settings import Settings

settings = Settings(artifacts_dir=Path(sys.argv[1]), model_runtime="litert")
with TestClient(create_app(settings)) as client:
    answer = client.post("/predict", json={"instances": [[5.1, 3.5, 1.4, 0.2]]})
    assert answer.status_code == 200, answer.text
    print(answer.json()["predictions"][0]["label"])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {"tensorflow", "keras", "sklearn"})
print(",".join(heavy) or "none")
"""


@pytest.mark.slow
def test_litert_path_imports_no_tensorflow_keras_or_sklearn(artifacts_copy: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", LITERT_ONLY, str(artifacts_copy)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    label, heavy = done.stdout.split()[-2:]
    assert label == "setosa"
    assert heavy == "none"


@pytest.mark.slow
def test_keras_graph_matches_the_model_called_directly_for_any_row_count(
    iris_bundle: Path, binary_bundle: Path
) -> None:
    """The Keras runtime's compiled graph gives the eager call's answers, traced only once."""
    from service.runtimes.keras import KerasRuntime

    rng = np.random.default_rng(7)
    for version_dir in (iris_bundle, binary_bundle):
        # The service calls the core layer of a format-2 model.keras on the encoded matrix.
        runtime = KerasRuntime((version_dir / "model.keras").read_bytes(), core=bundle.CORE_LAYER)
        for rows in (1, 2, 31, 257, 10_000):
            x = rng.normal(size=(rows, runtime.input_width)).astype(np.float32) * 3
            graph, eager = runtime.predict(x), runtime.predict_eager(x)
            assert graph.shape == (rows, runtime.output_width)
            np.testing.assert_allclose(graph, eager, atol=1e-6)
        # One concrete function for every batch size: a new row count never retraces.
        assert runtime._graph.experimental_get_tracing_count() == 1
