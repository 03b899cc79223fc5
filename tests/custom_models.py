"""A user's own HyperModel, plugged in by import path in the pipeline tests."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import keras
import keras_tuner

from hypermodels import MLPHyperModel, Target
from hypermodels.features import build_preprocessing


class LinearHyperModel(keras_tuner.HyperModel):
    """A linear model whose only hyperparameter is the learning rate."""

    def __init__(self, *, schema: Any, task: str, target: Target | None = None, **_: Any) -> None:
        super().__init__()
        self.schema, self.task = schema, task
        self.num_classes = target.num_classes if target else 0

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        inputs, features = build_preprocessing(self.schema)
        outputs = keras.layers.Dense(self.num_classes, activation="softmax")(features)
        model = keras.Model(inputs, outputs)
        rate = hp.Float("linear_learning_rate", 1e-3, 1e-1, sampling="log")
        model.compile(
            keras.optimizers.Adam(rate), "sparse_categorical_crossentropy", metrics=["accuracy"]
        )
        return model


class StallingHyperModel(MLPHyperModel):
    """An MLP whose first trial to start training, among all processes started with
    ``KT_TEST_STALL_FILE`` set, never ends: it writes the process id, the worker id and
    the trial's hyperparameters to that file, then blocks until the process is killed.
    Used to kill a parallel-search worker in the middle of a trial."""

    def fit(
        self, hp: keras_tuner.HyperParameters, model: keras.Model, *args: Any, **kw: Any
    ) -> Any:
        stall_file = os.environ.get("KT_TEST_STALL_FILE")
        if stall_file:
            try:
                with open(stall_file + ".claim", "x"):  # only one process wins
                    pass
            except FileExistsError:
                return super().fit(hp, model, *args, **kw)
            record = {
                "pid": os.getpid(),
                "worker": os.environ.get("KERASTUNER_TUNER_ID"),
                "hyperparameters": hp.values,
            }
            # Written whole, then renamed: the reader never sees a partial file.
            Path(stall_file + ".tmp").write_text(json.dumps(record), encoding="utf-8")
            os.replace(stall_file + ".tmp", stall_file)
            threading.Event().wait()  # until SIGKILL
        return super().fit(hp, model, *args, **kw)


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


class FailingHyperModel(LinearHyperModel):
    """A model whose every fit raises, as a broken data pipeline would."""

    def fit(self, hp: keras_tuner.HyperParameters, model: keras.Model, *a: Any, **k: Any) -> Any:
        raise RuntimeError("the input pipeline broke")
