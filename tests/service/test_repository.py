"""The model repository through the app (TestClient) and its registries: several models under
ARTIFACTS_DIR, MODEL_VERSIONS, labels and traffic in serving.json (stable, canary, shadow) and
the admin routes that set them.

Every model here is a copy of the session's Iris bundle, except the shadow's second version:
one extra 1-epoch training (~2 s), which makes it disagree with the first on a few rows."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.datasets import load_iris

import bundle
from service.model import load_version
from service.observability.logs import JsonFormatter
from tests.conftest import train
from tests.service import publishing
from tests.service.publishing import BREAKERS, publish
from tests.service.repository_support import (
    AUTH,
    FEATURES,
    ROW,
    SETOSA,
    TOKEN,
    VERSICOLOR,
    VIRGINICA,
    answered,
    make_client,
    publish_copies,
    read_serving,
    serving_document,
    serving_json,
    snapshot,
    staging_leftovers,
    summary,
    v2_answered,
    v2_body,
)
from tests.support import delta, scrape, wait_until

HOLD = 60.0  # the longest a wait below may take before the test fails


def models_listed(client: TestClient) -> list[str]:
    response = client.get("/models")
    assert response.status_code == 200
    return [model["name"] for model in response.json()["models"]]


def repository(client: TestClient) -> Any:
    return client.app.state.repository  # type: ignore[attr-defined]


# == several models ==============================================================================
@pytest.fixture
def two_models(tmp_path: Path, iris_bundle: Path) -> Path:
    """iris (versions 1 and 2) and flowers (version 1); beside them a model directory holding
    only a staging directory (a first training run still writing), a hidden directory, a
    staging directory at the top and a plain file: none of them a model."""
    artifacts = publish_copies(tmp_path / "artifacts", iris_bundle, iris=2, flowers=1)
    publishing.stage(artifacts / "pending", iris_bundle)
    publishing.stage(artifacts, iris_bundle)  # artifacts/.tmp-*: not a model name
    shutil.copytree(iris_bundle, artifacts / ".hidden" / "1")
    (artifacts / "README").write_text("not a model\n")
    return artifacts


def test_every_model_directory_is_served_by_name(two_models: Path) -> None:
    with make_client(two_models) as client:
        response = client.get("/models")
        assert response.status_code == 200
        listing = response.json()
        assert listing["default_model"] is None
        assert [m["name"] for m in listing["models"]] == ["flowers", "iris"]
        by_name = {m["name"]: m for m in listing["models"]}
        assert by_name["iris"]["version"] == 2 and by_name["iris"]["ready"] is True
        assert by_name["flowers"]["version"] == 1 and by_name["flowers"]["ready"] is True
        assert by_name["iris"]["labels"] == {} and by_name["iris"]["traffic"] == {
            "canary_percent": 0.0,
            "shadow_version": None,
            "shadow_percent": 100.0,
        }

        for name, version in (("iris", 2), ("flowers", 1)):
            response = client.post(f"/models/{name}/predict", json=ROW)
            assert response.status_code == 200, response.text
            body = response.json()
            # The directory's name is the model's name, whatever the bundle's metadata says.
            assert (body["model"], body["version"]) == (name, version)
            assert body["predictions"][0]["label"] == "setosa"
            assert v2_answered(client, f"/v2/models/{name}/infer") == version
            tf = client.post(f"/v1/models/{name}:predict", json={"instances": [SETOSA]})
            assert tf.status_code == 200 and tf.json()["predictions"][0]["label"] == "setosa"

        # Several models and no DEFAULT_MODEL: /predict names them and answers nothing.
        response = client.post("/predict", json=ROW)
        assert response.status_code == 404
        error = response.json()["error"]
        assert "'flowers'" in error and "'iris'" in error and "DEFAULT_MODEL" in error
        assert client.get("/model").status_code == 404

        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready", "models": {"flowers": 1, "iris": 2}}

        for name in ("pending", ".hidden", "README", "nosuch"):
            assert client.get(f"/models/{name}").status_code == 404
            response = client.post(f"/models/{name}/predict", json=ROW)
            assert response.status_code == 404
            assert "'flowers', 'iris'" in response.json()["error"]


def test_default_model_answers_predict(two_models: Path) -> None:
    with make_client(two_models, default_model="flowers") as client:
        response = client.post("/predict", json=ROW)
        assert response.status_code == 200
        assert (response.json()["model"], response.json()["version"]) == ("flowers", 1)
        assert client.get("/models").json()["default_model"] == "flowers"
        ready = client.get("/readyz").json()
        assert (ready["model"], ready["version"]) == ("flowers", 1)
        assert ready["models"] == {"flowers": 1, "iris": 2}
        assert client.get("/model").json()["name"] == "flowers"
        assert answered(client, "/models/iris/predict") == 2  # the others by name


def test_model_name_lists_the_models_served(two_models: Path, iris_bundle: Path) -> None:
    with make_client(two_models, model_name="iris, later") as client:
        # A listed model must be served before the server is ready; the others are not served.
        assert models_listed(client) == ["iris", "later"]
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert "no version of model 'later'" in ready.json()["error"]
        assert client.post("/models/flowers/predict", json=ROW).status_code == 404
        assert client.get("/models/flowers").status_code == 404
        assert answered(client, "/models/iris/predict") == 2

        publish(two_models / "later", iris_bundle)
        repository(client).poll()
        assert client.get("/readyz").json()["models"] == {"iris": 2, "later": 1}
        response = client.post("/models/later/predict", json=ROW)
        assert response.status_code == 200 and response.json()["model"] == "later"
        assert models_listed(client) == ["iris", "later"]  # flowers still not served


def test_one_listed_model_answers_predict_without_default_model(two_models: Path) -> None:
    with make_client(two_models, model_name="flowers") as client:
        assert models_listed(client) == ["flowers"]
        response = client.post("/predict", json=ROW)
        assert response.status_code == 200 and response.json()["model"] == "flowers"
        assert client.post("/models/iris/predict", json=ROW).status_code == 404


def test_a_model_that_appears_later_is_found_by_polling(
    two_models: Path, iris_bundle: Path
) -> None:
    with make_client(two_models) as client:
        assert models_listed(client) == ["flowers", "iris"]
        assert repository(client).poll() is False  # nothing new
        assert models_listed(client) == ["flowers", "iris"]

        # A brand new model, and the staging directory of "pending" published as its version 1.
        publish(two_models / "late", iris_bundle)
        (staging,) = staging_leftovers(two_models / "pending")
        os.rename(two_models / "pending" / staging, two_models / "pending" / "1")
        assert repository(client).poll() is True
        assert models_listed(client) == ["flowers", "iris", "late", "pending"]
        for name in ("late", "pending"):
            response = client.post(f"/models/{name}/predict", json=ROW)
            assert response.status_code == 200, response.text
            assert (response.json()["model"], response.json()["version"]) == (name, 1)
        assert client.get("/readyz").json()["models"] == {
            "flowers": 1,
            "iris": 2,
            "late": 1,
            "pending": 1,
        }
        # A new version of a model found late is polled as any other.
        publish(two_models / "late", iris_bundle)
        assert repository(client).poll() is True
        assert answered(client, "/models/late/predict") == 2


# == MODEL_VERSIONS =============================================================================
@pytest.fixture
def three_versions(tmp_path: Path, iris_bundle: Path) -> Path:
    return publish_copies(tmp_path / "artifacts", iris_bundle, iris=3)


@pytest.mark.parametrize(
    ("policy", "loaded"),
    [("latest", [3]), ("latest:2", [3, 2]), ("all", [3, 2, 1]), ("1,3", [3, 1]), ("3, 1", [3, 1])],
)
def test_model_versions_loads_and_answers_each_version(
    three_versions: Path, policy: str, loaded: list[int]
) -> None:
    with make_client(three_versions, model_versions=policy) as client:
        card = summary(client, "iris")
        assert card["version"] == 3
        assert card["loaded_versions"] == loaded
        assert {v["version"]: v["loaded"] for v in card["versions"]} == {
            v: v in loaded for v in (1, 2, 3)
        }
        for version in (1, 2, 3):
            predict = client.post(f"/models/iris/versions/{version}/predict", json=ROW)
            infer = client.post(f"/v2/models/iris/versions/{version}/infer", json=v2_body([SETOSA]))
            tf = client.post(
                f"/v1/models/iris/versions/{version}:predict", json={"instances": [SETOSA]}
            )
            if version in loaded:
                assert predict.status_code == 200 and predict.json()["version"] == version
                assert infer.status_code == 200 and infer.json()["model_version"] == str(version)
                assert tf.status_code == 200
            else:
                assert predict.status_code == 404
                assert (
                    f"version {version} of model 'iris' is not loaded" in (predict.json()["error"])
                )
                assert infer.status_code == 404 and tf.status_code == 404
        for missing in ("4", "0", "-1", "x"):
            assert (
                client.post(f"/models/iris/versions/{missing}/predict", json=ROW).status_code == 404
            )
        assert answered(client, "/models/iris/predict") == 3
        metadata = client.get("/v2/models/iris").json()
        assert metadata["versions"] == [str(v) for v in loaded]


def test_latest_keeps_the_previous_version_after_a_swap(
    three_versions: Path, iris_bundle: Path
) -> None:
    with make_client(three_versions) as client:
        publish(three_versions / "iris", iris_bundle)
        assert repository(client).poll() is True
        assert summary(client, "iris")["loaded_versions"] == [4, 3]
        assert answered(client, "/models/iris/versions/3/predict") == 3
        assert answered(client, "/models/iris/predict") == 4


def test_a_version_list_never_serves_an_unlisted_newer_version(
    three_versions: Path, iris_bundle: Path
) -> None:
    with make_client(three_versions, model_versions="1,3") as client:
        publish(three_versions / "iris", iris_bundle)
        repository(client).poll()
        card = summary(client, "iris")
        assert (card["version"], card["loaded_versions"]) == (3, [3, 1])
        assert client.post("/models/iris/versions/4/predict", json=ROW).status_code == 404


def test_latest_n_follows_new_versions(three_versions: Path, iris_bundle: Path) -> None:
    with make_client(three_versions, model_versions="latest:2") as client:
        publish(three_versions / "iris", iris_bundle)
        assert repository(client).poll() is True
        assert summary(client, "iris")["loaded_versions"] == [4, 3]
        assert client.post("/models/iris/versions/2/predict", json=ROW).status_code == 404


# == labels =====================================================================================
def access_versions(caplog: pytest.LogCaptureFixture) -> list[int]:
    """The version each access line names, in order."""
    formatter = JsonFormatter()
    return [
        json.loads(formatter.format(record))["model_version"]
        for record in caplog.records
        if record.name == "service.access"
    ]


@pytest.fixture
def admin(three_versions: Path) -> Iterator[TestClient]:
    with make_client(three_versions, admin_token=TOKEN) as client:
        yield client


def put_label(client: TestClient, label: str, version: Any, name: str = "iris") -> Any:
    return client.put(
        f"/admin/models/{name}/labels/{label}", json={"version": version}, headers=AUTH
    )


def put_traffic(client: TestClient, name: str = "iris", **changes: Any) -> Any:
    return client.put(f"/admin/models/{name}/traffic", json=changes, headers=AUTH)


def test_labels_route_requests_and_persist(
    admin: TestClient, three_versions: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client, path = admin, serving_json(three_versions, "iris")
    assert not path.exists()
    assert answered(client, "/models/iris/predict") == 3

    response = put_label(client, "stable", 1)
    assert response.status_code == 200, response.text
    assert response.json()["labels"] == {"stable": 1}
    assert response.json()["version"] == 1  # what unversioned requests now get
    assert read_serving(three_versions, "iris") == serving_document({"stable": 1})
    # stable takes every unversioned request, whatever the protocol.
    assert answered(client, "/models/iris/predict") == 1
    assert answered(client, "/predict") == 1  # the only model
    assert v2_answered(client, "/v2/models/iris/infer") == 1
    assert answered(client, "/models/iris/labels/stable/predict") == 1
    assert answered(client, "/models/iris/versions/3/predict") == 3  # numbers still answer
    assert client.get("/readyz").json()["version"] == 1

    response = put_label(client, "canary", 2)
    assert response.status_code == 200
    assert read_serving(three_versions, "iris") == serving_document({"canary": 2, "stable": 1})
    assert answered(client, "/models/iris/labels/canary/predict") == 2
    assert answered(client, "/models/iris/predict") == 1  # canary_percent is 0
    card = summary(client, "iris")
    assert card["labels"] == {"canary": 2, "stable": 1}
    assert card["loaded_versions"] == [3, 2, 1]
    assert {v["version"]: v["labels"] for v in card["versions"]} == {
        3: [],
        2: ["canary"],
        1: ["stable"],
    }
    assert {v["version"]: v["state"] for v in card["versions"]}[1] == "serving"

    # TensorFlow Serving's label routes: the access line names the version that answered.
    caplog.set_level(logging.INFO, logger="service.access")
    caplog.clear()
    for label in ("canary", "stable"):
        response = client.post(
            f"/v1/models/iris/labels/{label}:predict", json={"instances": [VIRGINICA]}
        )
        assert response.status_code == 200, response.text
        assert response.json()["predictions"][0]["label"] == "virginica"
        example = dict(zip(FEATURES, VERSICOLOR, strict=True))
        response = client.post(
            f"/v1/models/iris/labels/{label}:classify", json={"examples": [example]}
        )
        assert response.status_code == 200, response.text
    assert access_versions(caplog) == [2, 2, 1, 1]
    for path_ in (
        "/v1/models/iris/labels/nolabel:predict",
        "/models/iris/labels/nolabel/predict",
        "/models/other/labels/stable/predict",
    ):
        response = client.post(path_, json={"instances": [SETOSA]})
        assert response.status_code == 404, path_

    # Moving a label moves its requests.
    assert put_label(client, "canary", 3).status_code == 200
    assert answered(client, "/models/iris/labels/canary/predict") == 3
    assert read_serving(three_versions, "iris") == serving_document({"canary": 3, "stable": 1})

    # Rollback does not fight the stable label.
    response = client.post("/admin/models/iris/rollback", headers=AUTH)
    assert response.status_code == 409
    assert "label 'stable'" in response.json()["error"]
    assert client.post("/admin/rollback", headers=AUTH).status_code == 409
    assert answered(client, "/models/iris/predict") == 1

    # Without stable, unversioned requests go to the newest version again.
    response = client.delete("/admin/models/iris/labels/stable", headers=AUTH)
    assert response.status_code == 200
    assert response.json()["labels"] == {"canary": 3} and response.json()["version"] == 3
    assert read_serving(three_versions, "iris") == serving_document({"canary": 3})
    assert answered(client, "/models/iris/predict") == 3
    response = client.post("/models/iris/labels/stable/predict", json=ROW)
    assert response.status_code == 404 and "no label 'stable'" in response.json()["error"]
    assert client.delete("/admin/models/iris/labels/canary", headers=AUTH).status_code == 200
    assert read_serving(three_versions, "iris") == serving_document()
    assert summary(client, "iris")["loaded_versions"] == [3]  # labelled versions unloaded
    assert client.post("/models/iris/versions/1/predict", json=ROW).status_code == 404
    assert staging_leftovers(three_versions / "iris") == []


def test_labels_survive_a_restart(three_versions: Path) -> None:
    with make_client(three_versions, admin_token=TOKEN) as client:
        assert put_label(client, "stable", 2).status_code == 200
        assert put_label(client, "old", 1).status_code == 200
    with make_client(three_versions) as client:  # a new process reads serving.json
        assert answered(client, "/models/iris/predict") == 2
        assert answered(client, "/models/iris/labels/old/predict") == 1
        assert summary(client, "iris")["loaded_versions"] == [3, 2, 1]


# == canary ======================================================================================
@pytest.mark.parametrize(("percent", "stable"), [(10, None), (37, 1)])
def test_canary_gets_its_exact_share_of_unversioned_requests(
    admin: TestClient, percent: int, stable: int | None
) -> None:
    client = admin
    if stable is not None:
        assert put_label(client, "stable", stable).status_code == 200
    assert put_label(client, "canary", 2).status_code == 200
    response = put_traffic(client, canary_percent=percent)
    assert response.status_code == 200
    assert response.json()["traffic"]["canary_percent"] == percent
    main = stable or 3
    answers = [answered(client, "/models/iris/predict") for _ in range(1000)]
    assert set(answers) == {main, 2}
    canary = [version == 2 for version in answers]
    # An even spread: the exact share, within one request, over the run and over any window.
    assert abs(sum(canary) - 10 * percent) <= 1
    for start in range(0, 900, 50):
        assert abs(sum(canary[start : start + 100]) - percent) <= 1, start
    # Requests by number or label are never split.
    assert {answered(client, "/models/iris/versions/3/predict") for _ in range(20)} == {3}
    assert {answered(client, "/models/iris/labels/canary/predict") for _ in range(5)} == {2}
    # Turned off: no canary answers at all.
    assert put_traffic(client, canary_percent=0).status_code == 200
    assert {answered(client, "/models/iris/predict") for _ in range(50)} == {main}


def test_canary_percent_100_sends_everything_to_the_canary(admin: TestClient) -> None:
    assert put_label(admin, "canary", 1).status_code == 200
    assert put_traffic(admin, canary_percent=100).status_code == 200
    assert {answered(admin, "/models/iris/predict") for _ in range(20)} == {1}
    assert {v2_answered(admin, "/v2/models/iris/infer") for _ in range(5)} == {1}


# == shadow ======================================================================================
@pytest.fixture(scope="module")
def other_iris(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An Iris bundle unlike the session's: 1 epoch, another seed (one extra training, ~2 s)."""
    return train(tmp_path_factory.mktemp("other-iris"), epochs=1, seed=7)


