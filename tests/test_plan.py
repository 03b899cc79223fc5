"""`kt-pipeline plan`: the space, the schedule, model sizes, warnings, the estimate."""

from __future__ import annotations

import collections
from pathlib import Path

import keras_tuner
import numpy as np
import pandas as pd
import pytest

from hypermodels import MLPHyperModel
from kt_pipeline import sizing
from kt_pipeline.cli import main
from kt_pipeline.config import load_config
from kt_pipeline.finish import REFIT_MAX_SHARE
from kt_pipeline.plan import describe_space, model_sizes, plan_search, space_warnings
from kt_pipeline.schedule import grid_size, schedule
from kt_pipeline.tuners import TunerSettings, TunerSpec, build_tuner

OBJECTIVE = keras_tuner.Objective("loss", "min")


def _space() -> keras_tuner.HyperParameters:
    hp = keras_tuner.HyperParameters()
    hp.Choice("optimizer", ["adam", "sgd"])
    with hp.conditional_scope("optimizer", ["sgd"]):
        hp.Float("sgd_momentum", 0.0, 0.99)
    hp.Float("learning_rate", 1e-4, 1e-2, sampling="log")
    hp.Float("dropout", 0.0, 0.5)
    hp.Choice("units", [8, 16])
    hp.Choice("batch_size", [16, 32])
    return hp


def test_a_sound_space_has_no_warnings() -> None:
    assert space_warnings(_space(), train_rows=100) == []


@pytest.mark.parametrize(
    ("declare", "expected"),
    [
        (lambda hp: hp.Float("learning_rate", 1e-5, 1.0), "linear scale over 5 decades"),
        (lambda hp: hp.Float("learning_rate", 0.0, 0.1), "linear scale from 0"),
        (lambda hp: hp.Float("dropout", 0.0, 1.0), "`dropout` reaches 1.0"),
        (lambda hp: hp.Fixed("dropout", 0.95), "`dropout` reaches 0.95"),
        (lambda hp: hp.Choice("units", [64, 512]), "`units` reaches 512 units, more than"),
        (lambda hp: hp.Int("units_1", 8, 300), "`units_1` reaches 300 units"),
        (lambda hp: hp.Choice("batch_size", [32, 256]), "`batch_size` reaches 256, above"),
    ],
)
def test_each_suspect_space_is_named(declare: object, expected: str) -> None:
    hp = keras_tuner.HyperParameters()
    # Sound neighbours that must not trigger anything.
    hp.Float("head_learning_rate", 1e-4, 1e-2, sampling="log")
    hp.Float("input_dropout", 0.0, 0.5)
    hp.Choice("units_9", [8, 64])
    declare(hp)  # type: ignore[operator]
    warnings = space_warnings(hp, train_rows=200)
    assert len(warnings) == 1
    assert expected in warnings[0]


def test_a_conditional_hyperparameter_that_can_never_be_active() -> None:
    hp = _space()
    with hp.conditional_scope("optimizer", ["lion"]):
        hp.Float("lion_beta", 0.5, 0.9)
        with hp.conditional_scope("lion_beta", [0.7]):
            hp.Boolean("nested")
    hp.Int("num_layers", 1, 2)
    with hp.conditional_scope("num_layers", [3]):
        hp.Choice("units_2", [8])
    warnings = space_warnings(hp, train_rows=100)
    assert len(warnings) == 3
    assert "`lion_beta` can never be active: it needs optimizer in ['lion']" in warnings[0]
    assert "`nested` can never be active" in warnings[1]
    assert "`units_2` can never be active: it needs num_layers in [3]" in warnings[2]


def test_space_lists_ranges_scales_and_conditions() -> None:
    rows = {info.name: info for info in describe_space(_space())}
    assert rows["learning_rate"].scale == "log"
    assert rows["learning_rate"].values == "[0.0001, 0.01]"
    assert rows["dropout"].scale == "linear"
    assert rows["sgd_momentum"].conditions == "optimizer in ['sgd']"
    assert rows["optimizer"].values == "['adam', 'sgd']" and rows["optimizer"].conditions == ""


