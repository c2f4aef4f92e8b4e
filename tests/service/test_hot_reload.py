"""Retraining without downtime: a real server under a stream of requests while versions appear.

Good versions are published as training does (a staging directory renamed to the next
number); broken ones too; one version is written in place, slowly, as a careless copy would.
Every request must succeed and name a good version; each good version must be picked up by
polling (no restart, no admin call) and served, in the order of publication; no broken or
unfinished one is ever served. How long each took is printed, not asserted: waits fail only
after ``HOLD`` seconds.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

import bundle
from tests.service import publishing
from tests.service.publishing import BREAKERS, publish
from tests.support import ServerProcess

POLL_SECONDS = 0.25  # several polls while a version is written in place (write_slowly: 2 s)
HOLD = 60.0  # the longest a wait below may take before the test fails
CLIENTS = 4
MIN_REQUESTS = 2000
TOKEN = "hot-reload-admin"
ROWS = {"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}


@dataclass
class Traffic:
    """Client threads posting /predict back to back, recording every answer."""

    url: str
    answers: list[tuple[float, int]] = field(default_factory=list)  # (received, version)
    failures: list[str] = field(default_factory=list)
    first_seen: dict[int, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for _ in range(CLIENTS):
            thread = threading.Thread(target=self._run, daemon=True)
            thread.start()
            self.threads.append(thread)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self.stop.is_set():
                try:
                    response = client.post("/predict", json=ROWS)
                    received = time.monotonic()
                    body = response.json()
                    ok = response.status_code == 200 and len(body["predictions"]) == 2
                except Exception as exc:  # a failed request, whatever its cause
                    with self.lock:
                        self.failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                with self.lock:
                    if not ok:
                        self.failures.append(f"{response.status_code}: {response.text[:200]}")
                        continue
                    version = body["version"]
                    self.answers.append((received, version))
                    self.first_seen.setdefault(version, received)

    def wait_for(self, version: int, timeout: float) -> float | None:
        """When an answer first named ``version``, waiting up to ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if version in self.first_seen:
                    return self.first_seen[version]
            time.sleep(0.01)
        return None

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(15)


