"""Build and fit the Keras classifier.

Two models share one set of weights:

- the *core* takes the encoded matrix (``bundle.columns``: one float32 column per feature, NaN
  for a blank number, a vocabulary index for a category). It imputes blanks with the training
  medians, adds a missing-indicator per nullable feature, normalizes numbers (and adds their
  piecewise-linear encoding over training quantile bins), one-hot encodes (or embeds)
  categories and runs the network. It is what training fits and what
  ``model.tflite`` holds.
- the *full* model, saved as ``model.keras``, takes raw values, one input per feature (floats
  with NaN, strings), looks categories up with ``StringLookup`` and calls the core, so any
  Keras user can call it on a dict of columns. Only built-in layers and ``keras.ops``: it loads
  in safe mode without this package.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

import bundle

if TYPE_CHECKING:
    import keras

Encoding = Literal["sparse", "onehot"]

# Up to this many vocabulary entries (plus the unseen bucket) a category is one-hot encoded;
# above it, embedded in EMBEDDING_DIM(n) dimensions.
ONE_HOT_MAX = 64
# Tuned with bench/quality.py (bench/QUALITY.md) against gradient boosting on six public tables.
HIDDEN = (128, 64)
DROPOUT = 0.2  # after each hidden layer
LEARNING_RATE = 1e-3  # Adam
# Epochs without a better validation loss before the learning rate is halved (0: never).
LR_PATIENCE = 5
LR_FACTOR = 0.5
# Epochs without a better validation loss before training stops (the best weights are kept).
PATIENCE = 20
MAX_BATCH = 256
BATCH_DIVISOR = 40  # batch_size(rows): about rows / BATCH_DIVISOR, a power of two
# Numeric features also enter piecewise-linearly encoded over up to this many quantile bins of
# the training split (Gorishniy et al., 2022, "On Embeddings for Numerical Features in Tabular
# Deep Learning"): a threshold on one feature is then one weight away. 0: off.
NUMERIC_BINS = 16
# StringLookup's own out-of-vocabulary token must never be a user's category.
OOV_TOKEN = "\x00unseen"


def embedding_dim(size: int) -> int:
    """Embedding width for a vocabulary of ``size`` (fast.ai's rule of thumb, capped)."""
    return int(min(32, round(1.6 * size**0.56)))


@dataclass(frozen=True)
class Head:
    """The output layer and loss that fit the number of classes and the label encoding."""

    units: int
    activation: str
    loss: str

    @classmethod
    def choose(cls, n_classes: int, encoding: Encoding) -> Head:
        if n_classes == 2 and encoding == "sparse":
            return cls(1, "sigmoid", "binary_crossentropy")
        if encoding == "onehot":
            return cls(n_classes, "softmax", "categorical_crossentropy")
        return cls(n_classes, "softmax", "sparse_categorical_crossentropy")

    def targets(self, y: np.ndarray, n_classes: int) -> np.ndarray:
        """Encoded integer labels in the form this head's loss expects."""
        if self.loss == "categorical_crossentropy":
            return np.eye(n_classes, dtype=np.float32)[y]
        if self.loss == "binary_crossentropy":
            return y.astype(np.float32).reshape(-1, 1)
        return y.astype(np.int32)


def _normalization_stats(x_train: np.ndarray, fill: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    filled = np.where(np.isnan(x_train), fill, x_train).astype(np.float64)
    mean, variance = filled.mean(axis=0), filled.var(axis=0)
    variance[variance < 1e-12] = 1.0  # a constant column stays as it is, centred
    return mean, variance


def bin_edges(values: np.ndarray, bins: int) -> np.ndarray:
    """Distinct quantile edges of a feature's (imputed) training values; fewer than 3: none.

    Edges closer than 1e-4 of the range are merged: a bin that narrow would magnify float32
    rounding, and LiteRT must answer within 1e-5 of Keras."""
    quantiles = np.quantile(values.astype(np.float64), np.linspace(0.0, 1.0, bins + 1))
    gap = 1e-4 * (quantiles[-1] - quantiles[0])
    edges = [quantiles[0]]
    for edge in quantiles[1:]:
        if edge - edges[-1] > gap:
            edges.append(edge)
    return np.asarray(edges) if len(edges) >= 3 else np.empty(0)


def _piecewise_linear(x_train: np.ndarray, bins: int) -> tuple[list[int], np.ndarray, np.ndarray]:
    """For every bin of every column of ``x_train``: its column, left edge and 1 / width."""
    columns: list[int] = []
    lefts: list[float] = []
    scales: list[float] = []
    for k in range(x_train.shape[1]):
        edges = bin_edges(x_train[:, k], bins)
        for left, right in itertools.pairwise(edges):
            columns.append(k)
            lefts.append(left)
            scales.append(1.0 / (right - left))
    return columns, np.array([lefts], np.float32), np.array([scales], np.float32)


def build_core(
    specs: list[bundle.FeatureStats],
    x_train: np.ndarray,
    head: Head,
    hidden: tuple[int, ...] | None = None,
    learning_rate: float | None = None,
    dropout: float | None = None,
) -> keras.Model:
    """The network on the encoded matrix, with imputation and normalization inside."""
    import keras
    from keras import ops

    hidden = HIDDEN if hidden is None else hidden
    learning_rate = LEARNING_RATE if learning_rate is None else learning_rate
    dropout = DROPOUT if dropout is None else dropout
    inputs = keras.Input(shape=(len(specs),), name="features")
    parts = []
    dense = [j for j, s in enumerate(specs) if s.kind != "categorical"]
    if dense:
        numbers = inputs if len(dense) == len(specs) else ops.take(inputs, dense, axis=1)
        fill = np.array([[specs[j].fill for j in dense]], dtype=np.float32)
        missing = ops.isnan(numbers)
        filled = ops.where(missing, fill, numbers)
        mean, variance = _normalization_stats(x_train[:, dense], fill)
        normalize = keras.layers.Normalization(mean=mean, variance=variance, name="normalize")
        parts.append(normalize(filled))
        numeric = [k for k, j in enumerate(dense) if specs[j].kind == "numeric"]
        if NUMERIC_BINS and numeric:
            x_filled = np.where(np.isnan(x_train[:, dense]), fill, x_train[:, dense])
            columns, lefts, scales = _piecewise_linear(x_filled[:, numeric], NUMERIC_BINS)
            if columns:
                binned = ops.take(filled, [numeric[c] for c in columns], axis=1)
                parts.append(ops.clip((binned - lefts) * scales, 0.0, 1.0))
        nullable = [k for k, j in enumerate(dense) if specs[j].nullable]
        if nullable:
            parts.append(ops.cast(ops.take(missing, nullable, axis=1), "float32"))
    for j, spec in enumerate(specs):
        if spec.kind != "categorical":
            continue
        assert spec.vocabulary is not None
        size = len(spec.vocabulary) + 1
        index = ops.cast(inputs[:, j], "int32")
        if size <= ONE_HOT_MAX:
            parts.append(ops.one_hot(index, size))
        else:
            embed = keras.layers.Embedding(size, embedding_dim(size), name=f"embed_{j}")
            parts.append(embed(index))
    x = keras.layers.Concatenate(axis=1, name="encoded")(parts) if len(parts) > 1 else parts[0]
    for i, units in enumerate(hidden):
        x = keras.layers.Dense(units, activation="relu", name=f"hidden_{i}")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"dropout_{i}")(x)
    outputs = keras.layers.Dense(head.units, activation=head.activation, name="probabilities")(x)
    core = keras.Model(inputs, outputs, name=bundle.CORE_LAYER)
    core.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate), loss=head.loss)
    return core


