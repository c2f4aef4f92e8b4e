"""Second attack pass on bundles: a reused version number, oversized metadata and manifest,
symbolic links in the artifacts tree, an unreadable model directory.

Every test serves real copies of the session's Iris bundle in process (TestClient)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

import bundle
from bundle.manifest import MAX_MANIFEST_BYTES
from bundle.metadata import MAX_METADATA_BYTES
from service.registry import Registry, fingerprint
from tests.service.publishing import publish, truncate_keras_resigned
from tests.service.repository_support import answered, make_client

TOKEN = "second-pass-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


def _variant(source: Path, destination: Path, accuracy: float) -> Path:
    """A copy of ``source`` with other metadata (its accuracy) and a manifest to match: the
    same model, another bundle (another manifest.json)."""
    shutil.copytree(source, destination)
    path = destination / bundle.METADATA
    document = json.loads(path.read_text())
    document["metrics"]["accuracy"] = accuracy
    path.write_text(json.dumps(document))
    bundle.write_manifest(destination)
    return destination


def _registry(client: Any, name: str = "iris") -> Registry:
    return client.app.state.repository.models[name]


def _card(client: Any) -> dict[str, Any]:
    response = client.get("/model")
    assert response.status_code == 200, response.text
    return response.json()


def _status(client: Any, version: int) -> dict[str, Any]:
    return next(v for v in _card(client)["versions"] if v["version"] == version)


# -- 5. a version is its number and its manifest -------------------------------------------------


def test_a_reused_version_number_is_served_from_its_new_files(
    tmp_path: Path, iris_bundle: Path
) -> None:
    artifacts = tmp_path / "artifacts"
    publish(artifacts / "iris", iris_bundle)
    publish(artifacts / "iris", iris_bundle)
    with make_client(artifacts, model_name="iris") as client:
        assert answered(client, "/predict") == 2
        accuracy = _card(client)["metadata"]["metrics"]["accuracy"]
        shutil.rmtree(artifacts / "iris" / "2")  # deleted, then the number is published again
        _variant(iris_bundle, tmp_path / "other", 0.125)
        assert publish(artifacts / "iris", tmp_path / "other") == 2
        _registry(client).poll()
        card = _card(client)
        assert card["version"] == 2
        assert card["metadata"]["metrics"]["accuracy"] == 0.125 != accuracy
        assert _status(client, 2)["reason"] is None
        assert answered(client, "/predict") == 2


def test_reload_loads_a_reused_number_from_its_new_files(tmp_path: Path, iris_bundle: Path) -> None:
    artifacts = tmp_path / "artifacts"
    publish(artifacts / "iris", iris_bundle)
    with make_client(artifacts, model_name="iris", admin_token=TOKEN) as client:
        shutil.rmtree(artifacts / "iris" / "1")
        publish(artifacts / "iris", _variant(iris_bundle, tmp_path / "other", 0.25))
        response = client.post("/admin/reload", headers=ADMIN)  # no poll in between
        assert response.status_code == 200, response.text
        assert _card(client)["metadata"]["metrics"]["accuracy"] == 0.25


def test_a_reused_number_with_broken_files_is_reported_not_passed_off(
    tmp_path: Path, iris_bundle: Path
) -> None:
    """The new files fail: the model loaded before keeps answering (availability), and the
    version's status says its files on disk were replaced and why they were refused."""
    artifacts = tmp_path / "artifacts"
    publish(artifacts / "iris", iris_bundle)
    with make_client(artifacts, model_name="iris", admin_token=TOKEN) as client:
        shutil.rmtree(artifacts / "iris" / "1")
        publish(artifacts / "iris", iris_bundle, truncate_keras_resigned)
        registry = _registry(client)
        registry.poll()
        status = _status(client, 1)
        assert status["state"] == "serving"
        assert status["reason"].startswith("replaced on disk; reloading failed: ")
        assert "model.keras" in status["reason"]
        assert answered(client, "/predict") == 1
        assert client.post("/admin/reload", headers=ADMIN).status_code == 200
        # Fixed files under the same number are loaded by the next poll.
        shutil.rmtree(artifacts / "iris" / "1")
        publish(artifacts / "iris", _variant(iris_bundle, tmp_path / "fixed", 0.5))
        registry.poll()
        assert _status(client, 1)["reason"] is None
        assert _card(client)["metadata"]["metrics"]["accuracy"] == 0.5