@pytest.fixture
def shadowed(tmp_path: Path, iris_bundle: Path, other_iris: Path) -> Path:
    """Model "shadowed": version 1 the session's Iris, 2 the other one, 3 a copy of 1."""
    model_dir = tmp_path / "artifacts" / "shadowed"
    publish(model_dir, iris_bundle)
    publish(model_dir, other_iris)
    publish(model_dir, iris_bundle)
    return tmp_path / "artifacts"


SHADOW = "model_shadow_predictions_total"
DIFFERENCE = "model_shadow_probability_difference"


def shadow_rows(samples: Any, before: Any, version: str, shadow: str, agree: str) -> float:
    return delta(
        before,
        samples,
        SHADOW,
        model="shadowed",
        version=version,
        shadow_version=shadow,
        agree=agree,
    )


@pytest.mark.slow  # trains a second, different Iris model (~2 s)
def test_shadow_counts_agreement_exactly(shadowed: Path) -> None:
    rows = load_iris().data.astype(np.float32)[::5]  # 30 rows of every class
    offline_one = load_version(shadowed / "shadowed" / "1", runtime="litert")
    offline_two = load_version(shadowed / "shadowed" / "2", runtime="litert")
    # Offline, as the service should compare them: the same classes in the same order, so the
    # labels agree when the argmax does; the largest per-class probability difference.
    assert offline_one.labels == offline_two.labels
    one, two = offline_one.probabilities_sync(rows), offline_two.probabilities_sync(rows)
    agree = one.argmax(axis=1) == two.argmax(axis=1)
    difference = np.abs(one - two).max(axis=1).astype(np.float64)  # as observed, exactly
    agreeing = int(np.count_nonzero(agree))
    assert 0 < agreeing < len(rows), "the two versions must agree on some rows only"

    with make_client(shadowed, admin_token=TOKEN) as client:
        assert put_label(client, "stable", 1, "shadowed").status_code == 200
        response = put_traffic(client, "shadowed", shadow_version=2)
        assert response.status_code == 200, response.text
        assert response.json()["traffic"] == {
            "canary_percent": 0.0,
            "shadow_version": 2,
            "shadow_percent": 100.0,
        }
        assert read_serving(shadowed, "shadowed") == serving_document(
            {"stable": 1}, shadow_version=2
        )
        assert 2 in summary(client, "shadowed")["loaded_versions"]
        before = scrape(client)

        # Requests by number or label are not shadowed; they go first, so once the unversioned
        # rows sent after them are all counted, they would have been too.
        assert (
            answered(
                client, "/models/shadowed/versions/1/predict", {"instances": rows[:5].tolist()}
            )
            == 1
        )
        assert answered(client, "/models/shadowed/labels/stable/predict") == 1
        # The answers are version 1's alone; the shadow scores the same rows afterwards.
        for start in range(0, 10):  # one row per request, then the rest in larger batches
            response = client.post(
                "/models/shadowed/predict", json={"instances": [rows[start].tolist()]}
            )
            assert response.status_code == 200 and response.json()["version"] == 1
        for start in range(10, len(rows), 7):
            chunk = rows[start : start + 7].tolist()
            assert answered(client, "/models/shadowed/predict", {"instances": chunk}) == 1

        def counted() -> float:
            after = scrape(client)
            return shadow_rows(after, before, "1", "2", "true") + shadow_rows(
                after, before, "1", "2", "false"
            )

        wait_until(lambda: counted() >= len(rows), "shadow rows counted", HOLD)
        after = scrape(client)
        assert shadow_rows(after, before, "1", "2", "true") == agreeing
        assert shadow_rows(after, before, "1", "2", "false") == len(rows) - agreeing
        labels = {"model": "shadowed", "version": "1", "shadow_version": "2"}
        assert delta(before, after, DIFFERENCE + "_count", **labels) == len(rows)
        assert delta(before, after, DIFFERENCE + "_sum", **labels) == pytest.approx(
            float(difference.sum()), abs=1e-4
        )
        # Every bucket holds the rows whose largest difference is at most its edge.
        edges = {
            dict(key[1])["le"]
            for key in after
            if key[0] == DIFFERENCE + "_bucket" and {k: v for k, v in key[1] if k != "le"} == labels
        }
        assert "+Inf" in edges and len(edges) > 2
        for edge in edges:
            expected = int(np.count_nonzero(difference <= float(edge)))
            assert delta(before, after, DIFFERENCE + "_bucket", **labels, le=edge) == expected
        for reason in ("queue full", "features differ", "failed"):
            dropped = delta(
                before, after, "model_shadow_dropped_total", model="shadowed", reason=reason
            )
            assert dropped == 0, reason
    offline_one.close()
    offline_two.close()


