"""The registry on real bundles: verify before serving, reject broken versions, swap, roll back."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import bundle
from service import registry as registry_module
from service.errors import Conflict, ModelNotReady, NotFound
from service.model import load_version
from service.registry import HELD_REASON, UNVERIFIED_REASON, Registry
from service.settings import Settings
from tests.service import publishing
from tests.service.publishing import BREAKERS, publish

ROW = np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)
HOLD = 60.0  # the longest a wait below may take before the test fails


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    return tmp_path / "artifacts"


@pytest.fixture
def model_dir(artifacts: Path) -> Path:
    return artifacts / "iris"


@pytest.fixture
def make_registry(artifacts: Path) -> Callable[..., Registry]:
    made: list[Registry] = []

    def make(runtime: str = "litert", **options: object) -> Registry:
        registry = Registry(
            Settings(artifacts_dir=artifacts, model_name="iris", model_runtime=runtime, **options)
        )
        made.append(registry)
        return registry

    yield make
    for registry in made:
        registry.close()


def states(registry: Registry) -> dict[int, tuple[str, str | None]]:
    return {s.version: (s.state, s.reason) for s in registry.statuses()}


class LoadSpy:
    """Counts (and can hold up) calls of the registry's ``load_version``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[int] = []
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self.returned = threading.Event()  # a held call has returned (or failed)
        real = registry_module.load_version

        def spy(directory: Path, **options: object):  # type: ignore[no-untyped-def]
            self.calls.append(int(directory.name))
            self.entered.set()
            try:
                if self.gate is not None:
                    assert self.gate.wait(HOLD)
                return real(directory, **options)  # type: ignore[arg-type]
            finally:
                self.returned.set()

        monkeypatch.setattr(registry_module, "load_version", spy)


# -- start-up ----------------------------------------------------------------------------------
def test_start_serves_the_highest_version_that_verifies(
    model_dir: Path, iris_bundle: Path, make_registry: Callable[..., Registry]
) -> None:
    publish(model_dir, iris_bundle)
    publish(model_dir, iris_bundle)
    publish(model_dir, iris_bundle, publishing.truncate_keras)
    registry = make_registry()
    registry.load_initial()
    assert registry.require().version == 2
    assert registry.previous is None
    found = states(registry)
    assert list(found) == [3, 2, 1]
    assert found[3][0] == "rejected" and "model.keras does not match" in (found[3][1] or "")
    assert found[2] == ("serving", None)
    assert found[1] == ("available", UNVERIFIED_REASON)  # found at start, never loaded


def test_not_ready_says_why(
    model_dir: Path, iris_bundle: Path, make_registry: Callable[..., Registry]
) -> None:
    registry = make_registry()
    registry.load_initial()
    with pytest.raises(ModelNotReady, match="no version of model 'iris' found"):
        registry.require()
    publish(model_dir, iris_bundle, publishing.drop_manifest)
    registry.load_initial()
    with pytest.raises(ModelNotReady, match=r"version 1: manifest\.json is missing"):
        registry.require()


def test_pinned_version_is_served_and_never_upgraded(
    model_dir: Path, iris_bundle: Path, make_registry: Callable[..., Registry]
) -> None:
    for _ in range(3):
        publish(model_dir, iris_bundle)
    registry = make_registry(model_version=2)
    registry.load_initial()
    assert registry.require().version == 2
    publish(model_dir, iris_bundle)
    assert registry.poll() is False
    assert registry.require().version == 2
    assert states(registry)[4] == ("available", None)


def test_pinned_version_rejected_is_not_ready(
    model_dir: Path, iris_bundle: Path, make_registry: Callable[..., Registry]
) -> None:
    publish(model_dir, iris_bundle)
    publish(model_dir, iris_bundle, publishing.other_classes)
    registry = make_registry(model_version=2)
    registry.load_initial()
    with pytest.raises(ModelNotReady, match=r"pinned version 2 of 'iris' was rejected: .*classes"):
        registry.require()