def write_slowly(directory: Path, source: Path, pause: float) -> float:
    """Write a version in place, file by file, manifest last; return when it was complete."""
    directory.mkdir()
    names = [bundle.METADATA, bundle.LABEL_ENCODER, bundle.MODEL_KERAS, bundle.MODEL_TFLITE]
    for name in names:
        content = (source / name).read_bytes()
        with open(directory / name, "wb") as handle:  # each file in two halves
            handle.write(content[: len(content) // 2])
            handle.flush()
            time.sleep(pause / 2)
            handle.write(content[len(content) // 2 :])
        time.sleep(pause / 2)
    shutil.copytree(source / bundle.REPORT_DIR, directory / bundle.REPORT_DIR)
    shutil.copy(source / bundle.MANIFEST, directory / bundle.MANIFEST)
    return time.monotonic()


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["litert", "keras"])
def test_versions_swap_under_load_without_a_failed_request(
    tmp_path: Path, iris_bundle: Path, runtime: str
) -> None:
    started = time.monotonic()
    artifacts = tmp_path / "artifacts"
    model_dir = artifacts / "iris"
    publish(model_dir, iris_bundle)
    server = ServerProcess(
        artifacts,
        log_path=tmp_path / "server.log",
        model_runtime=runtime,
        poll_seconds=POLL_SECONDS,
        admin_token=TOKEN,
        log_level="info",
    )
    good: set[int] = {1}
    broken: dict[int, tuple[str, str]] = {}  # version -> (what, fragment of the reason)
    latency: dict[int, float] = {}  # seconds from publication to the first answer: printed
    order: list[int] = [1]  # good versions in the order they were published
    with server:
        server.wait_for("/readyz")
        traffic = Traffic(server.url)
        traffic.start()
        try:
            assert traffic.wait_for(1, HOLD) is not None

            def publish_good() -> None:
                version = publish(model_dir, iris_bundle)
                published = time.monotonic()
                good.add(version)
                seen = traffic.wait_for(version, HOLD)
                assert seen is not None, f"version {version} never served: {server.log()}"
                latency[version] = seen - published
                order.append(version)

            def publish_broken(*names: str) -> None:
                for name in names:
                    breaker, reason = BREAKERS[name]
                    broken[publish(model_dir, iris_bundle, breaker)] = (name, reason)
                    time.sleep(0.4)

            publish_good()
            publish_broken("truncated model.keras", "bit-flipped model.tflite")
            publish_good()
            publish_broken("encoder with other classes", "missing manifest", "altered manifest")
            publish_good()
            # A version copied in place, file by file, across several polls.
            slow = publishing.next_version(model_dir)
            complete = write_slowly(model_dir / str(slow), iris_bundle, pause=0.5)
            good.add(slow)
            seen = traffic.wait_for(slow, HOLD)
            assert seen is not None, f"version {slow} never served: {server.log()}"
            latency[slow] = seen - complete
            order.append(slow)
            # A staging directory left behind by a crashed run, then more broken versions.
            publishing.stage(model_dir, iris_bundle)
            publish_broken(
                "truncated model.keras, manifest rewritten",
                "bit-flipped model.tflite header, manifest rewritten",
                "unlisted file",
            )
            unfinished = publishing.half_written(model_dir, iris_bundle)
            broken[unfinished] = ("half-written directory", "manifest.json is missing")
            publish_good()
            newest = max(good)

            # Admin under load: a wrong token changes nothing, rollback and reload are seamless.
            with httpx.Client(base_url=server.url, timeout=30) as admin:
                assert admin.post("/admin/rollback").status_code == 401
                wrong = {"Authorization": "Bearer no"}
                assert admin.post("/admin/rollback", headers=wrong).status_code == 401
                auth = {"Authorization": f"Bearer {TOKEN}"}
                response = admin.post("/admin/rollback", headers=auth)
                assert response.status_code == 200, response.text
                assert response.json()["version"] == slow
                assert admin.get("/readyz").json()["version"] == slow
                time.sleep(POLL_SECONDS + 0.5)  # a poll does not undo the rollback
                assert admin.get("/readyz").json()["version"] == slow
                response = admin.post("/admin/reload", json={"version": unfinished}, headers=auth)
                assert response.status_code == 409 and "manifest.json is missing" in response.text
                response = admin.post("/admin/reload", headers=auth)  # the highest valid one
                assert response.status_code == 200 and response.json()["version"] == newest
                card = admin.get("/model").json()

            # Keep the stream going until it has carried enough requests.
            deadline = time.monotonic() + HOLD
            while len(traffic.answers) + len(traffic.failures) < MIN_REQUESTS:
                assert time.monotonic() < deadline, "the stream is too slow"
                time.sleep(0.1)
        finally:
            traffic.finish()
        code = server.stop()

    served = {version for _, version in traffic.answers}
    total = len(traffic.answers) + len(traffic.failures)
    print(
        f"\n[{runtime}] {total} requests from {CLIENTS} clients in "
        f"{time.monotonic() - started:.1f} s, {len(traffic.failures)} failed; "
        f"versions served {sorted(served)}; rejected {sorted(broken)}"
    )
    for version, seconds in sorted(latency.items()):
        print(f"[{runtime}] version {version}: first answer {seconds:.3f} s after publication")

    assert traffic.failures == [], traffic.failures[:5]
    assert total >= MIN_REQUESTS
    assert served <= good, f"answers named versions never published good: {served - good}"
    assert not served & set(broken)
    assert served == good  # every good version was served at some point
    # The version written in place was never served before it was complete.
    assert min(t for t, v in traffic.answers if v == slow) >= complete
    # Each good version was first answered after the previous one: picked up as published.
    assert sorted(good, key=traffic.first_seen.__getitem__) == order
    states = {v["version"]: (v["state"], v["reason"]) for v in card["versions"]}
    assert set(states) == good | set(broken)  # the staging directory is not a version
    assert states[newest][0] == "serving"
    for version, (what, reason) in broken.items():
        state, why = states[version]
        assert state == "rejected" and reason in (why or ""), (what, states[version])
    assert code == 0
    log = (tmp_path / "server.log").read_text()
    for version in broken:
        assert f"rejected version {version} of iris" in log
    # Each good version was swapped in by polling, in order, before any admin call.
    lines = log.splitlines()

    def first(fragment: str) -> int:
        return next(i for i, line in enumerate(lines) if fragment in line)

    swaps = [first(f"serving version {version} of iris") for version in order]
    assert swaps == sorted(swaps) and swaps[-1] < first("rolled back from version")
    assert os.listdir(model_dir)  # still there, for a look after a failure