@pytest.mark.slow  # trains a second, different Iris model (~2 s)
def test_shadow_percent_shadows_its_share_of_requests(shadowed: Path) -> None:
    with make_client(shadowed, admin_token=TOKEN) as client:
        assert put_label(client, "stable", 1, "shadowed").status_code == 200
        response = put_traffic(client, "shadowed", shadow_version=3, shadow_percent=50)
        assert response.status_code == 200, response.text
        before = scrape(client)
        for _ in range(100):
            assert answered(client, "/models/shadowed/predict") == 1
        # A sentinel larger than everything before it, shadowed whole: once it is counted,
        # every row queued before it is too (one queue, scored in order).
        assert put_traffic(client, "shadowed", shadow_percent=100).status_code == 200
        sentinel = [SETOSA] * 1000
        assert answered(client, "/models/shadowed/predict", {"instances": sentinel}) == 1

        def counted() -> float:
            return shadow_rows(scrape(client), before, "1", "3", "true")

        wait_until(lambda: counted() >= 1000, "the sentinel's rows counted", HOLD)
        after = scrape(client)
        assert shadow_rows(after, before, "1", "3", "false") == 0  # a copy agrees on every row
        assert abs(counted() - 1000 - 50) <= 1

        # No shadow: nothing more is counted (a later shadowed request shows it).
        assert put_traffic(client, "shadowed", shadow_version=None).status_code == 200
        assert read_serving(shadowed, "shadowed") == serving_document(
            {"stable": 1}, shadow_version=None, shadow_percent=100
        )
        assert answered(client, "/models/shadowed/predict") == 1
        assert put_traffic(client, "shadowed", shadow_version=3).status_code == 200
        after_off = counted()
        assert answered(client, "/models/shadowed/predict", {"instances": [SETOSA] * 7}) == 1
        wait_until(lambda: counted() >= after_off + 7, "the last rows counted", HOLD)
        assert counted() == after_off + 7