# -- polling -------------------------------------------------------------------------------------
def test_poll_swaps_in_a_new_version_and_keeps_the_old_one(
    model_dir: Path, iris_bundle: Path, make_registry: Callable[..., Registry]
) -> None:
    publish(model_dir, iris_bundle)
    registry = make_registry()
    registry.load_initial()
    first = registry.require()
    assert registry.poll() is False
    publish(model_dir, iris_bundle)
    assert registry.poll() is True
    assert registry.require().version == 2
    assert registry.previous is first
    assert registry.get(1) is first and registry.get(None).version == 2
    with pytest.raises(NotFound):
        registry.get(7)
    assert registry.poll() is False
    assert registry.reloads_succeeded == 2 and registry.reloads_rejected == 0


@pytest.mark.parametrize("runtime", ["litert", "keras"])
@pytest.mark.parametrize("breaker", list(BREAKERS))
def test_poll_never_serves_a_broken_version(
    model_dir: Path,
    iris_bundle: Path,
    make_registry: Callable[..., Registry],
    runtime: str,
    breaker: str,
) -> None:
    publish(model_dir, iris_bundle)
    registry = make_registry(runtime)
    registry.load_initial()
    serving = registry.require()
    break_it, reason = BREAKERS[breaker]
    broken = publish(model_dir, iris_bundle, break_it)
    assert registry.poll() is False
    assert registry.require() is serving
    state, why = states(registry)[broken]
    assert state == "rejected"
    assert reason in (why or "")
    assert registry.reloads_rejected == 1
    # The next good version is served over the broken one.
    publish(model_dir, iris_bundle)
    assert registry.poll() is True
    assert registry.require().version == 3
    assert states(registry)[broken][0] == "rejected"


def test_a_broken_higher_version_does_not_hide_a_good_lower_one(
    model_dir: Path, iris_bundle: Path, make_registry: Callable[..., Registry]
) -> None:
    publish(model_dir, iris_bundle)
    registry = make_registry()
    registry.load_initial()
    publish(model_dir, iris_bundle)
    publish(model_dir, iris_bundle, publishing.flip_tflite_bit)
    assert registry.poll() is True
    assert registry.require().version == 2
    assert states(registry)[3][0] == "rejected"


def test_a_broken_version_skipped_for_a_newer_one_is_still_verified(
    model_dir: Path, iris_bundle: Path, make_registry: Callable[..., Registry]
) -> None:
    publish(model_dir, iris_bundle)
    registry = make_registry()
    registry.load_initial()
    publish(model_dir, iris_bundle, publishing.other_classes)
    publish(model_dir, iris_bundle)  # both appear before the next poll
    assert registry.poll() is True
    assert registry.require().version == 3
    assert states(registry)[2] == (
        "rejected",
        "label_encoder.joblib classes differ from metadata.json classes",
    )


