"""Shapley values of a model's class probabilities, per feature, against a background sample.

The game: a coalition S of features takes the explained row's values, the others a background
row's; its worth is the probability averaged over the background (interventional Shapley
values, as ``shap``'s exact and permutation explainers define them). Each column of the model's
matrix is one feature, a categorical one included, so a feature is one player.

- **Exact** when ``2**features`` coalitions fit the budget of model rows per explained row
  (``EXPLAIN_EVALUATIONS``): every coalition against the background, summarised by weighted
  k-means to as many rows as the budget leaves (all of them for a few features, one centre
  for 13 at the default budget), in one runtime call. ``sum(attributions) + base_value`` is the
  probability to float precision.
- **Sampled** above that: antithetic permutations (each with its reverse), each pair against
  one background row, the rows taken in turn so that each starts as many (a stratified sample;
  with the whole background, not a summary, the estimate is unbiased). The attributions still
  add up exactly, and the answer carries a 95 % bound on their error: 1.96 standard errors of
  the stratified mean, the largest over features.

Nothing here knows HTTP or a bundle: the model is a function from a float32 matrix to
probabilities.
"""

from __future__ import annotations

import functools
import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

Predict = Callable[[np.ndarray], np.ndarray]
# What a column is, for summarising the background: numbers are averaged, categories and
# booleans take the cluster's most common value.
ColumnKind = Literal["numeric", "categorical", "boolean"]

DEFAULT_EVALUATIONS = 8192
# Lloyd iterations when summarising the background: a few dozen rows converge in a handful.
KMEANS_ITERATIONS = 20
Z_95 = 1.959963984540054


@dataclass(frozen=True)
class Background:
    """Rows the absent features take their values from, with a weight each (summing to 1)."""

    x: np.ndarray  # [rows, features] float32, the model's encoding (NaN for a blank number)
    weights: np.ndarray  # [rows] float64
    source: str  # where the rows come from, for the answer: "training sample", "training means"


@dataclass(frozen=True)
class Explanation:
    """Attributions of every class for each explained row."""

    attributions: np.ndarray  # [rows, features, classes]
    base_values: np.ndarray  # [classes]: the background's mean probabilities
    method: Literal["exact", "sampled"]
    background_rows: int  # rows the coalitions were completed from
    error_bounds: np.ndarray | None  # [rows, classes], sampled only


