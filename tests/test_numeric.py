"""Numeric scalings and embeddings (`hypermodels.numeric`) and their place in the model."""

from __future__ import annotations

from pathlib import Path

import keras
import keras_tuner
import numpy as np
import pandas as pd
import pytest
from sklearn.preprocessing import QuantileTransformer

from hypermodels import MLPHyperModel, SearchSpace, Target, fit_schema
from hypermodels.features import (
    ValueIds,
    build_preprocessing,
    model_inputs,
    raw_rows,
    value_columns,
)
from hypermodels.numeric import (
    QUANTILE_LEVELS,
    PiecewiseLinearEmbedding,
    QuantileNormal,
    SmoothClip,
    bin_edges,
    robust_center_and_scale,
)
from kt_pipeline.config import load_config
from kt_pipeline.errors import UserInputError
from kt_pipeline.export import export_model, predict_saved_model


def _skewed_with_ties(rows: int = 2_000) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.column_stack(
        [
            rng.lognormal(size=rows),  # skewed
            rng.integers(0, 4, size=rows).astype("float64"),  # long runs of tied values
            rng.normal(size=rows),
        ]
    )


def test_quantile_normal_matches_scikit_learns_quantile_transformer() -> None:
    train = _skewed_with_ties()
    frame = pd.DataFrame(train, columns=["a", "b", "c"])
    schema = fit_schema(frame, dict.fromkeys("abc", "numeric"))
    reference = QuantileTransformer(
        n_quantiles=QUANTILE_LEVELS, output_distribution="normal", subsample=None
    ).fit(train)
    rows = np.vstack([train[:300], [[-5.0, -1.0, -9.0], [1e6, 7.0, 9.0], [1.0, 2.0, 0.0]]])
    ours = np.asarray(QuantileNormal([c.quantiles for c in schema.columns])(rows))
    expected = reference.transform(rows)
    # scikit-learn sends a value equal to the smallest or largest training value to
    # -5.2 or +5.2, even when a quarter of the rows share it; ours puts every tied
    # value in the middle of its run of quantiles.
    at_bounds = (rows == train.min(axis=0)) | (rows == train.max(axis=0))
    inside = ~at_bounds & (np.abs(expected) < 5)  # float32 clips at 5.17, not 5.2
    np.testing.assert_allclose(ours[inside], expected[inside], atol=2e-3)
    np.testing.assert_allclose(ours[~at_bounds], expected[~at_bounds], atol=0.05)
    assert np.abs(ours).max() < 5.3  # clipped like scikit-learn's
    tied = ours[:300, 1][rows[:300, 1] == 0.0]  # the lowest of four equally common values
    np.testing.assert_allclose(tied, -1.15, atol=0.05)  # the normal quantile of 1/8


def test_smooth_clip_is_the_identity_near_zero_and_bounded() -> None:
    values = np.array([[0.0, 0.1, -0.1, 3.0, 1e6, -1e6]], dtype="float32")
    clipped = np.asarray(SmoothClip()(values))[0]
    np.testing.assert_allclose(clipped[:3], values[0, :3], atol=2e-4)
    np.testing.assert_allclose(clipped[3], 3.0 / np.sqrt(2.0), rtol=1e-6)
    assert np.all(np.abs(clipped) <= 3.0) and clipped[4] > 2.99 and clipped[5] < -2.99


def test_robust_scale_uses_the_interquartile_range_and_falls_back() -> None:
    levels = np.linspace(0, 1, QUANTILE_LEVELS)
    assert robust_center_and_scale(levels * 8) == pytest.approx((4.0, 4.0))
    # Mostly one value: the IQR is 0, half the range stands in.
    nearly_constant = np.where(levels < 0.9, 1.0, 5.0)
    assert robust_center_and_scale(nearly_constant) == pytest.approx((1.0, 2.0))
    assert robust_center_and_scale(np.zeros(QUANTILE_LEVELS)) == (0.0, 1.0)


def test_piecewise_linear_encoding_fills_the_bins_below_a_value() -> None:
    edges = [[0.0, 1.0, 2.0, 4.0]]
    layer = PiecewiseLinearEmbedding(edges, dim=3)
    layer.build((None, 1))
    layer.kernel.assign(np.eye(3, dtype="float32")[None])  # expose the encoding itself
    x = np.array([[0.5], [1.5], [3.0], [9.0], [-1.0]], dtype="float32")
    encoded = np.asarray(layer(x))
    expected = [[0.5, 0, 0], [1, 0.5, 0], [1, 1, 0.5], [1, 1, 3.5], [0, 0, 0]]  # ReLU: -1 -> 0
    np.testing.assert_allclose(encoded, expected, atol=1e-6)


