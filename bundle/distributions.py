"""Training distributions of the features, and the population stability index (PSI) against them.

Training stores, per feature, how its training-split values fall into bins; the service bins the
rows it answers the same way and compares. One rule for every kind, on the matrix the core takes
(``bundle.columns``): a value's bin is the number of edges at or below it, and a blank (NaN) has
a bin of its own after the others.

- numeric: the edges are the deciles of the training values (fewer where values repeat);
- boolean: one edge, 0.5 (false, true);
- categorical: an edge between each two category indices, so that each index (0: unseen, then
  the vocabulary) is a bin.

PSI = sum over bins of (actual - expected) * ln(actual / expected), shares floored at
``FLOOR`` so that an empty bin counts without dividing by zero. Read as: below 0.1 no shift,
0.1 to 0.2 a moderate one, above 0.2 a significant one (the usual rule of thumb).
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from bundle.columns import Kind

DECILES = [q / 10 for q in range(1, 10)]
FLOOR = 1e-4
MODERATE, SIGNIFICANT = 0.1, 0.2


class FeatureDistribution(BaseModel):
    """One feature's training distribution over its bins (and blanks)."""

    model_config = ConfigDict(extra="forbid")

    edges: list[float] = Field(description="ascending; a value's bin is the edges at or below it")
    shares: list[float] = Field(description="share of training rows in each bin: len(edges) + 1")
    blank: float = Field(0.0, ge=0, le=1, description="share of blank training rows")

    @model_validator(mode="after")
    def _fits(self) -> FeatureDistribution:
        if len(self.shares) != len(self.edges) + 1:
            raise ValueError("a distribution has one share more than it has edges")
        if any(b <= a for a, b in zip(self.edges, self.edges[1:], strict=False)):
            raise ValueError("distribution edges must ascend")
        if any(s < 0 for s in self.shares) or not math.isclose(
            sum(self.shares) + self.blank, 1.0, abs_tol=1e-6
        ):
            raise ValueError("distribution shares must be positive and sum to 1")
        return self

    def expected(self) -> np.ndarray:
        """The shares of every bin, blank last."""
        return np.array([*self.shares, self.blank])


def edges_for(kind: Kind, values: np.ndarray, vocabulary_size: int = 0) -> list[float]:
    """The bin edges of a feature of ``kind`` from its training values (NaN for blanks)."""
    if kind == "categorical":
        return [index + 0.5 for index in range(vocabulary_size)]
    if kind == "boolean":
        return [0.5]
    present = values[~np.isnan(values)]
    if not len(present):
        return []
    return np.unique(np.quantile(present.astype(np.float64), DECILES)).tolist()


def bins(column: np.ndarray, edges: list[float]) -> np.ndarray:
    """Each value's bin: the number of edges at or below it; a blank's is ``len(edges) + 1``."""
    index = np.searchsorted(np.asarray(edges, dtype=np.float64), column, side="right")
    index[np.isnan(column)] = len(edges) + 1
    return index


def fit(kind: Kind, values: np.ndarray, vocabulary_size: int = 0) -> FeatureDistribution:
    """A feature's training distribution from its training values (the core's encoding)."""
    edges = edges_for(kind, values, vocabulary_size)
    if not len(values):
        return FeatureDistribution(edges=edges, shares=[1.0] + [0.0] * len(edges))
    shares = (np.bincount(bins(values, edges), minlength=len(edges) + 2) / len(values)).tolist()
    blank = shares.pop()
    return FeatureDistribution(edges=edges, shares=shares, blank=blank)


def psi(expected: np.ndarray, counts: np.ndarray) -> float:
    """The population stability index of bin ``counts`` against ``expected`` shares."""
    total = counts.sum()
    if total == 0:
        return math.nan
    actual = np.maximum(counts / total, FLOOR)
    expected = np.maximum(expected, FLOOR)
    return float(np.sum((actual - expected) * np.log(actual / expected)))
