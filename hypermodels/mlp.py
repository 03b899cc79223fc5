"""`MLPHyperModel`: a searchable multilayer perceptron for tabular features.

The model normalises its own inputs (with statistics of the training split passed
in, so nothing is adapted per trial), so whatever exports it serves raw features.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import keras
import keras_tuner
import numpy as np

from hypermodels.optimizers import OPTIMIZERS, build_optimizer
from hypermodels.schedules import SCHEDULES, build_schedule

__all__ = ["ACTIVATIONS", "DEFAULT_SPACE", "TASKS", "MLPHyperModel", "SearchSpace"]

#: Hidden-layer activations a search space may name (Keras activation names).
ACTIVATIONS = ("relu", "gelu", "selu", "elu", "tanh", "sigmoid", "swish", "leaky_relu")

#: Supervised tasks the model has a head for.
TASKS = ("binary", "multiclass", "regression")


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """The ranges and choices `MLPHyperModel` searches. Equal range ends fix a value."""

    num_layers: tuple[int, int] = (1, 3)
    units: tuple[int, ...] = (64, 128, 256, 512)
    activations: tuple[str, ...] = ("relu", "gelu", "tanh")
    dropout: tuple[float, float] = (0.0, 0.5)
    optimizers: tuple[str, ...] = OPTIMIZERS
    learning_rate: tuple[float, float] = (1e-4, 1e-2)
    schedules: tuple[str, ...] = SCHEDULES
    batch_sizes: tuple[int, ...] = (32, 64, 128)


#: The default search space; the pipeline's config starts from the same values.
DEFAULT_SPACE = SearchSpace()


def _int_range(hp: keras_tuner.HyperParameters, name: str, bounds: tuple[int, int]) -> int:
    low, high = bounds
    return hp.Fixed(name, low) if low == high else hp.Int(name, low, high)


def _float_range(
    hp: keras_tuner.HyperParameters, name: str, bounds: tuple[float, float], *, log: bool = False
) -> float:
    low, high = bounds
    if low == high:
        return hp.Fixed(name, float(low))
    return hp.Float(name, float(low), float(high), sampling="log" if log else "linear")


class MLPHyperModel(keras_tuner.HyperModel):
    """A Dense/Dropout stack whose depth, width, activation, dropout, optimizer,
    learning rate, schedule and batch size are hyperparameters.

    Works with any KerasTuner tuner:

    ```python
    hypermodel = MLPHyperModel.from_arrays(x_train, y_train, task="multiclass")
    tuner = keras_tuner.RandomSearch(hypermodel, objective="val_accuracy", max_trials=5)
    tuner.search(x_train, y_train, validation_data=(x_val, y_val), epochs=5)
    ```

    Hyperparameter names are stable: `num_layers`, `units`, `activation`, `dropout`,
    `optimizer` (with `sgd_momentum`, `adamw_weight_decay` when active),
    `learning_rate`, `lr_schedule`, `batch_size`.

    Args:
        task: ``binary``, ``multiclass`` or ``regression``.
        num_features: Width of the feature matrix.
        num_classes: Classes of a multiclass task.
        feature_mean: Per-feature mean of the training split, for the input
            normalisation; ``None`` means zeros.
        feature_variance: Per-feature variance of the training split; ``None``
            means ones.
        target_mean: Regression only: the output is rescaled to this mean, so the
            network learns a standardised target.
        target_std: Regression only: the output's scale.
        train_size: Training rows, to turn epochs into schedule steps.
        max_epochs: Epochs of the longest trial; schedules decay over them.
        num_layers, units, activations, dropout, optimizers, learning_rate,
        schedules, batch_sizes: The search space (see `DEFAULT_SPACE`); a range
            with equal ends is fixed.
    """

    def __init__(
        self,
        *,
        task: str,
        num_features: int,
        num_classes: int = 0,
        feature_mean: Sequence[float] | np.ndarray | None = None,
        feature_variance: Sequence[float] | np.ndarray | None = None,
        target_mean: float = 0.0,
        target_std: float = 1.0,
        train_size: int = 1000,
        max_epochs: int = 20,
        num_layers: tuple[int, int] = DEFAULT_SPACE.num_layers,
        units: Sequence[int] = DEFAULT_SPACE.units,
        activations: Sequence[str] = DEFAULT_SPACE.activations,
        dropout: tuple[float, float] = DEFAULT_SPACE.dropout,
        optimizers: Sequence[str] = DEFAULT_SPACE.optimizers,
        learning_rate: tuple[float, float] = DEFAULT_SPACE.learning_rate,
        schedules: Sequence[str] = DEFAULT_SPACE.schedules,
        batch_sizes: Sequence[int] = DEFAULT_SPACE.batch_sizes,
        name: str | None = None,
        tunable: bool = True,
    ) -> None:
        super().__init__(name=name, tunable=tunable)
        if task not in TASKS:
            raise ValueError(f"Argument `task` must be one of {TASKS}. Received: task={task!r}")
        if task == "multiclass" and num_classes < 2:
            raise ValueError(
                f"Argument `num_classes` must be >= 2 for a multiclass task. "
                f"Received: num_classes={num_classes}"
            )
        self.task = task
        self.num_features = int(num_features)
        self.num_classes = int(num_classes)
        zeros, ones = np.zeros(self.num_features), np.ones(self.num_features)
        self.feature_mean = np.asarray(zeros if feature_mean is None else feature_mean, "float32")
        self.feature_variance = np.asarray(
            ones if feature_variance is None else feature_variance, "float32"
        )
        self.target_mean = float(target_mean)
        self.target_std = float(target_std) or 1.0
        self.train_size = int(train_size)
        self.max_epochs = int(max_epochs)
        self.space = SearchSpace(
            num_layers=(int(num_layers[0]), int(num_layers[1])),
            units=tuple(units),
            activations=tuple(activations),
            dropout=(float(dropout[0]), float(dropout[1])),
            optimizers=tuple(optimizers),
            learning_rate=(float(learning_rate[0]), float(learning_rate[1])),
            schedules=tuple(schedules),
            batch_sizes=tuple(batch_sizes),
        )

    @classmethod
    def from_arrays(
        cls,
        x_train: np.ndarray,
        y_train: np.ndarray,
        *,
        task: str,
        max_epochs: int = 20,
        **space: Any,
    ) -> MLPHyperModel:
        """Builds a hypermodel whose normalisation and head fit these training arrays."""
        x_train = np.asarray(x_train, dtype="float32")
        y_train = np.asarray(y_train)
        return cls(
            task=task,
            num_features=x_train.shape[1],
            num_classes=int(y_train.max()) + 1 if task == "multiclass" else 0,
            feature_mean=x_train.mean(axis=0),
            feature_variance=x_train.var(axis=0),
            target_mean=float(y_train.mean()) if task == "regression" else 0.0,
            target_std=float(y_train.std()) if task == "regression" else 1.0,
            train_size=len(x_train),
            max_epochs=max_epochs,
            **space,
        )

    def steps_per_epoch(self, batch_size: int) -> int:
        """Optimizer steps in one epoch at this batch size."""
        return max(1, math.ceil(self.train_size / batch_size))

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        space = self.space
        inputs = keras.Input(shape=(self.num_features,), name="features")
        x = keras.layers.Normalization(
            mean=self.feature_mean, variance=self.feature_variance, name="normalize"
        )(inputs)

        num_layers = _int_range(hp, "num_layers", space.num_layers)
        units = hp.Choice("units", list(space.units))
        activation = hp.Choice("activation", list(space.activations))
        dropout = _float_range(hp, "dropout", space.dropout)
        for index in range(num_layers):
            x = keras.layers.Dense(units, activation=activation, name=f"dense_{index}")(x)
            if dropout > 0:
                x = keras.layers.Dropout(dropout, name=f"dropout_{index}")(x)
        outputs = self._head(x)
        model = keras.Model(inputs, outputs, name="mlp")

        batch_size = hp.Choice("batch_size", list(space.batch_sizes))
        learning_rate = _float_range(hp, "learning_rate", space.learning_rate, log=True)
        schedule = build_schedule(
            hp,
            learning_rate=learning_rate,
            decay_steps=self.steps_per_epoch(batch_size) * self.max_epochs,
            choices=space.schedules,
        )
        optimizer = build_optimizer(hp, learning_rate=schedule, choices=space.optimizers)
        model.compile(optimizer=optimizer, **self._loss_and_metrics())
        return model

    def fit(
        self, hp: keras_tuner.HyperParameters, model: keras.Model, *args: Any, **kwargs: Any
    ) -> Any:
        """Trains with the trial's `batch_size`."""
        return model.fit(*args, batch_size=hp.get("batch_size"), **kwargs)

    def _head(self, x: Any) -> Any:
        # The head stays float32 so a mixed-precision body still gives stable losses.
        if self.task == "binary":
            return keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="output")(x)
        if self.task == "multiclass":
            return keras.layers.Dense(
                self.num_classes, activation="softmax", dtype="float32", name="output"
            )(x)
        x = keras.layers.Dense(1, dtype="float32", name="output_standardised")(x)
        return keras.layers.Rescaling(
            scale=self.target_std, offset=self.target_mean, dtype="float32", name="output"
        )(x)

    def _loss_and_metrics(self) -> dict[str, Any]:
        if self.task == "binary":
            return {
                "loss": "binary_crossentropy",
                "metrics": [
                    keras.metrics.BinaryAccuracy(name="accuracy"),
                    keras.metrics.AUC(name="auc"),
                ],
            }
        if self.task == "multiclass":
            return {"loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"]}
        return {
            "loss": "mse",
            "metrics": [
                keras.metrics.MeanAbsoluteError(name="mae"),
                keras.metrics.RootMeanSquaredError(name="rmse"),
            ],
        }
