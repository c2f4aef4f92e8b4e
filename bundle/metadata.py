"""``metadata.json``: what a bundle is, what it expects and how well it did."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bundle.columns import BOOLEAN_VOCABULARY, Kind
from bundle.distributions import FeatureDistribution
from bundle.errors import BundleError
from bundle.layout import METADATA
from bundle.manifest import read_bundle_file

# metadata.json is read whole. A trained one is a few KB (Iris 3.1 KB, a typed 7-feature table
# ~5 KB): feature statistics, vocabularies (at most 1,000 categories per feature) and a few
# reference rows. The limit leaves room for hundreds of wide categorical features and refuses
# a padded file before reading it.
MAX_METADATA_BYTES = 16 << 20

# 2: typed features (kinds, blanks, vocabularies), a dict-input model.keras with its core
# model inside, raw reference rows, a decision threshold for binary targets.
# 1: numeric features only, model.keras takes one float matrix. Still read and served.
FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)
# The layer of a format-2 model.keras that takes the encoded matrix (what model.tflite is).
CORE_LAYER = "core"

# A label as JSON carries it: LabelEncoder classes may be strings, integers, floats or booleans.
Label = bool | int | float | str


class FeatureStats(BaseModel):
    """One input feature: its kind and its training-split statistics.

    Numeric and boolean features have a range, a mean and the median a blank is imputed with
    (booleans as 0/1); categorical ones have a vocabulary instead (see :mod:`bundle.columns`).
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    kind: Kind = "numeric"
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    median: float | None = Field(None, description="what a blank is imputed with")
    nullable: bool = Field(False, description="training saw blanks; a blank is answered")
    missing: int = Field(0, ge=0, description="blank cells in the training split")
    vocabulary: list[str] | None = Field(
        None, description="categorical: known categories; index i+1 in the core, 0 unseen"
    )

    @model_validator(mode="after")
    def _fits_kind(self) -> FeatureStats:
        if self.kind == "categorical":
            if not self.vocabulary:
                raise ValueError(f"categorical feature {self.name!r} has no vocabulary")
            if len(set(self.vocabulary)) != len(self.vocabulary):
                raise ValueError(f"vocabulary of {self.name!r} repeats a category")
            return self
        if None in (self.min, self.max, self.mean):
            raise ValueError(f"{self.kind} feature {self.name!r} needs min, max and mean")
        if self.kind == "boolean" and self.vocabulary not in (None, BOOLEAN_VOCABULARY):
            raise ValueError(f"boolean feature {self.name!r} has vocabulary false, true")
        return self

    @property
    def fill(self) -> float:
        """The value a blank numeric or boolean cell is imputed with."""
        value = self.median if self.median is not None else self.mean
        assert value is not None
        return value


class Reference(BaseModel):
    """A few test rows and the probabilities the trained Keras model gave them.

    The service runs them through the runtime it loads and refuses the version when the
    answers differ: a model that does not reproduce its own training is never served.
    """

    inputs: list[list[bool | float | str | None]] = Field(
        min_length=1, description="raw values in feature order (format 1: numbers only)"
    )
    probabilities: list[list[float]] = Field(min_length=1)
    tolerance: float = Field(1e-4, gt=0)

    @model_validator(mode="after")
    def _paired(self) -> Reference:
        if len(self.inputs) != len(self.probabilities):
            raise ValueError("reference inputs and probabilities differ in length")
        return self


# Background rows training stores for explanations: tens of rows, as the Shapley explainers of
# shap's documentation advise; a file with more is refused (an explanation costs a model call
# per coalition and background row).
BACKGROUND_ROWS = 32
MAX_BACKGROUND_ROWS = 1000


class BackgroundSample(BaseModel):
    """Training rows, in raw values, that explanations complete a coalition's absent features
    from (the service summarises them to what its budget allows)."""

    model_config = ConfigDict(extra="forbid")

    inputs: list[list[bool | float | str | None]] = Field(
        min_length=1,
        max_length=MAX_BACKGROUND_ROWS,
        description="raw values in feature order, null for a blank",
    )
    source: str = Field(
        "stratified sample of the training split", description="how the rows were chosen"
    )


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
    distributions: list[FeatureDistribution] | None = Field(
        None,
        description="each feature's training distribution, in feature order, for drift; none in "
        "older bundles",
    )
    background: BackgroundSample | None = Field(
        None, description="rows explanations are computed against; none in older bundles"
    )
    threshold: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="binary: the probability of classes[1] at or above which it is the label",
    )
    columns_left_out: dict[str, str] = Field(
        {}, description="columns of the table not used as features, with the reason"
    )
    library_versions: dict[str, str] = {}
    data_sha256: str
    training: dict[str, int | float | str | None] = {}

    @model_validator(mode="after")
    def _consistent(self) -> Metadata:
        if self.format_version not in READABLE_FORMATS:
            readable = " or ".join(map(str, READABLE_FORMATS))
            raise ValueError(f"format_version {self.format_version} is not {readable}")
        if self.format_version == 1 and not self.all_numeric:
            raise ValueError("format 1 has numeric features without blanks only")
        if self.threshold is not None and self.task != "binary":
            raise ValueError("a threshold applies to binary targets only")
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ValueError("feature names repeat")
        if self.distributions is not None and len(self.distributions) != len(names):
            raise ValueError(f"distributions must have {len(names)} entries, one per feature")
        if self.background and any(len(r) != len(names) for r in self.background.inputs):
            raise ValueError(f"background rows must have {len(names)} values, one per feature")
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

    @property
    def all_numeric(self) -> bool:
        """Numeric features that had no blanks: a request is a plain matrix of numbers."""
        return all(f.kind == "numeric" and not f.nullable for f in self.features)


def write_metadata(directory: Path, metadata: Metadata) -> None:
    """Write ``metadata.json`` into a bundle directory; :class:`BundleError` when it would be
    over :data:`MAX_METADATA_BYTES` (the service would refuse it)."""
    content = (metadata.model_dump_json(indent=2) + "\n").encode()
    if len(content) > MAX_METADATA_BYTES:
        raise BundleError(
            f"{METADATA} would be {len(content)} bytes, over the {MAX_METADATA_BYTES}-byte limit"
        )
    (directory / METADATA).write_bytes(content)


def read_metadata(directory: Path) -> Metadata:
    """Read and validate ``metadata.json``; raise :class:`BundleError` naming the fault.

    A file over :data:`MAX_METADATA_BYTES`, a link or not a regular file is refused unread."""
    path = directory / METADATA
    try:
        return Metadata.model_validate(
            json.loads(read_bundle_file(path, MAX_METADATA_BYTES).decode())
        )
    except FileNotFoundError:
        raise BundleError(f"{METADATA} is missing") from None
    except OSError as exc:
        raise BundleError(f"{METADATA} cannot be read: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        detail = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else "not valid JSON"
        raise BundleError(f"{METADATA} is invalid: {detail}") from None
    except RecursionError:  # JSON nested thousands deep
        raise BundleError(f"{METADATA} is invalid: nested too deeply") from None
