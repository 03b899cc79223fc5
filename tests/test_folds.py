"""Cross-validated trials (`data.folds`): fold models that share nothing, trained on
their own rows, scored out of fold, cut as the split cuts, and served averaged."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import keras
import keras_tuner
import numpy as np
import pandas as pd
import pytest

from hypermodels import MLPHyperModel
from hypermodels.features import NUMERIC, STRING_CATEGORICAL
from kt_pipeline.config import load_config
from kt_pipeline.data import Dataset
from kt_pipeline.errors import UserInputError
from kt_pipeline.splits import SplitSpec, TrialFolds, split_dataset, trial_folds
from tests.conftest import make_frame


def _binary(rows: int = 300) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 4)).astype("float32")
    return x, (x[:, 0] + 0.5 * rng.normal(size=rows) > 0).astype("int64")


def _hypermodel(x: np.ndarray, y: np.ndarray, folds: int) -> MLPHyperModel:
    hypermodel = MLPHyperModel.from_arrays(x, y, task="binary", max_epochs=2, units=(16,))
    hypermodel.folds = folds
    hypermodel.objective = keras_tuner.Objective("val_loss", "min")
    return hypermodel


def test_fold_models_share_no_weight_and_a_model_never_learns_its_own_fold() -> None:
    x, y = _binary()
    plain = _hypermodel(x, y, 1).build(keras_tuner.HyperParameters())
    hypermodel = _hypermodel(x, y, 3)
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)
    assert model.count_params() == 3 * plain.count_params()
    folds = TrialFolds(np.arange(len(y)) % 3, count=3)
    weights, _ = folds.weights()
    weights[:, 0] = 0.0  # model 0 trains on no row at all
    before = [v.numpy().copy() for v in model.get_layer("fold_0").trainable_variables]
    others = [v.numpy().copy() for v in model.get_layer("fold_1").trainable_variables]
    hypermodel.fit(hp, model, x, y, sample_weight=weights, epochs=2, verbose=0)
    after = model.get_layer("fold_0").trainable_variables
    assert all(np.array_equal(b, a.numpy()) for b, a in zip(before, after, strict=True))
    moved = model.get_layer("fold_1").trainable_variables
    assert not all(np.array_equal(b, a.numpy()) for b, a in zip(others, moved, strict=True))


def test_validation_metrics_are_the_out_of_fold_predictions_and_serving_is_their_mean() -> None:
    x, y = _binary()
    hypermodel = _hypermodel(x, y, 3)
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)
    folds = TrialFolds(np.arange(len(y)) % 3, count=3)
    weights, scored = folds.weights()
    history = hypermodel.fit(
        hp, model, x, y, sample_weight=weights, validation_data=(x, y, scored), epochs=2, verbose=0
    )
    stacked = keras.Model(model.inputs, model.outputs).predict(x, verbose=0)[..., 0]
    out_of_fold = (stacked * scored).sum(axis=1)
    loss = keras.losses.binary_crossentropy(y[:, None].astype("float32"), out_of_fold[:, None])
    assert history.history["val_loss"][-1] == pytest.approx(float(np.mean(loss)), abs=1e-5)
    served = model.predict(x, verbose=0)[:, 0]
    np.testing.assert_allclose(served, stacked.mean(axis=1), rtol=1e-5, atol=1e-6)


def test_weights_train_each_model_on_its_rows_with_a_mean_loss() -> None:
    weights, scored = TrialFolds(np.array([0, 1, 2, 0, 1, 2]), count=3).weights()
    assert scored.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1]] * 2
    assert (weights[scored == 1] == 0).all() and np.allclose(weights.mean(axis=0), 1.0)
    # Forward chaining: -1 trains every model; model j trains on rows before period j.
    chained = TrialFolds(np.array([-1, -1, 0, 0, 1, 1]), count=2, forward=True)
    weights, scored = chained.weights()
    assert (weights > 0).tolist() == [[True, True]] * 2 + [[False, True]] * 2 + [[False, False]] * 2
    assert scored.tolist() == [[0, 0]] * 2 + [[1, 0]] * 2 + [[0, 1]] * 2
    assert chained.scored_rows().tolist() == [2, 3, 4, 5]


def _dataset(frame: pd.DataFrame, y: np.ndarray, *, task: str = "binary") -> Dataset:
    kinds = {c: NUMERIC if c != "person" else STRING_CATEGORICAL for c in frame.columns}
    classes = ("no", "yes") if task == "binary" else ()
    return Dataset("test", frame, y, kinds, task, classes)


def _panel(rows: int = 300) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {
            "day": rng.integers(0, 50, size=rows),
            "person": np.char.add("p", rng.integers(0, 60, size=rows).astype(str)).astype(object),
            "x": rng.normal(size=rows),
        }
    )
    return frame, (frame["x"].to_numpy() > 0).astype("int64")


def test_folds_follow_the_split_and_the_validation_rows_join_training() -> None:
    frame, y = _panel()
    dataset = _dataset(frame, y)

    def cut(split: str):  # type: ignore[no-untyped-def]
        return split_dataset(
            dataset, split=split, validation_fraction=0.15, test_fraction=0.15, seed=0, folds=4
        )

    shuffled = cut("random")
    assert len(shuffled.validation) == 0 and len(shuffled.train) + len(shuffled.test) == 300
    assert shuffled.trial_folds is not None and shuffled.trial_folds.count == 4
    for fold in range(4):  # stratified: each fold's share of positives is the table's
        held = shuffled.train.y[shuffled.trial_folds.ids == fold]
        assert abs(held.mean() - shuffled.train.y.mean()) < 0.05
    grouped = cut("group:person")
    assert grouped.trial_folds is not None
    people = pd.Series(grouped.trial_folds.ids).groupby(grouped.train.groups)
    assert (people.nunique() == 1).all()  # no person in two folds
    timed = cut("time:day")
    assert timed.trial_folds is not None and timed.trial_folds.forward
    days = timed.train.frame.assign(fold=timed.trial_folds.ids).groupby("fold")["day"]
    assert (days.max().to_numpy()[:-1] < days.min().to_numpy()[1:]).all()
    assert timed.trial_folds.count == 4 and "forward-chained" in " ".join(timed.notes())
    # Every fold model trains on at least the earliest half of the rows.
    assert 0.4 < (timed.trial_folds.ids == -1).mean() < 0.6
    assert "trials are cross-validated on 4 folds of whole groups" in grouped.notes()[1]


def test_too_few_groups_or_rows_for_the_folds_are_refused() -> None:
    frame = pd.DataFrame({"person": ["a"] * 10, "x": np.arange(10.0)})
    with pytest.raises(UserInputError, match=r"`data.folds` = 3 .* groups .*Received: 1"):
        trial_folds(
            frame, np.zeros(10), SplitSpec.parse("group:person"), folds=3, seed=0, task="regression"
        )
    with pytest.raises(UserInputError, match=r"`data.folds` = 8 needs at least 16 .*Received: 10"):
        trial_folds(frame, np.zeros(10), SplitSpec(), folds=8, seed=0, task="regression")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.folds=0"], r"`data.folds` must be an integer >= 1. Received: 0"),
        (["data.folds=3", "search.members=[4]"], r"`search.members` must be 1 with data.folds"),
    ],
)
def test_bad_folds_settings_name_the_field(overrides: list[str], message: str) -> None:
    with pytest.raises(UserInputError, match=message):
        load_config(None, overrides)


def test_folds_auto_cross_validates_group_splits_whose_validation_part_holds_few_groups() -> None:
    from kt_pipeline.sizing import folds_for

    assert folds_for(100_000, split_kind="group", validation_groups=199) == 3
    assert folds_for(100_000, split_kind="group", validation_groups=200) == 1
    assert folds_for(100_001, split_kind="group", validation_groups=9) == 1
    for kind in ("random", "time", "column"):  # rows score a random split; time chains
        assert folds_for(500, split_kind=kind, validation_groups=0) == 1
    assert load_config(None, []).data.folds_auto  # the default
    assert load_config(None, ['data.folds="auto"']).data.folds_auto
    assert not load_config(None, ['data.folds="auto"', "data.folds=5"]).data.folds_auto
    with pytest.raises(UserInputError, match=r'`data.folds` must be an integer >= 1 or "auto"'):
        load_config(None, ['data.folds="some"'])


def test_folds_set_by_hand_over_a_saved_auto_config_are_used(tmp_path: Path) -> None:
    from kt_pipeline.config import save_config

    saved = tmp_path / "config.toml"
    config = load_config(None, ['data.folds="auto"', 'search.members="auto"'])
    # As a search saves its resolved config: the count and the flag.
    save_config(dataclasses.replace(config, data=dataclasses.replace(config.data, folds=3)), saved)
    config = load_config(saved, ["data.folds=5", "search.members=[1]"])
    assert (config.data.folds, config.data.folds_auto) == (5, False)
    assert not config.search.members_auto
    assert load_config(saved).data.folds_auto  # the file alone keeps its "auto"


def test_training_metrics_leave_out_the_rows_no_fold_model_trains_on() -> None:
    x, y = _binary(60)
    model = _hypermodel(x, y, 3).build(keras_tuner.HyperParameters())
    # Forward-chained: the base trains every model, the last period none.
    folds = TrialFolds(np.repeat([-1, 0, 1, 2], 15), count=3, forward=True)
    weights, _ = folds.weights()
    assert not weights[-15:].any()
    labels = np.ones(len(y), dtype="float32")
    members = np.full((len(y), 3, 1), 0.9, dtype="float32")
    members[weights == 0] = 0.0  # what a model that skips a row gives (any constant)
    results = model.compute_metrics(x, labels, members, sample_weight=weights)
    assert float(results["accuracy"]) == 1.0  # the untrained rows would count 0


@pytest.mark.parametrize(
    ("rows", "settings", "folds"),
    [
        (120, [], 1),  # a random split's validation rows are not few groups
        (120, ['data.split="group:n"'], 3),  # one validation group of five
        (2_000, ['data.split="group:row"'], 1),  # 300 validation groups
        (120, ['data.split="time:n"'], 1),  # forward-chained folds are not the default
        (120, ['data.split="group:n"', "search.members=[4]"], 1),  # members by hand
    ],
)
def test_folds_auto_is_resolved_once_from_the_table(
    tmp_path: Path, rows: int, settings: list[str], folds: int
) -> None:
    from kt_pipeline.prepare import prepare_data, sized_for_data

    data = tmp_path / "rows.csv"
    make_frame(rows).assign(row=np.arange(rows)).to_csv(data, index=False)
    config = load_config(
        None,
        [f"data.source={str(data)!r}", 'data.label="label"', 'data.folds="auto"', *settings],
    )
    prepared = prepare_data(config)
    counted = prepared.splits.trial_folds.count if prepared.splits.trial_folds else 1
    assert counted == sized_for_data(config, prepared).data.folds == folds


def _search_with_folds(
    frame: pd.DataFrame, folder: Path, *, refit: str, split: str = "random"
) -> dict[str, Any]:
    """A tiny three-fold search's result and its export's model card."""
    import kt_pipeline as ktp
    from kt_pipeline.model_card import load_card

    result = ktp.search(
        frame,
        label="label",
        split=split,
        folds=3,
        experiment_dir=folder,
        tuner="random",
        max_trials=2,
        max_epochs=2,
        seed=0,
        settings={
            "search.learning_rate_auto": False,
            "search.units": [8],
            "export.refit": refit,
        },
        verbose=False,
    )
    assert result.export_dir is not None
    return {"result": result, "card": load_card(result.export_dir)}


def test_a_cross_validated_search_scores_out_of_fold_and_serves_the_fold_models(
    tmp_path: Path,
) -> None:
    found = _search_with_folds(make_frame(160), tmp_path, refit="blend")
    card = found["card"]
    assert card["data"]["split"]["trial_folds"] == 3
    # The fold models blended with one network per configuration trained on every row.
    assert card["refit"]["mode"] == "blend" and card["refit"]["rows"] == 136
    trained = found["result"].best_models(1)[0].get_layer("mlp")
    assert [layer.name for layer in trained.layers if layer.name.startswith("fold_")] == [
        "fold_0",
        "fold_1",
        "fold_2",
    ]


def test_a_time_split_chains_its_folds_forward_and_serves_a_refit(tmp_path: Path) -> None:
    frame, y = _panel(240)
    labelled = frame.assign(label=np.where(y == 1, "yes", "no"))
    card = _search_with_folds(labelled, tmp_path, refit="replace", split="time:day")["card"]
    assert card["data"]["split"]["trial_folds"] == 3
    # The chosen configurations train again on every row, the latest (test) rows last.
    assert card["refit"]["mode"] == "replace" and card["refit"]["test_rows_included"]


def test_the_command_line_refuses_bad_folds_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from kt_pipeline.cli import main

    data = tmp_path / "rows.csv"
    make_frame(60).to_csv(data, index=False)
    args = [
        "search",
        "--data",
        str(data),
        "--label",
        "label",
        "--experiment-dir",
        str(tmp_path / "e"),
    ]
    assert main([*args, "--folds", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "`data.folds` must be an integer >= 1. Received: 0" in err
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--folds", "five"])
    assert (
        exit_info.value.code == 2
        and "`--folds` must be an integer or auto. Received: 'five'" in (capsys.readouterr().err)
    )
    assert not (tmp_path / "e").exists()


def test_in_training_a_fold_model_runs_on_the_rows_it_trains_on_alone() -> None:
    x, y = _binary(60)
    hypermodel = _hypermodel(x, y, 3)
    hp = keras_tuner.HyperParameters()
    hp.Fixed("batch_norm", True)  # its statistics would see the fold's own rows
    model = hypermodel.build(hp)
    folds = TrialFolds(np.arange(len(y)) % 3, count=3)
    weights, _ = folds.weights()
    batches = hypermodel._inputs.training(x, y, batch_size=len(y), shuffle=False)
    inputs = next(iter(batches))[0]
    model._trained_members = weights
    members = np.asarray(model(inputs, training=True))
    model._trained_members = None
    for index in range(3):
        own = folds.ids == index
        assert np.all(members[own, index] == 0.5)  # never computed: a constant
        rows = keras.tree.map_structure(lambda t, own=own: np.asarray(t)[~own], inputs)
        alone = model.get_layer(f"fold_{index}")(rows, training=True)
        np.testing.assert_allclose(members[~own, index], np.asarray(alone), rtol=1e-5)
    # A batch with none of a model's rows runs it on one row at weight 0: batch
    # normalisation of no rows would make its statistics NaN.
    weights[:, 0] = 0.0
    hypermodel.fit(hp, model, x, y, sample_weight=weights, epochs=1, verbose=0)
    assert all(np.isfinite(v.numpy()).all() for v in model.get_layer("fold_0").variables)


def test_a_batch_of_one_folds_rows_runs_that_fold_model_alone_and_mixed_ones_are_refused() -> None:
    x, y = _binary(120)
    hypermodel = _hypermodel(x, y, 2)
    model = hypermodel.build(keras_tuner.HyperParameters())
    broken = model.get_layer("fold_1")
    for variable in broken.trainable_variables:  # any use of fold 1 would give NaN
        variable.assign(np.full(variable.shape, np.nan, dtype="float32"))
    scored = np.tile(np.array([[1.0, 0.0]], dtype="float32"), (len(y), 1))
    batches = hypermodel._inputs.evaluation(x, y, batch_size=32, sample_weight=scored)
    assert np.isfinite(model.evaluate(batches, verbose=0, return_dict=True)["loss"])
    mixed = scored.copy()
    mixed[::2] = [0.0, 1.0]  # a batch that names both: refused, not silently misread
    with pytest.raises(Exception, match="must name one member in every row"):
        model.evaluate(x, y, sample_weight=mixed, batch_size=32, verbose=0)


def test_plan_times_the_fold_models_and_says_how_trials_are_scored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from kt_pipeline.cli import main

    data = tmp_path / "rows.csv"
    make_frame(150).to_csv(data, index=False)
    args = ["plan", "--data", str(data), "--label", "label", "--calibration-epochs", "2"]
    assert main([*args, "--set", "search.units=[8]", "--folds", "3"]) == 0
    out = capsys.readouterr().out
    assert "trials are cross-validated on 3 folds of shuffled rows (data.folds)" in out
    assert "above the 127 training rows" in out  # the validation rows joined them
    assert main([*args, "--set", "search.units=[8]", "--split", "group:n"]) == 0
    out = capsys.readouterr().out  # by default: one validation group of five is few
    assert "trials are cross-validated on 3 folds of whole groups (data.folds)" in out
