"""The export's ensemble: which trials it chooses, with which weights, and that it
averages them."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import keras
import keras_tuner
import numpy as np
import pytest
from keras_tuner.engine.trial import Trial, TrialStatus

from kt_pipeline.config import load_config
from kt_pipeline.ensemble import (
    average_models,
    configuration_key,
    distinct_best_trials,
    greedy_selection,
    validation_scorer,
)
from kt_pipeline.errors import UserInputError


class _Oracle:
    """What `distinct_best_trials` reads of an oracle: its trials, best first by score
    as KerasTuner orders them (failed trials included)."""

    def __init__(self, trials: list[Trial]) -> None:
        self.trials = {t.trial_id: t for t in trials}

    def get_best_trials(self, num_trials: int) -> list[Trial]:
        ranked = sorted(self.trials.values(), key=lambda t: -(t.score or -np.inf))
        return ranked[:num_trials]


def _trial(trial_id: str, score: float | None, status: str, **values: Any) -> Trial:
    hp = keras_tuner.HyperParameters()
    for name, value in values.items():
        hp.Fixed(name.replace("__", "/"), value)
    trial = Trial(hp, trial_id=trial_id, status=status)
    trial.score = score
    return trial


def _search() -> _Oracle:
    done = TrialStatus.COMPLETED
    return _Oracle(
        [
            _trial("a27", 0.99, done, units=64, tuner__epochs=20, tuner__trial_id="a9"),
            _trial("a9", 0.98, done, units=64, tuner__epochs=7),  # a27's parent
            _trial("f", 0.999, TrialStatus.FAILED, units=8),
            _trial("nan", float("nan"), done, units=16),
            _trial("b", 0.97, done, units=128),
            _trial("c", 0.95, done, units=256),
            _trial("d", 0.90, done, units=512),
        ]
    )


def test_the_ensemble_takes_each_configuration_once_and_skips_failed_trials() -> None:
    ids = [t.trial_id for t in distinct_best_trials(_search(), count=3)]  # type: ignore[arg-type]
    assert ids == ["a27", "b", "c"]
    assert [t.trial_id for t in distinct_best_trials(_search(), count=1)] == ["a27"]  # type: ignore[arg-type]
    everything = distinct_best_trials(_search(), count=10)  # type: ignore[arg-type]
    assert [t.trial_id for t in everything] == ["a27", "b", "c", "d"]


def test_configuration_key_ignores_only_the_tuners_bookkeeping() -> None:
    base = {"units": 64, "optimizer": "adam"}
    assert configuration_key({**base, "tuner/epochs": 7}) == configuration_key(base)
    assert configuration_key({**base, "units": 128}) != configuration_key(base)


def _model(seed: int, name: str = "mlp") -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,), name="numeric")
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(inputs)
    outputs = keras.layers.Dense(3, activation="softmax", name="output")(hidden)
    return keras.Model(inputs, outputs, name=name)


def test_average_models_outputs_the_mean_of_its_members() -> None:
    members = [_model(seed) for seed in (1, 2, 3)]  # all named "mlp", as trials' models are
    x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    expected = np.mean([m.predict(x, verbose=0) for m in members], axis=0)
    averaged = average_models(members, inputs=keras.Input((4,), name="numeric"))
    np.testing.assert_allclose(averaged.predict(x, verbose=0), expected, rtol=1e-6, atol=1e-6)
    assert not np.allclose(expected, members[0].predict(x, verbose=0))  # members differ


def test_average_models_weighs_its_members() -> None:
    members = [_model(seed) for seed in (1, 2)]
    x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    first, second = (m.predict(x, verbose=0) for m in members)
    weighted = average_models(members, inputs=keras.Input((4,), name="numeric"), weights=[3, 1])
    np.testing.assert_allclose(
        weighted.predict(x, verbose=0), 0.75 * first + 0.25 * second, rtol=1e-6, atol=1e-6
    )


BINARY_AUC = keras_tuner.Objective("val_auc", "max")


def _candidates(rng: np.random.Generator, y: np.ndarray, quality: list[float]) -> list[np.ndarray]:
    """Binary probabilities that follow `y` more (quality near 1) or less (near 0)."""
    return [
        (q * y + (1 - q) * rng.random(len(y))).reshape(-1, 1).astype("float32") for q in quality
    ]


def test_greedy_selection_is_never_worse_on_validation_than_the_best_single_model() -> None:
    rng = np.random.default_rng(0)
    improved = 0
    for _ in range(30):
        y = rng.integers(0, 2, size=200)
        predictions = _candidates(rng, y, list(rng.uniform(0.0, 0.6, size=6)))
        score = validation_scorer("binary", BINARY_AUC, y)
        counts = greedy_selection(predictions, score, max_members=4)
        mean = np.sum([c * p for c, p in zip(counts, predictions, strict=True)], axis=0)
        chosen = score(mean / sum(counts))
        best_single = max(score(p) for p in predictions)
        assert chosen >= best_single
        assert 1 <= sum(c > 0 for c in counts) <= 4
        improved += chosen > best_single
    assert improved >= 10  # independent noise averages out: often strictly better


def test_a_model_that_does_not_help_gets_no_weight() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, size=300)
    good = _candidates(rng, y, [0.5, 0.5])
    useless = [np.full((300, 1), 0.5, dtype="float32"), (1 - good[0]).astype("float32")]
    counts = greedy_selection(
        [*good, *useless], validation_scorer("binary", BINARY_AUC, y), max_members=4
    )
    assert counts[0] and counts[1] and counts[2:] == [0, 0]


def test_one_member_allowed_gives_the_best_single_model() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, size=100)
    predictions = _candidates(rng, y, [0.2, 0.5, 0.3])
    counts = greedy_selection(
        predictions, validation_scorer("binary", BINARY_AUC, y), max_members=1
    )
    assert counts == [0, 1, 0]


def test_accuracy_ties_are_broken_by_log_loss_and_unknown_objectives_by_the_loss() -> None:
    y = np.array([0, 1, 1])
    score = validation_scorer("multiclass", keras_tuner.Objective("val_accuracy", "max"), y)
    confident = np.array([[0.9, 0.1], [0.1, 0.9], [0.1, 0.9]])
    hesitant = np.array([[0.6, 0.4], [0.4, 0.6], [0.4, 0.6]])
    assert score(confident)[0] == score(hesitant)[0] == 1.0
    assert score(confident) > score(hesitant)
    one_class = validation_scorer("binary", BINARY_AUC, np.ones(3))  # no AUC: by log-loss
    assert one_class(np.array([[0.9], [0.9], [0.9]])) > one_class(np.array([[0.6], [0.9], [0.9]]))
    by_loss = validation_scorer("regression", keras_tuner.Objective("val_custom", "max"), y)
    assert by_loss(np.array([[0.0], [1.0], [1.0]])) > by_loss(np.array([[0.0], [2.0], [1.0]]))


def test_one_model_is_returned_unwrapped_and_none_is_an_error() -> None:
    single = _model(1)
    assert average_models([single], inputs=keras.Input((4,))) is single
    with pytest.raises(ValueError, match="at least one model"):
        average_models([], inputs=keras.Input((4,)))


@pytest.mark.parametrize("value", [0, 11])
def test_ensemble_size_is_validated(value: int) -> None:
    with pytest.raises(UserInputError) as error:
        load_config(None, [f"export.ensemble={value}"])
    assert str(error.value) == f"`export.ensemble` must be between 1 and 10. Received: {value}"


def test_export_serves_the_weighted_mean_chosen_on_validation(
    flaky_experiment: Path, tmp_path: Path
) -> None:
    """On a real search (whose second trial failed): the card names completed trials
    with weights that sum to 1, the reloaded SavedModel serves the weighted mean of
    those trials' own models, and that mean scores at least the best single trial's
    model on the validation split."""
    from hypermodels.features import model_inputs, raw_rows
    from kt_pipeline.export import predict_saved_model
    from kt_pipeline.finish import export_best
    from kt_pipeline.model_card import format_card, load_card
    from kt_pipeline.prepare import prepare_data
    from kt_pipeline.search_parts import reload_tuner
    from kt_pipeline.tuners import completed_trials

    experiment = tmp_path / "experiment"
    shutil.copytree(flaky_experiment, experiment)
    config = load_config(
        experiment / "config.toml",
        [f"runtime.experiment_dir={str(experiment)!r}", "export.refit='off'"],
    )
    assert config.export.ensemble == 3  # the default

    exported = export_best(config)
    assert exported is not None
    export_dir, scores = exported.directory, exported.test_scores

    assert export_dir is not None and scores["accuracy"] > 0
    card = load_card(export_dir)
    prepared = prepare_data(config)
    tuner = reload_tuner(config, prepared)
    completed = completed_trials(tuner.oracle)
    members = [m["trial_id"] for m in card["ensemble"]]
    weights = [m["weight"] for m in card["ensemble"]]
    assert set(members) <= {t.trial_id for t in completed}
    assert "1" not in members  # trial ids start at 0: "1" is the failed second trial
    assert 1 <= len(members) <= 3 and abs(sum(weights) - 1) < 1e-9
    assert card["trial_id"] == completed[0].trial_id  # the best trial, whatever the ensemble

    models = {t.trial_id: tuner.load_model(t) for t in completed}
    validation = prepared.splits.validation
    score = validation_scorer("multiclass", tuner.oracle.objective, validation.y)
    x = model_inputs(prepared.schema, validation.frame)
    best_single = max(score(m.predict(x, verbose=0)) for m in models.values())
    served = predict_saved_model(export_dir, raw_rows(prepared.schema, validation.frame))
    assert score(served["probabilities"]) >= best_single
    assert card["ensemble_validation"]["selected"] >= card["ensemble_validation"]["best_single"]

    rows = prepared.splits.test.frame
    x = model_inputs(prepared.schema, rows)
    expected = [w * models[i].predict(x, verbose=0) for i, w in zip(members, weights, strict=True)]
    expected = np.sum(expected, axis=0)
    served = predict_saved_model(export_dir, raw_rows(prepared.schema, rows))
    np.testing.assert_allclose(served["probabilities"], expected, rtol=1e-5, atol=1e-5)
    if len(members) > 1:
        assert "weighted average of" in format_card(card, good=True)


def test_refit_counts_epochs_from_scratch_to_the_best_step() -> None:
    from kt_pipeline.finish import refit_epochs

    hp = keras_tuner.HyperParameters()
    hp.values.update({"units": 8, "tuner/initial_epoch": 3})
    promoted = Trial(hp, trial_id="7")
    promoted.best_step = 2  # the third epoch of its own run: the sixth from scratch
    assert refit_epochs(promoted) == 6
    fresh = Trial(keras_tuner.HyperParameters(), trial_id="8")
    fresh.best_step = 0
    assert refit_epochs(fresh) == 1


def test_refit_trains_the_members_again_on_training_and_validation_rows(
    flaky_experiment: Path, tmp_path: Path
) -> None:
    from hypermodels.features import raw_rows
    from kt_pipeline.export import predict_saved_model
    from kt_pipeline.finish import export_best, load_best_model
    from kt_pipeline.model_card import load_card
    from kt_pipeline.prepare import prepare_data

    experiment = tmp_path / "experiment"
    shutil.copytree(flaky_experiment, experiment)
    overrides = [f"runtime.experiment_dir={str(experiment)!r}", "export.refit=true"]
    # The search's HyperModel fails its second fit on purpose; the refit fits again.
    overrides.append("search.hypermodel='hypermodels:MLPHyperModel'")
    config = load_config(experiment / "config.toml", overrides)

    exported = export_best(config)  # verified against the refit models
    assert exported is not None
    export_dir, scores = exported.directory, exported.test_scores

    assert export_dir is not None and scores["accuracy"] > 0.5
    card = load_card(export_dir)
    prepared = prepare_data(config)
    splits = prepared.splits
    assert card["refit"]["rows"] == len(splits.train) + len(splits.validation)
    assert set(card["refit"]["epochs"]) == {m["trial_id"] for m in card["ensemble"]}
    assert all(epochs >= 1 for epochs in card["refit"]["epochs"].values())
    # The served models are new ones: the search's own ensemble predicts otherwise.
    searched, _ = load_best_model(config)
    rows = raw_rows(prepared.schema, splits.test.frame)
    served = predict_saved_model(export_dir, rows)["probabilities"]
    from hypermodels.features import model_inputs

    before = searched.predict(model_inputs(prepared.schema, splits.test.frame), verbose=0)
    assert np.abs(served - before).max() > 1e-3

    budgeted = load_config(experiment / "config.toml", [*overrides, "tuner.time_budget=600"])
    exported = export_best(budgeted)
    assert exported is not None
    export_dir = exported.directory
    assert export_dir is not None and load_card(export_dir)["refit"] == {}  # skipped


def test_blend_serves_the_mean_of_the_searched_and_the_refit_ensembles(
    flaky_experiment: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``export.refit = "auto"`` blends where the refit is cheap enough: the served
    output is the mean of the searched ensemble's and the refit ensemble's (the refit
    run again with the same seeds); too dear a refit is skipped, and so is any refit of
    a large table."""
    from hypermodels.features import model_inputs, raw_rows
    from kt_pipeline import finish, sizing
    from kt_pipeline.export import predict_saved_model
    from kt_pipeline.model_card import load_card
    from kt_pipeline.prepare import prepare_data
    from kt_pipeline.search_parts import reload_tuner

    experiment = tmp_path / "experiment"
    shutil.copytree(flaky_experiment, experiment)
    overrides = [
        f"runtime.experiment_dir={str(experiment)!r}",
        "search.hypermodel='hypermodels:MLPHyperModel'",  # the flaky one fails refits
    ]
    config = load_config(experiment / "config.toml", overrides)
    assert config.export.refit == "auto"
    prepared = prepare_data(config)
    tuner = reload_tuner(config, prepared)
    chosen = finish.select_ensemble(config, tuner, prepared)
    assert chosen is not None
    splits = prepared.splits
    share = finish.refit_cost_share(tuner, chosen, rows_ratio=1.0)
    assert share > 0  # every trial was timed

    monkeypatch.setattr(finish, "REFIT_MAX_SHARE", share / 2)  # too dear: skipped
    exported = finish.export_best(config, tuner=tuner, prepared=prepared)
    assert exported is not None and exported.refit == ""
    assert load_card(exported.directory)["refit"] == {}

    monkeypatch.setattr(finish, "REFIT_MAX_SHARE", share * 2)
    monkeypatch.setattr(sizing, "_FULL_BUDGET_ROWS", len(splits.train) - 1)  # a large table
    exported = finish.export_best(config, tuner=tuner, prepared=prepared)
    assert exported is not None and exported.refit == ""  # cheap enough, but too many rows

    monkeypatch.setattr(sizing, "_FULL_BUDGET_ROWS", len(splits.train))
    exported = finish.export_best(config, tuner=tuner, prepared=prepared)
    assert exported is not None and exported.refit == "blend"
    card = load_card(exported.directory)
    assert card["refit"]["mode"] == "blend"
    assert card["refit"]["rows"] == len(splits.train) + len(splits.validation)
    x = model_inputs(prepared.schema, splits.test.frame)
    searched = chosen.model.predict(x, verbose=0)
    refit_model, _ = finish.refit_members(config, tuner, prepared, chosen)
    refitted = refit_model.predict(x, verbose=0)
    assert np.abs(searched - refitted).max() > 1e-3  # new models, not the searched ones
    served = predict_saved_model(exported.directory, raw_rows(prepared.schema, splits.test.frame))
    np.testing.assert_allclose(served["probabilities"], (searched + refitted) / 2, atol=1e-4)


