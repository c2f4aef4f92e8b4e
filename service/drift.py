"""Feature drift of one model version: its last rows against its training distributions (PSI).

A :class:`DriftTracker` keeps the bins (``bundle.distributions``) of the last ``window`` rows the
version answered, in a ring; the population stability index of each feature is computed from
them when asked (``GET /models/{name}/drift``, and the ``model_feature_drift`` gauge after each
batch the monitor takes in). Rows are added by the monitor's thread, read by any.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np

from bundle import distributions
from bundle.distributions import MODERATE, SIGNIFICANT

# Fewer rows than this (or than the window) give no PSI: a handful of rows always looks drifted.
MIN_ROWS = 100


class DriftTracker:
    """The binned last ``window`` rows of one version, and their PSI per feature."""

    def __init__(self, features: list[str], reference: list[distributions.FeatureDistribution],
                 window: int) -> None:  # fmt: skip
        self.features = features
        self.edges = [d.edges for d in reference]
        self.expected = [d.expected() for d in reference]
        self.window = window
        self.bins = np.zeros((window, len(features)), dtype=np.int32)
        self.filled = 0
        self.next = 0
        self.seen = 0  # rows ever added
        self.lock = threading.Lock()

    def add(self, x: np.ndarray) -> None:
        """Take in rows of the model's matrix (only the last ``window`` of them count)."""
        seen = len(x)
        x = x[-self.window :]
        binned = np.stack(
            [distributions.bins(x[:, j], edges) for j, edges in enumerate(self.edges)], axis=1
        )
        with self.lock:
            self.seen += seen
            end = self.next + len(binned)
            if end <= self.window:
                self.bins[self.next : end] = binned
            else:  # wraps around
                split = self.window - self.next
                self.bins[self.next :] = binned[:split]
                self.bins[: end - self.window] = binned[split:]
            self.next = end % self.window
            self.filled = min(self.window, self.filled + len(binned))

    @property
    def enough(self) -> bool:
        return self.filled >= min(MIN_ROWS, self.window)

    def psi(self) -> list[float]:
        """Each feature's PSI over the window (NaN while it holds too few rows)."""
        with self.lock:
            rows = self.bins[: self.filled].copy()
        if not self.enough:
            return [math.nan] * len(self.features)
        return [
            distributions.psi(expected, np.bincount(rows[:, j], minlength=len(expected)))
            for j, expected in enumerate(self.expected)
        ]

    def report(self) -> dict[str, Any]:
        """What ``GET /models/{name}/drift`` answers for this version."""
        values = self.psi()
        features = {
            name: {
                "psi": None if math.isnan(value) else value,
                "drift": None if math.isnan(value) else _level(value),
            }
            for name, value in zip(self.features, values, strict=True)
        }
        return {
            "window": self.window,
            "rows": self.filled,
            "rows_seen": self.seen,
            "enough_rows": self.enough,
            "thresholds": {"moderate": MODERATE, "significant": SIGNIFICANT},
            "drifting": [n for n, f in features.items() if f["drift"] == "significant"],
            "features": features,
        }


def _level(value: float) -> str:
    if value > SIGNIFICANT:
        return "significant"
    return "moderate" if value > MODERATE else "none"
