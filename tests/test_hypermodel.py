from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import keras
import keras_tuner
import numpy as np
import pytest

from hypermodels import OPTIMIZERS, SCHEDULES, MLPHyperModel

OPTIMIZER_CLASSES = {
    "adam": keras.optimizers.Adam,
    "adamw": keras.optimizers.AdamW,
    "sgd": keras.optimizers.SGD,
    "rmsprop": keras.optimizers.RMSprop,
    "adagrad": keras.optimizers.Adagrad,
}


def _hypermodel(**space: Any) -> MLPHyperModel:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    return MLPHyperModel.from_arrays(x, y, task="binary", max_epochs=10, **space)


def test_every_optimizer_in_the_space_has_a_class() -> None:
    assert set(OPTIMIZER_CLASSES) == set(OPTIMIZERS)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_each_optimizer_reaches_the_compiled_model(name: str) -> None:
    hp = keras_tuner.HyperParameters()
    model = _hypermodel(
        optimizers=(name,), learning_rate=(0.02, 0.02), schedules=("constant",)
    ).build(hp)
    assert type(model.optimizer) is OPTIMIZER_CLASSES[name]
    assert float(model.optimizer.learning_rate) == pytest.approx(0.02)
    if name == "sgd":
        assert model.optimizer.momentum == hp.get("sgd_momentum")
    if name == "adamw":
        assert model.optimizer.weight_decay == pytest.approx(hp.get("adamw_weight_decay"))


def test_conditional_hyperparameters_are_inactive_for_other_optimizers() -> None:
    hp = keras_tuner.HyperParameters()
    _hypermodel(optimizers=("adam", "sgd")).build(hp)
    assert hp.get("optimizer") == "adam"
    assert not hp.is_active("sgd_momentum")


@pytest.mark.parametrize("name", SCHEDULES)
def test_each_schedule_gives_the_expected_rate_at_step_k(name: str) -> None:
    hypermodel = _hypermodel(schedules=(name,), learning_rate=(0.1, 0.1), batch_sizes=(10,))
    model = hypermodel.build(keras_tuner.HyperParameters())
    decay_steps = hypermodel.steps_per_epoch(10) * 10  # 100 rows / 10 per batch * 10 epochs
    assert decay_steps == 100
    schedule = model.optimizer._learning_rate
    k = 40
    expected = {
        "constant": 0.1,
        "cosine": 0.1 * 0.5 * (1 + math.cos(math.pi * k / decay_steps)),
        "exponential": 0.1 * 0.1 ** (k / decay_steps),
    }[name]
    rate = schedule if name == "constant" else float(schedule(k))
    assert float(rate) == pytest.approx(expected, rel=1e-5)


def test_architecture_follows_the_hyperparameters() -> None:
    hp = keras_tuner.HyperParameters()
    hp.Fixed("num_layers", 3)
    hp.Fixed("units", 16)
    hp.Fixed("activation", "tanh")
    hp.Fixed("dropout", 0.25)
    model = _hypermodel(
        num_layers=(1, 4), units=(8, 16), activations=("relu", "tanh"), dropout=(0.0, 0.5)
    ).build(hp)
    dense = [layer for layer in model.layers if layer.name.startswith("dense_")]
    dropout = [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert [layer.units for layer in dense] == [16, 16, 16]
    assert {layer.activation.__name__ for layer in dense} == {"tanh"}
    assert [layer.rate for layer in dropout] == [0.25, 0.25, 0.25]


def test_inputs_are_normalised_with_training_statistics() -> None:
    x = np.array([[0.0, 10.0], [2.0, 30.0]], dtype="float32")
    hypermodel = MLPHyperModel.from_arrays(x, np.array([0, 1]), task="binary")
    model = hypermodel.build(keras_tuner.HyperParameters())
    normalised = model.get_layer("normalize")(x)
    np.testing.assert_allclose(np.asarray(normalised), [[-1, -1], [1, 1]], atol=1e-3)


@pytest.mark.parametrize(
    ("task", "y", "loss", "units"),
    [
        ("binary", np.array([0, 1, 0, 1]), "binary_crossentropy", 1),
        ("multiclass", np.array([0, 1, 2, 1]), "sparse_categorical_crossentropy", 3),
        ("regression", np.array([10.0, 20.0, 30.0, 40.0]), "mse", 1),
    ],
)
def test_each_task_has_its_head_and_loss(task: str, y: np.ndarray, loss: str, units: int) -> None:
    x = np.arange(8, dtype="float32").reshape(4, 2)
    model = MLPHyperModel.from_arrays(x, y, task=task).build(keras_tuner.HyperParameters())
    assert model.loss == loss
    assert model.output_shape == (None, units)
    if task == "regression":
        assert model.get_layer("output").offset == pytest.approx(25.0)


def test_batch_size_reaches_fit() -> None:
    hypermodel = _hypermodel(batch_sizes=(25,))
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)
    x = np.zeros((100, 4), "float32")
    history = hypermodel.fit(hp, model, x, np.zeros(100), epochs=1, verbose=0)
    assert history.history["loss"]
    assert int(model.optimizer.iterations) == 4  # 100 rows / batch 25


def test_plain_kerastuner_tuner_accepts_the_hypermodel(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    hypermodel = MLPHyperModel.from_arrays(x, y, task="binary", units=(8,), num_layers=(1, 1))
    tuner = keras_tuner.RandomSearch(
        hypermodel, objective="val_accuracy", max_trials=2, directory=str(tmp_path), seed=1
    )
    tuner.search(x, y, validation_data=(x, y), epochs=1, verbose=0)
    trials = tuner.oracle.get_best_trials(2)
    assert len(trials) == 2
    assert all(t.status == "COMPLETED" for t in trials)
    assert tuner.get_best_models(1)[0].predict(x, verbose=0).shape == (60, 1)


def test_invalid_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="Received: task='ranking'"):
        MLPHyperModel(task="ranking", num_features=2)
    with pytest.raises(ValueError, match="num_classes=1"):
        MLPHyperModel(task="multiclass", num_features=2, num_classes=1)
