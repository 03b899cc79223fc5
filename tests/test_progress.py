from __future__ import annotations

import io
import logging
from pathlib import Path

import keras_tuner
import pytest

from kt_pipeline.progress import SearchProgress, format_eta, planned_trials


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _oracle(tmp_path: Path, *, max_trials: int) -> keras_tuner.Oracle:
    oracle = keras_tuner.oracles.RandomSearchOracle(
        objective=keras_tuner.Objective("val_accuracy", "max"), max_trials=max_trials, seed=1
    )
    oracle._set_project_dir(str(tmp_path), "p")
    oracle.hyperparameters.Float("rate", 0.0, 1.0)
    return oracle


def _finish(oracle: keras_tuner.Oracle, score: float | None) -> keras_tuner.engine.trial.Trial:
    trial = oracle.create_trial("tuner0")
    if score is None:
        trial.status = "FAILED"
    else:
        oracle.update_trial(trial.trial_id, {"val_accuracy": score})
        trial.status = "COMPLETED"
    oracle.end_trial(trial)
    return trial


def test_one_line_per_trial_with_best_and_eta(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    oracle = _oracle(tmp_path, max_trials=30)
    stream = io.StringIO()
    progress = SearchProgress(oracle, stream=stream)
    with caplog.at_level(logging.INFO, logger="kt_pipeline"):
        progress.trial_finished(_finish(oracle, 0.971), 12.0)
        progress.trial_finished(_finish(oracle, 0.962), 12.6)
        line = progress.trial_finished(_finish(oracle, None), 0.4)
    first, second, third = caplog.messages
    assert (
        second == "trial 2/30 | val_accuracy 0.9620 | best 0.9710 (trial 00) | 12.6 s | eta 6 min"
    )
    assert first.startswith("trial 1/30 | val_accuracy 0.9710 | best 0.9710 (trial 00)")
    assert third == line
    assert third.startswith("trial 3/30 | FAILED (trial 02) | best 0.9710 (trial 00) | 0.4 s")
    assert stream.getvalue() == ""  # not a terminal: no bar


def test_bar_on_a_terminal_steps_aside_for_each_line(tmp_path: Path) -> None:
    oracle = _oracle(tmp_path, max_trials=4)
    terminal = _Terminal()
    handler = logging.StreamHandler(terminal)  # the lines share the bar's terminal
    logger = logging.getLogger("kt_pipeline")
    logger.addHandler(handler)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(logger, "level", logging.INFO)
            progress = SearchProgress(oracle, stream=terminal)
            progress.trial_finished(_finish(oracle, 0.5), 1.0)
            progress.trial_finished(_finish(oracle, 0.6), 1.0)
            progress.close()
    finally:
        logger.removeHandler(handler)
    value = terminal.getvalue()
    for done in (1, 2):  # each line starts where the cleared bar was
        assert f"\rtrial {done}/4 | val_accuracy" in value
    assert "| 2/4 [" in value.rsplit("trial 2/4", 1)[1]  # redrawn after the line
    assert value.endswith("\n")  # closed on its own line


def test_planned_trials_and_eta_text(tmp_path: Path) -> None:
    assert planned_trials(_oracle(tmp_path, max_trials=7)) == 7
    hyperband = keras_tuner.oracles.HyperbandOracle(
        objective=keras_tuner.Objective("val_loss", "min"), max_epochs=9, factor=3
    )
    # Brackets of 9 epochs, factor 3: (9, 3, 1), (5, 2) and (3,) trials.
    assert planned_trials(hyperband) == 9 + 3 + 1 + 5 + 2 + 3
    assert [format_eta(s) for s in (45, 240, 9000)] == ["45 s", "4 min", "2.5 h"]


def test_a_notebook_runner_in_the_process_is_not_a_notebook() -> None:
    """nbclient's tests import ipykernel; only a running Jupyter kernel draws a widget."""
    import ipykernel  # noqa: F401

    from kt_pipeline.progress import _in_notebook

    assert not _in_notebook()
