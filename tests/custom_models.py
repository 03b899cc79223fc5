"""A user's own HyperModel, plugged in by import path in the pipeline tests."""

from __future__ import annotations

from typing import Any

import keras
import keras_tuner

from hypermodels import MLPHyperModel
from hypermodels.features import build_preprocessing


class LinearHyperModel(keras_tuner.HyperModel):
    """A linear model whose only hyperparameter is the learning rate."""

    def __init__(self, *, schema: Any, task: str, num_classes: int = 0, **_: Any) -> None:
        super().__init__()
        self.schema, self.task, self.num_classes = schema, task, num_classes

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        inputs, features = build_preprocessing(self.schema)
        outputs = keras.layers.Dense(self.num_classes, activation="softmax")(features)
        model = keras.Model(inputs, outputs)
        rate = hp.Float("linear_learning_rate", 1e-3, 1e-1, sampling="log")
        model.compile(
            keras.optimizers.Adam(rate), "sparse_categorical_crossentropy", metrics=["accuracy"]
        )
        return model


class FlakyMLPHyperModel(MLPHyperModel):
    """The pipeline's MLP whose second trial fails before training, as a trial of a
    real search sometimes does."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fits = 0

    def fit(
        self, hp: keras_tuner.HyperParameters, model: keras.Model, *args: Any, **kwargs: Any
    ) -> Any:
        self.fits += 1
        if self.fits == 2:
            raise keras_tuner.errors.FailedTrialError("synthetic failure for the tests")
        return super().fit(hp, model, *args, **kwargs)
