"""Broken artifacts as a matrix: every one is rejected with a reason and never served.

Each case starts from a copy of the real Iris bundle and breaks it one way. "manifest
rewritten" cases recompute manifest.json after the damage, so the manifest check passes and
the later checks must catch it; "manifest and metadata rewritten" also update the model
digests metadata.json records, so that the model loaders themselves must refuse the file.
"""

from __future__ import annotations

import json
import os
import pathlib
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import joblib
import numpy as np
import pytest
from sklearn.preprocessing import LabelEncoder

import bundle
from service.errors import BundleRejected
from service.model import load_version
from tests.hardening.figures import record
from tests.support import ROOT, ServerProcess

pytestmark = pytest.mark.slow

KEY = "signing-key-for-tests"
ADMIN = "broken-bundles-admin"


# -- ways to break a bundle -------------------------------------------------------------------
def rewrite_manifest(directory: Path, key: str | None = None) -> None:
    bundle.write_manifest(directory, key)


def rewrite_manifest_and_metadata(directory: Path) -> None:
    """As a full re-publication would: metadata's model digests and the manifest both updated."""
    path = directory / bundle.METADATA
    document = json.loads(path.read_text())
    document["model_sha256"] = {
        name: bundle.sha256_file(directory / name)
        for name in (bundle.MODEL_KERAS, bundle.MODEL_TFLITE)
        if (directory / name).exists()
    }
    path.write_text(json.dumps(document))
    bundle.write_manifest(directory)


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def empty(path: Path) -> None:
    path.write_bytes(b"")


