"""One test per knob: a chosen hyperparameter value reaches the compiled model."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import keras
import keras_tuner
import numpy as np
import pytest
from test_step_functions import count_traces

from hypermodels import ACTIVATIONS, OPTIMIZERS, SCHEDULES, Execution, MLPHyperModel, Target
from hypermodels.fused_optimizers import FUSED
from kt_pipeline.config import load_config

OPTIMIZER_CLASSES = {
    "adam": keras.optimizers.Adam,
    "adamw": keras.optimizers.AdamW,
    "sgd": keras.optimizers.SGD,
    "rmsprop": keras.optimizers.RMSprop,
    "adagrad": keras.optimizers.Adagrad,
    "nadam": keras.optimizers.Nadam,
}


def _hypermodel(**space: Any) -> MLPHyperModel:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    return MLPHyperModel.from_arrays(x, y, task="binary", max_epochs=10, **space)


def _build(hp: keras_tuner.HyperParameters | None = None, **space: Any) -> keras.Model:
    return _hypermodel(**space).build(hp or keras_tuner.HyperParameters())


def _fixed(**values: Any) -> keras_tuner.HyperParameters:
    hp = keras_tuner.HyperParameters()
    for name, value in values.items():
        hp.Fixed(name, value)
    return hp


def _dense(model: keras.Model) -> list[keras.layers.Dense]:
    return [layer for layer in model.layers if layer.name.startswith("dense_")]


def test_every_optimizer_in_the_space_has_a_class() -> None:
    assert set(OPTIMIZER_CLASSES) == set(OPTIMIZERS)


def test_an_optimizer_with_its_own_learning_rate_range_trains_within_it() -> None:
    space = {
        "optimizers": ("adam", "sgd", "adagrad"),
        "learning_rate": (1e-4, 1e-3),
        "optimizer_learning_rates": {"sgd": (0.02, 0.2), "adagrad": (0.05, 0.05)},
        "schedules": ("constant",),
    }
    hypermodel = _hypermodel(**space)
    # As a KerasTuner tuner does: build once to register the space, then set a parent's
    # value and `ensure_active_values` (which drops the value of a same-named
    # hyperparameter under another condition; these names are distinct).
    hp = keras_tuner.HyperParameters()
    hypermodel.build(hp)
    names = {h.name: [c.values for c in h.conditions] for h in hp.space}
    assert names["learning_rate"] == [["adam"]]
    assert names["sgd_learning_rate"] == [["sgd"]]
    assert names["adagrad_learning_rate"] == [["adagrad"]]
    seen = set()
    for seed in range(30):
        values = hp.copy()
        values.values["optimizer"] = space["optimizers"][seed % 3]
        values.ensure_active_values()
        model = hypermodel.build(values)
        name = values.get("optimizer")
        rate = float(model.optimizer.learning_rate)
        low, high = {"adam": (1e-4, 1e-3), **space["optimizer_learning_rates"]}[name]
        assert low * (1 - 1e-6) <= rate <= high * (1 + 1e-6), (name, rate)
        seen.add(name)
    assert seen == {"adam", "sgd", "adagrad"}


def test_without_per_optimizer_ranges_the_learning_rate_is_one_plain_hyperparameter() -> None:
    hp = keras_tuner.HyperParameters()
    _build(hp, optimizers=("adam", "sgd"), optimizer_learning_rates={})
    (rate,) = [h for h in hp.space if h.name.endswith("learning_rate")]
    assert rate.name == "learning_rate" and not rate.conditions


def test_by_default_every_optimizer_shares_the_learning_rate_range() -> None:
    hp = keras_tuner.HyperParameters()
    _build(hp)
    rates = {h.name: (h.min_value, h.max_value) for h in hp.space if "learning_rate" in h.name}
    assert rates == {"learning_rate": (1e-4, 1e-2)}


def test_a_learning_rate_set_alone_applies_to_every_optimizer() -> None:
    hypermodel = _hypermodel(learning_rate=(0.05, 0.05), optimizers=("sgd", "adagrad"))
    assert dict(hypermodel.space.optimizer_learning_rates) == {}
    rate = hypermodel.build(_fixed(optimizer="sgd", lr_schedule="constant")).optimizer.learning_rate
    assert float(rate) == pytest.approx(0.05)
    config = load_config(None, ["search.learning_rate=[0.01, 0.02]"])
    assert dict(config.search.optimizer_learning_rates) == {}
    both = ["search.learning_rate=[0.01, 0.02]", "search.optimizer_learning_rates={sgd=0.3}"]
    assert dict(load_config(None, both).search.optimizer_learning_rates) == {"sgd": (0.3, 0.3)}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_each_optimizer_and_its_own_settings_reach_the_model(name: str) -> None:
    hp = keras_tuner.HyperParameters()
    model = _build(hp, optimizers=(name,), learning_rate=(0.02, 0.02), schedules=("constant",))
    optimizer = model.optimizer
    assert type(optimizer) is FUSED.get(name, OPTIMIZER_CLASSES[name])
    assert isinstance(optimizer, OPTIMIZER_CLASSES[name])
    assert float(optimizer.learning_rate) == pytest.approx(0.02)
    if name == "sgd":
        assert optimizer.momentum == hp.get("sgd_momentum")
        assert optimizer.nesterov == hp.get("sgd_nesterov")
    if name == "adamw":
        assert optimizer.weight_decay == pytest.approx(hp.get("adamw_weight_decay"))
    if name == "rmsprop":
        assert optimizer.rho == pytest.approx(hp.get("rmsprop_rho"))


def test_fused_optimizers_can_be_turned_off() -> None:
    hypermodel = _hypermodel(optimizers=("adam",))
    hypermodel.execution = Execution(fused_optimizers=False)
    assert type(hypermodel.build(keras_tuner.HyperParameters()).optimizer) is keras.optimizers.Adam


def test_conditional_hyperparameters_are_inactive_for_other_optimizers() -> None:
    hp = keras_tuner.HyperParameters()
    _build(hp, optimizers=("adam", "sgd", "rmsprop"))
    assert hp.get("optimizer") == "adam"
    for name in ("sgd_momentum", "sgd_nesterov", "rmsprop_rho"):
        assert not hp.is_active(name)


def _expected_rate(name: str, k: int, *, lr: float, steps: int, warmup: int) -> float:
    if name in ("constant", "reduce_on_plateau"):
        return lr
    if name == "step":
        return lr * (1 if k < steps // 2 else 0.1 if k < int(steps * 0.75) else 0.01)
    if name == "exponential":
        return lr * 0.1 ** (k / steps)
    if name == "cosine":
        return lr * 0.5 * (1 + math.cos(math.pi * k / steps))
    if name == "flat_cosine":  # the rate for half the steps, then cosine over the rest
        flat = steps // 2
        return lr if k < flat else lr * 0.5 * (1 + math.cos(math.pi * (k - flat) / flat))
    if k < warmup:  # cosine_warmup: linear from 0 to lr, then cosine over the rest
        return lr * k / warmup
    return lr * 0.5 * (1 + math.cos(math.pi * (k - warmup) / (steps - warmup)))


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("k", [0, 5, 40, 60, 80, 99])
def test_each_schedule_gives_the_expected_rate_at_step_k(name: str, k: int) -> None:
    hp = _fixed(warmup_fraction=0.1) if name == "cosine_warmup" else None
    hypermodel = _hypermodel(schedules=(name,), learning_rate=(0.1, 0.1), batch_sizes=(10,))
    model = hypermodel.build(hp or keras_tuner.HyperParameters())
    steps = hypermodel.steps_per_epoch(10) * 10  # 100 rows / batch 10, 10 epochs
    assert steps == 100
    model.optimizer.iterations.assign(k)
    rate = float(model.optimizer.learning_rate)
    expected = _expected_rate(name, k, lr=0.1, steps=steps, warmup=10)
    assert rate == pytest.approx(expected, rel=1e-4, abs=1e-7)


def test_a_short_hyperband_round_follows_the_schedule_of_a_full_trial() -> None:
    """A Hyperband round of 3 epochs follows the 10-epoch schedule of a full trial, so
    it stops partway down it instead of decaying to 0 over its own 3."""
    hypermodel = _hypermodel(schedules=("cosine",), learning_rate=(0.1, 0.1), batch_sizes=(10,))
    hp = _fixed(**{"tuner/epochs": 3, "tuner/initial_epoch": 0})
    model = hypermodel.build(hp)
    steps = hypermodel.steps_per_epoch(10) * 10
    for k, fraction in ((0, 1.0), (steps // 2, 0.5), (steps, 0.0)):
        model.optimizer.iterations.assign(k)
        assert float(model.optimizer.learning_rate) == pytest.approx(0.1 * fraction, abs=1e-6)


def test_reduce_on_plateau_lowers_the_rate_when_validation_stalls() -> None:
    hypermodel = _hypermodel(
        schedules=("reduce_on_plateau",),
        learning_rate=(1e-6, 1e-6),
        batch_sizes=(50,),
        optimizers=("adam",),
        early_stopping_patience=(0, 0),
    )
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)
    x, y = np.zeros((100, 4), "float32"), np.ones(100)
    # At this rate the validation loss moves by far less than the callback's min_delta.
    hypermodel.fit(hp, model, x, y, epochs=6, validation_data=(x, y), verbose=0)
    assert float(model.optimizer.learning_rate) < 1e-6 * 0.6


@pytest.mark.parametrize("mode", ["norm", "global_norm"])
def test_gradient_clipping_reaches_the_optimizer(mode: str) -> None:
    model = _build(_fixed(clip_norm=2.5), gradient_clipping=(mode,), clip_norm=(1.0, 4.0))
    assert model.optimizer.clipnorm == (2.5 if mode == "norm" else None)
    assert model.optimizer.global_clipnorm == (2.5 if mode == "global_norm" else None)


def test_clipping_off_leaves_the_optimizer_unclipped() -> None:
    hp = keras_tuner.HyperParameters()
    model = _build(hp, gradient_clipping=("none",))
    assert model.optimizer.clipnorm is None and model.optimizer.global_clipnorm is None
    assert "clip_norm" not in hp.values or not hp.is_active("clip_norm")


@pytest.mark.parametrize("batch_norm", [False, True])
def test_batch_normalisation_follows_its_switch(batch_norm: bool) -> None:
    model = _build(num_layers=(2, 2), batch_norm=(batch_norm,))
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == (2 if batch_norm else 0)
    assert all(layer.use_bias is not batch_norm for layer in _dense(model))


@pytest.mark.parametrize("initializer", ["he_normal", "lecun_normal", "glorot_uniform"])
def test_kernel_initializer_reaches_the_layers(initializer: str) -> None:
    model = _build(kernel_initializers=(initializer,))
    expected = type(keras.initializers.get(initializer))
    assert all(isinstance(layer.kernel_initializer, expected) for layer in _dense(model))


def test_weight_penalties_reach_the_layers() -> None:
    model = _build(l1=(1e-4, 1e-4), l2=(3e-3, 3e-3))
    for layer in _dense(model):
        assert layer.kernel_regularizer.l1 == pytest.approx(1e-4)
        assert layer.kernel_regularizer.l2 == pytest.approx(3e-3)


def test_a_penalty_range_from_zero_can_be_off_or_log_scaled() -> None:
    off = _build(_fixed(use_l2=False), l1=(0.0, 0.0), l2=(0.0, 1e-2))
    assert all(layer.kernel_regularizer is None for layer in _dense(off))
    hp = _fixed(use_l2=True)
    on = _build(hp, l1=(0.0, 0.0), l2=(0.0, 1e-2))
    assert 1e-6 <= hp.get("l2") <= 1e-2
    assert _dense(on)[0].kernel_regularizer.l2 == pytest.approx(hp.get("l2"))


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_each_activation_reaches_the_layers(activation: str) -> None:
    model = _build(activations=(activation,), num_layers=(2, 2))
    layers = [layer for layer in model.layers if layer.name.startswith("activation_")]
    assert len(layers) == 2
    expected = keras.activations.get(activation)
    assert all(layer.activation is expected for layer in layers)


def test_shared_units_dropout_and_depth() -> None:
    hp = _fixed(num_layers=3, units=16, dropout=0.25)
    model = _build(hp, num_layers=(1, 4), units=(8, 16), dropout=(0.0, 0.5))
    dropout = [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert [layer.units for layer in _dense(model)] == [16, 16, 16]
    assert [layer.rate for layer in dropout] == [0.25, 0.25, 0.25]


def test_per_layer_units_are_conditional_on_depth() -> None:
    hp = _fixed(num_layers=2, units_0=8, units_1=32)
    model = _build(hp, num_layers=(1, 3), units=(8, 16, 32), per_layer_units=True)
    assert [layer.units for layer in _dense(model)] == [8, 32]
    assert hp.is_active("units_1")
    assert not hp.is_active("units_2")


def test_inputs_are_normalised_with_training_statistics() -> None:
    x = np.array([[0.0, 10.0], [2.0, 30.0]], dtype="float32")
    model = MLPHyperModel.from_arrays(x, np.array([0, 1]), task="binary").build(
        keras_tuner.HyperParameters()
    )
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


@pytest.mark.parametrize("loss", ["mae", "huber"])
def test_regression_loss_is_configurable(loss: str) -> None:
    x = np.arange(8, dtype="float32").reshape(4, 2)
    model = MLPHyperModel.from_arrays(
        x, np.arange(4.0), task="regression", regression_loss=loss
    ).build(keras_tuner.HyperParameters())
    assert model.loss == loss


def test_batch_size_and_early_stopping_reach_fit() -> None:
    hypermodel = _hypermodel(batch_sizes=(25,), early_stopping_patience=(1, 1))
    hypermodel.objective = keras_tuner.Objective("val_accuracy", "max")
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)
    x, y = np.zeros((100, 4), "float32"), np.zeros(100)
    history = hypermodel.fit(hp, model, x, y, epochs=20, validation_data=(x, y), verbose=0)
    # All-zero inputs keep the accuracy where it starts; patience 1 stops after epoch 2.
    assert len(history.epoch) == 2
    assert int(model.optimizer.iterations) == 4 * len(history.epoch)  # 100 rows / batch 25


def test_a_trial_traces_its_train_step_once() -> None:
    """`fit` prepares the step functions (`hypermodels.step_functions`)."""
    hypermodel = _hypermodel(batch_sizes=(25,))
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)
    traces = count_traces(model)
    x, y = np.zeros((100, 4), "float32"), np.zeros(100)
    hypermodel.fit(hp, model, x, y, epochs=3, validation_data=(x, y), verbose=0)
    assert len(traces) == 1
    assert int(model.optimizer.iterations) == 3 * 4


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
    schema = _hypermodel().schema
    with pytest.raises(ValueError, match="Received: task='ranking'"):
        MLPHyperModel(schema=schema, task="ranking")
    with pytest.raises(ValueError, match="num_classes=1"):
        MLPHyperModel(schema=schema, task="multiclass", target=Target(num_classes=1))


def test_fit_from_a_later_epoch_continues_the_schedule_there() -> None:
    """Even when no optimizer state comes back (a parent checkpoint from an earlier
    epoch than the one the round starts at), the schedule starts at the round's step."""
    hypermodel = _hypermodel(
        schedules=("cosine",),
        learning_rate=(0.1, 0.1),
        batch_sizes=(25,),
        early_stopping_patience=(0, 0),
    )
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)
    rates: list[float] = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_begin=lambda batch, logs: rates.append(float(model.optimizer.learning_rate))
    )
    x, y = np.zeros((100, 4), "float32"), np.zeros(100)
    hypermodel.fit(hp, model, x, y, epochs=4, initial_epoch=3, callbacks=[record], verbose=0)
    k, total = 3 * 4, 4 * 10  # epoch 3 at 4 steps per epoch; 10 epochs in the schedule
    assert rates[0] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * k / total)), rel=1e-5)
    assert int(model.optimizer.iterations) == 4 * 4


