"""The fused optimizers move the weights exactly as Keras's own optimizers do."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_hypermodel import OPTIMIZER_CLASSES as _KERAS

from hypermodels.fused_optimizers import (
    FUSED,
    FusedAdam,
    FusedAdamW,
    FusedNadam,
    FusedRMSprop,
    FusedSGD,
)
from kt_pipeline.strategy import make_strategy

# (name, constructor arguments): every optimizer option the search space can produce.
CASES = [
    ("adam", {}),
    ("adam", {"clipnorm": 0.5}),
    ("adamw", {"weight_decay": 0.05}),
    ("sgd", {}),
    ("sgd", {"momentum": 0.9}),
    ("sgd", {"momentum": 0.7, "nesterov": True, "global_clipnorm": 1.0}),
    ("rmsprop", {"rho": 0.85}),
    ("rmsprop", {"momentum": 0.5}),
    ("rmsprop", {"centered": True}),  # falls back to Keras's update
    ("adam", {"amsgrad": True}),  # falls back to Keras's update
    ("adagrad", {}),
    ("adagrad", {"initial_accumulator_value": 0.0, "epsilon": 1e-3}),
    ("nadam", {}),
    ("nadam", {"beta_1": 0.8, "global_clipnorm": 1.0}),
]


def _apply(optimizer: keras.optimizers.Optimizer) -> tuple[np.ndarray, np.ndarray]:
    """Applies a fixed sequence of gradients to two weights inside a `tf.function`, as
    a train step does; returns where the weights started and ended."""
    rng = np.random.default_rng(0)
    start = [rng.normal(size=(4, 3)).astype("float32"), rng.normal(size=3).astype("float32")]
    weights = [tf.Variable(w) for w in start]
    optimizer.build(weights)

    @tf.function
    def step(gradients: list[tf.Tensor]) -> None:
        optimizer.apply(gradients, weights)

    for scale in (1.0, 0.1, 3.0, 1e-3, 0.5, 2.0, 1.0, 1.0):
        step([tf.constant(scale * rng.normal(size=w.shape).astype("float32")) for w in start])
    return np.concatenate([w.ravel() for w in start]), np.concatenate(
        [w.numpy().ravel() for w in weights]
    )


def _fit(
    optimizer: keras.optimizers.Optimizer, *, embedding: bool = False, steps_per_execution: int = 4
) -> list[np.ndarray]:
    """Trains a tiny model for a few steps from fixed weights; returns the weights."""
    keras.utils.set_random_seed(7)
    rng = np.random.default_rng(0)
    if embedding:
        ids = keras.Input(shape=(1,), dtype="int64")
        hidden = keras.layers.Flatten()(keras.layers.Embedding(5, 3)(ids))
        inputs: Any = ids
        x: Any = rng.integers(0, 5, size=(64, 1))
    else:
        inputs = keras.Input(shape=(4,))
        hidden = keras.layers.Dense(8, activation="tanh")(inputs)
        x = rng.normal(size=(64, 4)).astype("float32")
    model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
    model.compile(optimizer=optimizer, loss="mse", steps_per_execution=steps_per_execution)
    y = rng.normal(size=(64, 1)).astype("float32")
    model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
    return [w.numpy() for w in model.weights]


def _assert_close_fits(expected: list[np.ndarray], actual: list[np.ndarray]) -> None:
    # 24 steps through a network compound the kernels' rounding; far below any
    # difference training could notice, far above float32 noise being mistaken.
    for want, got in zip(expected, actual, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


def _schedule() -> keras.optimizers.schedules.LearningRateSchedule:
    return keras.optimizers.schedules.CosineDecay(0.05, decay_steps=8)


@pytest.mark.parametrize(("name", "options"), CASES)
def test_a_fused_optimizer_makes_kerass_update(name: str, options: dict[str, Any]) -> None:
    start, expected = _apply(_KERAS[name](learning_rate=_schedule(), **options))
    _, actual = _apply(FUSED[name](learning_rate=_schedule(), **options))
    assert np.abs(expected - start).max() > 0.01  # the weights moved
    # The kernels compute 1 - beta in float32 where Keras rounds 1 - 0.999 from a
    # Python float: relative differences of about 1e-5 in Adam's step, none in SGD's.
    np.testing.assert_allclose(actual - start, expected - start, rtol=1e-4, atol=1e-7)


def _op_types(optimizer: keras.optimizers.Optimizer, variables: list[tf.Variable]) -> list[str]:
    optimizer.build(variables)

    @tf.function
    def step() -> None:
        optimizer.apply([tf.ones_like(v) for v in variables], variables)

    graph = step.get_concrete_function().graph
    types = [op.type for f in graph._functions.values() for op in f.graph.get_operations()]
    return types + [op.type for op in graph.get_operations()]


def test_the_step_runs_the_fused_kernel_not_kerass_ops() -> None:
    """One ResourceApplyAdam per weight, and none of Keras's own update arithmetic."""
    for optimizer, kernel in (
        (FusedAdam(0.1), "ResourceApplyAdam"),
        (FusedSGD(0.1, momentum=0.9), "ResourceApplyKerasMomentum"),
        (FusedRMSprop(0.1), "ResourceApplyRMSProp"),
    ):
        types = _op_types(optimizer, [tf.Variable(np.ones(3, "float32"))])
        assert types.count(kernel) == 1, optimizer
        assert "Sqrt" not in types, optimizer


@pytest.mark.parametrize(
    ("keras_class", "fused_class", "keras_pows", "fused_pows"),
    [
        # Keras's Nadam: one power for its schedule product, three more per weight.
        (keras.optimizers.Nadam, FusedNadam, 1 + 3 * 3, 1 + 3),
        # Keras's Adam: both bias corrections per weight.
        (keras.optimizers.Adam, FusedAdam, 2 * 3, 2),
        (keras.optimizers.AdamW, FusedAdamW, 2 * 3, 2),
    ],
)
def test_step_scalars_are_computed_once_not_per_weight(
    keras_class: type, fused_class: type, keras_pows: int, fused_pows: int
) -> None:
    variables = [tf.Variable(np.ones(3, "float32")) for _ in range(3)]
    assert _op_types(keras_class(0.1), variables).count("Pow") == keras_pows
    variables = [tf.Variable(np.ones(3, "float32")) for _ in range(3)]
    assert _op_types(fused_class(0.1), variables).count("Pow") == fused_pows


def test_sparse_gradients_take_kerass_update() -> None:
    """An embedding's gradient is an `IndexedSlices`, which the dense kernels reject."""
    _assert_close_fits(
        _fit(keras.optimizers.Adam(0.05), embedding=True), _fit(FusedAdam(0.05), embedding=True)
    )


def test_fused_optimizers_train_under_mirrored_strategy() -> None:
    """Under MirroredStrategy the kernels update each replica's copy of the weights."""
    # The process's one strategy over these devices (a second instance would share
    # its collective keys; see `make_strategy`).
    strategy = make_strategy("mirrored", devices=("/cpu:0", "/cpu:1"))
    results = []
    for make in (keras.optimizers.Adam, FusedAdam):
        with strategy.scope():
            # Keras's multi-step loop fails under MirroredStrategy in TF 2.21.
            results.append(_fit(make(0.05), steps_per_execution=1))
    _assert_close_fits(*results)


def test_a_fused_optimizer_round_trips_through_its_config() -> None:
    optimizer = FusedSGD(learning_rate=0.01, momentum=0.9, nesterov=True)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(restored) is FusedSGD
    assert restored.get_config() == optimizer.get_config()
