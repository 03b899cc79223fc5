"""`hypermodels.domains`: each KerasTuner hyperparameter type read once."""

from __future__ import annotations

import keras_tuner
import pytest

from hypermodels.domains import BOOLEAN, CHOICE, FIXED, FLOAT, INT, domain


def test_each_type_gives_its_values_range_and_scale() -> None:
    hp = keras_tuner.HyperParameters()
    hp.Fixed("loss", "mse")
    hp.Boolean("batch_norm")
    hp.Choice("units", [64, 128])
    hp.Choice("activation", ["relu", "gelu"])
    hp.Int("layers", 1, 7, step=3)
    hp.Float("learning_rate", 1e-4, 1e-2, sampling="log")
    got = {p.name: domain(p) for p in hp.space}
    assert [got[n].kind for n in got] == [FIXED, BOOLEAN, CHOICE, CHOICE, INT, FLOAT]
    assert got["loss"].values() == ["mse"] and got["batch_norm"].values() == [False, True]
    assert got["layers"].values() == [1, 4, 7] and got["learning_rate"].values() is None
    assert got["learning_rate"].log and (got["learning_rate"].low, got["learning_rate"].high) == (
        1e-4,
        1e-2,
    )
    numeric = {name for name, d in got.items() if d.numeric}
    assert numeric == {"units", "layers", "learning_rate"}  # booleans and text are not
    assert all(got[n].discrete for n in ("loss", "batch_norm", "units", "activation"))


def test_something_else_is_refused() -> None:
    with pytest.raises(TypeError, match="not a KerasTuner hyperparameter"):
        domain(object())
