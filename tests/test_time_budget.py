"""The wall-clock budget: its cost model, its stops, and a search that it ends."""

from __future__ import annotations

import json
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import make_frame, random_search_args

from kt_pipeline.cli import main
from kt_pipeline.config import load_config
from kt_pipeline.time_budget import TimeBudget, TimeBudgetSpent, export_reserve


def test_the_cost_model_splits_a_fixed_cost_from_a_cost_per_epoch() -> None:
    budget = TimeBudget(3600, started=time.monotonic())
    assert budget.predict(5) == 0.0  # nothing to predict from yet
    budget.record(epochs=1, seconds=3.0)
    assert budget.predict(4) == pytest.approx(12.0)  # one epoch count: a plain ratio
    budget.record(epochs=3, seconds=5.0)
    budget.record(epochs=9, seconds=11.0)
    # 2 s per trial and 1 s per epoch fit all three exactly.
    assert budget.predict(20) == pytest.approx(22.0)


def test_a_trial_that_does_not_fit_is_refused_and_marks_the_budget_spent() -> None:
    budget = TimeBudget(100, started=time.monotonic())
    left = budget.left()
    assert 100 - export_reserve(100) - 1 < left <= 100 - export_reserve(100)
    budget.record(epochs=1, seconds=1.0)
    budget.record(epochs=2, seconds=2.0)
    budget.check(10)  # about 10 s: fits
    assert not budget.spent
    with pytest.raises(TimeBudgetSpent, match="a trial of 500 epochs needs about 500 s"):
        budget.check(500)
    assert budget.spent


def test_the_export_reserve_grows_with_the_budget_within_bounds() -> None:
    assert export_reserve(60) == 10.0
    assert export_reserve(600) == 30.0
    assert export_reserve(36_000) == 60.0
    assert export_reserve(8) == 2.0  # never more than a quarter


def test_training_stops_at_the_first_epoch_that_ends_past_the_deadline() -> None:
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.zeros((8, 2), "float32"), np.zeros((8, 1), "float32")
    budget = TimeBudget(1e-6, started=time.monotonic())  # already past
    history = model.fit(x, y, epochs=5, callbacks=[budget.callback()], verbose=0)
    assert len(history.epoch) == 1
    later = TimeBudget(3600, started=time.monotonic())
    history = model.fit(x, y, epochs=3, callbacks=[later.callback()], verbose=0)
    assert len(history.epoch) == 3


def _trials(experiment: Path) -> dict[str, dict]:
    trials = {}
    for path in (experiment / "search").glob("trial_*/trial.json"):
        state = json.loads(path.read_text())
        stats = path.with_name("stats.json")
        state["stats"] = json.loads(stats.read_text()) if stats.exists() else None
        trials[state["trial_id"]] = state
    return trials


@pytest.mark.slow
def test_a_spent_budget_ends_the_search_with_an_export_and_resume_runs_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data.csv"
    make_frame(120).to_csv(data, index=False)
    experiment = tmp_path / "exp"
    overrides = ("search.units=[8]", "search.num_layers=1", "search.optimizers=['adam']")
    args = random_search_args(experiment, data, max_trials=3, max_epochs=3, overrides=overrides)
    # A budget already spent when the search starts: the first trial still runs (there
    # must be a model to export), cut to one epoch, and nothing else starts.
    assert main([*args, "--time-budget", "0.001s"]) == 0
    out = capsys.readouterr().out
    assert "The time budget (tuner.time_budget) ended the search" in out
    summary = json.loads((experiment / "summary.json").read_text())
    assert summary["stopped_by_time_budget"] is True
    assert summary["completed_trials"] == 1 and summary["export_dir"]
    completed = [t for t in _trials(experiment).values() if t["status"] == "COMPLETED"]
    assert len(completed) == 1 and completed[0]["stats"]["epochs"] == 1
    assert load_config(experiment / "config.toml").tuner.time_budget == 0.001

    # Resumed without a budget (a setting that may change), the rest runs.
    assert main(args) == 0
    trials = _trials(experiment)
    assert len(trials) == 3
    assert all(t["status"] == "COMPLETED" for t in trials.values())
    assert json.loads((experiment / "summary.json").read_text())["stopped_by_time_budget"] is False


def test_a_bad_time_budget_is_one_line_naming_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data.csv"
    make_frame(40).to_csv(data, index=False)
    args = random_search_args(tmp_path / "exp", data, max_trials=1, max_epochs=1)
    assert main([*args, "--time-budget", "ten minutes"]) == 2
    err = capsys.readouterr().err
    assert "`tuner.time_budget` must be a duration such as 90s, 10m or 1.5h" in err
    assert "'ten minutes'" in err and "Traceback" not in err
    assert main([*args, "--time-budget", "10m", "--workers", "2"]) == 2
    assert "not supported in a parallel search" in capsys.readouterr().err
    assert not (tmp_path / "exp" / "search").exists()  # nothing written