def flip(path: Path, offset: int | None = None, bit: int = 0x10) -> None:
    content = bytearray(path.read_bytes())
    content[len(content) // 2 if offset is None else offset] ^= bit
    path.write_bytes(bytes(content))


def flip_structure(path: Path) -> None:
    """A bit no loader can miss: in the TFLite file identifier, or inside the Keras zip."""
    if path.name == bundle.MODEL_TFLITE:
        flip(path, offset=5, bit=0x01)  # "TFL3" -> "TFL2"
    else:
        flip(path)  # the zip CRC of whichever member holds the middle byte


DAMAGE: dict[str, Callable[[Path], None]] = {
    "truncated": truncate,
    "empty": empty,
    "bit-flipped": flip,
}
REWRITE: dict[str, Callable[[Path], None] | None] = {
    "": None,
    ", manifest rewritten": rewrite_manifest,
    ", manifest and metadata rewritten": rewrite_manifest_and_metadata,
}


@dataclass(frozen=True)
class Breakage:
    name: str
    apply: Callable[[Path], None]
    reason: str  # a fragment the rejection reason must contain


def _model_damage(file: str, damage: str, rewrite: str) -> Breakage:
    def apply(directory: Path) -> None:
        harm = DAMAGE[damage]
        if damage == "bit-flipped" and rewrite.endswith("metadata rewritten"):
            harm = flip_structure  # a flipped weight is a valid model: only digests tell
        harm(directory / file)
        redo = REWRITE[rewrite]
        if redo is not None:
            redo(directory)

    expected = f"{file} does not match" if not rewrite else file
    return Breakage(f"{damage} {file}{rewrite}", apply, expected)


def _other_classes(directory: Path) -> None:
    joblib.dump(LabelEncoder().fit(["cat", "dog", "emu"]), directory / bundle.LABEL_ENCODER)
    rewrite_manifest(directory)


def _encoder_not_an_encoder(directory: Path) -> None:
    joblib.dump(["setosa", "versicolor", "virginica"], directory / bundle.LABEL_ENCODER)
    rewrite_manifest(directory)


def _encoder_truncated(directory: Path) -> None:
    truncate(directory / bundle.LABEL_ENCODER)
    rewrite_manifest(directory)


def _edit_metadata(change: Callable[[dict], None], rewrite: bool = True) -> Callable[[Path], None]:
    def apply(directory: Path) -> None:
        path = directory / bundle.METADATA
        document = json.loads(path.read_text())
        change(document)
        path.write_text(json.dumps(document))
        if rewrite:
            rewrite_manifest(directory)

    return apply


def _remove(name: str, rewrite: bool) -> Callable[[Path], None]:
    def apply(directory: Path) -> None:
        (directory / name).unlink()
        if rewrite:
            rewrite_manifest(directory)

    return apply


def _edit_manifest(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(directory: Path) -> None:
        path = directory / bundle.MANIFEST
        document = json.loads(path.read_text())
        change(document)
        path.write_text(json.dumps(document))

    return apply


def _first_digest_changed(document: dict) -> None:
    name = sorted(document["files"])[0]
    digest = document["files"][name]
    document["files"][name] = ("0" if digest[0] != "0" else "1") + digest[1:]


def _symlinked_model(directory: Path) -> None:
    target = directory.parent / "elsewhere.tflite"
    shutil.move(directory / bundle.MODEL_TFLITE, target)
    (directory / bundle.MODEL_TFLITE).symlink_to(target)


def _reorder_classes(document: dict) -> None:
    document["classes"] = list(reversed(document["classes"]))


def _drop_feature(document: dict) -> None:
    """One feature fewer everywhere metadata.json lists them (consistent with itself), so that
    only the model's input width is left to disagree."""
    document["features"] = document["features"][:-1]
    if document.get("distributions"):
        document["distributions"] = document["distributions"][:-1]
    if document.get("background"):
        document["background"]["inputs"] = [row[:-1] for row in document["background"]["inputs"]]


def _forge_model_digest(document: dict) -> None:
    document["model_sha256"][bundle.MODEL_TFLITE] = "0" * 64


BREAKAGES = [
    *(
        _model_damage(file, damage, rewrite)
        for file in (bundle.MODEL_KERAS, bundle.MODEL_TFLITE)
        for damage in DAMAGE
        for rewrite in REWRITE
    ),
    Breakage("encoder with other classes", _other_classes, "classes differ"),
    Breakage("encoder that is not a LabelEncoder", _encoder_not_an_encoder, bundle.LABEL_ENCODER),
    Breakage("truncated encoder", _encoder_truncated, bundle.LABEL_ENCODER),
    Breakage("missing encoder", _remove(bundle.LABEL_ENCODER, True), bundle.LABEL_ENCODER),
    Breakage("missing metadata", _remove(bundle.METADATA, False), bundle.METADATA),
    Breakage(
        "missing metadata, manifest rewritten", _remove(bundle.METADATA, True), bundle.METADATA
    ),
    Breakage(
        "altered metadata",
        _edit_metadata(lambda d: d.update(target="flower"), rewrite=False),
        f"{bundle.METADATA} does not match",
    ),
    Breakage(
        "metadata classes reordered, manifest rewritten",
        _edit_metadata(_reorder_classes),
        "classes differ",
    ),
    Breakage(
        "metadata lists a feature less, manifest rewritten",
        _edit_metadata(_drop_feature),
        "features",
    ),
    Breakage(
        "metadata with a forged model digest, manifest rewritten",
        _edit_metadata(_forge_model_digest),
        f"{bundle.MODEL_TFLITE} is not the model",
    ),
    Breakage(
        "metadata not JSON, manifest rewritten",
        lambda d: ((d / bundle.METADATA).write_text("{not json"), rewrite_manifest(d)),
        f"{bundle.METADATA} is invalid",
    ),
    Breakage("missing manifest", _remove(bundle.MANIFEST, False), f"{bundle.MANIFEST} is missing"),
    Breakage("altered manifest digest", _edit_manifest(_first_digest_changed), "does not match"),
    Breakage(
        "manifest not JSON",
        lambda d: (d / bundle.MANIFEST).write_text("{"),
        "not a valid manifest",
    ),
    Breakage(
        "manifest naming a path outside the bundle",
        _edit_manifest(lambda d: d["files"].update({"../../etc/passwd": "0" * 64})),
        "outside the bundle",
    ),
    Breakage(
        "file not in the manifest",
        lambda d: (d / "report" / "extra.txt").write_text("added later\n"),
        "is not listed",
    ),
    Breakage("symbolic link", _symlinked_model, "symbolic link"),
]


@pytest.fixture
def fresh(tmp_path: Path, iris_bundle: Path) -> Path:
    """A private copy of the Iris bundle as ``<tmp>/artifacts/iris/1``."""
    target = tmp_path / "artifacts" / "iris" / "1"
    shutil.copytree(iris_bundle, target)
    return target


def test_the_unbroken_copy_loads_with_both_runtimes(fresh: Path) -> None:
    """The control: what the matrix breaks is a bundle that loads."""
    for runtime in ("litert", "keras"):
        model = load_version(fresh, runtime=runtime)  # type: ignore[arg-type]
        assert model.version == 1 and model.n_classes == 3
        model.close()


@pytest.mark.parametrize("breakage", BREAKAGES, ids=[b.name for b in BREAKAGES])
@pytest.mark.parametrize("runtime", ["litert", "keras"])
def test_broken_bundle_is_rejected_with_a_reason(
    fresh: Path, breakage: Breakage, runtime: str
) -> None:
    breakage.apply(fresh)
    with pytest.raises(BundleRejected) as rejected:
        load_version(fresh, runtime=runtime)  # type: ignore[arg-type]
    record("artifacts_rejected", 1)
    reason = str(rejected.value)
    assert breakage.reason in reason, reason
    assert "\n" not in reason and len(reason) < 400


# -- a Keras model with a Lambda layer: safe mode refuses it ----------------------------------
def _lambda_model(path: Path, mark: Path) -> None:
    """A real 4-in, 3-out Keras model whose Lambda layer (a Python lambda, saved as bytecode)
    touches ``mark`` whenever it runs: at build time here, never again at load."""
    import keras

    target = str(mark)  # the lambda's closure is saved with it: a str, as Keras requires
    inputs = keras.Input(shape=(4,), name="features")
    hidden = keras.layers.Lambda(lambda x: (pathlib.Path(target).touch(), x)[1])(inputs)
    outputs = keras.layers.Dense(3, activation="softmax")(hidden)
    keras.Model(inputs, outputs).save(path)
    assert mark.exists()  # the lambda did run while the model was built
    mark.unlink()


def test_a_lambda_layer_is_refused_by_safe_mode(fresh: Path, tmp_path: Path) -> None:
    mark = tmp_path / "lambda-ran"
    _lambda_model(fresh / bundle.MODEL_KERAS, mark)
    rewrite_manifest_and_metadata(fresh)  # a bundle consistent in every digest
    with pytest.raises(BundleRejected) as rejected:
        load_version(fresh, runtime="keras")
    record("artifacts_rejected", 1)
    assert "Lambda" in str(rejected.value)
    assert not mark.exists()


# -- signing and planted pickles --------------------------------------------------------------
class _Plant:
    """A pickle whose unpickling touches a file: what a hostile label_encoder.joblib could do."""

    def __init__(self, mark: Path) -> None:
        self.mark = mark

    def __reduce__(self) -> tuple:
        return (pathlib.Path.touch, (pathlib.Path(self.mark),))


def plant_encoder(directory: Path, mark: Path) -> None:
    (directory / bundle.LABEL_ENCODER).write_bytes(pickle.dumps(_Plant(mark), protocol=4))


def test_the_planted_pickle_really_leaves_its_mark(tmp_path: Path) -> None:
    """The control for the tests below: loaded by joblib, the plant runs and the mark appears."""
    mark = tmp_path / "mark"
    plant_encoder(tmp_path, mark)
    joblib.load(tmp_path / bundle.LABEL_ENCODER)
    assert mark.exists()


def test_signed_bundle_loads_only_with_its_key(fresh: Path) -> None:
    rewrite_manifest(fresh, KEY)
    assert json.loads((fresh / bundle.MANIFEST).read_text())["signature"]["algorithm"] == (
        "hmac-sha256"
    )
    load_version(fresh, signing_key=KEY).close()
    with pytest.raises(BundleRejected, match="signature does not match"):
        load_version(fresh, signing_key="another key")
    record("artifacts_rejected", 1)


def test_unsigned_bundle_is_refused_when_a_key_is_set(fresh: Path) -> None:
    with pytest.raises(BundleRejected, match="is not signed"):
        load_version(fresh, signing_key=KEY)
    record("artifacts_rejected", 1)


@pytest.mark.parametrize("resign_with", [None, "a wrong key"], ids=["unsigned", "wrong key"])
def test_planted_encoder_without_a_valid_signature_never_runs(
    fresh: Path, tmp_path: Path, resign_with: str | None
) -> None:
    mark = tmp_path / "planted-encoder-ran"
    plant_encoder(fresh, mark)
    rewrite_manifest(fresh, resign_with)  # every digest right, the signature missing or wrong
    with pytest.raises(BundleRejected, match=r"not signed|signature does not match"):
        load_version(fresh, signing_key=KEY)
    record("artifacts_rejected", 1)
    assert not mark.exists()


def test_planted_encoder_is_caught_by_the_manifest_without_signing(
    fresh: Path, tmp_path: Path
) -> None:
    """No key: the manifest (not rewritten) is checked before anything is unpickled."""
    mark = tmp_path / "planted-encoder-ran"
    plant_encoder(fresh, mark)
    with pytest.raises(BundleRejected, match=f"{bundle.LABEL_ENCODER} does not match"):
        load_version(fresh)
    record("artifacts_rejected", 1)
    assert not mark.exists()


def test_planted_encoder_signed_with_the_key_is_still_not_run(fresh: Path, tmp_path: Path) -> None:
    """Defence in depth: even a validly signed plant meets an unpickler that allows no code."""
    mark = tmp_path / "planted-encoder-ran"
    plant_encoder(fresh, mark)
    rewrite_manifest(fresh, KEY)
    with pytest.raises(BundleRejected, match=bundle.LABEL_ENCODER):
        load_version(fresh, signing_key=KEY)
    record("artifacts_rejected", 1)
    assert not mark.exists()


def test_training_signs_the_manifest_with_the_environment_key(tmp_path: Path) -> None:
    """``ARTIFACT_SIGNING_KEY`` set: ``python -m training`` publishes a signed manifest."""
    artifacts = tmp_path / "artifacts"
    env = {**os.environ, "ARTIFACT_SIGNING_KEY": KEY, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-m", "training", "--artifacts", str(artifacts), "--epochs=3", "--quiet"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    published = Path(result.stdout.strip().splitlines()[-1])
    assert bundle.verify_manifest(published, KEY)
    with pytest.raises(bundle.BundleError, match="signature does not match"):
        bundle.verify_manifest(published, "another key")
    load_version(published, signing_key=KEY).close()


# -- through a real server: never served, the good version kept -------------------------------
def _publish(model_dir: Path, source: Path, version: int, apply: Callable[[Path], None]) -> None:
    """Stage a broken copy beside the versions and rename it into place, as training does."""
    staging = model_dir / f"{bundle.TEMP_PREFIX}{version}"
    shutil.copytree(source, staging)
    apply(staging)
    os.rename(staging, model_dir / str(version))


ROW = {"instances": [[5.1, 3.5, 1.4, 0.2]]}


def _reload_refused(client: httpx.Client, version: int) -> str:
    answer = client.post(
        "/admin/reload", json={"version": version}, headers={"Authorization": f"Bearer {ADMIN}"}
    )
    assert answer.status_code == 409, answer.text
    record("artifacts_rejected", 1)
    return answer.json()["error"]


def test_server_keeps_the_good_version_while_every_broken_one_is_refused(
    tmp_path: Path, iris_bundle: Path
) -> None:
    artifacts = tmp_path / "artifacts"
    model_dir = artifacts / "iris"
    shutil.copytree(iris_bundle, model_dir / "1")
    log = tmp_path / "server.log"
    with ServerProcess(artifacts, log_path=log, admin_token=ADMIN) as server:
        server.wait_for("/readyz")
        with httpx.Client(base_url=server.url, timeout=60) as client:
            for version, breakage in enumerate(BREAKAGES, start=2):
                _publish(model_dir, iris_bundle, version, breakage.apply)
                assert breakage.reason in _reload_refused(client, version)
                assert client.get("/readyz").json()["version"] == 1
            card = client.get("/model").json()
            states = {v["version"]: v["state"] for v in card["versions"]}
            assert states == {1: "serving", **{v: "rejected" for v in range(2, len(BREAKAGES) + 2)}}
            answer = client.post("/predict", json=ROW)
            assert answer.status_code == 200 and answer.json()["version"] == 1


def test_server_with_only_broken_versions_is_not_ready(tmp_path: Path, iris_bundle: Path) -> None:
    artifacts = tmp_path / "artifacts"
    model_dir = artifacts / "iris"
    model_dir.mkdir(parents=True)
    chosen = [b for b in BREAKAGES if "rewritten" in b.name][:6]
    for version, breakage in enumerate(chosen, start=1):
        _publish(model_dir, iris_bundle, version, breakage.apply)
    with (
        ServerProcess(artifacts, log_path=tmp_path / "server.log") as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["error"]
        assert client.post("/predict", json=ROW).status_code == 503
        card = client.get("/model").json()
    assert card["ready"] is False
    assert [v["state"] for v in card["versions"]] == ["rejected"] * len(chosen)
    assert all(v["reason"] for v in card["versions"])
    record("artifacts_rejected", len(chosen))


def test_signing_server_refuses_a_planted_encoder_and_keeps_serving(
    tmp_path: Path, iris_bundle: Path
) -> None:
    artifacts = tmp_path / "artifacts"
    model_dir = artifacts / "iris"
    mark = tmp_path / "planted-encoder-ran"
    _publish(model_dir, iris_bundle, 1, lambda d: rewrite_manifest(d, KEY))

    def planted(resign_with: str | None) -> Callable[[Path], None]:
        return lambda d: (plant_encoder(d, mark), rewrite_manifest(d, resign_with))

    _publish(model_dir, iris_bundle, 2, planted(None))
    _publish(model_dir, iris_bundle, 3, planted("a wrong key"))
    _publish(model_dir, iris_bundle, 4, lambda d: None)  # good files, no signature
    env = {"admin_token": ADMIN, "artifact_signing_key": KEY}
    with (
        ServerProcess(artifacts, log_path=tmp_path / "server.log", **env) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        assert client.get("/readyz").json()["version"] == 1  # the only signed one
        assert "not signed" in _reload_refused(client, 2)
        assert "signature does not match" in _reload_refused(client, 3)
        assert "not signed" in _reload_refused(client, 4)
        assert client.get("/readyz").json()["version"] == 1
        assert client.post("/predict", json=ROW).json()["version"] == 1
    assert not mark.exists()


def test_keras_server_refuses_a_lambda_model(tmp_path: Path, iris_bundle: Path) -> None:
    artifacts = tmp_path / "artifacts"
    model_dir = artifacts / "iris"
    mark = tmp_path / "lambda-ran"
    shutil.copytree(iris_bundle, model_dir / "1")

    def with_lambda(directory: Path) -> None:
        _lambda_model(directory / bundle.MODEL_KERAS, mark)
        rewrite_manifest_and_metadata(directory)

    _publish(model_dir, iris_bundle, 2, with_lambda)
    env = {"admin_token": ADMIN, "model_runtime": "keras"}
    with (
        ServerProcess(artifacts, log_path=tmp_path / "server.log", **env) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        assert client.get("/readyz").json()["version"] == 1
        assert "Lambda" in _reload_refused(client, 2)
        probabilities = client.post("/predict", json=ROW).json()["predictions"][0]
    assert np.isclose(sum(probabilities["probabilities"].values()), 1.0, atol=1e-4)
    assert not mark.exists()