def input_name(feature: str, taken: set[str]) -> str:
    """A Keras input name for a feature: the feature's own name where Keras allows it."""
    name = feature.replace("/", "_")
    while name in taken:
        name += "_"
    taken.add(name)
    return name


def wrap(specs: list[bundle.FeatureStats], core: keras.Model) -> keras.Model:
    """The full model: one raw input per feature, categories looked up, then the core."""
    import keras
    from keras import ops

    inputs = {}
    columns = []
    taken: set[str] = set()
    for j, spec in enumerate(specs):
        name = input_name(spec.name, taken)
        if spec.kind == "categorical":
            raw = keras.Input(shape=(1,), name=name, dtype="string")
            lookup = keras.layers.StringLookup(
                vocabulary=spec.vocabulary,
                num_oov_indices=1,
                oov_token=OOV_TOKEN,
                name=f"lookup_{j}",
            )
            columns.append(ops.cast(lookup(raw), "float32"))
        else:
            raw = keras.Input(shape=(1,), name=name, dtype="float32")
            columns.append(raw)
        inputs[spec.name] = raw
    encoded = (
        keras.layers.Concatenate(axis=1, name="raw_encoded")(columns)
        if len(columns) > 1
        else columns[0]
    )
    return keras.Model(inputs, core(encoded), name="classifier")


def sample_weights(y: np.ndarray, n_classes: int, mode: str) -> np.ndarray | None:
    """Per-row weights: ``balanced`` gives every class the same total weight."""
    if mode != "balanced":
        return None
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    weights = len(y) / (n_classes * np.maximum(counts, 1))
    return weights[y].astype(np.float32)


def batch_size(rows: int) -> int:
    """Small batches for small tables; larger ones keep a big table's epochs short."""
    return int(min(MAX_BATCH, max(8, 2 ** round(np.log2(max(rows, 1) / BATCH_DIVISOR)))))


def fit(
    model: keras.Model,
    train: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray],
    epochs: int,
    quiet: bool,
    weights: np.ndarray | None = None,
    validation_weights: np.ndarray | None = None,
) -> int:
    """Fit with early stopping on validation loss; return the number of epochs run."""
    import keras

    stop = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=PATIENCE, restore_best_weights=True, min_delta=1e-4
    )
    callbacks: list[keras.callbacks.Callback] = [stop]
    if LR_PATIENCE:
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss", factor=LR_FACTOR, patience=LR_PATIENCE, min_delta=1e-4
            )
        )
    val = validation if validation_weights is None else (*validation, validation_weights)
    history = model.fit(
        train[0],
        train[1],
        sample_weight=weights,
        validation_data=val,
        epochs=epochs,
        batch_size=batch_size(len(train[0])),
        callbacks=callbacks,
        verbose=0 if quiet else 2,
        shuffle=True,
    )
    return len(history.history["loss"])


def class_probabilities(raw: np.ndarray) -> np.ndarray:
    """Model output as one probability per class ([N, 1] sigmoid becomes [N, 2])."""
    raw = np.asarray(raw, dtype=np.float32)
    if raw.shape[1] == 1:
        return np.concatenate([1.0 - raw, raw], axis=1)
    return raw
