from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import keras
import keras_tuner
import numpy as np
import pytest
import tensorflow as tf

from hypermodels import MLPHyperModel
from kt_pipeline.errors import UserInputError
from kt_pipeline.strategy import make_strategy
from kt_pipeline.tuners import build_tuner


def test_two_logical_cpus_are_configured() -> None:
    assert len(tf.config.list_logical_devices("CPU")) == 2


def test_default_and_auto_without_gpus_are_the_default_strategy() -> None:
    assert make_strategy("default") is tf.distribute.get_strategy()
    assert make_strategy("auto").num_replicas_in_sync == 1


def test_mirrored_without_gpus_mirrors_over_the_logical_cpus() -> None:
    strategy = make_strategy("mirrored")
    assert isinstance(strategy, tf.distribute.MirroredStrategy)
    assert strategy.num_replicas_in_sync == 2


def test_named_devices_are_checked() -> None:
    assert make_strategy("mirrored", devices=["/cpu:1"]).num_replicas_in_sync == 1
    assert isinstance(
        make_strategy("one_device", devices=["CPU:1"]), tf.distribute.OneDeviceStrategy
    )
    with pytest.raises(UserInputError, match="names a device that does not exist: '/gpu:3'"):
        make_strategy("mirrored", devices=["/gpu:3"])
    with pytest.raises(UserInputError, match="Received: 'tpu'"):
        make_strategy("tpu")


class _RecordVariables(keras.callbacks.Callback):
    """Records, during training, how the model's variables are placed."""

    seen: ClassVar[list[dict[str, Any]]] = []

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        if batch == 0:
            variable = self.model.trainable_variables[0].value
            _RecordVariables.seen.append(
                {
                    "replicas": self.model.distribute_strategy.num_replicas_in_sync,
                    "mirrored": isinstance(variable, tf.distribute.DistributedValues),
                    "copies": len(getattr(variable, "values", [variable])),
                }
            )


def test_a_real_trial_runs_with_mirrored_variables(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    hypermodel = MLPHyperModel.from_arrays(
        x, y, task="binary", units=(8,), num_layers=(1, 1), batch_sizes=(16,)
    )
    tuner = build_tuner(
        hypermodel,
        algorithm="random",
        objective=keras_tuner.Objective("val_accuracy", "max"),
        directory=str(tmp_path),
        max_trials=1,
        distribution_strategy=make_strategy("mirrored"),
    )
    _RecordVariables.seen.clear()
    tuner.search(x, y, validation_data=(x, y), epochs=1, verbose=0, callbacks=[_RecordVariables()])
    assert tuner.oracle.get_best_trials(1)[0].status == "COMPLETED"
    assert _RecordVariables.seen == [{"replicas": 2, "mirrored": True, "copies": 2}]


def _fixed_mlp(x: np.ndarray, y: np.ndarray, *, per_replica_batch: bool, batch: int) -> Any:
    """An MLP with every hyperparameter fixed and nothing replica-dependent (no batch
    norm, no dropout), with a schedule that depends on the step count."""
    hypermodel = MLPHyperModel.from_arrays(
        x,
        y,
        task="binary",
        max_epochs=3,
        num_layers=(1, 1),
        units=(16,),
        activations=("relu",),
        dropout=(0.0, 0.0),
        batch_norm=(False,),
        kernel_initializers=("glorot_uniform",),
        l2=(0.0, 0.0),
        optimizers=("adam",),
        learning_rate=(0.02, 0.02),
        schedules=("cosine",),
        batch_sizes=(batch,),
        gradient_clipping=("none",),
        early_stopping_patience=(0, 0),
    )
    hypermodel.per_replica_batch = per_replica_batch
    return hypermodel


def _train(strategy: tf.distribute.Strategy, *, per_replica_batch: bool, batch: int) -> Any:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 4)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0).astype("int32")
    hypermodel = _fixed_mlp(x, y, per_replica_batch=per_replica_batch, batch=batch)
    hp = keras_tuner.HyperParameters()
    keras.backend.clear_session()  # as KerasTuner does before each trial
    keras.utils.set_random_seed(7)
    with strategy.scope():
        model = hypermodel.build(hp)
    history = hypermodel.fit(
        hp, model, x, y, validation_data=(x, y), epochs=3, shuffle=False, verbose=0
    )
    decay_steps = model.optimizer._learning_rate.decay_steps
    return history.history, decay_steps, int(model.optimizer.iterations.numpy())


#: Mirrored training sums the two replicas' gradients in a different order than one
#: device does, so metrics agree to float32 round-off, not bit for bit.
_TOLERANCE = 1e-5


def test_mirrored_trial_matches_one_device_at_the_same_global_batch() -> None:
    one, one_decay, one_steps = _train(
        tf.distribute.get_strategy(), per_replica_batch=False, batch=16
    )
    assert one["loss"][-1] < one["loss"][0]  # it did learn something
    # The same global batch of 16, as a global batch and as 2 replicas x 8 rows:
    # 6 steps per epoch, and the schedule decays over the same 3 epochs.
    for per_replica_batch, batch in ((False, 16), (True, 8)):
        two, two_decay, two_steps = _train(
            make_strategy("mirrored"), per_replica_batch=per_replica_batch, batch=batch
        )
        assert one_steps == two_steps == 18
        assert one_decay == two_decay == 18
        for name in ("loss", "accuracy", "auc", "val_loss", "val_accuracy", "val_auc"):
            np.testing.assert_allclose(
                two[name], one[name], atol=_TOLERANCE, err_msg=f"{name}, batch {batch}"
            )