def test_bin_edges_keep_distinct_quantiles_and_pad_past_the_top() -> None:
    levels = np.linspace(0, 1, QUANTILE_LEVELS)
    (smooth, ties) = bin_edges([levels * 10, np.where(levels < 0.5, 0.0, 1.0)], bins=4)
    assert smooth == pytest.approx([0.0, 2.5, 5.0, 7.5, 10.0])
    assert ties[:2] == [0.0, 1.0] and len(ties) == 5 and ties == sorted(ties) and ties[2] > 1.0


@pytest.mark.parametrize(
    ("scaling", "embedding"),
    [("quantile", "periodic"), ("robust", "none"), ("standardize", "piecewise_linear")],
)
def test_each_option_trains_and_is_served_on_raw_columns(
    tmp_path: Path, scaling: str, embedding: str
) -> None:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(_skewed_with_ties(400), columns=["a", "b", "c"])
    frame.loc[::7, "a"] = np.nan
    frame["city"] = rng.choice(["x", "y", "z"], size=len(frame))
    y = (frame["c"] > 0).to_numpy("int32")
    kinds = {"a": "numeric", "b": "numeric", "c": "numeric", "city": "string_categorical"}
    schema = fit_schema(frame, kinds)
    space = SearchSpace(
        numeric_scalings=(scaling,),
        numeric_embeddings=(embedding,),
        embedding_dims=(4,),
        periodic_frequencies=(8,),
        piecewise_bins=(8,),
        units=(16,),
        num_layers=(1, 1),
        batch_sizes=(64,),
    )
    hypermodel = MLPHyperModel(schema=schema, task="binary", train_size=len(y), space=space)
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)
    assert not {"numeric_scaling", "numeric_embedding"} & set(hp.values)  # fixed: undeclared
    x = model_inputs(schema, frame)
    history = hypermodel.fit(hp, model, x, y, epochs=3, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    names = {layer.name for layer in model.layers}
    expected = {"quantile": "quantile", "robust": "smooth_clip", "standardize": "normalize"}
    assert (expected[scaling] in names) == (embedding != "piecewise_linear")  # it bins raw values
    if embedding != "none":
        assert f"{embedding}_embedding" in names
    export_dir = export_model(
        model, export_root=tmp_path, task="binary", schema=schema, class_names=("no", "yes")
    )
    served = predict_saved_model(export_dir, raw_rows(schema, frame))["probabilities"][:, 1]
    np.testing.assert_allclose(served, model.predict(x, verbose=0)[:, 0], rtol=1e-4, atol=1e-5)


def test_searched_options_are_conditional_hyperparameters() -> None:
    frame = pd.DataFrame(_skewed_with_ties(50), columns=["a", "b", "c"])
    schema = fit_schema(frame, dict.fromkeys("abc", "numeric"))
    space = SearchSpace(
        numeric_scalings=("standardize", "quantile"),
        numeric_embeddings=("none", "periodic", "piecewise_linear"),
    )
    hypermodel = MLPHyperModel(schema=schema, task="binary", train_size=50, space=space)
    hp = keras_tuner.HyperParameters()
    hypermodel.declare(hp)
    conditions = {h.name: [c.get_config() for c in h.conditions] for h in hp.space}
    assert conditions["numeric_embedding"] == []
    assert conditions["numeric_scaling"][0]["values"] == ["none", "periodic"]
    assert conditions["periodic_frequencies"][0]["values"] == ["periodic"]
    assert conditions["piecewise_bins"][0]["values"] == ["piecewise_linear"]
    assert conditions["embedding_dim"][0]["values"] == ["periodic", "piecewise_linear"]
    hp.values["numeric_embedding"] = "periodic"
    hp.ensure_active_values()
    assert isinstance(hypermodel.build(hp).get_layer("periodic_embedding"), keras.layers.Layer)


def test_numeric_options_are_validated() -> None:
    with pytest.raises(UserInputError, match=r"search\.numeric_scalings"):
        load_config(None, ["search.numeric_scalings=['log']"])
    with pytest.raises(UserInputError, match=r"search\.piecewise_bins"):
        load_config(None, ["search.piecewise_bins=[0]"])
    config = load_config(None, ["search.numeric_embeddings=['none', 'periodic']"])
    assert config.search.numeric_embeddings == ("none", "periodic")


def test_value_ids_match_exact_values_and_give_any_other_the_columns_own_slot() -> None:
    layer = ValueIds([0, 2], [[1.0, 2.0], [5.0, 6.0, 7.0]])
    rows = np.array([[1.0, 9.0, 7.0], [2.0, 9.0, 5.5], [3.0, 9.0, 5.0], [np.inf, 9.0, 6.0]])
    # Column 0 owns ids 0-2 (0: no match), column 2 owns 3-6 (3: no match).
    assert layer(rows.astype("float32")).numpy().tolist() == [[1, 6], [2, 3], [0, 4], [0, 5]]
    assert layer.size == 7


def test_only_columns_whose_rows_repeat_a_few_values_get_value_embeddings() -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "code": rng.choice([0.1, 2.7, 3.3, 41.0], size=400),  # repeats: qualifies
            "measure": rng.normal(size=400),  # every value once
            "flag": rng.choice([0.0, 1.0], size=400),  # two values: a linear term says it all
            "mostly_rare": np.r_[rng.normal(size=300), np.repeat([1.0, 2.0, 3.0], 100 // 3 + 1)][
                :400
            ],  # repeated values hold a quarter of the rows
        }
    )
    schema = fit_schema(frame, dict.fromkeys(frame.columns, "numeric"))
    assert value_columns(schema) == [0]
    # Stored as the model sees them (float32), so a served 0.1 finds its slot.
    assert schema.columns[0].values == tuple(float(np.float32(v)) for v in (0.1, 2.7, 3.3, 41.0))
    searched = SearchSpace(value_embeddings=(False, True))
    hp = keras_tuner.HyperParameters()
    MLPHyperModel(schema=schema, task="binary", train_size=400, space=searched).declare(hp)
    assert "value_embedding" in hp.values
    no_codes = fit_schema(frame[["measure", "flag"]], dict.fromkeys(["measure", "flag"], "numeric"))
    hp = keras_tuner.HyperParameters()
    MLPHyperModel(schema=no_codes, task="binary", train_size=400, space=searched).declare(hp)
    assert "value_embedding" not in hp.values  # nothing to embed: nothing to search
    with pytest.raises(UserInputError, match=r"search\.value_embeddings"):
        load_config(None, ["search.value_embeddings=[]"])


