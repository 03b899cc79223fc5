"""The export's ensemble: which trials it averages, and that it averages them."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import keras
import keras_tuner
import numpy as np
import pytest
from keras_tuner.engine.trial import Trial, TrialStatus

from kt_pipeline import config as config_lib
from kt_pipeline import ensemble
from kt_pipeline.config import load_config
from kt_pipeline.ensemble import average_models, configuration_key, distinct_best_trials
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


def test_config_and_ensemble_agree_on_the_largest_ensemble() -> None:
    assert config_lib.MAX_ENSEMBLE == ensemble.MAX_ENSEMBLE


def test_export_serves_the_mean_of_the_best_distinct_trials(
    flaky_experiment: Path, tmp_path: Path
) -> None:
    """On a real search (whose second trial failed): the export's card names the three
    best completed configurations, and the reloaded SavedModel serves the mean of
    those trials' own models."""
    from hypermodels.features import model_inputs, raw_rows
    from kt_pipeline.export import predict_saved_model
    from kt_pipeline.model_card import format_card, load_card
    from kt_pipeline.pipeline import _prepare_data, _reload_tuner, export_best
    from kt_pipeline.tuners import completed_trials

    experiment = tmp_path / "experiment"
    shutil.copytree(flaky_experiment, experiment)
    config = load_config(
        experiment / "config.toml", [f"runtime.experiment_dir={str(experiment)!r}"]
    )
    assert config.export.ensemble == 3  # the default

    export_dir, scores = export_best(config)

    assert export_dir is not None and scores["accuracy"] > 0
    card = load_card(export_dir)
    prepared = _prepare_data(config)
    tuner = _reload_tuner(config, prepared)
    completed = completed_trials(tuner.oracle)
    members = [m["trial_id"] for m in card["ensemble"]]
    assert members == [t.trial_id for t in completed[:3]]  # random search: all distinct
    assert "1" not in members  # trial ids start at 0: "1" is the failed second trial
    assert card["trial_id"] == members[0]
    assert "average of 3 trials' models" in format_card(card, good=True)

    rows = prepared.splits.test.frame
    models = [tuner.load_model(tuner.oracle.get_trial(i)) for i in members]
    x = model_inputs(prepared.schema, rows)
    expected = np.mean([m.predict(x, verbose=0) for m in models], axis=0)
    served = predict_saved_model(export_dir, raw_rows(prepared.schema, rows))
    np.testing.assert_allclose(served["probabilities"], expected, rtol=1e-5, atol=1e-5)
