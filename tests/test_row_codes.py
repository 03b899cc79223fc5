"""Tables whose rows repeat: the target encoding of a row's group, the rows that share
the values of the key's columns (`fit_row_codes`, `search.row_target_encoding`), is
cross-fitted, offered only where a key explains what main effects leave, and served from
raw columns by the SavedModel."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import keras_tuner
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from hypermodels import MLPHyperModel, SearchSpace, TabularSchema, fit_schema
from hypermodels.features import (
    ROW_CODES,
    TARGET_SUFFIX,
    Column,
    ServingEncoder,
    _shrinkage,
    fit_row_codes,
    model_inputs,
    raw_rows,
    row_keys,
)
from kt_pipeline.cli import main
from kt_pipeline.config import load_config
from kt_pipeline.errors import UserInputError
from kt_pipeline.export import export_model, predict_saved_model

_KINDS = {"x": "numeric", "shop": "string_categorical", "size": "integer_categorical"}
_INPUT = ROW_CODES + TARGET_SUFFIX


def _panel(people: int = 60, years: int = 5, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Each person's values repeated over several years, with a label driven by who
    they are (a per-person effect no function of the values can express)."""
    rng = np.random.default_rng(seed)
    person = pd.DataFrame(
        {
            "x": rng.normal(size=people).astype("float32"),
            "shop": rng.choice(["a", "b", "c"], size=people),
            "size": rng.integers(0, 4, size=people),
        }
    )
    person.loc[0, "x"] = np.nan  # a gap and a negative zero are values like any other
    person.loc[1, "x"] = -0.0
    effect = rng.normal(size=people)
    frame = person.loc[np.repeat(np.arange(people), years)].reset_index(drop=True)
    noise = rng.normal(size=len(frame)) * 0.3
    return frame, (np.repeat(effect, years) + noise > 0).astype("int32")


def test_row_keys_are_equal_for_equal_rows_and_the_export_computes_the_same() -> None:
    frame = pd.DataFrame(
        {
            "x": [1.5, 1.5, np.nan, np.nan, 0.0, -0.0, 1.5, 2.0],
            "shop": ["a", "a", "b", "b", "a", "a", "b", "zz"],
            "size": [1, 1, 2, 2, 3, 3, 1, 1],
        }
    )
    schema = fit_schema(frame.iloc[:7], _KINDS)
    keys = row_keys(schema, frame)
    assert keys[0] == keys[1] and keys[2] == keys[3] and keys[4] == keys[5]
    assert len(set(keys[[0, 2, 4, 6, 7]].tolist())) == 5  # one value apart: another key
    encoder = ServingEncoder(_ranked_rows(schema, keys))
    served = encoder({name: tf.constant(v) for name, v in raw_rows(schema, frame).items()})
    expected = model_inputs(_ranked_rows(schema, keys), frame)[_INPUT].numpy()
    np.testing.assert_array_equal(served[_INPUT].numpy(), expected)
    assert expected[:, 0].tolist()[:7] == [1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0]
    assert expected[7, 0] == 0.0  # a row never seen gets id 0's code


def _ranked_rows(schema: TabularSchema, keys: np.ndarray) -> TabularSchema:
    """The schema with row codes that number the first seven rows' distinct keys in
    order of appearance (1, 2, ...), and 0 for any other row."""
    vocabulary = tuple(dict.fromkeys(int(k) for k in keys[:7]))
    order = sorted(vocabulary)
    codes = ((0.0,), *((float(vocabulary.index(k) + 1),) for k in order))
    rows = Column(name=ROW_CODES, kind="row_key", vocabulary=tuple(order), target_codes=codes)
    return dataclasses.replace(schema, rows=rows)


