"""High-cardinality categorical columns: rare values share one bucket, `plan` says which
columns are mostly rare values, and such a column is embedded, frequency-encoded or
dropped (`search.high_cardinality`)."""

from __future__ import annotations

import json
from pathlib import Path

import keras_tuner
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from hypermodels import MLPHyperModel, SearchSpace, TabularSchema, fit_schema
from hypermodels.features import (
    ServingEncoder,
    fit_target_codes,
    hashing_buckets,
    model_inputs,
    raw_rows,
)
from kt_pipeline.cli import main
from kt_pipeline.config import load_config
from kt_pipeline.errors import UserInputError
from kt_pipeline.export import export_model, predict_saved_model


def test_values_seen_fewer_than_min_frequency_times_share_the_unseen_bucket() -> None:
    train = pd.DataFrame({"shop": ["a"] * 5 + ["b"] * 3 + ["c", "d"], "size": [1] * 6 + [2] * 4})
    kinds = {"shop": "string_categorical", "size": "integer_categorical"}
    schema = fit_schema(train, kinds, min_frequency=3)
    shop, size = schema.columns
    assert shop.vocabulary == ("a", "b") and shop.levels == 4
    assert size.vocabulary == (1, 2)
    rows = pd.DataFrame({"shop": ["a", "b", "c", "d", "zz"], "size": [1, 2, 2, 1, 1]})
    ids = model_inputs(schema, rows)["shop"].numpy()[:, 0].tolist()
    assert ids == [1, 2, 0, 0, 0]  # rare c and d land with the unseen zz
    served = ServingEncoder(schema)({k: tf.constant(v) for k, v in raw_rows(schema, rows).items()})
    assert served["shop"].numpy()[:, 0].tolist() == ids
    assert fit_schema(train, kinds).columns[0].vocabulary == ("a", "b", "c", "d")  # default: all
    everything_rare = fit_schema(train, kinds, min_frequency=100)
    served = ServingEncoder(everything_rare)(
        {k: tf.constant(v) for k, v in raw_rows(everything_rare, rows).items()}
    )
    assert served["shop"].numpy()[:, 0].tolist() == [0] * 5


def test_the_rare_share_counts_rows_in_values_seen_fewer_than_five_times() -> None:
    values = ["common"] * 10 + [f"id{i}" for i in range(10)]  # 10 rows in rare values
    schema = fit_schema(pd.DataFrame({"x": values}), {"x": "string_categorical"})
    assert schema.columns[0].levels == 11
    assert schema.columns[0].rare_share == pytest.approx(0.5)