def test_value_embeddings_learn_each_values_effect_and_are_served_on_raw_columns(
    tmp_path: Path,
) -> None:
    # A code whose 40 values each have their own effect, in no order a smooth function
    # of the number could follow: what trees split out and a plain MLP blurs.
    rng = np.random.default_rng(3)
    codes = rng.uniform(0, 100, size=40).round(2)
    effects = rng.normal(size=40)
    picked = rng.integers(0, 40, size=1600)
    frame = pd.DataFrame({"code": codes[picked], "noise": rng.normal(size=1600)})
    y = (effects[picked] + 0.1 * rng.normal(size=1600)).astype("float32")
    schema = fit_schema(frame, {"code": "numeric", "noise": "numeric"})
    x = model_inputs(schema, frame)
    space = SearchSpace(
        units=(32,),
        num_layers=(1, 1),
        batch_sizes=(64,),
        dropout=(0.0, 0.0),
        value_embeddings=(False, True),
    )
    hypermodel = MLPHyperModel(
        schema=schema, task="regression", train_size=len(y), space=space,
        target=Target.of(y, task="regression"),
    )  # fmt: skip
    final_loss = {}
    for on in (False, True):
        hp = keras_tuner.HyperParameters()
        hp.Fixed("value_embedding", on)
        hp.Fixed("numeric_embedding", "none")
        hp.Fixed("learning_rate", 1e-2)
        keras.utils.set_random_seed(0)
        model = hypermodel.build(hp)
        history = hypermodel.fit(hp, model, x, y, epochs=15, verbose=0)
        final_loss[on] = history.history["loss"][-1]
    assert final_loss[True] < 0.3 * final_loss[False]
    assert "value_ids" in {layer.name for layer in model.layers}
    export_dir = export_model(model, export_root=tmp_path, task="regression", schema=schema)
    served = predict_saved_model(export_dir, raw_rows(schema, frame))["value"]
    np.testing.assert_allclose(
        np.ravel(served), model.predict(x, verbose=0).ravel(), rtol=1e-4, atol=1e-4
    )


def test_value_ids_match_under_mixed_precision_and_a_gap_matches_nothing() -> None:
    frame = pd.DataFrame(
        {
            "code": [1000.3, 1000.3, 70001.0, 70001.0, 123456.0, 123456.0],
            "balanced": [1.0, 1.0, 2.0, 2.0, 3.0, 3.0],  # its mean, a gap's fill, is 2.0
        }
    )
    schema = fit_schema(frame, dict.fromkeys(frame.columns, "numeric"))
    rows = frame.copy()
    rows.loc[2, "balanced"] = np.nan
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")  # 1000.3 has no bfloat16 twin
    try:
        inputs, _ = build_preprocessing(schema, value_embedding=True)
        model = keras.Model(inputs, keras.Model(inputs, _).get_layer("value_ids").output)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    ids = model.predict(model_inputs(schema, rows), verbose=0)
    # code owns ids 0-3, balanced 4-7 (4: no match).
    assert ids.tolist() == [[1, 5], [1, 5], [2, 4], [2, 6], [3, 7], [3, 7]]
