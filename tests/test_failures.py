"""Failed, diverged and crashed trials, and resuming after a kill (kt_pipeline.tuners)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import keras
import keras_tuner
import numpy as np
import pandas as pd
import pytest

from kt_pipeline.results import trial_table
from kt_pipeline.tuners import (
    CRASHES_FILE,
    DIVERGED,
    ERROR_FILE,
    SearchAbortedError,
    TunerSettings,
    TunerSpec,
    best_trial,
    build_tuner,
)

OBJECTIVE = keras_tuner.Objective("val_loss", "min")


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 2)).astype("float32")
    return x, (x @ np.array([1.0, -2.0], dtype="float32")).astype("float32")


class _ProcessDeath(BaseException):
    """Stands in for SIGKILL: escapes every `except Exception`, like a dying process."""


class _ModeHyperModel(keras_tuner.HyperModel):
    """A linear regression whose `mode` hyperparameter decides how the trial ends:
    ``ok`` trains, ``diverge`` uses a learning rate that blows the loss up, ``error``
    raises while building, ``fit_error`` while fitting. With `crash_first`, the first
    fit and every rerun of that trial kill the "process"."""

    crashed_values: ClassVar[list[int]] = []

    def __init__(
        self, modes: tuple[str, ...], *, variants: int = 2, crash_first: bool = False
    ) -> None:
        super().__init__()
        self.modes, self.variants, self.crash_first = modes, variants, crash_first

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        mode = hp.Choice("mode", list(self.modes))
        hp.Int("variant", 0, self.variants - 1)
        if mode == "error":
            raise ValueError("`units` must be > 0. Received: units=-1")
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        rate = 1e12 if mode == "diverge" else 0.05
        model.compile(keras.optimizers.SGD(rate), "mse")
        return model

    def fit(self, hp: keras_tuner.HyperParameters, model: keras.Model, *a: Any, **k: Any) -> Any:
        variant = hp.get("variant")
        if hp.get("mode") == "fit_error":
            raise RuntimeError("the data loader broke")
        if self.crash_first and (not _ModeHyperModel.crashed_values or variant in self.crashed):
            _ModeHyperModel.crashed_values.append(variant)
            raise _ProcessDeath
        return model.fit(*a, batch_size=8, **k)

    @property
    def crashed(self) -> list[int]:
        return _ModeHyperModel.crashed_values[:1]


def _tuner(directory: Path, hypermodel: keras_tuner.HyperModel, **kwargs: Any) -> Any:
    settings = TunerSettings(**({"algorithm": "random", "max_trials": 3} | kwargs))
    return build_tuner(
        hypermodel,
        TunerSpec(objective=OBJECTIVE, directory=str(directory), seed=3, settings=settings),
    )


def _search(tuner: Any, epochs: int = 5) -> None:
    x, y = _data()
    tuner.search(
        x,
        y,
        validation_data=(x, y),
        epochs=epochs,
        verbose=0,
        callbacks=[keras.callbacks.TerminateOnNaN()],
    )


def test_errors_and_divergence_are_failed_with_reasons_and_never_best(tmp_path: Path) -> None:
    # Plain KerasTuner records the diverged trial as COMPLETED; with a NaN objective it
    # would make it INVALID without a reason, with any other objective it could be best.
    tuner = _tuner(
        tmp_path,
        _ModeHyperModel(("ok", "diverge", "error")),
        max_trials=6,
        max_consecutive_failed_trials=3,  # two errors, diverged ones between them
    )
    _search(tuner)
    trials = tuner.oracle.trials.values()
    by_mode = {
        mode: [t for t in trials if t.hyperparameters.get("mode") == mode]
        for mode in ("ok", "diverge", "error")
    }
    assert all(len(t) == 2 for t in by_mode.values())  # every (mode, variant) ran
    assert {t.status for t in by_mode["ok"]} == {"COMPLETED"}
    for trial in by_mode["diverge"]:
        assert (trial.status, trial.message) == ("FAILED", DIVERGED)
        stats = json.loads(Path(tuner.get_trial_dir(trial.trial_id), "stats.json").read_text())
        assert stats["epochs"] == 1  # stopped at once, not after 5 epochs
    for trial in by_mode["error"]:
        assert trial.status == "FAILED"
        assert trial.message == "ValueError: `units` must be > 0. Received: units=-1"
        details = Path(tuner.get_trial_dir(trial.trial_id), ERROR_FILE).read_text()
        assert "Traceback" in details and "units=-1" in details
    best = best_trial(tuner.oracle)
    assert best is not None and best.hyperparameters.get("mode") == "ok"

    table = trial_table(tuner).set_index("trial_id")
    for trial in trials:
        row = table.loc[trial.trial_id]
        if trial.status == "COMPLETED":
            assert row["reason"] is None or pd.isna(row["reason"])
        else:
            assert row["reason"] == trial.message
        assert (row["objective"] is None or np.isnan(row["objective"])) == (
            trial.status != "COMPLETED"
        )


def test_diverging_trials_never_abort_the_search(tmp_path: Path) -> None:
    tuner = _tuner(
        tmp_path,
        _ModeHyperModel(("diverge",), variants=4),
        max_trials=4,
        max_consecutive_failed_trials=1,
    )
    _search(tuner, epochs=2)
    assert [t.message for t in tuner.oracle.trials.values()] == [DIVERGED] * 4
    assert best_trial(tuner.oracle) is None


def test_consecutive_errors_abort_at_the_configured_threshold(tmp_path: Path) -> None:
    tuner = _tuner(
        tmp_path,
        _ModeHyperModel(("fit_error",), variants=6),
        max_trials=6,
        max_consecutive_failed_trials=2,
    )
    with pytest.raises(
        SearchAbortedError, match=r"2 trials in a row failed.*last reason: RuntimeError: the data"
    ):
        _search(tuner)
    assert len(tuner.oracle.trials) == 2


def test_a_trial_that_keeps_killing_the_process_is_failed_after_the_limit(
    tmp_path: Path,
) -> None:
    _ModeHyperModel.crashed_values.clear()
    hypermodel = _ModeHyperModel(("ok",), variants=10, crash_first=True)
    for _ in range(2):  # two "processes" die in the same trial; each resumes it first
        tuner = _tuner(tmp_path, hypermodel, max_crashes_per_trial=2)
        with pytest.raises(_ProcessDeath):
            _search(tuner, epochs=1)
        crashes = Path(tuner.get_trial_dir("0"), CRASHES_FILE)
    assert json.loads(crashes.read_text()) == {"crashed_attempts": 2}
    assert len(_ModeHyperModel.crashed_values) == 2
    assert len(set(_ModeHyperModel.crashed_values)) == 1  # the same trial ran again

    tuner = _tuner(tmp_path, hypermodel, max_crashes_per_trial=2)  # third start
    _search(tuner, epochs=1)
    statuses = {t.trial_id: (t.status, t.message) for t in tuner.oracle.trials.values()}
    assert statuses["0"] == ("FAILED", "crashed the process 2 times (killed, out of memory?)")
    assert [statuses[i][0] for i in ("1", "2")] == ["COMPLETED", "COMPLETED"]
    assert len(_ModeHyperModel.crashed_values) == 2  # not run a third time
    assert not list(tmp_path.rglob(CRASHES_FILE))


def _edit_json(path: Path, change: Any) -> None:
    state = json.loads(path.read_text())
    change(state)
    path.write_text(json.dumps(state))


def test_resume_repairs_what_a_kill_between_two_state_files_leaves(tmp_path: Path) -> None:
    tuner = _tuner(tmp_path, _ModeHyperModel(("ok",), variants=10), max_trials=2)
    _search(tuner, epochs=1)
    project = Path(tuner.project_dir)
    stats = {i: (project / f"trial_{i}" / "stats.json").read_bytes() for i in ("0", "1")}

    # Killed after trial 1's trial.json said COMPLETED, before oracle.json recorded its end.
    def unfinished(state: dict[str, Any]) -> None:
        state["ongoing_trials"] = {"tuner0": "1"}
        state["end_order"].remove("1")

    _edit_json(project / "oracle.json", unfinished)
    # Killed after trial 0's trial.json said RUNNING, before oracle.json knew of it (its
    # metrics stay, as after a kill between `update_trial` and `end_trial`).
    _edit_json(project / "trial_0" / "trial.json", lambda s: s.update(status="RUNNING"))
    _edit_json(project / "oracle.json", lambda s: s["end_order"].remove("0"))

    tuner = _tuner(tmp_path, _ModeHyperModel(("ok",), variants=10), max_trials=3)
    _search(tuner, epochs=1)
    statuses = {t.trial_id: t.status for t in tuner.oracle.trials.values()}
    assert statuses == {"0": "COMPLETED", "1": "COMPLETED", "2": "COMPLETED"}
    assert (project / "trial_1" / "stats.json").read_bytes() == stats["1"]  # kept
    assert (project / "trial_0" / "stats.json").read_bytes() != stats["0"]  # ran again
    assert sorted(tuner.oracle.end_order) == ["0", "1", "2"]


def test_an_aborted_search_ends_with_one_line_exit_1_and_the_reasons_in_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from kt_pipeline.cli import main

    code = main(
        [
            "search",
            "--data",
            "builtin:iris",
            "--experiment-dir",
            str(tmp_path),
            "--tuner",
            "random",
            "--max-trials",
            "5",
            "--set",
            "search.hypermodel='custom_models:FailingHyperModel'",
            "--set",
            "tuner.max_consecutive_failed_trials=2",
        ]
    )
    err = [line for line in capsys.readouterr().err.splitlines() if "kt-pipeline:" in line]
    assert code == 1
    assert err == [
        "kt-pipeline: error: search stopped: 2 trials in a row failed "
        "(tuner.max_consecutive_failed_trials = 2); "
        "last reason: RuntimeError: the input pipeline broke"
    ]
    table = pd.read_csv(tmp_path / "results.csv", dtype={"trial_id": str})
    assert list(table["status"]) == ["FAILED", "FAILED"]
    assert list(table["reason"]) == ["RuntimeError: the input pipeline broke"] * 2