@pytest.mark.slow  # trains a second, different Iris model (~2 s)
def test_a_shadow_of_the_answering_version_is_not_counted(shadowed: Path) -> None:
    with make_client(shadowed, admin_token=TOKEN) as client:
        # No stable label: version 3 (the newest) answers; shadowing it with itself would score
        # nothing: the admin route refuses it, and written by hand it is a no-op.
        assert put_traffic(client, "shadowed", shadow_version=3).status_code == 409
        serving_json(shadowed, "shadowed").write_text('{"shadow_version": 3}')
        repository(client).poll()
        assert summary(client, "shadowed")["traffic"]["shadow_version"] == 3
        before = scrape(client)
        assert answered(client, "/models/shadowed/predict") == 3
        assert put_traffic(client, "shadowed", shadow_version=1).status_code == 200
        assert answered(client, "/models/shadowed/predict", {"instances": [SETOSA] * 3}) == 3
        wait_until(
            lambda: shadow_rows(scrape(client), before, "3", "1", "true") >= 3,
            "shadow rows counted",
            HOLD,
        )
        after = scrape(client)
        assert shadow_rows(after, before, "3", "1", "true") == 3
        assert shadow_rows(after, before, "3", "3", "true") == 0


def rename_a_feature(directory: Path) -> None:
    """The bundle reads "sepal_len" where the others read "sepal_length" (manifest rewritten):
    a valid version whose rows mean something else."""
    path = directory / bundle.METADATA
    document = json.loads(path.read_text())
    document["features"][0]["name"] = "sepal_len"
    path.write_text(json.dumps(document))
    bundle.write_manifest(directory)


