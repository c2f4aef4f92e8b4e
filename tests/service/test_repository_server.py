"""Two real ``python -m service`` replicas on one artifacts directory: labels and traffic set
through one reach the other by its poll of serving.json; a model published later is found by
both; gRPC's ModelInfer answers with a loaded version that is not the served one.

Waits poll a condition (a replica's answers, its /models) and fail only after ``HOLD`` seconds;
nothing is timed."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
from tritonclient.utils import InferenceServerException

from tests.service.publishing import publish
from tests.service.repository_support import (
    AUTH,
    ROW,
    SETOSA,
    TOKEN,
    answered,
    publish_copies,
    read_serving,
    serving_document,
    summary,
)
from tests.support import ServerProcess, free_port, wait_until

pytestmark = pytest.mark.slow  # starts server processes

POLL_SECONDS = 0.2
HOLD = 60.0  # the longest a wait below may take before the test fails


@dataclass
class Replicas:
    artifacts: Path
    first: httpx.Client  # admin changes go through this one
    second: httpx.Client  # ...and this one follows them by polling
    grpc_target: str  # the second's gRPC port


@pytest.fixture(scope="module")
def replicas(iris_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    root = tmp_path_factory.mktemp("replicas")
    artifacts = publish_copies(root / "artifacts", iris_bundle, iris=3, flowers=2)
    grpc_port = free_port()
    common = {
        "model_runtime": "litert",
        "poll_seconds": POLL_SECONDS,
        "admin_token": TOKEN,
        "log_level": "info",
    }
    first = ServerProcess(artifacts, root / "first.log", grpc_port=0, **common)
    second = ServerProcess(artifacts, root / "second.log", grpc_port=grpc_port, **common)
    with first, second:
        for server in (first, second):
            server.wait_for("/readyz", HOLD)
        with (
            httpx.Client(base_url=first.url, timeout=30) as one,
            httpx.Client(base_url=second.url, timeout=30) as two,
        ):
            yield Replicas(artifacts, one, two, f"127.0.0.1:{grpc_port}")


def _ok(response: httpx.Response) -> httpx.Response:
    assert response.status_code == 200, response.text
    return response


def unversioned(client: httpx.Client, name: str, count: int) -> list[int]:
    return [answered(client, f"/models/{name}/predict") for _ in range(count)]


def test_labels_and_traffic_set_on_one_replica_reach_the_other(replicas: Replicas) -> None:
    one, two = replicas.first, replicas.second
    for client in (one, two):
        assert set(unversioned(client, "iris", 5)) == {3}  # the newest, no labels yet

    _ok(one.put("/admin/models/iris/labels/stable", json={"version": 1}, headers=AUTH))
    _ok(one.put("/admin/models/iris/labels/canary", json={"version": 2}, headers=AUTH))
    _ok(one.put("/admin/models/iris/traffic", json={"canary_percent": 25}, headers=AUTH))
    expected = serving_document({"canary": 2, "stable": 1}, canary_percent=25)
    assert read_serving(replicas.artifacts, "iris") == expected

    def follows(labels: dict[str, int], canary_percent: float) -> bool:
        card = summary(two, "iris")
        assert "serving_error" not in card, card
        return card["labels"] == labels and card["traffic"]["canary_percent"] == canary_percent

    wait_until(lambda: follows({"canary": 2, "stable": 1}, 25), "the second replica's labels", HOLD)
    # Only the last document sends any unversioned request to version 2: once one is, the
    # second replica routes by all of it.
    wait_until(lambda: answered(two, "/models/iris/predict") == 2, "a canary answer", HOLD)
    answers = unversioned(two, "iris", 200)
    assert set(answers) == {1, 2}  # stable and canary; never the newest any more
    assert abs(Counter(answers)[2] - 50) <= 1
    assert answered(two, "/models/iris/labels/stable/predict") == 1
    assert answered(two, "/models/iris/labels/canary/predict") == 2
    assert two.get("/readyz").json()["models"]["iris"] == 1

    # Back: no canary share first (every answer from stable), then no stable label.
    _ok(one.put("/admin/models/iris/traffic", json={"canary_percent": 0}, headers=AUTH))
    _ok(one.delete("/admin/models/iris/labels/stable", headers=AUTH))
    wait_until(lambda: follows({"canary": 2}, 0), "the second replica's labels", HOLD)
    wait_until(lambda: answered(two, "/models/iris/predict") == 3, "the newest again", HOLD)
    assert set(unversioned(two, "iris", 50)) == {3}
    assert set(unversioned(one, "iris", 50)) == {3}
    assert summary(two, "iris")["loaded_versions"] == [3, 2]  # stable's version 1 unloaded
    assert two.post("/models/iris/versions/1/predict", json=ROW).status_code == 404


def test_grpc_infers_with_a_loaded_version_that_is_not_served(replicas: Replicas) -> None:
    one, two = replicas.first, replicas.second
    # flowers serves version 2; label "old" (set through the first) loads version 1 on both.
    _ok(one.put("/admin/models/flowers/labels/old", json={"version": 1}, headers=AUTH))
    wait_until(
        lambda: summary(two, "flowers")["loaded_versions"] == [2, 1],
        "version 1 loaded on the second replica",
        HOLD,
    )
    client = tgrpc.InferenceServerClient(replicas.grpc_target)
    features = tgrpc.InferInput("features", [1, 4], "FP32")
    features.set_data_from_numpy(np.array([SETOSA], dtype=np.float32))
    answer = client.infer("flowers", [features])
    assert answer.get_response().model_version == "2"
    old = client.infer("flowers", [features], model_version="1")
    assert old.get_response().model_version == "1"
    assert old.as_numpy("label").tolist() == [b"setosa"]
    assert client.is_model_ready("flowers", "1")
    metadata = client.get_model_metadata("flowers", as_json=True)
    assert metadata["versions"] == ["2", "1"]
    with pytest.raises(InferenceServerException) as caught:
        client.infer("flowers", [features], model_version="3")
    assert str(caught.value.status()) == "StatusCode.NOT_FOUND"

    # The label removed: version 1 is unloaded, and gRPC says so.
    _ok(one.delete("/admin/models/flowers/labels/old", headers=AUTH))
    wait_until(
        lambda: summary(two, "flowers")["loaded_versions"] == [2],
        "version 1 unloaded on the second replica",
        HOLD,
    )
    with pytest.raises(InferenceServerException) as caught:
        client.infer("flowers", [features], model_version="1")
    assert str(caught.value.status()) == "StatusCode.NOT_FOUND"
    assert "version 1" in caught.value.message()
    client.close()


def test_a_model_published_later_is_found_by_both_replicas(
    replicas: Replicas, iris_bundle: Path
) -> None:
    for client in (replicas.first, replicas.second):
        assert client.post("/models/late/predict", json=ROW).status_code == 404
    publish(replicas.artifacts / "late", iris_bundle)
    for client in (replicas.first, replicas.second):
        wait_until(
            lambda client=client: "late" in client.get("/readyz").json()["models"],
            "the new model served",
            HOLD,
        )
        response = _ok(client.post("/models/late/predict", json=ROW))
        assert (response.json()["model"], response.json()["version"]) == ("late", 1)
        names = [m["name"] for m in client.get("/models").json()["models"]]
        assert names == ["flowers", "iris", "late"]
        # Several models and no DEFAULT_MODEL: /predict names them.
        response = client.post("/predict", json=ROW)
        assert response.status_code == 404 and "'late'" in response.json()["error"]
