"""Shapley values (service/explain.py) against a brute-force reference, on numpy models whose
answers are known: additivity, symmetry, a feature the model ignores, the sampled estimator's
error bound, and the background's summary."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from service.explain import Background, ColumnKind, Explainer, coalitions, summarise


def softmax_model(weights: np.ndarray, interaction: float = 0.0):
    """Class probabilities from a softmax over ``x @ weights`` plus an interaction of the first
    two features (so that the values are not the linear model's)."""

    def predict(x: np.ndarray) -> np.ndarray:
        x = np.nan_to_num(np.asarray(x, dtype=np.float64))
        logits = x @ weights
        logits[:, 0] += interaction * x[:, 0] * x[:, 1]
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)

    return predict


def brute_force(predict, row: np.ndarray, background: np.ndarray, weights: np.ndarray):
    """Shapley values by their definition: the average over every order of the features of each
    one's marginal contribution, a coalition's worth the weighted mean over the background."""
    n = len(row)

    def worth(members: frozenset[int]) -> np.ndarray:
        hybrid = background.copy()
        for j in members:
            hybrid[:, j] = row[j]
        return weights @ predict(hybrid).astype(np.float64)

    values = np.zeros((n, predict(row[None]).shape[1]))
    orders = list(itertools.permutations(range(n)))
    for order in orders:
        present: frozenset[int] = frozenset()
        before = worth(present)
        for j in order:
            present = present | {j}
            after = worth(present)
            values[j] += after - before
            before = after
    return values / len(orders), worth(frozenset())


def background_of(rng: np.random.Generator, rows: int, n: int) -> Background:
    x = rng.normal(size=(rows, n)).astype(np.float32)
    return Background(x, np.full(rows, 1 / rows), "test")


NUMERIC: list[ColumnKind] = ["numeric"] * 5


def test_exact_values_equal_the_definition() -> None:
    rng = np.random.default_rng(0)
    predict = softmax_model(rng.normal(size=(5, 3)), interaction=1.5)
    background = background_of(rng, 12, 5)
    explainer = Explainer(predict, background, NUMERIC, evaluations=2**5 * 12)
    assert explainer.exact and len(explainer.background.x) == 12  # all of it: nothing summarised
    x = rng.normal(size=(4, 5)).astype(np.float32)
    explanation = explainer.explain(x, predict(x))
    assert explanation.method == "exact" and explanation.error_bounds is None
    for i, row in enumerate(x):
        expected, base = brute_force(predict, row, background.x, background.weights)
        np.testing.assert_allclose(explanation.attributions[i], expected, atol=1e-6)
        np.testing.assert_allclose(explanation.base_values, base, atol=1e-7)


def test_attributions_add_up_to_the_probability() -> None:
    rng = np.random.default_rng(1)
    predict = softmax_model(rng.normal(size=(5, 4)) * 3, interaction=-2.0)
    explainer = Explainer(predict, background_of(rng, 30, 5), NUMERIC)
    x = rng.normal(size=(10, 5)).astype(np.float32) * 2
    p = predict(x)
    explanation = explainer.explain(x, p)
    total = explanation.attributions.sum(axis=1) + explanation.base_values
    np.testing.assert_allclose(total, p, atol=1e-9)


def test_identical_features_get_equal_values() -> None:
    """Symmetry: two features the model treats alike, equal in the row and in the background."""
    rng = np.random.default_rng(2)
    weights = rng.normal(size=(4, 3))
    weights[1] = weights[0]
    predict = softmax_model(weights)
    background = background_of(rng, 20, 4)
    background.x[:, 1] = background.x[:, 0]
    explainer = Explainer(predict, background, ["numeric"] * 4, evaluations=2**4 * 20)
    x = rng.normal(size=(5, 4)).astype(np.float32)
    x[:, 1] = x[:, 0]
    attributions = explainer.explain(x, predict(x)).attributions
    np.testing.assert_allclose(attributions[:, 0], attributions[:, 1], atol=1e-9)
    assert np.abs(attributions[:, 0]).max() > 1e-3  # and they do matter


def test_a_feature_the_model_ignores_gets_nothing() -> None:
    rng = np.random.default_rng(3)
    weights = rng.normal(size=(5, 3)) * 2
    weights[3] = 0.0  # feature 3 is noise to this model
    predict = softmax_model(weights, interaction=1.0)
    explainer = Explainer(predict, background_of(rng, 16, 5), NUMERIC)
    x = rng.normal(size=(8, 5)).astype(np.float32) * 3
    attributions = explainer.explain(x, predict(x)).attributions
    assert np.abs(attributions[:, 3]).max() < 1e-6
    assert np.abs(attributions).max() > 0.05