class Explainer:
    """Explains one model's rows; built once per loaded version, used from any thread."""

    def __init__(
        self,
        predict: Predict,
        background: Background,
        kinds: list[ColumnKind],
        evaluations: int = DEFAULT_EVALUATIONS,
    ) -> None:
        self.predict = predict
        self.n_features = background.x.shape[1]
        self.source = background.source
        self.evaluations = evaluations
        self.exact = 2**self.n_features <= evaluations
        if self.exact:
            rows = max(1, evaluations // 2**self.n_features)
            self.background = summarise(background, kinds, rows)
        else:  # sampled: the rows as they are (equally weighted, as training stores them)
            self.background = background
        self.base_values = self._weighted(self.predict(self.background.x))

    def _weighted(self, probabilities: np.ndarray) -> np.ndarray:
        return self.background.weights @ probabilities.astype(np.float64)

    def explain(self, x: np.ndarray, probabilities: np.ndarray) -> Explanation:
        """Attributions of every class for each row of ``x`` (the model's ``probabilities`` for
        them, as answered: the full coalition's worth, so that the attributions add up to them
        exactly)."""
        rows = []
        bounds = []
        for row, answered in zip(x, probabilities.astype(np.float64), strict=True):
            if self.exact:
                rows.append(self._exact(row, answered))
            else:
                values, bound = self._sampled(row, answered)
                rows.append(values)
                bounds.append(bound)
        return Explanation(
            attributions=np.stack(rows),
            base_values=self.base_values,
            method="exact" if self.exact else "sampled",
            background_rows=len(self.background.x),
            error_bounds=np.stack(bounds) if bounds else None,
        )

    def _exact(self, row: np.ndarray, answered: np.ndarray) -> np.ndarray:
        """Every coalition's worth, in one runtime call; Shapley values by their formula."""
        masks = coalitions(self.n_features)  # [2**F, F], coalition i = the bits of i
        background = self.background.x
        hybrid = np.where(masks[:, None, :], row[None, None, :], background[None, :, :])
        probabilities = self.predict(hybrid.reshape(-1, self.n_features))
        worth = np.einsum(
            "b,sbc->sc",
            self.background.weights,
            probabilities.reshape(len(masks), len(background), -1).astype(np.float64),
        )
        worth[-1] = answered  # every feature present: the row itself, as it was answered
        worth[0] = self.base_values
        return shapley_matrix(self.n_features) @ worth  # [F, classes]

    def _sampled(self, row: np.ndarray, answered: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Antithetic permutation sampling, each pair of walks against one background row, the
        rows taken in turn (a stratified sample: every row starts as many walks)."""
        n = self.n_features
        strata = len(self.background.x)
        # At least two pairs per background row, for the variance within each.
        pairs = max(2, self.evaluations // (2 * (n + 1)) // strata) * strata
        # The same row gets the same answer: the permutations are seeded by its values.
        rng = np.random.default_rng(zlib.crc32(row.tobytes()))
        orders = rng.permuted(np.tile(np.arange(n), (pairs, 1)), axis=1)
        orders = np.concatenate([orders, orders[:, ::-1]])  # each with its reverse
        starts = self.background.x[np.arange(2 * pairs) % strata]  # a pair shares its row
        # Walk each order from its background row to the explained one, a feature at a time:
        # point k has the order's first k features from the row.
        ranks = np.empty_like(orders)
        np.put_along_axis(ranks, orders, np.arange(n)[None, :], axis=1)
        steps = np.arange(n + 1)[None, :, None] > ranks[:, None, :]  # [walks, n+1, n]
        points = np.where(steps, row[None, None, :], starts[:, None, :])
        probabilities = self.predict(points.reshape(-1, n)).astype(np.float64)
        probabilities = probabilities.reshape(len(orders), n + 1, -1)
        gains = np.diff(probabilities, axis=1)  # [walks, n, classes]: the order's k-th feature's
        by_feature = np.take_along_axis(gains, ranks[:, :, None], axis=1)  # [walks, F, classes]
        pair_means = (by_feature[:pairs] + by_feature[pairs:]) / 2
        values = pair_means.mean(axis=0)
        # Each walk's gains add up to the row's probabilities minus its start's, and every
        # background row starts as many walks: the values add up to the answer minus the base
        # values but for float rounding, spread here over the features.
        values += (answered - self.base_values - values.sum(axis=0)) / n
        # The standard error of a stratified mean: the variance within each background row's
        # pairs, averaged over the rows, over the number of pairs.
        by_stratum = pair_means.reshape(pairs // strata, strata, n, -1)
        error = np.sqrt(by_stratum.var(axis=0, ddof=1).mean(axis=0) / pairs)
        return values, Z_95 * error.max(axis=0)


@functools.lru_cache(maxsize=32)
def coalitions(n: int) -> np.ndarray:
    """Every subset of ``n`` features as a boolean mask, subset i being the bits of i."""
    return ((np.arange(2**n)[:, None] >> np.arange(n)[None, :]) & 1).astype(bool)


@functools.lru_cache(maxsize=32)
def shapley_matrix(n: int) -> np.ndarray:
    """The [n, 2**n] matrix that turns coalitions' worths into Shapley values:
    phi_j = sum over S without j of |S|! (n-|S|-1)! / n! * (v(S + j) - v(S))."""
    masks = coalitions(n)
    sizes = masks.sum(axis=1)
    weight = np.array(
        [math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n) for s in range(n)]
    )
    matrix = np.zeros((n, 2**n))
    for j in range(n):
        without = np.flatnonzero(~masks[:, j])
        matrix[j, without | (1 << j)] += weight[sizes[without]]
        matrix[j, without] -= weight[sizes[without]]
    return matrix


def summarise(background: Background, kinds: list[ColumnKind], rows: int) -> Background:
    """At most ``rows`` weighted rows standing for the background: weighted k-means over the
    standardised numbers and one-hot categories, each centre the mean of its members' numbers
    and the most common value of their categories and booleans (blanks stay blanks when most
    members are blank). The background itself when it is small enough."""
    x, weights = background.x, background.weights
    if len(x) <= rows:
        return background
    points = _clustering_space(x, kinds)
    centres = points[np.linspace(0, len(x) - 1, rows).round().astype(int)]
    for _ in range(KMEANS_ITERATIONS):
        distances = ((points[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
        members = distances.argmin(axis=1)
        moved = np.array(
            [
                np.average(points[members == k], axis=0, weights=weights[members == k])
                if (members == k).any()
                else centres[k]
                for k in range(rows)
            ]
        )
        if np.allclose(moved, centres):
            break
        centres = moved
    used = [k for k in range(rows) if (members == k).any()]
    summary = np.empty((len(used), x.shape[1]), dtype=np.float32)
    for i, k in enumerate(used):
        group, w = x[members == k], weights[members == k]
        for j, kind in enumerate(kinds):
            summary[i, j] = _centre_value(group[:, j], w, kind)
    totals = np.array([weights[members == k].sum() for k in used])
    return Background(summary, totals / totals.sum(), background.source)


def _clustering_space(x: np.ndarray, kinds: list[ColumnKind]) -> np.ndarray:
    """Numbers standardised (a blank at the mean), categories one-hot, for k-means."""
    parts = []
    for j, kind in enumerate(kinds):
        column = x[:, j].astype(np.float64)
        if kind == "categorical":
            values = np.unique(column)
            parts.append((column[:, None] == values[None, :]) / math.sqrt(2))
            continue
        blank = np.isnan(column)
        filled = np.where(blank, np.nanmean(column) if not blank.all() else 0.0, column)
        scale = filled.std() or 1.0
        parts.append(((filled - filled.mean()) / scale)[:, None])
    return np.concatenate(parts, axis=1)


def _centre_value(values: np.ndarray, weights: np.ndarray, kind: ColumnKind) -> float:
    blank = np.isnan(values)
    if weights[blank].sum() > weights[~blank].sum():
        return math.nan
    values, weights = values[~blank], weights[~blank]
    if kind == "numeric":
        return float(np.average(values, weights=weights))
    distinct, inverse = np.unique(values, return_inverse=True)
    return float(distinct[np.bincount(inverse, weights=weights).argmax()])
