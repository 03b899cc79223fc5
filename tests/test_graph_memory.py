"""Trials must not leave their traced graphs in memory (TensorFlow's custom-gradient
registry keeps every train step's graph alive otherwise)."""

from __future__ import annotations

import gc
from pathlib import Path

import keras
import keras_tuner
import numpy as np
from tensorflow.python.framework import func_graph

from hypermodels import MLPHyperModel
from kt_pipeline.graph_memory import custom_gradient_count, released_custom_gradients
from kt_pipeline.tuners import TunerSettings, TunerSpec, build_tuner


def _live_graphs() -> int:
    gc.collect()
    return sum(isinstance(o, func_graph.FuncGraph) for o in gc.get_objects())


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype("float32")
    return x, (x[:, 0] > 0).astype("int32")


def _fit_one_model() -> None:
    x, y = _data()
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile("adam", "binary_crossentropy")
    model.fit(x, y, epochs=1, verbose=0)


def test_a_plain_fit_leaks_its_graphs_without_the_release() -> None:
    """The defect itself: shows the registry is what keeps the graphs (if TensorFlow
    fixes it, this test says so and the workaround can go)."""
    graphs, gradients = _live_graphs(), custom_gradient_count()
    with released_custom_gradients():
        _fit_one_model()
        assert custom_gradient_count() > gradients
        leaked = _live_graphs()
    assert leaked > graphs
    assert custom_gradient_count() == gradients
    assert _live_graphs() == graphs


def test_entries_from_before_the_block_are_kept() -> None:
    with released_custom_gradients():
        _fit_one_model()
        outer = custom_gradient_count()
        with released_custom_gradients():
            _fit_one_model()
        assert custom_gradient_count() == outer


def test_a_search_leaves_no_trial_graph_behind(tmp_path: Path) -> None:
    x, y = _data()
    hypermodel = MLPHyperModel.from_arrays(x, y, task="binary", units=(4, 8), batch_sizes=(16,))
    tuner = build_tuner(
        hypermodel,
        TunerSpec(
            objective=keras_tuner.Objective("val_accuracy", "max"),
            directory=str(tmp_path),
            seed=0,
            settings=TunerSettings(algorithm="random", max_trials=3),
        ),
    )
    graphs, gradients = _live_graphs(), custom_gradient_count()
    tuner.search(x, y, validation_data=(x, y), epochs=1, verbose=0)
    assert len(tuner.oracle.get_best_trials(3)) == 3
    assert custom_gradient_count() == gradients
    assert _live_graphs() <= graphs
