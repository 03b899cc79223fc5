"""A user's own HyperModel, plugged in by import path in the pipeline tests."""

from __future__ import annotations

from typing import Any

import keras
import keras_tuner

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


class FailingHyperModel(LinearHyperModel):
    """A model whose every fit raises, as a broken data pipeline would."""

    def fit(self, hp: keras_tuner.HyperParameters, model: keras.Model, *a: Any, **k: Any) -> Any:
        raise RuntimeError("the input pipeline broke")
