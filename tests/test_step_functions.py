"""The single-trace step loops train and validate exactly as Keras's own functions do."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

from hypermodels.step_functions import prepare_step_functions
from kt_pipeline.strategy import make_strategy

# 50 rows in batches of 8: 7 batches, the last one short; with 3 steps per call, the
# third call of each epoch runs a single step and meets the end of the data.
ROWS, BATCH, STEPS_PER_EXECUTION = 50, 8, 3


def _data(rows: int = ROWS) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 4)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0).astype("int32")
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)
    return train, tf.data.Dataset.from_tensor_slices((x[:20], y[:20])).batch(BATCH)


def _model(**compile_args: Any) -> keras.Model:
    keras.utils.set_random_seed(3)
    inputs = keras.Input(shape=(4,))
    hidden = keras.layers.Dropout(0.2)(keras.layers.Dense(8, activation="relu")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(hidden))
    model.compile(
        optimizer=keras.optimizers.Adam(0.05),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        **{"steps_per_execution": STEPS_PER_EXECUTION, **compile_args},
    )
    return model


def _fit(*, prepared: bool) -> tuple[dict[str, list[float]], list[np.ndarray], keras.Model]:
    train, validation = _data()
    model = _model()
    if prepared:
        prepare_step_functions(model, element_spec=train.element_spec)
    history = model.fit(train, validation_data=validation, epochs=3, verbose=0)
    return history.history, [w.numpy() for w in model.weights], model


def test_fit_gives_kerass_logs_and_weights() -> None:
    keras_logs, keras_weights, _ = _fit(prepared=False)
    logs, weights, model = _fit(prepared=True)
    assert set(logs) == set(keras_logs) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    for name, values in keras_logs.items():
        np.testing.assert_allclose(logs[name], values, rtol=1e-5, err_msg=name)
    for mine, theirs in zip(weights, keras_weights, strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=1e-5)
    assert int(model.optimizer.iterations) == 3 * 7  # every batch once per epoch, none lost


def test_evaluate_gives_kerass_results() -> None:
    train, _ = _data()
    results = []
    for prepared in (False, True):
        model = _model()
        if prepared:
            prepare_step_functions(model, element_spec=train.element_spec)
        results.append(model.evaluate(train, verbose=0, return_dict=True))
    assert results[0] == pytest.approx(results[1], rel=1e-6)


def count_traces(model: keras.Model) -> list[object]:
    """Wraps the model's train step; each trace of it appends its batch to the list."""
    traces: list[object] = []
    train_step = model.train_step

    def counting_train_step(data: Any) -> Any:
        traces.append(data)
        return train_step(data)

    model.train_step = counting_train_step
    return traces


# Keras's own functions trace the step twice: if a Keras release fixes that, this says
# the metric build in `prepare_step_functions` can go.
@pytest.mark.parametrize(("prepared", "expected_traces"), [(True, 1), (False, 2)])
def test_the_train_step_is_traced_once(prepared: bool, expected_traces: int) -> None:
    train, _ = _data()
    model = _model()
    traces = count_traces(model)
    if prepared:
        prepare_step_functions(model, element_spec=train.element_spec)
    model.fit(train, epochs=2, verbose=0)
    assert len(traces) == expected_traces


def test_an_exhausted_iterator_stops_the_epoch() -> None:
    train, _ = _data()
    model = _model()
    prepare_step_functions(model, element_spec=train.element_spec)
    iterator = iter(train)
    for _ in range(3):  # 3 + 3 + 1 of the 7 batches
        model.train_function(iterator)
    with pytest.raises(StopIteration):
        model.train_function(iterator)
    assert int(model.optimizer.iterations) == 7


@pytest.mark.parametrize("case", ["jit_compile", "run_eagerly", "mirrored", "custom_step"])
def test_keras_keeps_its_functions_where_the_loops_do_not_apply(case: str) -> None:
    train, _ = _data()
    if case == "mirrored":
        with make_strategy("mirrored", devices=("/cpu:0", "/cpu:1")).scope():
            model = _model(steps_per_execution=1)
    elif case == "custom_step":

        class Custom(keras.Model):
            def train_step(self, data: Any) -> Any:
                return super().train_step(data)

        inputs = keras.Input(shape=(4,))
        model = Custom(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    else:
        model = _model(**{case: True})
    prepare_step_functions(model, element_spec=train.element_spec)
    assert model.train_function is None and model.test_function is None
    # The training state is built either way, and Keras's own functions then train.
    assert model.optimizer.built
    model.fit(train, epochs=1, verbose=0)
    assert int(model.optimizer.iterations.numpy()) == 7
