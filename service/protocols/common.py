"""What the standard protocols (V2, TF Serving) share: the tensor names of their signatures."""

from __future__ import annotations

from typing import Any

# The single input tensor both protocols declare for an all-numeric model (the Keras model's
# input layer name), and the two outputs.
INPUT_NAME = "features"
OUTPUT_NAMES = ("probabilities", "label")


def unwrap_singletons(values: list[Any]) -> list[Any]:
    """``[5.1]`` (a one-value feature list, as tf.Example features are) to ``5.1``."""
    return [v[0] if type(v) is list and len(v) == 1 else v for v in values]