def test_a_rejected_version_is_retried_only_when_its_files_change(
    model_dir: Path,
    iris_bundle: Path,
    make_registry: Callable[..., Registry],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    publish(model_dir, iris_bundle)
    registry = make_registry()
    registry.load_initial()
    spy = LoadSpy(monkeypatch)
    broken = publish(model_dir, iris_bundle, publishing.alter_manifest)
    for _ in range(3):
        assert registry.poll() is False
    assert spy.calls == [broken]
    shutil.copy(iris_bundle / bundle.MANIFEST, model_dir / str(broken))  # repaired in place
    assert registry.poll() is True
    assert spy.calls == [broken, broken]
    assert registry.require().version == broken


def test_a_repair_that_keeps_size_and_mtime_is_still_noticed(
    model_dir: Path,
    iris_bundle: Path,
    make_registry: Callable[..., Registry],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    publish(model_dir, iris_bundle)
    registry = make_registry()
    registry.load_initial()
    broken = publish(model_dir, iris_bundle, publishing.flip_tflite_bit)
    target = model_dir / str(broken) / bundle.MODEL_TFLITE
    original = iris_bundle / bundle.MODEL_TFLITE
    stat = original.stat()
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size, same mtime
    assert registry.poll() is False
    spy = LoadSpy(monkeypatch)
    assert registry.poll() is False
    assert spy.calls == []
    time.sleep(0.01)
    shutil.copy2(original, target)  # same size and mtime as the broken file; ctime differs
    assert registry.poll() is True
    assert spy.calls == [broken]


def test_an_unexpected_load_failure_is_a_rejection(
    model_dir: Path,
    iris_bundle: Path,
    make_registry: Callable[..., Registry],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    publish(model_dir, iris_bundle)
    registry = make_registry()
    registry.load_initial()
    serving = registry.require()

    def explode(directory: Path, **options: object) -> None:
        raise RuntimeError("surprise")

    monkeypatch.setattr(registry_module, "load_version", explode)
    publish(model_dir, iris_bundle)
    assert registry.poll() is False
    assert registry.require() is serving
    assert states(registry)[2] == ("rejected", "cannot be loaded: RuntimeError")


def test_a_half_written_directory_is_not_a_version_until_complete(
    model_dir: Path, iris_bundle: Path, make_registry: Callable[..., Registry]
) -> None:
    publish(model_dir, iris_bundle)
    registry = make_registry()
    registry.load_initial()
    writing = publishing.half_written(model_dir, iris_bundle)
    assert registry.poll() is False
    assert registry.require().version == 1
    assert states(registry)[writing] == ("rejected", "manifest.json is missing")
    publishing.finish_writing(model_dir / str(writing), iris_bundle)
    assert registry.poll() is True
    assert registry.require().version == writing
    assert states(registry)[writing] == ("serving", None)


def test_a_staging_directory_is_ignored(
    model_dir: Path, iris_bundle: Path, make_registry: Callable[..., Registry]
) -> None:
    publish(model_dir, iris_bundle)
    registry = make_registry()
    registry.load_initial()
    staging = publishing.stage(model_dir, iris_bundle)  # complete, but never renamed
    assert staging.name.startswith(bundle.TEMP_PREFIX)
    assert registry.poll() is False
    assert list(states(registry)) == [1]


def test_nothing_served_yet_picks_up_a_repaired_version(
    model_dir: Path, iris_bundle: Path, make_registry: Callable[..., Registry]
) -> None:
    publish(model_dir, iris_bundle, publishing.drop_manifest)
    registry = make_registry()
    registry.load_initial()
    assert registry.current is None
    assert registry.poll() is False
    shutil.copy(iris_bundle / bundle.MANIFEST, model_dir / "1")
    assert registry.poll() is True
    assert registry.require().version == 1


def test_a_removed_serving_version_stays_listed(
    model_dir: Path, iris_bundle: Path, make_registry: Callable[..., Registry]
) -> None:
    publish(model_dir, iris_bundle)
    publish(model_dir, iris_bundle)
    registry = make_registry()
    registry.load_initial()
    shutil.rmtree(model_dir / "2")
    assert states(registry)[2] == ("serving", "directory removed; kept in memory")
    assert registry.require().version == 2


def test_watch_polls_in_the_background(
    model_dir: Path, iris_bundle: Path, make_registry: Callable[..., Registry]
) -> None:
    publish(model_dir, iris_bundle)
    registry = make_registry(poll_seconds=0.05)
    registry.load_initial()

    async def main() -> bool:
        watcher = asyncio.create_task(registry.watch())
        publish(model_dir, iris_bundle)
        deadline = time.monotonic() + HOLD
        while registry.require().version != 2:
            assert not watcher.done(), watcher  # the watcher never dies
            assert time.monotonic() < deadline, f"version 2 not served within {HOLD:.0f} s"
            await asyncio.sleep(0.01)
        alive = not watcher.done()
        watcher.cancel()
        return alive

    # Found by the watcher alone (nothing here polls), which was still watching afterwards.
    assert asyncio.run(main())
    assert registry.require().version == 2
    assert registry.previous is not None and registry.previous.version == 1


# -- rollback ------------------------------------------------------------------------------------
def test_rollback_swaps_back_instantly_and_holds_the_newer_version(
    model_dir: Path, iris_bundle: Path, make_registry: Callable[..., Registry]
) -> None:
    publish(model_dir, iris_bundle)
    registry = make_registry()
    registry.load_initial()
    first = registry.require()
    publish(model_dir, iris_bundle)
    registry.poll()
    second = registry.require()
    assert registry.rollback() is first
    assert registry.require() is first and registry.previous is second
    assert states(registry)[2] == ("available", HELD_REASON)
    assert registry.poll() is False  # polling does not undo the rollback
    assert registry.require() is first
    assert registry.rollback() is second  # a second rollback undoes the first
    assert registry.rollback() is first
    # A version published after the rollback is served; the held one is closed.
    publish(model_dir, iris_bundle)
    assert registry.poll() is True
    assert registry.require().version == 3
    assert registry.previous is first


def test_rollback_with_nothing_to_roll_back_to(
    model_dir: Path, iris_bundle: Path, make_registry: Callable[..., Registry]
) -> None:
    registry = make_registry()
    registry.load_initial()
    with pytest.raises(Conflict, match="no previous version"):
        registry.rollback()
    publish(model_dir, iris_bundle)
    registry.poll()
    with pytest.raises(Conflict, match="no previous version"):
        registry.rollback()


def test_rollback_does_not_wait_for_a_load_in_progress(
    model_dir: Path,
    iris_bundle: Path,
    make_registry: Callable[..., Registry],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    publish(model_dir, iris_bundle)
    publish(model_dir, iris_bundle)
    registry = make_registry()
    registry.load_initial()
    publish(model_dir, iris_bundle)
    registry.poll()  # serving 3, previous 2
    spy = LoadSpy(monkeypatch)
    spy.gate = threading.Event()
    publish(model_dir, iris_bundle)
    result: list[bool] = []
    poller = threading.Thread(target=lambda: result.append(registry.poll()))
    poller.start()
    try:
        assert spy.entered.wait(HOLD)  # the poll is now loading version 4
        assert registry.rollback().version == 2
        # The rollback returned while the load was still held (only this test releases it):
        # it did not wait for the load in progress.
        assert not spy.returned.is_set() and poller.is_alive()
    finally:
        spy.gate.set()
        poller.join(HOLD)
    # Version 4 was published before the rollback: the load finished but is not swapped in.
    assert result == [False]
    assert registry.require().version == 2
    assert states(registry)[4] == ("available", HELD_REASON)


# -- admin reload ------------------------------------------------------------------------------
def test_reload_a_given_version_holds_it(
    model_dir: Path, iris_bundle: Path, make_registry: Callable[..., Registry]
) -> None:
    for _ in range(3):
        publish(model_dir, iris_bundle)
    registry = make_registry()
    registry.load_initial()
    assert registry.reload(1).version == 1
    assert registry.previous is not None and registry.previous.version == 3
    assert registry.poll() is False  # an explicit choice is not undone by polling
    assert states(registry)[3] == ("available", HELD_REASON)
    assert registry.reload(3) is registry.current  # the previous one, reused from memory
    assert registry.reload(3).version == 3  # already serving: nothing to do
    assert registry.reload(1).version == 1
    assert registry.reload().version == 3  # no version: back to the highest, polling resumes
    publish(model_dir, iris_bundle)
    assert registry.poll() is True


def test_reload_refuses_unknown_and_broken_versions(
    model_dir: Path,
    iris_bundle: Path,
    make_registry: Callable[..., Registry],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    publish(model_dir, iris_bundle)
    registry = make_registry()
    registry.load_initial()
    serving = registry.require()
    with pytest.raises(NotFound, match="version 9 of model 'iris' not found"):
        registry.reload(9)
    publish(model_dir, iris_bundle, publishing.other_classes)
    registry.poll()
    spy = LoadSpy(monkeypatch)
    with pytest.raises(
        Conflict, match=r"version 2 was rejected: .*classes differ.*serving version 1"
    ):
        registry.reload(2)
    assert spy.calls == [2]  # an explicit reload verifies again, even with unchanged files
    with pytest.raises(Conflict, match="newer versions were rejected: version 2: "):
        registry.reload()
    assert registry.require() is serving


def test_reload_without_newer_versions_keeps_serving(
    model_dir: Path, iris_bundle: Path, make_registry: Callable[..., Registry]
) -> None:
    registry = make_registry()
    registry.load_initial()
    with pytest.raises(NotFound, match="no version of model"):
        registry.reload()
    publish(model_dir, iris_bundle)
    assert registry.reload().version == 1
    assert registry.reload() is registry.current


# -- swapping with requests in flight ------------------------------------------------------
def test_a_retired_keras_version_answers_its_requests_in_flight(iris_bundle: Path) -> None:
    """close() from the loading thread, while requests are queued in the batcher."""
    registry = Registry(Settings(artifacts_dir=iris_bundle.parent.parent, model_name="iris"))
    model = load_version(iris_bundle, runtime="keras", batcher=registry._batcher)
    assert model.batcher is not None

    async def main() -> tuple[list[np.ndarray], np.ndarray]:
        pending = [asyncio.ensure_future(model.probabilities(ROW)) for _ in range(200)]
        await asyncio.sleep(0)  # the first batch runs, the rest queue behind it
        await asyncio.to_thread(model.close)
        answers = await asyncio.gather(*pending)
        late = await model.probabilities(ROW)  # took the version before the swap, asks after
        return answers, late

    answers, late = asyncio.run(main())
    assert len(answers) == 200
    for probabilities in [*answers, late]:
        assert probabilities.shape == (1, 3)
        assert abs(float(probabilities.sum()) - 1) < 1e-4
    assert model.batcher._executor is None  # its thread is gone once the work is done


def test_swapping_twice_does_not_break_a_request_holding_the_old_version(
    model_dir: Path, iris_bundle: Path, make_registry: Callable[..., Registry]
) -> None:
    publish(model_dir, iris_bundle)
    registry = make_registry("keras")
    registry.load_initial()

    async def main() -> np.ndarray:
        model = registry.require()  # a request takes version 1 ...
        for _ in range(2):  # ... two swaps retire it ...
            publish(model_dir, iris_bundle)
            assert await asyncio.to_thread(registry.poll)
        assert registry.require().version == 3 and registry.previous is not model
        return await model.probabilities(ROW)  # ... and it still answers on version 1

    assert asyncio.run(main()).shape == (1, 3)


def test_close_stops_later_swaps(
    model_dir: Path, iris_bundle: Path, make_registry: Callable[..., Registry]
) -> None:
    publish(model_dir, iris_bundle)
    registry = make_registry()
    registry.load_initial()
    registry.close()
    publish(model_dir, iris_bundle)
    assert registry.poll() is False
    assert registry.require().version == 1


def test_a_pinned_version_that_appears_after_start_is_loaded_by_polling(
    model_dir: Path, iris_bundle: Path, make_registry: Callable[..., Registry]
) -> None:
    publish(model_dir, iris_bundle)  # version 1 exists; the pinned version 2 does not yet
    registry = make_registry(model_version=2, poll_seconds=1)
    registry.load_initial()
    assert registry.current is None
    with pytest.raises(ModelNotReady, match="version 2"):
        registry.require()
    assert registry.poll() is False
    publish(model_dir, iris_bundle)
    assert registry.poll() is True
    assert registry.require().version == 2
    publish(model_dir, iris_bundle)  # pinned: version 3 is never served
    registry.poll()
    assert registry.require().version == 2
