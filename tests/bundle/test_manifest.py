"""manifest.json: every file's sha256, exact file set, optional HMAC signature."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest

import bundle
from bundle import BundleError, sha256_file, verify_manifest, write_manifest

# Every file training publishes (the DESIGN table), manifest excluded.
BUNDLE_FILES = sorted(
    [
        bundle.MODEL_KERAS,
        bundle.LABEL_ENCODER,
        bundle.MODEL_TFLITE,
        bundle.METADATA,
        bundle.METRICS_JSON,
        bundle.CONFUSION_MATRIX_PNG,
    ]
)


def flip_byte(path: Path, position: int) -> None:
    """Change exactly one byte of a file (``position`` may be negative)."""
    data = bytearray(path.read_bytes())
    data[position] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture
def small_bundle(tmp_path: Path) -> Path:
    """A hand-made bundle directory with a nested file and a fresh manifest."""
    directory = tmp_path / "model" / "1"
    (directory / "report").mkdir(parents=True)
    (directory / "model.keras").write_bytes(bytes(range(256)) * 4)
    (directory / "metadata.json").write_text('{"name": "x"}\n')
    (directory / "report" / "metrics.json").write_text('{"accuracy": 1.0}\n')
    write_manifest(directory)
    return directory


def _manifest(directory: Path) -> dict:
    return json.loads((directory / bundle.MANIFEST).read_text())


# --- hand-made bundles: fast ---------------------------------------------------------------


def test_sha256_file_matches_hashlib(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    payload = b"abc" * 1_000_000  # larger than one read chunk
    path.write_bytes(payload)
    assert sha256_file(path) == hashlib.sha256(payload).hexdigest()


def test_write_then_verify_round_trip(small_bundle: Path) -> None:
    document = _manifest(small_bundle)
    assert document["algorithm"] == "sha256"
    assert "signature" not in document
    expected = {
        "metadata.json": sha256_file(small_bundle / "metadata.json"),
        "model.keras": sha256_file(small_bundle / "model.keras"),
        "report/metrics.json": sha256_file(small_bundle / "report" / "metrics.json"),
    }
    assert document["files"] == expected
    assert verify_manifest(small_bundle) == expected


def test_manifest_does_not_list_itself(small_bundle: Path) -> None:
    write_manifest(small_bundle)  # rewriting over an existing manifest
    assert bundle.MANIFEST not in _manifest(small_bundle)["files"]
    verify_manifest(small_bundle)


@pytest.mark.parametrize("name", ["model.keras", "metadata.json", "report/metrics.json"])
@pytest.mark.parametrize("position", [0, -1])
def test_one_changed_byte_is_detected(small_bundle: Path, name: str, position: int) -> None:
    flip_byte(small_bundle / name, position)
    with pytest.raises(BundleError, match=f"^{re.escape(name)} does not match its sha256"):
        verify_manifest(small_bundle)


def test_same_size_replacement_is_detected(small_bundle: Path) -> None:
    path = small_bundle / "metadata.json"
    path.write_text('{"name": "y"}\n')
    with pytest.raises(BundleError, match=r"metadata\.json does not match"):
        verify_manifest(small_bundle)


@pytest.mark.parametrize("extra", ["extra.bin", "report/extra.png", "deep/er/file"])
def test_extra_file_is_detected(small_bundle: Path, extra: str) -> None:
    path = small_bundle / extra
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not in the manifest")
    with pytest.raises(BundleError, match=f"^{re.escape(extra)} is not listed in manifest\\.json"):
        verify_manifest(small_bundle)


@pytest.mark.parametrize("name", ["model.keras", "metadata.json", "report/metrics.json"])
def test_missing_file_is_detected(small_bundle: Path, name: str) -> None:
    (small_bundle / name).unlink()
    with pytest.raises(
        BundleError, match=f"^{re.escape(name)} is listed in manifest\\.json but missing"
    ):
        verify_manifest(small_bundle)


def test_missing_manifest(small_bundle: Path) -> None:
    (small_bundle / bundle.MANIFEST).unlink()
    with pytest.raises(BundleError, match=r"manifest\.json is missing"):
        verify_manifest(small_bundle)


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"manifest\.json is missing"):
        verify_manifest(tmp_path / "nowhere")


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{not json",
        b"\xff\xfe\x00garbage",
        b"[]",
        b'"files"',
        b"42",
        b"{}",
        b'{"files": []}',
        b'{"files": null}',
        b'{"files": {"model.keras": 1}}',
    ],
    ids=[
        "empty",
        "broken-json",
        "not-utf8",
        "list",
        "string",
        "number",
        "no-files",
        "files-list",
        "files-null",
        "digest-not-string",
    ],
)
def test_garbled_manifest(small_bundle: Path, content: bytes) -> None:
    (small_bundle / bundle.MANIFEST).write_bytes(content)
    with pytest.raises(BundleError, match=r"manifest\.json is not a valid manifest"):
        verify_manifest(small_bundle)


def test_tampered_digest_in_manifest(small_bundle: Path) -> None:
    document = _manifest(small_bundle)
    document["files"]["model.keras"] = "0" * 64
    (small_bundle / bundle.MANIFEST).write_text(json.dumps(document))
    with pytest.raises(BundleError, match=r"model\.keras does not match"):
        verify_manifest(small_bundle)


@pytest.mark.parametrize("name", ["../outside.txt", "/etc/hostname"])
def test_manifest_naming_a_path_outside_the_bundle(small_bundle: Path, name: str) -> None:
    outside = small_bundle.parent / "outside.txt"
    outside.write_text("secret")
    document = _manifest(small_bundle)
    document["files"][name] = sha256_file(outside)
    (small_bundle / bundle.MANIFEST).write_text(json.dumps(document))
    with pytest.raises(BundleError, match="names a path outside the bundle"):
        verify_manifest(small_bundle)


def test_symbolic_link_is_refused(small_bundle: Path) -> None:
    (small_bundle / "link").symlink_to(small_bundle / "model.keras")
    with pytest.raises(BundleError, match="link is a symbolic link"):
        verify_manifest(small_bundle)
    with pytest.raises(BundleError, match="symbolic link"):
        write_manifest(small_bundle)


# --- signing --------------------------------------------------------------------------------


def test_signed_manifest_verifies_with_its_key(small_bundle: Path) -> None:
    files = write_manifest(small_bundle, signing_key="s3cret")
    signature = _manifest(small_bundle)["signature"]
    assert signature["algorithm"] == "hmac-sha256"
    assert len(signature["value"]) == 64
    assert verify_manifest(small_bundle, signing_key="s3cret") == files
    # A signed manifest still verifies when the reader does not require a signature.
    assert verify_manifest(small_bundle) == files


def test_signed_manifest_fails_with_a_wrong_key(small_bundle: Path) -> None:
    write_manifest(small_bundle, signing_key="s3cret")
    with pytest.raises(BundleError, match="signature does not match the signing key"):
        verify_manifest(small_bundle, signing_key="other")


def test_unsigned_manifest_fails_when_a_key_is_required(small_bundle: Path) -> None:
    write_manifest(small_bundle)
    with pytest.raises(BundleError, match=r"manifest\.json is not signed"):
        verify_manifest(small_bundle, signing_key="s3cret")


@pytest.mark.parametrize("signature", [None, "abc", {"algorithm": "hmac-sha256"}, {"value": 7}])
def test_malformed_signature_counts_as_unsigned(small_bundle: Path, signature: object) -> None:
    write_manifest(small_bundle, signing_key="s3cret")
    document = _manifest(small_bundle)
    document["signature"] = signature
    (small_bundle / bundle.MANIFEST).write_text(json.dumps(document))
    with pytest.raises(BundleError, match="not signed"):
        verify_manifest(small_bundle, signing_key="s3cret")


def test_signature_covers_the_digests(small_bundle: Path) -> None:
    """Changing a file and rewriting its digest, but not re-signing, is caught by the key."""
    write_manifest(small_bundle, signing_key="s3cret")
    document = _manifest(small_bundle)
    (small_bundle / "model.keras").write_bytes(b"a different model")
    document["files"]["model.keras"] = sha256_file(small_bundle / "model.keras")
    (small_bundle / bundle.MANIFEST).write_text(json.dumps(document))
    verify_manifest(small_bundle)  # without a key, the digests alone are consistent
    with pytest.raises(BundleError, match="signature does not match"):
        verify_manifest(small_bundle, signing_key="s3cret")


def test_signature_does_not_depend_on_manifest_formatting(small_bundle: Path) -> None:
    write_manifest(small_bundle, signing_key="s3cret")
    document = _manifest(small_bundle)
    (small_bundle / bundle.MANIFEST).write_text(json.dumps(document, separators=(",", ":")))
    verify_manifest(small_bundle, signing_key="s3cret")


# --- a real, trained bundle -------------------------------------------------------------------


@pytest.fixture
def real_bundle(artifacts_copy: Path) -> Path:
    return artifacts_copy / "iris" / "1"


@pytest.mark.slow
def test_real_bundle_manifest_lists_exactly_the_published_files(real_bundle: Path) -> None:
    files = verify_manifest(real_bundle)
    assert sorted(files) == BUNDLE_FILES
    for name, digest in files.items():
        assert sha256_file(real_bundle / name) == digest


@pytest.mark.slow
@pytest.mark.parametrize("name", BUNDLE_FILES)
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_one_changed_byte_in_any_file_of_a_real_bundle(
    real_bundle: Path, name: str, where: str
) -> None:
    path = real_bundle / name
    size = path.stat().st_size
    position = {"first": 0, "middle": size // 2, "last": size - 1}[where]
    flip_byte(path, position)
    with pytest.raises(
        BundleError, match=f"^{re.escape(name)} does not match its sha256 in manifest\\.json$"
    ):
        verify_manifest(real_bundle)


@pytest.mark.slow
def test_one_changed_digest_byte_in_the_manifest_of_a_real_bundle(real_bundle: Path) -> None:
    path = real_bundle / bundle.MANIFEST
    text = path.read_text()
    digest = sha256_file(real_bundle / bundle.MODEL_TFLITE)
    at = text.index(digest)
    changed = "1" if text[at] != "1" else "2"
    path.write_text(text[:at] + changed + text[at + 1 :])
    with pytest.raises(BundleError, match=r"model\.tflite does not match"):
        verify_manifest(real_bundle)


@pytest.mark.slow
def test_real_bundle_extra_missing_and_no_manifest(real_bundle: Path, tmp_path: Path) -> None:
    pristine = tmp_path / "pristine"
    shutil.copytree(real_bundle, pristine)

    (real_bundle / "report" / "notes.txt").write_text("added later")
    with pytest.raises(BundleError, match=r"report/notes\.txt is not listed"):
        verify_manifest(real_bundle)

    shutil.rmtree(real_bundle)
    shutil.copytree(pristine, real_bundle)
    (real_bundle / bundle.LABEL_ENCODER).unlink()
    with pytest.raises(BundleError, match=r"label_encoder\.joblib is listed in manifest\.json but"):
        verify_manifest(real_bundle)

    shutil.rmtree(real_bundle)
    shutil.copytree(pristine, real_bundle)
    (real_bundle / bundle.MANIFEST).unlink()
    with pytest.raises(BundleError, match=r"manifest\.json is missing"):
        verify_manifest(real_bundle)


@pytest.mark.slow
def test_real_bundle_signing(real_bundle: Path) -> None:
    with pytest.raises(BundleError, match="not signed"):
        verify_manifest(real_bundle, signing_key="key-1")
    write_manifest(real_bundle, signing_key="key-1")
    assert sorted(verify_manifest(real_bundle, signing_key="key-1")) == BUNDLE_FILES
    with pytest.raises(BundleError, match="signature does not match"):
        verify_manifest(real_bundle, signing_key="key-2")
