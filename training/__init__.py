"""Offline training: fit a Keras classifier on tabular data and publish a versioned bundle."""

from training.errors import TrainingError

__all__ = ["TrainingError"]
