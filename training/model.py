"""Build and fit the Keras classifier."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    import keras

Encoding = Literal["sparse", "onehot"]


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


def build(x_train: np.ndarray, head: Head, hidden: tuple[int, ...] = (32, 16)) -> keras.Model:
    """A small MLP whose first layer normalizes raw features with training-split statistics."""
    import keras

    inputs = keras.Input(shape=(x_train.shape[1],), name="features")
    normalize = keras.layers.Normalization(name="normalize")
    normalize.adapt(x_train)
    x = normalize(inputs)
    for i, units in enumerate(hidden):
        x = keras.layers.Dense(units, activation="relu", name=f"hidden_{i}")(x)
    outputs = keras.layers.Dense(head.units, activation=head.activation, name="probabilities")(x)
    model = keras.Model(inputs, outputs, name="classifier")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=0.01), loss=head.loss, metrics=["accuracy"]
    )
    return model


def fit(
    model: keras.Model,
    train: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray],
    epochs: int,
    quiet: bool,
) -> int:
    """Fit with early stopping on validation loss; return the number of epochs run."""
    import keras

    stop = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=20, restore_best_weights=True, min_delta=1e-4
    )
    batch_size = int(min(32, max(8, len(train[0]) // 8)))
    history = model.fit(
        train[0],
        train[1],
        validation_data=validation,
        epochs=epochs,
        batch_size=batch_size,
        callbacks=[stop],
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