def _table_with_an_id(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    rows = 600
    frame = pd.DataFrame(
        {
            "x": rng.normal(size=rows),
            "customer": [f"c{i}" for i in rng.integers(0, 400, size=rows)],
            "label": rng.integers(0, 2, size=rows),
        }
    )
    path = folder / "ids.csv"
    frame.to_csv(path, index=False)
    return path


def test_plan_reports_a_mostly_rare_column_and_its_oversized_embedding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _table_with_an_id(tmp_path)
    args = ["plan", "--data", str(data), "--label", "label", "--calibration-epochs", "0"]
    args += ["--experiment-dir", str(tmp_path / "exp")]
    assert main(args) == 0
    out = capsys.readouterr().out
    notes, warnings = out.split("Warnings:")
    assert "column 'customer': " in notes and "levels seen fewer than 5 times" in notes
    assert "(data.min_frequency = 1)" in notes
    assert "column 'customer' (mostly rare levels) gets a 32-wide embedding" in warnings
    assert main([*args, "--set", "data.min_frequency=50"]) == 0
    out = capsys.readouterr().out
    assert "share one bucket" in out and "32-wide embedding" not in out
    assert main([*args, "--set", "search.high_cardinality=['frequency', 'drop']"]) == 0
    assert "32-wide embedding" not in capsys.readouterr().out  # never embedded


@pytest.mark.parametrize("value", ["0", "2.5", "true", "'x'"])
def test_min_frequency_is_validated(value: str) -> None:
    with pytest.raises(UserInputError, match=r"data\.min_frequency"):
        load_config(None, [f"data.min_frequency={value}"])


def test_the_search_reports_a_mostly_rare_column(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = _table_with_an_id(tmp_path)
    args = ["search", "--data", str(data), "--label", "label", "--tuner", "random"]
    args += ["--max-trials", "1", "--max-epochs", "1", "--experiment-dir", str(tmp_path / "e")]
    args += ["--set", "export.enabled=false", "--set", "search.learning_rate=[1e-3, 1e-2]"]
    with caplog.at_level("INFO", logger="kt_pipeline"):
        assert main(args) == 0
    assert "data: column 'customer': " in caplog.text


def test_counts_follow_the_ids_with_the_rare_values_first() -> None:
    train = pd.DataFrame({"shop": ["a"] * 5 + ["b"] * 3 + ["c", "d"]})
    schema = fit_schema(train, {"shop": "string_categorical"}, min_frequency=3)
    assert schema.columns[0].counts == (2, 5, 3)  # id 0: c and d; then a, b
    assert TabularSchema.from_json(schema.to_json()) == schema


def _wide_table(rows: int = 300) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {
            "x": rng.normal(size=rows),
            "customer": [f"c{i}" for i in rng.integers(0, 60, size=rows)],
            "city": rng.choice(["p", "q"], size=rows),
        }
    )
    return frame, (frame["x"] > 0).to_numpy("int32")


_KINDS = {"x": "numeric", "customer": "string_categorical", "city": "string_categorical"}


@pytest.mark.parametrize("treatment", ["embedding", "frequency", "target", "hashing", "drop"])
def test_each_high_cardinality_treatment_trains_and_serves_raw_strings(
    tmp_path: Path, treatment: str
) -> None:
    frame, y = _wide_table()
    schema, codes = fit_target_codes(fit_schema(frame, _KINDS), frame, y, task="binary", seed=0)
    space = SearchSpace(high_cardinality=(treatment,), units=(16,), num_layers=(1, 1))
    hypermodel = MLPHyperModel(schema=schema, task="binary", train_size=len(y), space=space)
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)
    assert "high_cardinality" not in hp.values  # one treatment: nothing to search
    names = {layer.name for layer in model.layers}
    assert ("embed_customer" in names) == (treatment == "embedding")
    assert ("frequency_customer" in names) == (treatment == "frequency")
    assert ("hashed_embed_customer" in names) == (treatment == "hashing")
    assert "one_hot_city" in names  # a narrow column is one-hot whatever the treatment
    hypermodel.fit(hp, model, model_inputs(schema, frame, target_codes=codes), y, epochs=2)
    x = model_inputs(schema, frame)  # each value's code, as validation rows and serving get
    if treatment == "frequency":  # a fixed lookup: the standardised log count of each id
        table = model.get_layer("frequency_customer")
        assert not table.trainable_weights
        logs = np.log1p(np.asarray(schema.columns[1].counts, dtype="float64"))
        expected = (logs - logs.mean()) / logs.std()
        np.testing.assert_allclose(table.get_weights()[0][:, 0], expected, rtol=1e-5)
    if treatment == "hashing":  # 61 ids (60 values and the unseen one) share 16 buckets
        table = model.get_layer("hashed_embed_customer").get_weights()[0]
        assert table.shape[0] == hashing_buckets(len(schema.columns[1].vocabulary) + 1) == 16
        buckets = model.get_layer("hash_customer")(np.arange(61).reshape(-1, 1))
        counts = np.bincount(np.asarray(buckets).ravel(), minlength=16)
        assert counts.min() >= 3 and counts.max() <= 4  # every bucket shared, evenly
    export_dir = export_model(
        model, export_root=tmp_path, task="binary", schema=schema, class_names=("no", "yes")
    )
    served = predict_saved_model(export_dir, raw_rows(schema, frame))["probabilities"][:, 1]
    np.testing.assert_allclose(served, model.predict(x, verbose=0)[:, 0], rtol=1e-4, atol=1e-5)


def test_target_codes_are_out_of_fold_for_training_rows_and_full_fit_elsewhere() -> None:
    rng = np.random.default_rng(5)
    rows = 2_000
    # A pure-noise identifier (every value seen about once) and one that carries signal.
    noise = [f"n{i}" for i in rng.permutation(rows)]
    signal = rng.integers(0, 40, size=rows)
    y = (rng.random(rows) < np.where(signal < 20, 0.8, 0.2)).astype("int32")
    frame = pd.DataFrame({"noise": noise, "signal": [f"s{v}" for v in signal]})
    kinds = {"noise": "string_categorical", "signal": "string_categorical"}
    schema, codes = fit_target_codes(fit_schema(frame, kinds), frame, y, task="binary", seed=0)
    full = model_inputs(schema, frame)
    # Out of fold, a value seen once knows nothing of its row's label: the codes sit at
    # the base rate whatever the label. Fitted on every row, they would give it away.
    out_of_fold = codes["noise"][:, 0]
    assert abs(out_of_fold[y == 1].mean() - out_of_fold[y == 0].mean()) < 0.02
    in_sample = full["noise__target"].numpy()[:, 0]
    assert in_sample[y == 1].mean() - in_sample[y == 0].mean() > 0.1
    # The signal survives cross-fitting.
    signal_codes = codes["signal"][:, 0]
    assert signal_codes[signal < 20].mean() - signal_codes[signal >= 20].mean() > 0.4
    # Reproducible from the seed, and an unseen value gets the target mean.
    again = fit_target_codes(fit_schema(frame, kinds), frame, y, task="binary", seed=0)[1]
    np.testing.assert_array_equal(again["signal"], codes["signal"])
    unseen = model_inputs(schema, pd.DataFrame({"noise": ["zz"], "signal": ["zz"]}))
    assert unseen["signal__target"].numpy()[0, 0] == pytest.approx(y.mean())