def _run_hyperband(oracle: keras_tuner.Oracle) -> list[tuple[int, int]]:
    """Drives KerasTuner's oracle to the end; returns (epochs, initial_epoch) per trial."""
    runs = []
    rng = np.random.default_rng(0)
    while True:
        trial = oracle.create_trial("worker")
        if trial.status != "RUNNING":
            return runs
        values = trial.hyperparameters.values
        runs.append((values["tuner/epochs"], values["tuner/initial_epoch"]))
        oracle.update_trial(trial.trial_id, {"loss": float(rng.random())}, step=1)
        trial.status = "COMPLETED"
        oracle.end_trial(trial)


@pytest.mark.parametrize(
    ("max_epochs", "factor", "iterations", "max_trials"),
    [(3, 3, 1, 0), (20, 3, 1, 0), (27, 3, 2, 0), (10, 2, 1, 0), (20, 3, 1, 11)],
)
def test_hyperband_schedule_matches_what_keras_tuner_runs(
    tmp_path: Path, max_epochs: int, factor: int, iterations: int, max_trials: int
) -> None:
    hp = keras_tuner.HyperParameters()
    hp.Float("x", 0.0, 1.0)
    oracle = keras_tuner.oracles.HyperbandOracle(
        OBJECTIVE,
        max_epochs=max_epochs,
        factor=factor,
        hyperband_iterations=iterations,
        hyperparameters=hp,
        seed=1,
    )
    oracle.max_trials = max_trials or None
    oracle._set_project_dir(str(tmp_path), "hb")
    oracle.verbose = 0
    planned = schedule(oracle, max_epochs=max_epochs)
    runs = _run_hyperband(oracle)
    assert planned.trials == len(runs)
    assert list(planned.epochs_per_trial) == [epochs - start for epochs, start in runs]
    assert planned.epochs == sum(epochs - start for epochs, start in runs)
    if not max_trials:
        planned_rounds = collections.Counter(
            (epochs, epochs - trained)
            for bracket in planned.brackets
            for trials, epochs, trained in bracket.rounds
            for _ in range(trials)
        )
        assert planned_rounds == collections.Counter(runs)


def _hypermodel(**space: object) -> MLPHyperModel:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(48, 3)).astype("float32")
    return MLPHyperModel.from_arrays(
        x,
        (x[:, 0] > 0).astype("int32"),
        task="binary",
        max_epochs=3,
        **{  # type: ignore[arg-type]
            "units": (8, 16),
            "num_layers": (1, 2),
            "batch_sizes": (16,),
            "numeric_scalings": ("standardize",),
            "numeric_embeddings": ("none",),
            **space,
        },
    )