def test_an_unchanged_version_is_not_reloaded(tmp_path: Path, iris_bundle: Path) -> None:
    artifacts = tmp_path / "artifacts"
    publish(artifacts / "iris", iris_bundle)
    with make_client(artifacts, model_name="iris") as client:
        registry = _registry(client)
        before = registry.current
        os.utime(artifacts / "iris" / "1" / bundle.MANIFEST)  # touched, same bytes
        registry.poll()
        assert registry.current is before


# -- 6. metadata.json and manifest.json are read only when small ----------------------------------


def test_a_padded_metadata_json_is_refused_before_it_is_read(
    tmp_path: Path, iris_bundle: Path
) -> None:
    directory = shutil.copytree(iris_bundle, tmp_path / "padded")
    path = directory / bundle.METADATA
    content = path.read_bytes()
    path.write_bytes(content + b" " * (MAX_METADATA_BYTES + 1 - len(content)))
    bundle.write_manifest(directory)  # the manifest recomputed: only the size limit catches it
    bundle.verify_manifest(directory)
    limit = f"metadata.json is {MAX_METADATA_BYTES + 1} bytes, over the {MAX_METADATA_BYTES}"
    with pytest.raises(bundle.BundleError, match=limit):
        bundle.read_metadata(directory)


def test_a_padded_metadata_json_is_rejected_by_the_service(
    tmp_path: Path, iris_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("bundle.metadata.MAX_METADATA_BYTES", 64 * 1024)
    artifacts = tmp_path / "artifacts"
    publish(artifacts / "iris", iris_bundle)

    def pad(directory: Path) -> None:
        with (directory / bundle.METADATA).open("ab") as handle:
            handle.write(b" " * 64 * 1024)
        bundle.write_manifest(directory)

    publish(artifacts / "iris", iris_bundle, pad)
    with make_client(artifacts, model_name="iris") as client:
        assert answered(client, "/predict") == 1
        status = _status(client, 2)
        assert status["state"] == "rejected"
        assert "metadata.json is" in status["reason"]
        assert "over the 65536-byte limit" in status["reason"]


def test_real_metadata_is_far_below_the_limit(iris_bundle: Path) -> None:
    assert (iris_bundle / bundle.METADATA).stat().st_size * 1000 < MAX_METADATA_BYTES
    assert (iris_bundle / bundle.MANIFEST).stat().st_size * 100 < MAX_MANIFEST_BYTES


def test_an_oversized_manifest_is_refused(tmp_path: Path, iris_bundle: Path) -> None:
    directory = shutil.copytree(iris_bundle, tmp_path / "padded")
    with (directory / bundle.MANIFEST).open("ab") as handle:
        handle.write(b" " * MAX_MANIFEST_BYTES)
    with pytest.raises(bundle.BundleError, match=f"over the {MAX_MANIFEST_BYTES}-byte limit"):
        bundle.verify_manifest(directory)


def test_a_manifest_linked_to_an_endless_device_is_refused(
    tmp_path: Path, iris_bundle: Path
) -> None:
    directory = shutil.copytree(iris_bundle, tmp_path / "linked")
    (directory / bundle.MANIFEST).unlink()
    (directory / bundle.MANIFEST).symlink_to("/dev/zero")
    with pytest.raises(bundle.BundleError, match=r"manifest\.json is a symbolic link"):
        bundle.verify_manifest(directory)


# -- 7. symbolic links are never followed ---------------------------------------------------------


def test_a_symlinked_version_directory_is_refused(tmp_path: Path, iris_bundle: Path) -> None:
    artifacts = tmp_path / "artifacts"
    publish(artifacts / "iris", iris_bundle)
    outside = shutil.copytree(iris_bundle, tmp_path / "outside" / "bundle")
    (artifacts / "iris" / "2").symlink_to(outside, target_is_directory=True)
    (artifacts / "iris" / "3").symlink_to("/", target_is_directory=True)
    scan = bundle.versions.scan_versions(artifacts / "iris")
    assert (scan.versions, scan.symlinks, scan.error) == ([1], [2, 3], None)
    assert bundle.list_versions(artifacts / "iris") == [1]
    # A link to / is one entry, the link: never a walk of the filesystem.
    assert [e[0] for e in fingerprint(artifacts / "iris" / "3")] == ["."]
    with make_client(artifacts, model_name="iris") as client:
        assert answered(client, "/predict") == 1
        _registry(client).poll()
        for version in (2, 3):
            status = _status(client, version)
            assert status["state"] == "rejected"
            assert "symbolic link" in status["reason"]
            assert client.post(f"/v1/models/iris/versions/{version}:predict").status_code != 200
    staging = bundle.new_staging_dir(artifacts / "iris")
    assert bundle.publish_version(staging, artifacts / "iris", lambda *_: None) == 4


def test_a_pinned_symlinked_version_is_never_loaded(tmp_path: Path, iris_bundle: Path) -> None:
    artifacts = tmp_path / "artifacts"
    (artifacts / "iris").mkdir(parents=True)
    outside = shutil.copytree(iris_bundle, tmp_path / "outside" / "bundle")
    (artifacts / "iris" / "1").symlink_to(outside, target_is_directory=True)
    with make_client(artifacts, model_name="iris", model_version=1) as client:
        response = client.get("/readyz")
        assert response.status_code == 503
        assert "symbolic link" in response.json()["error"]


def test_a_symlinked_file_inside_a_version_is_refused(tmp_path: Path, iris_bundle: Path) -> None:
    artifacts = tmp_path / "artifacts"
    publish(artifacts / "iris", iris_bundle)
    outside = shutil.copy(iris_bundle / bundle.METADATA, tmp_path / "metadata.json")

    def link_metadata(directory: Path) -> None:
        (directory / bundle.METADATA).unlink()
        (directory / bundle.METADATA).symlink_to(outside)

    publish(artifacts / "iris", iris_bundle, link_metadata)
    with pytest.raises(bundle.BundleError, match=r"metadata\.json is a symbolic link"):
        bundle.read_metadata(artifacts / "iris" / "2")
    with make_client(artifacts, model_name="iris") as client:
        assert answered(client, "/predict") == 1
        assert "symbolic link" in _status(client, 2)["reason"]


# -- 10. an unreadable model directory is a reason, never a 500 ----------------------------------


def _deny_listing(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """As root, chmod does not stop reads: refuse listing the directory ``name`` in process."""
    real_iterdir = Path.iterdir

    def iterdir(self: Path):  # type: ignore[no-untyped-def]
        if self.name == name:
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)


def test_an_unreadable_model_directory_is_a_503_with_the_reason(
    tmp_path: Path, iris_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    artifacts = tmp_path / "artifacts"
    publish(artifacts / "iris", iris_bundle)
    _deny_listing(monkeypatch, "iris")
    with make_client(artifacts, model_name="iris", admin_token=TOKEN) as client:
        scan = bundle.versions.scan_versions(artifacts / "iris")
        assert scan.versions == [] and "Permission denied" in (scan.error or "")
        response = client.get("/readyz")
        assert response.status_code == 503
        assert "cannot be read: Permission denied" in response.json()["error"]
        card = client.get("/model")
        assert card.status_code in (200, 503), card.text
        assert "cannot be read: Permission denied" in card.text
        _registry(client).poll()  # never raises
        for body in (None, {"version": 1}):
            reload = client.post("/admin/reload", json=body, headers=ADMIN)
            assert reload.status_code == 503, reload.text
            assert "cannot be read: Permission denied" in reload.json()["error"]


def test_a_served_model_whose_directory_turns_unreadable_says_so(
    tmp_path: Path, iris_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    artifacts = tmp_path / "artifacts"
    publish(artifacts / "iris", iris_bundle)
    with make_client(artifacts, model_name="iris") as client:
        _deny_listing(monkeypatch, "iris")
        _registry(client).poll()
        assert answered(client, "/predict") == 1  # kept in memory
        status = _status(client, 1)
        assert status["state"] == "serving"
        assert "cannot be read: Permission denied; kept in memory" in status["reason"]
