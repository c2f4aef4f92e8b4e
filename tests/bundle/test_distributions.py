"""Training distributions and the population stability index (bundle/distributions.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from bundle import distributions
from bundle.distributions import FeatureDistribution


def test_deciles_split_numbers_into_ten_even_bins() -> None:
    values = np.random.default_rng(0).normal(size=10_000).astype(np.float32)
    fitted = distributions.fit("numeric", values)
    assert len(fitted.edges) == 9 and len(fitted.shares) == 10 and fitted.blank == 0
    assert all(abs(s - 0.1) < 0.002 for s in fitted.shares)


def test_blanks_and_repeated_values() -> None:
    values = np.array([1, 1, 1, 1, 2, 2, 3, np.nan, np.nan, np.nan], dtype=np.float32)
    fitted = distributions.fit("numeric", values)
    assert fitted.blank == pytest.approx(0.3)
    assert fitted.edges == sorted(set(fitted.edges))  # repeated deciles merged
    assert sum(fitted.shares) + fitted.blank == pytest.approx(1)


def test_categories_and_booleans_are_one_bin_per_value() -> None:
    codes = np.array([0, 1, 1, 2, 3, 3, 3, 3], dtype=np.float32)  # 0: unseen
    fitted = distributions.fit("categorical", codes, vocabulary_size=3)
    assert fitted.shares == pytest.approx([1 / 8, 2 / 8, 1 / 8, 4 / 8])
    flags = np.array([0, 1, 1, np.nan], dtype=np.float32)
    boolean = distributions.fit("boolean", flags)
    assert boolean.shares == pytest.approx([0.25, 0.5]) and boolean.blank == pytest.approx(0.25)


def test_psi_is_zero_for_the_same_distribution_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(1)
    fitted = distributions.fit("numeric", rng.normal(size=5000).astype(np.float32))
    expected = fitted.expected()

    def psi_of(values: np.ndarray) -> float:
        binned = distributions.bins(values, fitted.edges)
        return distributions.psi(expected, np.bincount(binned, minlength=len(expected)))

    same = psi_of(rng.normal(size=5000).astype(np.float32))
    shifted = psi_of(rng.normal(loc=1.0, size=5000).astype(np.float32))
    blanks = psi_of(np.full(100, np.nan, dtype=np.float32))
    assert same < 0.02
    assert shifted > distributions.SIGNIFICANT
    assert blanks > 1  # every row blank, none in training
    assert math.isnan(distributions.psi(expected, np.zeros(len(expected))))


def test_a_distribution_that_does_not_add_up_is_refused() -> None:
    with pytest.raises(ValidationError):
        FeatureDistribution(edges=[1.0], shares=[0.5, 0.4])
    with pytest.raises(ValidationError):
        FeatureDistribution(edges=[2.0, 1.0], shares=[0.3, 0.3, 0.4])
    with pytest.raises(ValidationError):
        FeatureDistribution(edges=[1.0], shares=[1.0])