def test_starting_values_are_the_recommended_configuration() -> None:
    hypermodel = _hypermodel()
    hp = keras_tuner.HyperParameters()
    hypermodel.build(hp)
    values = hypermodel.starting_values(hp)
    assert values == {
        "num_layers": 2,
        "units": 256,
        "activation": "relu",
        "dropout": 0.1,
        "batch_norm": False,
        "kernel_initializer": "glorot_uniform",
        "l1": 0.0,
        "use_l2": False,
        "batch_size": 32,
        "learning_rate": pytest.approx(1e-3),  # the log-scale middle of 1e-4 to 1e-2
        "lr_schedule": "cosine",
        "optimizer": "adam",
        "gradient_clipping": "none",
        "early_stopping_patience": 5,
        "numeric_embedding": "none",  # the plain MLP: standardised, not embedded
        "numeric_scaling": "standardize",
    }
    model = hypermodel.build(_fixed(**values))
    assert [layer.units for layer in _dense(model)] == [256, 256]


def test_starting_values_stay_within_a_narrower_space() -> None:
    hypermodel = _hypermodel(
        num_layers=(3, 4),
        units=(8, 16),
        per_layer_units=True,
        activations=("tanh", "gelu"),
        dropout=(0.2, 0.5),
        optimizers=("sgd", "adam"),
        optimizer_learning_rates={"adam": (1e-3, 1e-1)},
    )
    hp = keras_tuner.HyperParameters()
    hypermodel.build(hp)
    values = hypermodel.starting_values(hp)
    # Out-of-range preferences move to the nearest bound or the space's default.
    assert values["num_layers"] == 3
    assert [values[f"units_{i}"] for i in range(3)] == [8, 8, 8]
    assert "units_3" not in values  # inactive at three layers
    assert values["activation"] == "tanh"
    assert values["dropout"] == 0.2
    assert values["optimizer"] == "adam"
    assert values["adam_learning_rate"] == pytest.approx(1e-2)
    assert "learning_rate" not in values and "sgd_momentum" not in values  # sgd's only