def test_a_shadow_must_read_the_same_features(tmp_path: Path, iris_bundle: Path) -> None:
    artifacts = tmp_path / "artifacts"
    publish(artifacts / "features", iris_bundle, rename_a_feature)  # version 1
    publish_copies(artifacts, iris_bundle, features=2)  # versions 2 and 3
    path = serving_json(artifacts, "features")
    with make_client(artifacts, admin_token=TOKEN) as client:
        response = put_traffic(client, "features", shadow_version=1)
        assert response.status_code == 409
        assert "reads other features than version 3" in response.json()["error"]
        assert not path.exists()
        assert summary(client, "features")["loaded_versions"] == [3]  # loaded for nothing: gone

        assert put_traffic(client, "features", shadow_version=2).status_code == 200
        document = path.read_bytes()
        response = put_label(client, "stable", 1, "features")
        assert response.status_code == 409 and "reads other features" in response.json()["error"]
        assert path.read_bytes() == document
        assert summary(client, "features")["loaded_versions"] == [3, 2]

        # Written by hand, such a shadow is applied, and its rows are dropped, counted.
        path.write_text(json.dumps(serving_document(shadow_version=1)))
        repository(client).poll()
        assert summary(client, "features")["loaded_versions"] == [3, 1]
        before = scrape(client)
        assert answered(client, "/models/features/predict", {"instances": [SETOSA] * 4}) == 3

        def dropped() -> float:
            return delta(
                before,
                scrape(client),
                "model_shadow_dropped_total",
                model="features",
                reason="features differ",
            )

        wait_until(lambda: dropped() >= 4, "the shadow's rows dropped", HOLD)
        after = scrape(client)
        assert dropped() == 4
        for agree in ("true", "false"):
            counted = delta(
                before,
                after,
                SHADOW,
                model="features",
                version="3",
                shadow_version="1",
                agree=agree,
            )
            assert counted == 0


