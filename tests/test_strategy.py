from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import keras
import keras_tuner
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from conftest import make_frame, tiny_search_args

from hypermodels import Execution, MLPHyperModel, fit_schema
from hypermodels.features import build_preprocessing, model_inputs
from kt_pipeline.errors import UserInputError
from kt_pipeline.launcher import free_loopback_address
from kt_pipeline.strategy import configure_devices, make_strategy
from kt_pipeline.tuners import TunerSettings, TunerSpec, build_tuner


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
        TunerSpec(
            objective=keras_tuner.Objective("val_accuracy", "max"),
            directory=str(tmp_path),
            settings=TunerSettings(algorithm="random", max_trials=1),
        ),
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
    hypermodel.execution = Execution(per_replica_batch=per_replica_batch)
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


@pytest.mark.slow
def test_a_multi_worker_trial_runs_across_two_local_processes(tmp_path: Path) -> None:
    """Two `kt-pipeline search` processes form a `TF_CONFIG` cluster on 127.0.0.1 and
    train one trial together; only task 0 (the chief) writes the experiment."""
    data = tmp_path / "data.csv"
    make_frame(120).to_csv(data, index=False)
    experiment = tmp_path / "experiment"
    cluster = [free_loopback_address(), free_loopback_address()]
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": cluster}, "task": {"type": "worker", "index": index}}
        processes.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "kt_pipeline",
                    *tiny_search_args(experiment, data),
                    "--max-trials",
                    "1",
                    "--set",
                    "runtime.strategy='multi_worker_mirrored'",
                ],
                env={**os.environ, "TF_CONFIG": json.dumps(tf_config), "TF_CPP_MIN_LOG_LEVEL": "2"},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    try:
        outputs = [process.communicate(timeout=240)[0] for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output[-3000:]
    summary = json.loads((experiment / "summary.json").read_text())
    assert summary["completed_trials"] == 1
    assert (experiment / "export" / "1" / "saved_model.pb").is_file()
    assert (experiment / "multi_worker" / "worker_1" / "results.csv").is_file()
    assert not (experiment / "multi_worker" / "worker_0").exists()


def test_multi_worker_needs_a_tf_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["127.0.0.1:1"]}}')
    with pytest.raises(UserInputError, match="needs a TF_CONFIG with a cluster"):
        make_strategy("multi_worker_mirrored")
    with pytest.raises(UserInputError, match="must be empty with strategy"):
        make_strategy("multi_worker_mirrored", devices=["/cpu:0"])


def test_mixed_precision_keeps_preprocessing_and_output_in_float32() -> None:
    frame = pd.DataFrame({"a": [1000.3, 1001.7, np.nan, 999.1], "n": [1, 2, 3, 1]})
    schema = fit_schema(frame, {"a": "numeric", "n": "integer_categorical"})
    hypermodel = MLPHyperModel(schema=schema, task="binary", space=_fixed_space())
    reference = _features(hypermodel, frame)
    try:
        configure_devices(mixed_precision="mixed_bfloat16")
        model = hypermodel.build(keras_tuner.HyperParameters())
        mixed = _features(hypermodel, frame)
        assert model.get_layer("dense_0").compute_dtype == "bfloat16"
        assert model.output.dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")
    # Raw values near 1000 differ by less than bfloat16's resolution there.
    np.testing.assert_allclose(mixed, reference, atol=1e-6)
    assert np.ptp(mixed[:, 0]) > 1.0


def test_mixed_float16_without_a_gpu_is_rejected() -> None:
    with pytest.raises(UserInputError, match="'mixed_float16' needs a GPU"):
        configure_devices(mixed_precision="mixed_float16")
    assert keras.mixed_precision.global_policy().name == "float32"


def _fixed_space() -> Any:
    from hypermodels import SearchSpace

    return SearchSpace(num_layers=(1, 1), units=(4,), batch_norm=(False,), dropout=(0.0, 0.0))


def _features(hypermodel: MLPHyperModel, frame: pd.DataFrame) -> np.ndarray:
    inputs, features = build_preprocessing(hypermodel.schema)
    return np.asarray(keras.Model(inputs, features)(model_inputs(hypermodel.schema, frame)))