def test_multiclass_and_regression_targets_get_their_own_codes() -> None:
    frame, _ = _wide_table()
    classes = np.arange(len(frame)) % 3
    schema, codes = fit_target_codes(
        fit_schema(frame, _KINDS), frame, classes, task="multiclass", seed=1
    )
    assert codes["customer"].shape == (len(frame), 3)
    assert len(schema.columns[1].target_codes[0]) == 3
    assert "city" not in codes  # narrow columns are one-hot, never target-encoded
    values = frame["x"].to_numpy() * 100 + 7
    schema, codes = fit_target_codes(
        fit_schema(frame, _KINDS), frame, values, task="regression", seed=1
    )
    assert codes["customer"].shape == (len(frame), 1)
    assert abs(float(np.mean(schema.columns[1].target_codes))) < 1.0  # standardised units


def test_the_treatment_is_searched_only_where_a_column_needs_one() -> None:
    frame, y = _wide_table()
    space = SearchSpace(high_cardinality=("embedding", "frequency", "drop"))
    hp = keras_tuner.HyperParameters()
    schema = fit_schema(frame, _KINDS)
    MLPHyperModel(schema=schema, task="binary", train_size=len(y), space=space).declare(hp)
    assert hp.get("high_cardinality") == "embedding"
    narrow = fit_schema(frame[["x", "city"]], {"x": "numeric", "city": "string_categorical"})
    hp = keras_tuner.HyperParameters()
    MLPHyperModel(schema=narrow, task="binary", train_size=len(y), space=space).declare(hp)
    assert "high_cardinality" not in hp.values


def test_dropping_the_only_columns_falls_back_to_their_frequency() -> None:
    frame, y = _wide_table()
    schema = fit_schema(frame[["customer"]], {"customer": "string_categorical"})
    space = SearchSpace(high_cardinality=("drop",), units=(8,), num_layers=(1, 1))
    model = MLPHyperModel(schema=schema, task="binary", train_size=len(y), space=space).build(
        keras_tuner.HyperParameters()
    )
    assert "frequency_customer" in {layer.name for layer in model.layers}


def test_the_treatment_is_validated() -> None:
    with pytest.raises(UserInputError, match=r"search\.high_cardinality"):
        load_config(None, ["search.high_cardinality=['hash']"])


def test_a_search_over_the_treatments_exports_a_model_that_serves_raw_strings(
    tmp_path: Path,
) -> None:
    data = _table_with_an_id(tmp_path)
    experiment = tmp_path / "e"
    args = ["search", "--data", str(data), "--label", "label", "--tuner", "random"]
    args += ["--max-trials", "3", "--max-epochs", "1", "--experiment-dir", str(experiment)]
    args += ["--set", "search.high_cardinality=['target', 'frequency']"]
    args += ["--set", "search.learning_rate=[1e-3, 1e-2]", "--seed", "3"]
    args += ["--set", "export.refit=true"]  # target codes for training + validation rows
    args += ["--set", "data.screen_identifiers=false"]  # its id is noise: kept to be searched
    assert main(args) == 0  # the export is verified against the model on the test rows
    trials = list((experiment / "search").rglob("trial.json"))
    chosen = {
        json.loads(t.read_text())["hyperparameters"]["values"]["high_cardinality"] for t in trials
    }
    assert chosen == {"target", "frequency"}
    (export_dir,) = list((experiment / "export").iterdir())
    card = json.loads((export_dir / "assets.extra" / "model_card.json").read_text())
    assert card["refit"]["rows"] > 0


def _noise_and_signal(rows: int = 2_000, levels: int = 300) -> tuple[pd.DataFrame, np.ndarray]:
    """An identifier of pure noise and one whose levels carry an effect."""
    rng = np.random.default_rng(3)
    shop, ticket = rng.integers(0, levels, size=(2, rows))
    frame = pd.DataFrame(
        {
            "shop": np.char.add("s", shop.astype(str)).astype(object),
            "ticket": np.char.add("t", ticket.astype(str)).astype(object),
            "x": rng.normal(size=rows),
        }
    )
    y = rng.normal(size=levels)[shop] + frame["x"].to_numpy() + rng.normal(size=rows)
    return frame, y