# == refused admin changes =======================================================================
@pytest.fixture
def guarded(tmp_path: Path, iris_bundle: Path) -> Path:
    """iris: versions 1 and 2 good, 3 broken (truncated model.keras); flowers: version 1."""
    artifacts = tmp_path / "artifacts"
    publish_copies(artifacts, iris_bundle, iris=2, flowers=1)
    publish(artifacts / "iris", iris_bundle, BREAKERS["truncated model.keras"][0])
    return artifacts


LONG_LABEL = "a" * 70
# (method, path, body, status); body None: none sent, bytes: sent as is.
REFUSED: list[tuple[str, str, Any, int]] = [
    ("PUT", "/admin/models/iris/labels/stable", {"version": 42}, 404),
    ("PUT", "/admin/models/iris/labels/canary", {"version": 3}, 409),
    ("PUT", "/admin/models/iris/labels/stable", {"version": 0}, 422),
    ("PUT", "/admin/models/iris/labels/stable", {"version": "1"}, 422),
    ("PUT", "/admin/models/iris/labels/stable", {"version": True}, 422),
    ("PUT", "/admin/models/iris/labels/stable", {"version": 1, "extra": 1}, 422),
    ("PUT", "/admin/models/iris/labels/stable", None, 422),
    ("PUT", "/admin/models/iris/labels/stable", b"[1]", 422),
    ("PUT", "/admin/models/iris/labels/Bad%20Label", {"version": 1}, 422),
    ("PUT", "/admin/models/iris/labels/Stable", {"version": 1}, 422),
    ("PUT", "/admin/models/iris/labels/1st", {"version": 1}, 422),
    ("PUT", f"/admin/models/iris/labels/{LONG_LABEL}", {"version": 1}, 422),
    ("PUT", "/admin/models/nosuch/labels/stable", {"version": 1}, 404),
    ("DELETE", "/admin/models/iris/labels/nolabel", None, 404),
    ("DELETE", "/admin/models/iris/labels/Bad%20Label", None, 422),
    ("DELETE", "/admin/models/nosuch/labels/stable", None, 404),
    ("PUT", "/admin/models/iris/traffic", {"canary_percent": 150}, 422),
    ("PUT", "/admin/models/iris/traffic", {"canary_percent": -1}, 422),
    ("PUT", "/admin/models/iris/traffic", {"canary_percent": "10"}, 422),
    ("PUT", "/admin/models/iris/traffic", {"canary_percent": None}, 422),
    ("PUT", "/admin/models/iris/traffic", {"canary_percent": True}, 422),
    ("PUT", "/admin/models/iris/traffic", {"shadow_percent": 100.5}, 422),
    ("PUT", "/admin/models/iris/traffic", {"shadow_version": 0}, 422),
    ("PUT", "/admin/models/iris/traffic", {"shadow_version": "2"}, 422),
    ("PUT", "/admin/models/iris/traffic", {"shadow_version": 42}, 404),
    ("PUT", "/admin/models/iris/traffic", {"shadow_version": 3}, 409),
    ("PUT", "/admin/models/iris/traffic", {"canary": 10}, 422),
    ("PUT", "/admin/models/iris/traffic", {"canary_percent": 10, "labels": {}}, 422),
    ("PUT", "/admin/models/iris/traffic", None, 422),
    ("PUT", "/admin/models/nosuch/traffic", {"canary_percent": 10}, 404),
    ("POST", "/admin/models/nosuch/reload", None, 404),
    ("POST", "/admin/models/nosuch/rollback", None, 404),
]


