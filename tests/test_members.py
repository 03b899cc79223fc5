"""The shared-weight ensemble inside one model (`hypermodels.members`, `search.members`):
each member is trained on its own loss, the model is evaluated and served as their mean,
and the SavedModel serves that mean from raw columns."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import keras_tuner
import numpy as np
import pandas as pd
import pytest
from conftest import make_mixed_frame, random_search_args

from hypermodels import MLPHyperModel, SearchSpace, Target, fit_schema
from hypermodels.features import model_inputs, raw_rows
from hypermodels.members import MemberAverage, RandomSigns, member_adapter, member_heads
from kt_pipeline.cli import main
from kt_pipeline.config import load_config
from kt_pipeline.data import read_rows
from kt_pipeline.ensemble import average_models
from kt_pipeline.errors import UserInputError
from kt_pipeline.export import export_model, predict_saved_model
from kt_pipeline.finish import load_best_model
from kt_pipeline.plan import _extreme_values

_KINDS = {"x": "numeric", "z": "numeric", "shop": "string_categorical"}


def _members_model(members: int = 4, width: int = 3) -> MemberAverage:
    inputs = keras.Input((width,))
    x = member_adapter(members, width)(inputs)
    x = keras.layers.Dense(8, activation="relu")(x)
    return MemberAverage(inputs, member_heads(members, 1, name="heads")(x))


def test_each_member_is_trained_on_its_own_loss_and_the_model_serves_their_mean() -> None:
    keras.utils.set_random_seed(0)
    model = _members_model()
    model.compile(loss="mse")
    x = np.random.default_rng(0).normal(size=(32, 3)).astype("float32")
    y = np.random.default_rng(1).normal(size=(32, 1)).astype("float32")
    members = np.asarray(model(x, training=True))  # (rows, members, 1)
    served = np.asarray(model(x))
    assert members.shape == (32, 4, 1) and served.shape == (32, 1)
    np.testing.assert_allclose(served, members.mean(axis=1), rtol=1e-5, atol=1e-6)
    assert model.predict(x, verbose=0).shape == (32, 1)
    each = float(np.mean((members - y[:, None, :]) ** 2))
    of_mean = float(np.mean((members.mean(axis=1) - y) ** 2))
    assert each > of_mean * 1.01  # the members differ: the two losses are not the same
    training = float(model.compute_loss(x=x, y=y, y_pred=model(x, training=True)))
    assert training == pytest.approx(each, rel=1e-5)
    validation = float(model.compute_loss(x=x, y=y, y_pred=model(x), training=False))
    assert validation == pytest.approx(of_mean, rel=1e-5)
    assert model.evaluate(x, y, verbose=0) == pytest.approx(of_mean, rel=1e-4)


def test_members_start_apart_from_the_seed() -> None:
    keras.utils.set_random_seed(3)
    signs = np.asarray(RandomSigns()((16, 50)))
    assert set(np.unique(signs)) == {-1.0, 1.0}
    assert 0.4 < (signs > 0).mean() < 0.6
    assert len({tuple(row) for row in signs}) == 16
    keras.utils.set_random_seed(3)
    np.testing.assert_array_equal(np.asarray(RandomSigns()((16, 50))), signs)


def test_an_ensemble_of_member_models_averages_their_means() -> None:
    keras.utils.set_random_seed(0)
    first, second = _members_model(), _members_model(members=2)
    x = np.random.default_rng(0).normal(size=(10, 3)).astype("float32")
    ensemble = average_models([first, second], inputs=keras.Input((3,)))
    expected = (np.asarray(first(x)) + np.asarray(second(x))) / 2
    np.testing.assert_allclose(ensemble.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)


def _table(rows: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "x": rng.normal(size=rows).astype("float32"),
            "z": rng.normal(size=rows).astype("float32"),
            "shop": rng.choice(["a", "b", "c"], size=rows),
        }
    )


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_the_hypermodel_searches_members_and_the_export_serves_their_mean(
    tmp_path: Path, task: str
) -> None:
    frame = _table()
    signal = frame["x"].to_numpy() + (frame["shop"] == "b").to_numpy()
    y: np.ndarray
    options: dict[str, object] = {}
    if task == "binary":
        y, names = (signal > 0.5).astype("int32"), ("no", "yes")
    elif task == "multiclass":
        y, names = np.digitize(signal, [0.0, 1.0]).astype("int32"), ("lo", "mid", "hi")
        options = {"target": Target(num_classes=3)}
    else:
        y, names = 3.0 * signal + 10.0, ()
        options = {"target": Target.of(y, task="regression")}
    schema = fit_schema(frame, _KINDS)
    space = SearchSpace(
        members=(1, 8),
        units=(32,),
        num_layers=(1, 1),
        batch_sizes=(32,),
        learning_rate=(0.01, 0.01),
    )
    hypermodel = MLPHyperModel(schema=schema, task=task, train_size=len(y), space=space, **options)
    hp = keras_tuner.HyperParameters()
    hypermodel.declare(hp)
    assert hp.values["members"] == 1  # the space's first value starts
    hp.values["members"] = 8
    model = hypermodel.build(hp)
    assert isinstance(model, MemberAverage)
    x = model_inputs(schema, frame)
    history = hypermodel.fit(hp, model, x, y, validation_data=(x, y), epochs=15, verbose=0)
    predicted = model.predict(x, verbose=0)
    if task == "regression":
        assert history.history["val_loss"][-1] < 0.2 * float(np.var(y))  # it learned
    else:
        assert history.history["val_accuracy"][-1] > 0.8
    export_dir = export_model(
        model, export_root=tmp_path, task=task, schema=schema, class_names=names
    )
    served = predict_saved_model(export_dir, raw_rows(schema, frame))
    key = "value" if task == "regression" else "probabilities"
    got = served[key].reshape(len(frame), -1)
    expected = predicted if task != "binary" else np.column_stack([1 - predicted, predicted])
    np.testing.assert_allclose(got, expected.reshape(len(frame), -1), rtol=1e-4, atol=1e-4)


def test_members_are_declared_only_where_searched_and_count_in_the_largest_model() -> None:
    schema = fit_schema(_table(50), _KINDS)
    fixed = MLPHyperModel(schema=schema, task="binary", train_size=50, space=SearchSpace())
    hp = keras_tuner.HyperParameters()
    fixed.declare(hp)
    assert "members" not in hp.values
    assert not isinstance(fixed.build(hp), MemberAverage)
    searched = MLPHyperModel(
        schema=schema, task="binary", train_size=50, space=SearchSpace(members=(1, 16))
    )
    space = keras_tuner.HyperParameters()
    searched.declare(space)
    largest = _extreme_values(space, largest=True, optimizer=None)
    smallest = _extreme_values(space, largest=False, optimizer=None)
    assert (largest.values["members"], smallest.values["members"]) == (16, 1)


def test_the_setting_is_validated() -> None:
    with pytest.raises(UserInputError, match=r"search\.members.*\[0\]"):
        load_config(None, ["search.members=[0]"])
    assert load_config(None, ["search.members=[1, 16]"]).search.members == (1, 16)


@pytest.mark.slow
def test_a_search_with_members_blends_its_refit_and_serves_raw_rows(tmp_path: Path) -> None:
    data = tmp_path / "mixed.csv"
    frame = make_mixed_frame(300)
    frame.to_csv(data, index=False)
    experiment = tmp_path / "experiment"
    overrides = ("search.members=[4]", "search.units=[16]", "export.refit='blend'")
    args = random_search_args(experiment, data, max_trials=2, max_epochs=3, overrides=overrides)
    assert main(args) == 0
    summary = json.loads((experiment / "summary.json").read_text())
    model, schema = load_best_model(load_config(experiment / "config.toml"))
    assert isinstance(model, MemberAverage)
    rows = read_rows(data, kinds={c.name: c.kind for c in schema.columns})
    served = predict_saved_model(Path(summary["export_dir"]), raw_rows(schema, rows))
    assert served["probabilities"].shape == (len(frame), 2)
    assert np.isfinite(served["probabilities"]).all()
    assert summary["test_scores"]["accuracy"] > 0.6
