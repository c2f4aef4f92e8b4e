"""What the standard protocols (V2, TF Serving) share: the tensor names of their signatures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# The single input tensor both protocols declare for an all-numeric model (the Keras model's
# input layer name), and the two outputs.
INPUT_NAME = "features"
OUTPUT_NAMES = ("probabilities", "label")


@dataclass(slots=True)
class Answer:
    """A REST codec's answer: the body, its media type and any header the protocol defines."""

    body: bytes
    media_type: str = "application/json"
    headers: dict[str, str] | None = None


def unwrap_singletons(values: list[Any]) -> list[Any]:
    """``[5.1]`` (a one-value feature list, as tf.Example features are) to ``5.1``."""
    return [v[0] if type(v) is list and len(v) == 1 else v for v in values]
