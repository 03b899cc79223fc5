"""Optimisation options from the tabular-MLP literature: Adam's beta2 and label
smoothing, declared only when a space searches them (the flat-then-cosine schedule is
checked with the other schedules in `test_hypermodel.py`)."""

from __future__ import annotations

import keras
import keras_tuner
import numpy as np
import pytest

from hypermodels import MLPHyperModel
from hypermodels.mlp import SmoothedSparseCrossentropy
from kt_pipeline.config import load_config
from kt_pipeline.errors import UserInputError


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3)).astype("float32")
    return x, np.digitize(x[:, 0], [-0.5, 0.5]).astype("int32")


def test_beta2_and_label_smoothing_are_searched_only_when_the_space_has_several() -> None:
    x, y = _data()
    fixed = MLPHyperModel.from_arrays(x, y, task="multiclass", optimizers=("adam", "sgd"))
    hp = keras_tuner.HyperParameters()
    model = fixed.build(hp)
    assert not {"adam_beta2", "label_smoothing"} & {h.name for h in hp.space}
    assert model.loss == "sparse_categorical_crossentropy"

    searched = MLPHyperModel.from_arrays(
        x,
        y,
        task="multiclass",
        optimizers=("adam", "adamw", "sgd"),
        adam_beta2=(0.999, 0.95),
        label_smoothing=(0.0, 0.1),
    )
    hp = keras_tuner.HyperParameters()
    searched.declare(hp)
    beta2 = next(h for h in hp.space if h.name == "adam_beta2")
    assert beta2.conditions[0].get_config()["values"] == ["adam", "adamw"]
    hp.values.update(optimizer="adamw", adam_beta2=0.95, label_smoothing=0.1)
    hp.ensure_active_values()
    model = searched.build(hp)
    assert model.optimizer.beta_2 == 0.95
    assert isinstance(model.loss, SmoothedSparseCrossentropy) and model.loss.label_smoothing == 0.1
    assert searched.fit(hp, model, x, y, epochs=1, verbose=0).history["loss"]


def test_smoothed_sparse_crossentropy_is_crossentropy_against_smoothed_targets() -> None:
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], dtype="float32")
    labels = np.array([0, 2])
    targets = np.eye(3)[labels] * 0.85 + 0.05  # smoothing 0.15 over 3 classes
    expected = -np.mean(np.sum(targets * np.log(probabilities), axis=1))
    loss = SmoothedSparseCrossentropy(0.15)(labels, probabilities)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    plain = keras.losses.SparseCategoricalCrossentropy()(labels, probabilities)
    assert float(SmoothedSparseCrossentropy(1e-9)(labels, probabilities)) == pytest.approx(
        float(plain), rel=1e-5
    )


@pytest.mark.parametrize("override", ["search.adam_beta2=[1.0]", "search.label_smoothing=[]"])
def test_the_options_are_validated(override: str) -> None:
    with pytest.raises(UserInputError, match=r"search\.(adam_beta2|label_smoothing)"):
        load_config(None, [override])
    assert load_config(None, ["search.schedules=['flat_cosine']"]).search.schedules == (
        "flat_cosine",
    )