def test_the_refit_share_weighs_each_member_by_its_trial_seconds_per_epoch(
    flaky_experiment: Path,
) -> None:
    from kt_pipeline import finish
    from kt_pipeline.prepare import prepare_data
    from kt_pipeline.results import trial_table
    from kt_pipeline.search_parts import reload_tuner

    config = load_config(
        flaky_experiment / "config.toml", [f"runtime.experiment_dir={str(flaky_experiment)!r}"]
    )
    prepared = prepare_data(config)
    tuner = reload_tuner(config, prepared)
    chosen = finish.select_ensemble(config, tuner, prepared)
    assert chosen is not None
    table = trial_table(tuner).set_index("trial_id")
    expected = (
        sum(
            table.loc[t.trial_id, "seconds"]
            / table.loc[t.trial_id, "epochs"]
            * finish.refit_epochs(t)
            for t in chosen.members
        )
        / table["seconds"].sum()
    )
    share = finish.refit_cost_share(tuner, chosen, rows_ratio=1.5)
    assert share == pytest.approx(1.5 * expected)


def test_under_a_time_split_auto_refits_whatever_the_refit_costs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The searched models never saw the latest periods: the cost cap that skips a
    refit on a random split must not serve them alone under a time split."""
    from types import SimpleNamespace

    from kt_pipeline import finish
    from kt_pipeline.splits import SplitSpec

    monkeypatch.setattr(finish, "refit_cost_share", lambda *a, **k: 10 * finish.REFIT_MAX_SHARE)
    config = load_config(None, [])

    def mode(split: str) -> str:
        part = SimpleNamespace(y=np.zeros(100))
        splits = SimpleNamespace(
            spec=SplitSpec.parse(split), train=part, validation=part, trial_folds=None
        )
        return finish.refit_mode(config, None, SimpleNamespace(splits=splits), None)  # type: ignore[arg-type]

    assert mode("random") == "off"  # too costly beside the search
    assert mode("time:day") == "replace"