def test_sampled_values_are_within_their_error_bound_of_the_exact_ones() -> None:
    n = 12
    rng = np.random.default_rng(4)
    predict = softmax_model(rng.normal(size=(n, 3)), interaction=1.0)
    background = background_of(rng, 8, n)
    kinds: list[ColumnKind] = ["numeric"] * n
    exact = Explainer(predict, background, kinds, evaluations=2**n * 8)
    sampled = Explainer(predict, background, kinds, evaluations=2**n // 2)
    assert exact.exact and not sampled.exact
    x = rng.normal(size=(6, n)).astype(np.float32)
    p = predict(x)
    truth = exact.explain(x, p)
    estimate = sampled.explain(x, p)
    assert estimate.method == "sampled" and estimate.error_bounds is not None
    np.testing.assert_allclose(estimate.base_values, truth.base_values, atol=1e-9)
    np.testing.assert_allclose(
        estimate.attributions.sum(axis=1) + estimate.base_values, p, atol=1e-9
    )
    error = np.abs(estimate.attributions - truth.attributions).max(axis=1)  # [rows, classes]
    # The bound is 1.96 standard errors of the worst feature: the largest error of 12 features
    # may pass it now and then, never by a factor of 2.
    assert (error <= 2 * estimate.error_bounds).all(), (error, estimate.error_bounds)
    assert (error <= estimate.error_bounds).mean() >= 0.6
    assert estimate.error_bounds.max() < 0.1  # 2,048 model rows a row: a rough estimate


def test_the_same_row_gets_the_same_sampled_answer() -> None:
    rng = np.random.default_rng(5)
    predict = softmax_model(rng.normal(size=(14, 2)))
    explainer = Explainer(predict, background_of(rng, 4, 14), ["numeric"] * 14)
    assert not explainer.exact
    x = rng.normal(size=(2, 14)).astype(np.float32)
    first = explainer.explain(x, predict(x)).attributions
    again = explainer.explain(x[::-1], predict(x[::-1])).attributions[::-1]
    np.testing.assert_array_equal(first, again)


def test_the_budget_decides_the_background_rows() -> None:
    rng = np.random.default_rng(6)
    background = background_of(rng, 32, 5)
    predict = softmax_model(rng.normal(size=(5, 2)))
    for evaluations, rows in [(2**5 * 32, 32), (2**5 * 8, 8), (2**5, 1), (2**5 * 100, 32)]:
        explainer = Explainer(predict, background, NUMERIC, evaluations)
        assert len(explainer.background.x) == rows
        assert math.isclose(explainer.background.weights.sum(), 1.0)


def test_one_centre_is_the_mean_of_the_numbers() -> None:
    rng = np.random.default_rng(7)
    background = background_of(rng, 20, 5)
    centre = summarise(background, NUMERIC, 1)
    np.testing.assert_allclose(centre.x[0], background.x.mean(axis=0), atol=1e-6)


def test_summaries_keep_categories_and_blanks_as_values_the_model_knows() -> None:
    x = np.array(
        [[1.0, 2.0, 0.0], [1.5, 2.0, 1.0], [np.nan, 3.0, 1.0], [9.0, 1.0, 0.0], [np.nan, 1.0, 1.0]]
        * 4,
        dtype=np.float32,
    )
    background = Background(x, np.full(len(x), 1 / len(x)), "test")  # column 1: categories
    kinds: list[ColumnKind] = ["numeric", "categorical", "boolean"]
    for rows in (1, 2, 3):
        summary = summarise(background, kinds, rows)
        assert len(summary.x) <= rows
        assert set(summary.x[:, 1].tolist()) <= {1.0, 2.0, 3.0}  # a category, never a mean
        assert set(summary.x[:, 2].tolist()) <= {0.0, 1.0}
        numbers = summary.x[:, 0]
        assert np.all(np.isnan(numbers) | ((numbers >= 1.0) & (numbers <= 9.0)))
    blanks = Background(
        np.array([[np.nan], [np.nan], [4.0]], dtype=np.float32), np.full(3, 1 / 3), "test"
    )
    assert np.isnan(summarise(blanks, ["numeric"], 1).x[0, 0])  # most are blank: a blank


@pytest.mark.parametrize("n", [1, 3, 6])
def test_coalitions_are_every_subset_once(n: int) -> None:
    masks = coalitions(n)
    assert masks.shape == (2**n, n)
    assert len({tuple(m) for m in masks.tolist()}) == 2**n
    assert not masks[0].any() and masks[-1].all()
