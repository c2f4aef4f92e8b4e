"""``metadata.json``: what a bundle is, what it expects and how well it did."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bundle.errors import BundleError
from bundle.layout import METADATA

FORMAT_VERSION = 1

# A label as JSON carries it: LabelEncoder classes may be strings, integers, floats or booleans.
Label = bool | int | float | str


class FeatureStats(BaseModel):
    """Training-split statistics of one input feature."""

    name: str
    min: float
    max: float
    mean: float


class Reference(BaseModel):
    """A few test rows and the probabilities the trained Keras model gave them.

    The service runs them through the runtime it loads and refuses the version when the
    answers differ: a model that does not reproduce its own training is never served.
    """

    inputs: list[list[float]] = Field(min_length=1)
    probabilities: list[list[float]] = Field(min_length=1)
    tolerance: float = Field(1e-4, gt=0)

    @model_validator(mode="after")
    def _paired(self) -> Reference:
        if len(self.inputs) != len(self.probabilities):
            raise ValueError("reference inputs and probabilities differ in length")
        return self


class Metadata(BaseModel):
    """The schema of ``metadata.json``."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = FORMAT_VERSION
    name: str
    version: int | None = Field(None, description="set when the version is published")
    created_at: datetime
    features: list[FeatureStats] = Field(min_length=1)
    target: str
    classes: list[Label] = Field(min_length=2, description="in LabelEncoder order")
    task: Literal["binary", "multiclass"]
    encoding: Literal["sparse", "onehot"]
    output_units: int = Field(ge=1)
    metrics: dict[str, float] = {}
    litert_max_abs_diff: float | None = None
    model_sha256: dict[str, str] = Field(
        {},
        description="sha256 of model.keras and model.tflite: the metadata names the exact models "
        "it describes, so a model file swapped under a rewritten manifest is still refused",
    )
    reference: Reference | None = None
    library_versions: dict[str, str] = {}
    data_sha256: str
    training: dict[str, int | float | str | None] = {}

    @model_validator(mode="after")
    def _consistent(self) -> Metadata:
        if self.format_version != FORMAT_VERSION:
            raise ValueError(f"format_version {self.format_version} is not {FORMAT_VERSION}")
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ValueError("feature names repeat")
        if len({(type(c), c) for c in self.classes}) != len(self.classes):
            raise ValueError("classes repeat")
        expected_units = (
            1 if self.task == "binary" and self.encoding == "sparse" else len(self.classes)
        )
        if self.output_units != expected_units:
            raise ValueError(
                f"output_units {self.output_units} does not fit {len(self.classes)} classes"
            )
        return self

    @property
    def feature_names(self) -> list[str]:
        """Feature names in the order the model expects them."""
        return [f.name for f in self.features]


def write_metadata(directory: Path, metadata: Metadata) -> None:
    """Write ``metadata.json`` into a bundle directory."""
    (directory / METADATA).write_text(metadata.model_dump_json(indent=2) + "\n")


def read_metadata(directory: Path) -> Metadata:
    """Read and validate ``metadata.json``; raise :class:`BundleError` naming the fault."""
    path = directory / METADATA
    try:
        return Metadata.model_validate(json.loads(path.read_text()))
    except FileNotFoundError:
        raise BundleError(f"{METADATA} is missing") from None
    except OSError as exc:
        raise BundleError(f"{METADATA} cannot be read: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        detail = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else "not valid JSON"
        raise BundleError(f"{METADATA} is invalid: {detail}") from None