def test_row_codes_are_fitted_only_where_most_rows_repeat() -> None:
    frame, y = _panel()
    schema, codes = fit_row_codes(fit_schema(frame, _KINDS), frame, y, task="binary", seed=0)
    assert schema.rows is not None and len(schema.rows.vocabulary) == 60
    assert sum(schema.rows.counts) == len(frame) and schema.rows.counts[0] == 0
    assert codes[ROW_CODES].shape == (len(frame), 1)
    assert TabularSchema.from_json(schema.to_json()) == schema
    # Values that never repeat: no key can group the rows.
    unique = pd.DataFrame({"x": np.arange(200.0), "shop": "a", "size": 1})
    plain = fit_schema(unique, _KINDS)
    labels = np.random.default_rng(0).integers(0, 2, 200)
    assert fit_row_codes(plain, unique, labels, task="binary", seed=0) == (plain, {})
    # Rows that repeat, with labels that owe nothing to who they are: no key either.
    plain = fit_schema(frame, _KINDS)
    noise = np.random.default_rng(1).integers(0, 2, len(frame))
    assert fit_row_codes(plain, frame, noise, task="binary", seed=0) == (plain, {})


def _classrooms(seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Pupils of several classes per school: a class is a school and its teacher's
    years of experience, and its effect on the score is the class's own."""
    rng = np.random.default_rng(seed)
    schools, per_school, pupils = 40, 3, 12
    years = rng.integers(0, 30, size=(schools, per_school))
    effect = rng.normal(size=(schools, per_school))
    school = np.repeat(np.arange(schools), per_school * pupils)
    room = np.tile(np.repeat(np.arange(per_school), pupils), schools)
    frame = pd.DataFrame(
        {
            "school": [f"s{i}" for i in school],
            "experience": years[school, room].astype("float64"),
            "girl": rng.integers(0, 2, len(school)),
            "x": rng.normal(size=len(school)),
        }
    )
    score = effect[school, room] + 0.5 * frame["girl"] + 0.5 * frame["x"]
    return frame, (score + rng.normal(size=len(school)) * 0.5).to_numpy()


def test_the_key_is_the_columns_whose_groups_carry_what_main_effects_leave() -> None:
    frame, y = _classrooms()
    kinds = {
        "school": "string_categorical",
        "experience": "numeric",
        "girl": "integer_categorical",
        "x": "numeric",
    }
    schema, codes = fit_row_codes(fit_schema(frame, kinds), frame, y, task="regression", seed=0)
    # Not the school alone, nor a pupil's own columns: the class (school and teacher).
    assert schema.rows is not None and schema.rows.key == ("school", "experience")
    assert len(schema.rows.vocabulary) == 40 * 3 - int(
        frame.groupby("school")["experience"].nunique().rsub(3).sum()
    )
    out_of_fold = codes[ROW_CODES][:, 0]
    assert np.corrcoef(out_of_fold, y)[0, 1] > 0.6
    # The export computes the same key from the key's columns alone.
    encoder = ServingEncoder(schema)
    served = encoder({name: tf.constant(v) for name, v in raw_rows(schema, frame).items()})
    np.testing.assert_array_equal(
        served[_INPUT].numpy(), model_inputs(schema, frame)[_INPUT].numpy()
    )


def test_training_rows_get_out_of_fold_codes_that_carry_the_persons_effect() -> None:
    frame, y = _panel(people=200, years=6)
    schema, codes = fit_row_codes(fit_schema(frame, _KINDS), frame, y, task="binary", seed=0)
    out_of_fold = codes[ROW_CODES][:, 0]
    fitted = model_inputs(schema, frame)[_INPUT].numpy()[:, 0]
    # Both carry who the person is; out of fold, a row's code never saw its own label, so
    # it separates the labels less than the codes fitted on every row do.
    gap = out_of_fold[y == 1].mean() - out_of_fold[y == 0].mean()
    assert 0.2 < gap < fitted[y == 1].mean() - fitted[y == 0].mean()
    again = fit_row_codes(fit_schema(frame, _KINDS), frame, y, task="binary", seed=0)[1]
    np.testing.assert_array_equal(again[ROW_CODES], codes[ROW_CODES])
    values = 1000.0 + 40.0 * y + np.arange(len(frame)) % 7  # far from standard units
    _, regression = fit_row_codes(
        fit_schema(frame, _KINDS), frame, values, task="regression", seed=0
    )
    assert abs(float(regression[ROW_CODES].mean())) < 1.0  # standardised units


def test_the_option_is_searched_only_where_rows_repeat_and_the_export_serves_it(
    tmp_path: Path,
) -> None:
    frame, y = _panel()
    schema, codes = fit_row_codes(fit_schema(frame, _KINDS), frame, y, task="binary", seed=0)
    space = SearchSpace(row_target_encoding=(False, True), units=(16,), num_layers=(1, 1))
    hypermodel = MLPHyperModel(schema=schema, task="binary", train_size=len(y), space=space)
    hp = keras_tuner.HyperParameters()
    hypermodel.declare(hp)
    assert "row_target_encoding" in hp.values
    plain = MLPHyperModel(
        schema=fit_schema(frame, _KINDS), task="binary", train_size=len(y), space=space
    )
    hp = keras_tuner.HyperParameters()
    plain.declare(hp)
    assert "row_target_encoding" not in hp.values  # no repeated rows fitted: nothing to search
    hp = keras_tuner.HyperParameters()
    hp.Fixed("row_target_encoding", True)
    model = hypermodel.build(hp)
    features = model.get_layer("features")
    assert any(_INPUT in str(node) for node in features.input)
    hypermodel.fit(hp, model, model_inputs(schema, frame, target_codes=codes), y, epochs=2)
    export_dir = export_model(
        model, export_root=tmp_path, task="binary", schema=schema, class_names=("no", "yes")
    )
    served = predict_saved_model(export_dir, raw_rows(schema, frame))["probabilities"][:, 1]
    expected = model.predict(model_inputs(schema, frame), verbose=0)[:, 0]
    np.testing.assert_allclose(served, expected, rtol=1e-4, atol=1e-5)


def test_numeric_only_tables_take_the_codes_beside_their_matrix() -> None:
    frame, y = _panel()
    numeric = frame[["x"]]
    schema, _ = fit_row_codes(
        fit_schema(numeric, {"x": "numeric"}), numeric, y, task="binary", seed=0
    )
    assert schema.rows is not None and not schema.numeric_only
    inputs = model_inputs(schema, numeric)
    assert set(inputs) == {"numeric", _INPUT}


def test_the_setting_is_validated_and_plan_says_how_much_rows_repeat(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(UserInputError, match=r"search\.row_target_encoding"):
        load_config(None, ["search.row_target_encoding=['yes']"])
    frame, y = _panel()
    path = tmp_path / "panel.csv"
    frame.assign(label=y).to_csv(path, index=False)
    args = ["plan", "--data", str(path), "--label", "label", "--calibration-epochs", "0"]
    args += ["--experiment-dir", str(tmp_path / "exp")]
    assert main(args) == 0  # searched by default
    out = capsys.readouterr().out
    assert "row target encoding searched (search.row_target_encoding)" in out
    # Each person's own x tells them apart: the key needs no other column.
    assert "rows grouped by x; 208 of 210 training rows share their group" in out
    assert "row_target_encoding" in out  # a hyperparameter of the space
    assert main([*args, "--set", "search.row_target_encoding=[false]"]) == 0
    assert "row_target_encoding" not in capsys.readouterr().out


def test_small_groups_are_shrunk_by_how_much_groups_differ() -> None:
    rng = np.random.default_rng(0)
    ids = np.repeat(np.arange(2000), 5)
    effect = rng.normal(size=2000)[ids]
    # True means spread as much as rows spread around them: shrink by about one row.
    outcome = (effect + rng.normal(size=len(ids))).reshape(-1, 1)
    assert 0.8 < _shrinkage(ids, outcome) < 1.25
    # Groups that differ by chance only: a group of five keeps under a seventh of its
    # own mean (none where the estimate of their spread is not positive), where
    # scikit-learn's "auto" keeps nearly all of it.
    noise = rng.normal(size=(len(ids), 1))
    assert _shrinkage(ids, noise) > 30


def test_no_key_where_no_column_repeats_or_the_main_effects_explain_everything() -> None:
    frame = pd.DataFrame({"x": np.arange(50.0), "shop": "a", "size": 1})
    schema = fit_schema(frame, _KINDS)
    assert fit_row_codes(schema, frame, np.arange(50.0), task="regression", seed=0) == (schema, {})
    assert fit_row_codes(schema, frame.iloc[:0], np.zeros(0), task="regression", seed=0) == (
        schema,
        {},
    )