def test_a_residual_stack_adds_each_layers_input_where_the_widths_match() -> None:
    hp = _fixed(num_layers=3, units_0=16, units_1=16, units_2=8, dropout=0.0)
    model = _build(hp, residual=(True,), per_layer_units=True, units=(8, 16), num_layers=(3, 3))
    skips = [layer.name for layer in model.layers if layer.name.startswith("residual_")]
    assert skips == ["residual_1"]  # 16 -> 16 adds; the first layer and 16 -> 8 cannot
    dense_1 = model.get_layer("dense_1")
    activation_1 = model.get_layer("activation_1")
    probe = keras.Model(
        model.inputs, [dense_1.input, activation_1.output, model.get_layer("residual_1").output]
    )
    block_input, block, added = probe.predict(np.zeros((2, 4), "float32") + 1.0, verbose=0)
    np.testing.assert_allclose(added, block_input + block, rtol=1e-5, atol=1e-6)


def test_residual_is_declared_only_where_it_is_searched() -> None:
    plain = keras_tuner.HyperParameters()
    _hypermodel().declare(plain)
    assert "residual" not in plain.values and not any(
        layer.name.startswith("residual_") for layer in _build(units=(16,)).layers
    )
    searched = keras_tuner.HyperParameters()
    _hypermodel(residual=(False, True)).declare(searched)
    assert searched.values["residual"] is False  # a Boolean, False first


def test_residual_is_a_checked_setting_and_old_experiments_compare_without_it() -> None:
    from kt_pipeline.config import load_config
    from kt_pipeline.errors import UserInputError
    from kt_pipeline.resume import search_differences

    assert load_config(None, ["search.residual=[false, true]"]).search.residual == (False, True)
    with pytest.raises(UserInputError, match=r"`search.residual` must be true or false"):
        load_config(None, ["search.residual=[1]"])
    with pytest.raises(
        UserInputError, match=r"`search.residual` must be a non-empty list of true/false"
    ):
        load_config(None, ["search.residual=[]"])
    saved = {"search": {"units": [8]}}  # saved before the option existed
    assert search_differences(saved, {"search": {"units": [8], "residual": [False]}}) == []
    assert search_differences(saved, {"search": {"units": [8], "residual": [False, True]}}) == [
        "search.residual [False] -> [False, True]"
    ]