def test_screening_leaves_out_an_identifier_that_carries_nothing() -> None:
    from hypermodels.features import LEVEL_MIN_SHARE, level_shares, screen_identifiers

    frame, y = _noise_and_signal()
    kinds = {"shop": "string_categorical", "ticket": "string_categorical", "x": "numeric"}
    schema = fit_schema(frame, kinds)
    shares = level_shares(schema, frame, y, task="regression", seed=0)
    assert shares["shop"] > 0.1 and abs(shares["ticket"]) < LEVEL_MIN_SHARE
    screened = screen_identifiers(schema, shares)
    assert [c.treatment for c in screened.columns] == ["", "drop", ""]
    assert screened.names == schema.names  # the export still takes every column
    model = MLPHyperModel(schema=screened, task="regression").build(keras_tuner.HyperParameters())
    layers = {layer.name for layer in model.layers}
    assert "embed_shop" in layers and "embed_ticket" not in layers
    assert (
        screen_identifiers(schema, {"shop": 0.0, "ticket": 0.0, "x": 0.0}).columns[2]
        == (schema.columns[2])
    )
    only = fit_schema(frame[["ticket"]], {"ticket": "string_categorical"})
    assert screen_identifiers(only, {"ticket": 0.0}) == only  # never every feature


def test_an_identifier_that_carries_nothing_costs_exactly_nothing(tmp_path: Path) -> None:
    """By default (`data.screen_identifiers`) a table with a noise identifier gets the
    very model the table without it gets, and the card says what was left out."""
    import kt_pipeline as ktp
    from kt_pipeline.model_card import load_card

    frame, y = _noise_and_signal(600, levels=40)
    results = [
        ktp.search(
            table.assign(label=y),
            label="label",
            experiment_dir=tmp_path / name,
            tuner="random",
            max_trials=2,
            max_epochs=2,
            seed=0,
            settings={"search.learning_rate_auto": False, "export.refit": "off"},
            verbose=False,
        )
        for name, table in (("with", frame), ("without", frame.drop(columns="ticket")))
    ]
    with_id, without_id = results
    schema = {c["name"]: c for c in load_card(with_id.export_dir)["data"]["schema"]}
    assert schema["ticket"]["treatment"] == "drop" and "treatment" not in schema["shop"]
    assert "ticket" not in {c["name"] for c in load_card(without_id.export_dir)["data"]["schema"]}
    served = with_id.predict(frame.head(20))  # still served with every column
    assert np.array_equal(served, without_id.predict(frame.head(20).drop(columns="ticket")))


def test_plan_says_which_identifier_it_leaves_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frame, y = _noise_and_signal(600, levels=40)
    frame.assign(label=y).to_csv(tmp_path / "ids.csv", index=False)
    args = ["plan", "--data", str(tmp_path / "ids.csv"), "--label", "label"]
    args += ["--calibration-epochs", "0", "--experiment-dir", str(tmp_path / "exp")]
    assert main(args) == 0
    notes = capsys.readouterr().out.split("Warnings:")[0]
    ticket = next(line for line in notes.splitlines() if "column 'ticket': its levels" in line)
    assert "left out of the network (data.screen_identifiers)" in ticket
    shop = next(line for line in notes.splitlines() if "column 'shop': its levels" in line)
    assert "the search decides how it enters" in shop
    assert main([*args, "--set", "data.screen_identifiers=false"]) == 0
    assert "left out of the network" not in capsys.readouterr().out  # every id searched


def test_plan_warns_of_no_embedding_for_a_column_the_screening_left_out() -> None:
    from hypermodels.features import screen_identifiers
    from kt_pipeline.plan import _rare_level_warnings

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"code": rng.integers(0, 500, 600).astype(str), "x": rng.normal(size=600)})
    schema = fit_schema(frame, {"code": "string_categorical", "x": "numeric"})
    (warning,) = _rare_level_warnings(schema, treatments=["embedding"])
    assert "column 'code' (mostly rare levels) gets a" in warning
    screened = screen_identifiers(schema, {"code": 0.0})
    assert _rare_level_warnings(screened, treatments=["embedding"]) == []


def test_a_column_the_screening_left_out_gets_no_rare_level_note() -> None:
    """Its levels no longer enter the network, so "each keeps its own value" would be
    wrong; the identifier note says it was left out."""
    from hypermodels.features import screen_identifiers
    from kt_pipeline.plan import rare_level_notes

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"code": rng.integers(0, 500, 600).astype(str), "x": rng.normal(size=600)})
    schema = fit_schema(frame, {"code": "string_categorical", "x": "numeric"})
    (note,) = rare_level_notes(schema, min_frequency=1)
    assert note.startswith("column 'code'") and "each keeps its own value" in note
    assert rare_level_notes(screen_identifiers(schema, {"code": 0.0}), min_frequency=1) == []