@pytest.mark.parametrize("existing", [None, {"stable": 1}], ids=["no-serving-json", "stable-1"])
def test_a_refused_admin_change_writes_nothing(
    guarded: Path, existing: dict[str, int] | None
) -> None:
    path = serving_json(guarded, "iris")
    with make_client(guarded, admin_token=TOKEN) as client:
        if existing is not None:
            assert put_label(client, "stable", 1).status_code == 200
        before = snapshot(path)
        assert (before is None) == (existing is None)
        card = summary(client, "iris")
        served = answered(client, "/models/iris/predict")
        for method, url, body, status in REFUSED:
            if isinstance(body, bytes):
                options: dict[str, Any] = {
                    "content": body,
                    "headers": {**AUTH, "Content-Type": "application/json"},
                }
            elif body is None:
                options = {"headers": AUTH}
            else:
                options = {"json": body, "headers": AUTH}
            response = client.request(method, url, **options)
            case = f"{method} {url} {body!r}"
            assert response.status_code == status, (case, response.text)
            assert response.json()["error"], case
            assert snapshot(path) == before, case
            assert staging_leftovers(guarded / "iris") == [], case
        # Wrong or missing credentials change nothing either.
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            response = client.put(
                "/admin/models/iris/labels/stable", json={"version": 2}, headers=headers
            )
            assert response.status_code == 401
        assert snapshot(path) == before
        after = summary(client, "iris")
        assert (after["labels"], after["traffic"]) == (card["labels"], card["traffic"])
        assert after["loaded_versions"] == card["loaded_versions"]  # nothing left loaded
        assert answered(client, "/models/iris/predict") == served
        assert models_listed(client) == ["flowers", "iris"]
        assert snapshot(serving_json(guarded, "flowers")) is None


def test_refusals_name_the_reason(guarded: Path) -> None:
    with make_client(guarded, admin_token=TOKEN) as client:
        error = put_label(client, "canary", 3).json()["error"]
        assert "version 3 of model 'iris' was rejected" in error and "model.keras" in error
        error = put_label(client, "stable", 42).json()["error"]
        assert "version 42 of model 'iris' not found" in error
        error = put_label(client, "Bad Label", 1).json()["error"]
        assert "not a label name" in error
        error = put_traffic(client, canary_percent=150).json()["error"]
        assert "canary_percent" in error and "0 to 100" in error
        error = put_traffic(client, canary=5).json()["error"]
        assert "unknown field 'canary'" in error
        error = put_label(client, "stable", 1, name="nosuch").json()["error"]
        assert "'nosuch' not found" in error and "'flowers', 'iris'" in error
        card = summary(client, "iris")
        states = {v["version"]: v["state"] for v in card["versions"]}
        assert states[3] == "rejected"


def test_admin_routes_act_on_one_model_only(guarded: Path, iris_bundle: Path) -> None:
    with make_client(guarded, admin_token=TOKEN) as client:
        assert put_label(client, "stable", 1, name="flowers").status_code == 200
        assert serving_json(guarded, "iris").exists() is False
        assert summary(client, "iris")["labels"] == {}
        publish(guarded / "flowers", iris_bundle)
        response = client.post("/admin/models/flowers/reload", headers=AUTH)
        assert response.status_code == 200
        assert response.json()["version"] == 2 and response.json()["labels"] == {"stable": 1}
        # stable still answers flowers' unversioned requests; iris never moved.
        assert answered(client, "/models/flowers/predict") == 1
        assert answered(client, "/models/iris/predict") == 2
        # Several models, no DEFAULT_MODEL: the unnamed admin routes have no model to act on.
        assert client.post("/admin/reload", headers=AUTH).status_code == 404


