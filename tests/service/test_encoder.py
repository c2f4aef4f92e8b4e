"""Reading ``label_encoder.joblib`` without scikit-learn: the classes, and nothing else runs."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.preprocessing import LabelEncoder

from service.encoder import EncoderUnreadable, read_classes


def dumped(obj: object) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(obj, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "labels",
    [
        ["virginica", "setosa", "versicolor"],
        ["yes", "no"],
        [3, 1, 2],
        [0.5, 1.5],
        [True, False],
        np.array(["b", "a"], dtype=object),
    ],
    ids=["strings", "binary", "ints", "floats", "bools", "object-array"],
)
def test_classes_are_those_of_the_fitted_encoder(labels: list) -> None:
    encoder = LabelEncoder().fit(labels)
    classes = read_classes(dumped(encoder))
    assert classes.tolist() == encoder.classes_.tolist()
    assert [type(c) for c in classes.tolist()] == [type(c) for c in encoder.classes_.tolist()]
    indices = np.arange(len(classes))
    assert classes[indices].tolist() == encoder.inverse_transform(indices).tolist()


def test_a_pickle_calling_anything_else_is_refused_before_it_runs(tmp_path: Path) -> None:
    mark = tmp_path / "unpickled"

    class Planted:
        def __reduce__(self) -> tuple:
            return (os.mkdir, (str(mark),))

    with pytest.raises(EncoderUnreadable, match=r"global posix\.mkdir is not allowed"):
        read_classes(dumped(Planted()))
    assert not mark.exists()


@pytest.mark.parametrize(
    "content",
    [b"", b"not a pickle", pickle.dumps([1, 2]), dumped({"classes_": ["a", "b"]})],
    ids=["empty", "garbage", "list", "dict"],
)
def test_other_content_is_refused(content: bytes) -> None:
    with pytest.raises(EncoderUnreadable):
        read_classes(content)


def test_an_unfitted_encoder_is_refused() -> None:
    with pytest.raises(EncoderUnreadable, match="not a fitted LabelEncoder"):
        read_classes(dumped(LabelEncoder()))
