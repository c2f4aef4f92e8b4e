"""Read ``label_encoder.joblib`` without importing scikit-learn.

Importing scikit-learn pulls in SciPy and pandas: about 110 MB of resident memory and a second
of start-up, for one array. The pickle may name only the ``LabelEncoder`` class and the numpy
and joblib pieces that rebuild its ``classes_``; any other global is refused before it is
called (https://docs.python.org/3/library/pickle.html#restricting-globals).
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import numpy as np
from joblib.numpy_pickle import NumpyUnpickler

_LABEL_ENCODER = ("sklearn.preprocessing._label", "LabelEncoder")
_ALLOWED = frozenset(
    {
        ("joblib.numpy_pickle", "NumpyArrayWrapper"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
    }
)


class _EncoderState:
    """Stands in for the pickled LabelEncoder: receives its attributes, runs no code."""


class _Unpickler(NumpyUnpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == _LABEL_ENCODER:
            return _EncoderState
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module[:64]}.{name[:64]} is not allowed")


class EncoderUnreadable(ValueError):
    """The bytes are not a LabelEncoder pickled by ``joblib.dump`` (uncompressed)."""


def read_classes(content: bytes) -> np.ndarray:
    """``classes_`` of the LabelEncoder that ``joblib.dump`` wrote into ``content``."""
    try:
        encoder = _Unpickler("", io.BytesIO(content), ensure_native_byte_order=True).load()
    except pickle.UnpicklingError as exc:
        raise EncoderUnreadable(str(exc)[:200]) from None
    except Exception as exc:  # a corrupt pickle can raise nearly anything
        raise EncoderUnreadable(f"corrupt pickle ({type(exc).__name__})") from None
    classes = getattr(encoder, "classes_", None) if type(encoder) is _EncoderState else None
    if not isinstance(classes, np.ndarray) or classes.ndim != 1:
        raise EncoderUnreadable("not a fitted LabelEncoder")
    return classes
