"""The model repository when things go wrong: a label moved to a version that will not load,
labels applied before the first swap, a model whose poll fails, an unreadable or nested
serving.json, DEFAULT_MODEL not there yet, and a shadow that answers NaN or is stopped mid-batch."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

import bundle
from service import registry as registry_module
from service.model import LoadedModel, load_version
from service.registry import Registry
from service.repository import Repository
from service.settings import Settings
from service.shadow import THREAD_ROWS, ShadowScorer
from tests.service.publishing import BREAKERS, publish
from tests.service.repository_support import (
    ROW,
    answered,
    make_client,
    publish_copies,
    serving_json,
    summary,
)


@pytest.fixture
def broken_two(tmp_path: Path, iris_bundle: Path) -> Path:
    """iris: version 1 good, 2 broken (truncated model.keras), 3 good."""
    artifacts = tmp_path / "artifacts"
    publish(artifacts / "iris", iris_bundle)
    publish(artifacts / "iris", iris_bundle, BREAKERS["truncated model.keras"][0])
    publish(artifacts / "iris", iris_bundle)
    return artifacts


def test_a_label_moved_to_a_version_that_will_not_load_stays_on_its_last_version(
    broken_two: Path,
) -> None:
    """Another replica, a job or a person moves stable to a version this replica rejects:
    unversioned requests stay on the version stable named before, never the unlabelled newest."""
    serving_json(broken_two, "iris").write_text('{"labels": {"stable": 1}}')
    with make_client(broken_two) as client:
        assert answered(client, "/predict") == 1
        serving_json(broken_two, "iris").write_text('{"labels": {"stable": 2}}')
        client.app.state.repository.poll()  # type: ignore[attr-defined]
        assert answered(client, "/predict") == 1
        card = summary(client, "iris")
        assert card["labels"] == {"stable": 2}  # what the file says...
        assert card["version"] == 1  # ...and what answers
        assert card["label_errors"]["stable"].startswith("version 2 is not loaded: ")
        assert card["label_errors"]["stable"].endswith("; still answering with version 1")
        assert 1 in card["loaded_versions"]
        assert answered(client, "/models/iris/labels/stable/predict") == 1
        # a label that never had a version to stay on is left out, and says why
        serving_json(broken_two, "iris").write_text('{"labels": {"stable": 1, "canary": 2}}')
        client.app.state.repository.poll()  # type: ignore[attr-defined]
        response = client.post("/models/iris/labels/canary/predict", json=ROW)
        assert response.status_code == 404
        assert "is not applied: version 2 is not loaded" in response.json()["error"]


def test_labels_apply_before_the_first_swap(
    tmp_path: Path, iris_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At start, and for a model found later, stable is routed before the newest version is
    made current: no request meanwhile gets the unlabelled newest version."""
    artifacts = publish_copies(tmp_path / "artifacts", iris_bundle, iris=2)
    serving_json(artifacts, "iris").write_text('{"labels": {"stable": 1}}')
    registry = Registry(Settings(artifacts_dir=artifacts, model_name="iris"))
    seen: list[tuple[int, int | None]] = []

    def spy(directory: Path, **options: object) -> LoadedModel:
        stable = registry.routing.stable
        seen.append((int(directory.name), stable.version if stable else None))
        return load_version(directory, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(registry_module, "load_version", spy)
    try:
        registry.load_initial()
        assert seen == [(1, None), (2, 1)]  # version 2 loads with stable already routed
        assert registry.route().version == 1
    finally:
        registry.close()


def test_one_model_failing_its_poll_leaves_the_others_polling(
    tmp_path: Path, iris_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    artifacts = publish_copies(tmp_path / "artifacts", iris_bundle, flowers=1, iris=1)
    repository = Repository(Settings(artifacts_dir=artifacts))
    repository.load_initial()
    try:

        def broken_poll() -> bool:
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(repository.models["flowers"], "poll", broken_poll)
        publish(artifacts / "iris", iris_bundle)
        assert repository.poll() is True  # flowers' failure is logged; iris still polled
        assert repository.models["iris"].route().version == 2
    finally:
        repository.close()


def test_an_unreadable_directory_is_no_model(
    tmp_path: Path, iris_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A directory the service may not read (another job's umask) holds no version: it is not
    a model, and it stops neither the start nor the other models."""
    artifacts = publish_copies(tmp_path / "artifacts", iris_bundle, iris=1, secret=1)
    real_iterdir = Path.iterdir

    def iterdir(self: Path):  # type: ignore[no-untyped-def]
        if self.name == "secret":
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    assert bundle.list_models(artifacts) == ["iris"]
    assert bundle.list_versions(artifacts / "secret") == []
    with make_client(artifacts) as client:
        assert client.get("/readyz").json()["models"] == {"iris": 1}


def test_a_deeply_nested_serving_json_is_refused_not_raised(three_versions: Path) -> None:
    serving_json(three_versions, "iris").write_text("[" * 60_000)
    with pytest.raises(bundle.BundleError, match="nested too deeply"):
        bundle.read_serving(three_versions / "iris")
    with make_client(three_versions) as client:  # the service starts and serves
        assert answered(client, "/predict") == 3
        assert summary(client, "iris")["serving_error"] == (
            "serving.json is not valid: nested too deeply"
        )


@pytest.fixture
def three_versions(tmp_path: Path, iris_bundle: Path) -> Path:
    return publish_copies(tmp_path / "artifacts", iris_bundle, iris=3)


def test_readiness_waits_for_default_model(tmp_path: Path, iris_bundle: Path) -> None:
    """DEFAULT_MODEL not there yet: 503 saying so (not 404), then ready once it appears."""
    artifacts = publish_copies(tmp_path / "artifacts", iris_bundle, iris=1)
    with make_client(artifacts, default_model="flowers") as client:
        for path in ("/readyz", "/v2/health/ready"):
            response = client.get(path)
            assert response.status_code == 503
            assert response.json()["error"] == "DEFAULT_MODEL 'flowers' is not served (yet)"
        publish_copies(artifacts, iris_bundle, flowers=1)
        client.app.state.repository.poll()  # type: ignore[attr-defined]
        assert client.get("/readyz").json()["model"] == "flowers"


# -- the shadow scorer on its own -------------------------------------------------------------
class Sink:
    """What the scorer tells the metrics, kept."""

    def __init__(self) -> None:
        self.scored: list[tuple[int, int, int]] = []  # (answering, shadow, rows)
        self.dropped: dict[str, int] = {}

    def observe_shadow(self, answered_by, shadow, agree, difference) -> None:  # type: ignore[no-untyped-def]
        assert len(agree) == len(difference) and np.isfinite(difference).all()
        self.scored.append((answered_by.version, shadow.version, len(agree)))

    def observe_shadow_dropped(self, model: str, reason: str, rows: int) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + rows


@pytest.fixture
def two_loaded(three_versions: Path) -> tuple[LoadedModel, LoadedModel]:
    directory = three_versions / "iris"
    return load_version(directory / "1"), load_version(directory / "2")


def _rows(count: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.tile(np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32), (count, 1))
    return x, np.tile(np.array([[0.98, 0.01, 0.01]], dtype=np.float32), (count, 1))


def test_a_shadow_answering_nan_is_dropped_not_counted_as_agreeing(
    two_loaded: tuple[LoadedModel, LoadedModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    answering, shadow = two_loaded
    real = shadow.probabilities_sync

    def half_nan(x: np.ndarray) -> np.ndarray:
        scored = real(x).copy()
        scored[::2] = np.nan
        return scored

    monkeypatch.setattr(shadow, "probabilities_sync", half_nan)
    sink = Sink()

    async def run() -> None:
        scorer = ShadowScorer(sink)  # type: ignore[arg-type]
        scorer.start()
        scorer.submit(answering, shadow, *_rows(10))
        await scorer.stop()
        assert scorer.scored_rows == 5

    asyncio.run(run())
    assert sink.dropped == {"not finite": 5}
    assert sink.scored == [(1, 2, 5)]


@pytest.mark.parametrize("rows", [3, THREAD_ROWS + 10], ids=["on the loop", "on a thread"])
def test_stop_scores_what_was_queued_and_in_flight(
    two_loaded: tuple[LoadedModel, LoadedModel], rows: int
) -> None:
    answering, shadow = two_loaded
    sink = Sink()

    async def run() -> None:
        scorer = ShadowScorer(sink)  # type: ignore[arg-type]
        scorer.start()
        scorer.submit(answering, shadow, *_rows(rows))
        await asyncio.sleep(0)  # the scorer wakes and takes the batch
        scorer.submit(answering, shadow, *_rows(rows))
        await scorer.stop()
        assert scorer.scored_rows == 2 * rows

    asyncio.run(run())
    assert sum(scored for _, _, scored in sink.scored) == 2 * rows
    assert sink.dropped == {}


def test_a_stop_that_times_out_counts_the_rows_it_drops(
    two_loaded: tuple[LoadedModel, LoadedModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    answering, shadow = two_loaded
    sink = Sink()

    async def run() -> None:
        scorer = ShadowScorer(sink)  # type: ignore[arg-type]
        scorer.start()
        held = asyncio.Event()

        async def slow(items: list) -> None:  # type: ignore[type-arg]
            held.set()
            await asyncio.sleep(3600)

        monkeypatch.setattr(scorer, "_score", slow)
        scorer.submit(answering, shadow, *_rows(4))
        await held.wait()
        scorer.submit(answering, shadow, *_rows(6))
        await scorer.stop(timeout=0.1)

    asyncio.run(run())
    assert sink.dropped == {"shutdown": 10}


def test_serving_json_written_by_the_admin_routes_is_read_back_strictly(
    three_versions: Path,
) -> None:
    """What a person might write by mistake is refused whole, naming the field."""
    directory = three_versions / "iris"
    for document, problem in (
        ({"labels": {"stable": True}}, "labels.stable"),
        ({"labels": {"stable": "2"}}, "labels.stable"),
        ({"canary_percent": "10"}, "canary_percent"),
    ):
        serving_json(three_versions, "iris").write_text(json.dumps(document))
        with pytest.raises(bundle.BundleError, match=problem):
            bundle.read_serving(directory)


def test_traffic_that_would_do_nothing_says_so(three_versions: Path) -> None:
    """A canary share with no canary label is reported; a shadow of the very version that
    answers is refused (it would score nothing), and nothing is written."""
    from tests.service.repository_support import AUTH, TOKEN

    with make_client(three_versions, admin_token=TOKEN) as client:
        response = client.put(
            "/admin/models/iris/traffic", json={"canary_percent": 10}, headers=AUTH
        )
        assert response.status_code == 200
        assert response.json()["label_errors"] == {
            "canary_percent": "10% for a canary, but no label 'canary' is set: every "
            "unversioned request goes to the stable version"
        }
        written = serving_json(three_versions, "iris").read_bytes()
        response = client.put(
            "/admin/models/iris/traffic", json={"shadow_version": 3}, headers=AUTH
        )
        assert response.status_code == 409
        assert response.json()["error"] == (
            "shadow version 3 is the version that answers unversioned requests of 'iris': "
            "it would score nothing"
        )
        assert serving_json(three_versions, "iris").read_bytes() == written
        response = client.put("/admin/models/iris/labels/canary", json={"version": 2}, headers=AUTH)
        assert "label_errors" not in response.json()
