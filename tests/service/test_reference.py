"""A version must reproduce the probabilities training recorded for its reference rows."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import bundle
from service.errors import BundleRejected
from service.model import load_version

pytestmark = pytest.mark.slow


@pytest.fixture
def copy(tmp_path: Path, iris_bundle: Path) -> Path:
    target = tmp_path / "iris" / "1"
    shutil.copytree(iris_bundle, target)
    return target


def test_training_records_reference_rows(iris_bundle: Path) -> None:
    reference = bundle.read_metadata(iris_bundle).reference
    assert reference is not None
    assert len(reference.inputs) == len(reference.probabilities) == 5
    assert all(abs(sum(row) - 1) < 1e-5 for row in reference.probabilities)


@pytest.mark.parametrize("runtime", ["litert", "keras"])
def test_both_runtimes_reproduce_the_reference(copy: Path, runtime: str) -> None:
    model = load_version(copy, runtime=runtime)
    model.close()
    assert model.version == 1


@pytest.mark.parametrize("runtime", ["litert", "keras"])
def test_a_model_that_answers_differently_is_rejected(copy: Path, runtime: str) -> None:
    # The manifest is rewritten after the change, so only the reference check can catch it.
    path = copy / bundle.METADATA
    document = json.loads(path.read_text())
    document["reference"]["probabilities"][0] = list(
        reversed(document["reference"]["probabilities"][0])
    )
    path.write_text(json.dumps(document))
    bundle.write_manifest(copy)
    with pytest.raises(BundleRejected, match="does not reproduce the training probabilities"):
        load_version(copy, runtime=runtime)


def test_reference_rows_that_do_not_fit_the_model_are_rejected(copy: Path) -> None:
    path = copy / bundle.METADATA
    document = json.loads(path.read_text())
    document["reference"]["inputs"] = [[1.0, 2.0]] * len(document["reference"]["inputs"])
    path.write_text(json.dumps(document))
    bundle.write_manifest(copy)
    with pytest.raises(BundleRejected, match="reference rows do not fit"):
        load_version(copy, runtime="litert")