@pytest.mark.slow
def test_hyperband_schedule_matches_a_real_tiny_search(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(48, 3)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    tuner = build_tuner(
        _hypermodel(),
        TunerSpec(
            objective=keras_tuner.Objective("val_loss", "min"),
            directory=str(tmp_path),
            settings=TunerSettings(algorithm="hyperband", max_epochs=3, factor=3),
        ),
    )
    planned = schedule(tuner.oracle, max_epochs=3)
    tuner.search(x, y, validation_data=(x, y), epochs=3, verbose=0)
    ran = [
        t.hyperparameters.values["tuner/epochs"] - t.hyperparameters.values["tuner/initial_epoch"]
        for t in sorted(tuner.oracle.trials.values(), key=lambda t: t.trial_id)
    ]
    assert planned.trials == len(ran) == 6
    assert sorted(planned.epochs_per_trial) == sorted(ran)


def test_random_search_schedule_is_trials_times_epochs(tmp_path: Path) -> None:
    tuner = build_tuner(
        _hypermodel(),
        TunerSpec(
            objective=OBJECTIVE,
            directory=str(tmp_path),
            settings=TunerSettings(algorithm="random", max_trials=7),
        ),
    )
    planned = schedule(tuner.oracle, max_epochs=9)
    assert (planned.trials, planned.epochs, planned.brackets) == (7, 63, ())


def test_smallest_and_largest_models_are_built_for_real(tmp_path: Path) -> None:
    tuner = build_tuner(
        _hypermodel(per_layer_units=True, optimizers=("sgd", "adam")),
        TunerSpec(
            objective=OBJECTIVE, directory=str(tmp_path), settings=TunerSettings(algorithm="random")
        ),
    )
    smallest, largest = model_sizes(tuner.hypermodel, tuner.oracle.get_space(), replicas=2)
    features = 3
    # One layer of 8 with a bias, sigmoid head.
    assert smallest.trainable_parameters == (features * 8 + 8) + (8 + 1)
    assert smallest.hyperparameters["num_layers"] == 1
    # Two layers of 16, batch norm (no bias; gamma and beta trainable), Adam (2 slots).
    bn_trainable = 2 * 16
    assert largest.trainable_parameters == (
        (features * 16 + bn_trainable) + (16 * 16 + bn_trainable) + (16 + 1)
    )
    assert largest.hyperparameters["units_1"] == 16
    assert largest.hyperparameters["optimizer"] == "adam"
    assert largest.optimizer_slots == 2 * largest.trainable_parameters
    assert largest.memory_bytes == 4 * (
        largest.parameters
        + largest.optimizer_slots
        + largest.trainable_parameters
        + 2 * (16 // 2) * largest.activations_per_row
    )
    assert largest.memory_bytes > smallest.memory_bytes


def test_the_largest_model_takes_the_largest_numeric_embedding(tmp_path: Path) -> None:
    embeddings = ("none", "periodic", "piecewise_linear")
    tuner = build_tuner(
        _hypermodel(numeric_embeddings=embeddings, periodic_frequencies=(4, 8)),
        TunerSpec(
            objective=OBJECTIVE, directory=str(tmp_path), settings=TunerSettings(algorithm="random")
        ),
    )
    smallest, largest = model_sizes(tuner.hypermodel, tuner.oracle.get_space())
    assert smallest.hyperparameters["numeric_embedding"] == "none"
    assert largest.hyperparameters["numeric_embedding"] != "none"
    if largest.hyperparameters["numeric_embedding"] == "periodic":
        assert largest.hyperparameters["periodic_frequencies"] == 8
    assert largest.hyperparameters["embedding_dim"] == 32  # the default space's largest
    plain = build_tuner(
        _hypermodel(),
        TunerSpec(
            objective=OBJECTIVE,
            directory=str(tmp_path / "p"),
            settings=TunerSettings(algorithm="random"),
        ),
    )
    _, plain_largest = model_sizes(plain.hypermodel, plain.oracle.get_space())
    assert largest.trainable_parameters > plain_largest.trainable_parameters


@pytest.mark.slow
def test_plan_command_prints_everything_and_writes_nothing(
    tmp_path: Path, csv_file: object, capsys: pytest.CaptureFixture[str]
) -> None:
    data = csv_file(120)  # type: ignore[operator]
    experiment = tmp_path / "exp"
    args = ["plan", "--data", str(data), "--label", "label", "--experiment-dir", str(experiment)]
    args += ["--max-epochs", "4", "--calibration-epochs", "2", "--set", "search.units=[8, 256]"]
    assert main(args) == 0
    out = capsys.readouterr().out
    for expected in (
        "Search space",
        "sgd_momentum",
        "when optimizer in ['sgd']",
        "iteration 0 bracket 1",
        "trials,",
        "smallest",
        "largest",
        "Estimated wall time",
        "`units` reaches 256 units, more than the",
        "Notes:\n  - batch sizes [32, 64, 128] for 84 training rows",  # the defaults
        "  - the learning-rate range test runs first",
    ):
        assert expected in out
    assert "range test" not in out.split("Warnings:")[1]
    assert not experiment.exists()
    assert main(["plan", "--calibration-epochs", "1"]) == 2


def test_every_combination_of_warnings_is_independent() -> None:
    # All suspect at once: each is reported once.
    hp = keras_tuner.HyperParameters()
    hp.Float("learning_rate", 1e-6, 1.0)
    hp.Float("dropout", 0.0, 0.99)
    hp.Choice("units", [1024])
    hp.Choice("batch_size", [4096])
    warnings = space_warnings(hp, train_rows=500)
    assert len(warnings) == 4
    assert {w.split("`")[1] for w in warnings} == {
        "learning_rate",
        "dropout",
        "units",
        "batch_size",
    }


def test_the_estimate_is_checked_against_the_time_budget_or_half_an_hour() -> None:
    from kt_pipeline.plan import _time_warnings

    (over,) = _time_warnings(600.0, budget=300.0)
    assert "(10.0 min) exceeds the time budget (5.0 min, --time-budget" in over
    assert _time_warnings(200.0, budget=300.0) == []
    (long,) = _time_warnings(2 * 3600.0, budget=0.0)
    assert "exceeds 30.0 min: set --time-budget (tuner.time_budget)" in long
    assert _time_warnings(20 * 60.0, budget=0.0) == []


def test_grid_size_counts_what_keras_tuners_grid_search_visits(tmp_path: Path) -> None:
    hps = keras_tuner.HyperParameters()
    hps.Choice("optimizer", ["adam", "sgd"])
    with hps.conditional_scope("optimizer", "sgd"):
        hps.Choice("momentum", [0.0, 0.5, 0.9])
    hps.Boolean("batch_norm")
    hps.Float("dropout", 0.0, 0.5, step=0.25)
    hps.Float("rate", 1e-3, 1e-1, sampling="log")  # no step: 10 values and the default
    assert grid_size(hps) == (1 + 3) * 2 * 3 * 11
    oracle = keras_tuner.oracles.GridSearchOracle(
        objective=keras_tuner.Objective("score", "max"), hyperparameters=hps
    )
    oracle._set_project_dir(str(tmp_path), "grid")
    visited = set()
    while (trial := oracle.create_trial("tuner0")).status != "STOPPED":
        visited.add(tuple(sorted(trial.hyperparameters.values.items())))
        oracle.update_trial(trial.trial_id, {"score": 1.0})
        trial.status = "COMPLETED"
        oracle.end_trial(trial)
    assert len(visited) == grid_size(hps)


def test_grid_search_runs_its_whole_grid_and_plan_counts_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = [
        "--data", "builtin:iris", "--tuner", "grid", "--max-epochs", "1",
        "--set", "search.hypermodel='custom_models:LinearHyperModel'",
        "--set", "search.learning_rate_auto=false",
        "--experiment-dir", str(tmp_path),
    ]  # fmt: skip
    assert main(["plan", "--calibration-epochs", "0", *common]) == 0
    assert "11 trials, at most 11 epochs trained in all" in capsys.readouterr().out
    assert main(["search", *common]) == 0
    results = (tmp_path / "results.csv").read_text().splitlines()
    assert len(results) == 1 + 11


def test_plan_names_the_columns_whose_values_may_be_embedded(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "household_income": rng.choice([12.5, 30.0, 41.25, 80.0], size=300),
            "measure": rng.normal(size=300),
            "label": rng.integers(0, 2, size=300),
        }
    )
    data = tmp_path / "table.csv"
    frame.to_csv(data, index=False)
    searched = load_config(None, [*_data_overrides(data), "search.value_embeddings=[false, true]"])
    plan = plan_search(searched, calibration_epochs=0)
    assert any(
        "value embeddings searched (search.value_embeddings) for 1 numeric column(s)" in note
        and "'household_income' (4)" in note
        for note in plan.notes
    )
    assert plan.largest.hyperparameters["value_embedding"] is True
    assert plan.smallest.hyperparameters["value_embedding"] is False
    notes = plan_search(load_config(None, _data_overrides(data)), calibration_epochs=0).notes
    assert not any("value embeddings" in note for note in notes)


def _data_overrides(data: Path) -> list[str]:
    return [f"data.source={str(data)!r}", "data.label='label'"]


def test_plan_says_when_the_export_refits_outside_the_estimate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    frame = pd.DataFrame({"x": np.arange(200.0), "label": np.arange(200) % 2})
    data = tmp_path / "table.csv"
    frame.to_csv(data, index=False)

    def refit_notes(*overrides: str) -> list[str]:
        config = load_config(None, [*_data_overrides(data), *overrides])
        notes = plan_search(config, calibration_epochs=0).notes
        return [note for note in notes if "export.refit" in note]

    (auto,) = refit_notes()
    assert f"at most {100 * REFIT_MAX_SHARE:.0f}% of the search" in auto
    assert "not in the estimate" in auto
    (replace,) = refit_notes("export.refit=true")
    assert 'export.refit = "replace"' in replace
    (time_split,) = refit_notes("data.split='time:x'")
    assert "latest periods included, whatever it costs" in time_split
    assert refit_notes("export.refit='off'") == []
    assert refit_notes("tuner.time_budget='10m'") == []  # a time budget skips the refit
    monkeypatch.setattr(sizing, "_FULL_BUDGET_ROWS", 100)  # a "large" table: no refit
    (large,) = refit_notes()
    assert large.startswith("no refit for ") and "searched ensemble" in large
    assert 'export.refit = "replace"' in refit_notes("export.refit=true")[0]