def test_a_serving_json_that_cannot_be_written_changes_nothing(
    admin: TestClient, three_versions: Path
) -> None:
    client, path = admin, serving_json(three_versions, "iris")
    assert put_label(client, "stable", 2).status_code == 200
    path.unlink()
    path.mkdir()  # a directory in its place: neither readable nor replaceable
    repository(client).poll()
    card = summary(client, "iris")
    assert "is not a regular file" in card["serving_error"]
    for response in (
        put_label(client, "stable", 1),
        put_label(client, "canary", 1),
        put_traffic(client, shadow_version=1),
        client.delete("/admin/models/iris/labels/stable", headers=AUTH),
    ):
        assert response.status_code == 503, response.text
        assert "cannot write serving.json of model 'iris'" in response.json()["error"]
        after = summary(client, "iris")
        assert (after["labels"], after["traffic"]) == (card["labels"], card["traffic"])
        assert after["loaded_versions"] == card["loaded_versions"] == [3, 2]
        assert answered(client, "/models/iris/predict") == 2
    assert staging_leftovers(three_versions / "iris") == []
    assert path.is_dir() and not any(path.iterdir())


# == serving.json edited by hand =================================================================
def test_an_invalid_serving_json_is_not_applied(admin: TestClient, three_versions: Path) -> None:
    client, path = admin, serving_json(three_versions, "iris")
    assert put_label(client, "stable", 1).status_code == 200
    assert put_label(client, "canary", 2).status_code == 200
    good = path.read_bytes()

    invalid = [
        (b'{"labels": {"stable": 2}', "serving.json is not valid"),
        (
            json.dumps({"labels": {"stable": 2}, "canary_percent": 200}).encode(),
            "canary_percent",
        ),
        (json.dumps({"labels": {"Bad Label": 2}}).encode(), "not a label name"),
        (json.dumps({"labels": {"stable": 2}, "weights": 1}).encode(), "weights"),
        (json.dumps({"labels": {"stable": 0}}).encode(), "positive version"),
        (b"[]", "serving.json is not valid"),
        (b"x" * (65 * 1024), "larger than"),
    ]
    for content, reason in invalid:
        path.write_bytes(content)  # in place, as a person's editor might
        repository(client).poll()
        card = summary(client, "iris")
        assert reason in card.get("serving_error", ""), (content[:60], card)
        # The labels applied before keep working.
        assert card["labels"] == {"canary": 2, "stable": 1}
        assert answered(client, "/models/iris/predict") == 1
        assert answered(client, "/models/iris/labels/canary/predict") == 2
        assert client.get("/readyz").status_code == 200
        assert "serving_error" in client.get("/models").json()["models"][0]

    # Fixed: applied on the next poll, the version it names loaded for it.
    fixed = serving_document({"stable": 2, "old": 1}, canary_percent=0)
    path.write_text(json.dumps(fixed))
    repository(client).poll()
    card = summary(client, "iris")
    assert "serving_error" not in card
    assert card["labels"] == {"old": 1, "stable": 2}
    assert answered(client, "/models/iris/predict") == 2
    assert answered(client, "/models/iris/labels/old/predict") == 1
    assert client.post("/models/iris/labels/canary/predict", json=ROW).status_code == 404
    assert path.read_bytes() != good


def test_a_minimal_hand_written_serving_json_is_applied(three_versions: Path) -> None:
    # Only what differs from the defaults, as a person or a retraining job would write it.
    serving_json(three_versions, "iris").write_text('{"labels": {"stable": 2}}\n')
    with make_client(three_versions, admin_token=TOKEN) as client:
        assert answered(client, "/models/iris/predict") == 2
        assert summary(client, "iris")["traffic"]["shadow_percent"] == 100.0
        serving_json(three_versions, "iris").unlink()  # removed: back to the defaults
        repository(client).poll()
        assert summary(client, "iris")["labels"] == {}
        assert answered(client, "/models/iris/predict") == 3
        # An admin change builds on the file as it is now.
        serving_json(three_versions, "iris").write_text('{"labels": {"old": 1}}')
        assert put_label(client, "stable", 2).status_code == 200
        assert read_serving(three_versions, "iris") == serving_document({"old": 1, "stable": 2})


def test_a_label_naming_a_missing_version_says_so(three_versions: Path) -> None:
    serving_json(three_versions, "iris").write_text('{"labels": {"canary": 9}}')
    with make_client(three_versions) as client:
        response = client.post("/models/iris/labels/canary/predict", json=ROW)
        assert response.status_code == 404
        assert response.json()["error"] == (
            "label 'canary' of model 'iris' is not applied: version 9 not found"
        )
        assert answered(client, "/models/iris/predict") == 3
        # GET /models/{name} says so too, and so does the log
        assert summary(client, "iris")["label_errors"] == {"canary": "version 9 not found"}


def test_a_write_leaves_no_staging_file_and_is_readable_by_bundle(
    admin: TestClient, three_versions: Path
) -> None:
    assert put_traffic(admin, canary_percent=12.5, shadow_percent=40).status_code == 200
    config = bundle.read_serving(three_versions / "iris")
    assert (config.canary_percent, config.shadow_percent, config.shadow_version) == (12.5, 40, None)
    assert staging_leftovers(three_versions / "iris") == []
    assert oct(serving_json(three_versions, "iris").stat().st_mode & 0o777) == "0o644"
