"""BOHB's oracle run directly on a synthetic objective: no Keras training."""

from __future__ import annotations

from pathlib import Path

import keras_tuner
import numpy as np
import pytest

from kt_pipeline.bohb import BOHBOracle

_OPTIMUM = np.array([0.2, 0.7])


def _oracle(tmp_path: Path, **kwargs: object) -> BOHBOracle:
    hp = keras_tuner.HyperParameters()
    hp.Float("x", 0.0, 1.0)
    hp.Float("y", 0.0, 1.0)
    hp.Choice("unused", ["a", "b", "c"])
    oracle = BOHBOracle(
        keras_tuner.Objective("loss", "min"),
        max_epochs=9,
        factor=3,
        seed=7,
        hyperparameters=hp,
        **{"hyperband_iterations": 4, **kwargs},  # type: ignore[arg-type]
    )
    oracle._set_project_dir(str(tmp_path), "bohb")
    oracle.verbose = 0
    return oracle


def _loss(values: dict[str, object]) -> float:
    point = np.array([values["x"], values["y"]], dtype=float)
    # Longer budgets lower the loss a little, as training would.
    return float(np.sum((point - _OPTIMUM) ** 2)) + 0.1 / float(values["tuner/epochs"])  # type: ignore[arg-type]


def _run(oracle: BOHBOracle, trials: int) -> list[dict[str, object]]:
    """Runs `trials` trials; returns the values of every first-round proposal."""
    first_round = []
    for _ in range(trials):
        trial = oracle.create_trial("worker")
        if trial.status != "RUNNING":
            break
        values = trial.hyperparameters.values
        if values["tuner/round"] == 0:
            first_round.append(dict(values))
        oracle.update_trial(trial.trial_id, {"loss": _loss(values)}, step=values["tuner/epochs"])
        trial.status = "COMPLETED"
        oracle.end_trial(trial)
        oracle.save()  # as `Tuner.on_trial_end` does after `end_trial`
    return first_round


def _distance(values: dict[str, object]) -> float:
    return float(np.linalg.norm(np.array([values["x"], values["y"]], dtype=float) - _OPTIMUM))


@pytest.mark.parametrize("model", ["kde", "optuna_tpe"])
def test_model_proposals_concentrate_in_the_good_region(tmp_path: Path, model: str) -> None:
    # Optuna's TPE weighs a prior in and explores more while a budget has few trials:
    # it gets a longer search to show the same pull towards the optimum.
    iterations = 4 if model == "kde" else 10
    oracle = _oracle(tmp_path, model=model, hyperband_iterations=iterations)
    proposals = _run(oracle, 200)
    kinds = oracle.proposals
    assert len(kinds) == len(proposals)
    model = [p for p, k in zip(proposals, kinds, strict=True) if k == "model"]
    random = [p for p, k in zip(proposals, kinds, strict=True) if k == "random"]
    # The model starts only once a budget has enough trials, and a share stays random.
    assert kinds[0] == "random"
    assert len(model) >= 10 and len(random) >= 10
    model_distance = np.median([_distance(p) for p in model])
    random_distance = np.median([_distance(p) for p in random])
    # Uniform samples in the unit square lie ~0.45 from the optimum (median).
    assert random_distance > 0.3
    assert model_distance < (0.15 if model == "kde" else 0.25)
    assert model_distance < random_distance * (0.5 if model == "kde" else 0.7)


def test_without_enough_observations_it_is_hyperband(tmp_path: Path) -> None:
    oracle = _oracle(tmp_path, min_points_in_model=1000)
    _run(oracle, 40)
    assert set(oracle.proposals) == {"random"}


@pytest.mark.parametrize("model", ["kde", "optuna_tpe"])
def test_state_survives_a_reload_and_the_search_continues(tmp_path: Path, model: str) -> None:
    oracle = _oracle(tmp_path, gamma=0.2, random_fraction=0.25, model=model)
    _run(oracle, 30)
    reloaded = _oracle(tmp_path)  # defaults differ: the saved settings must win
    reloaded.reload()
    assert reloaded.gamma == 0.2 and reloaded.random_fraction == 0.25
    assert reloaded.model == model
    assert "model" in oracle.proposals
    assert reloaded.proposals == oracle.proposals
    assert reloaded._brackets == oracle._brackets
    assert set(reloaded.trials) == set(oracle.trials)
    # The reloaded and the original oracle propose the same next trial.
    assert _run(reloaded, 5) == _run(oracle, 5)


def test_optuna_proposals_respect_conditions_and_the_grid(tmp_path: Path) -> None:
    """Optuna's TPE is asked over every hyperparameter; only the active ones, snapped
    to KerasTuner's steps and choices, reach the trial."""
    hp = keras_tuner.HyperParameters()
    hp.Float("x", 0.0, 1.0, step=0.1)
    hp.Int("units", 16, 256, sampling="log")
    kind = hp.Choice("kind", ["plain", "momentum"])
    with hp.conditional_scope("kind", ["momentum"]):
        hp.Float("momentum", 0.5, 0.99)
    oracle = BOHBOracle(
        keras_tuner.Objective("loss", "min"),
        max_epochs=9,
        hyperband_iterations=3,
        seed=3,
        hyperparameters=hp,
        min_points_in_model=3,
        random_fraction=0.0,
        model="optuna_tpe",
    )
    oracle._set_project_dir(str(tmp_path), "bohb")
    oracle.verbose = 0
    assert kind == "plain"
    for _ in range(60):
        trial = oracle.create_trial("worker")
        if trial.status != "RUNNING":
            break
        values = trial.hyperparameters.values
        loss = abs(float(values["x"]) - 0.3) + (values["kind"] == "momentum") * 0.5
        oracle.update_trial(trial.trial_id, {"loss": loss}, step=values["tuner/epochs"])
        trial.status = "COMPLETED"
        oracle.end_trial(trial)
    proposals = [p for p in oracle.proposals if p == "model"]
    assert len(proposals) >= 5
    for trial in oracle.trials.values():
        values = trial.hyperparameters.values
        assert round(float(values["x"]) * 10, 6) == round(float(values["x"]) * 10)
        assert 16 <= int(values["units"]) <= 256
        assert ("momentum" in values) == (values["kind"] == "momentum")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gamma": 1.5}, "gamma"),
        ({"random_fraction": -0.1}, "random_fraction"),
        ({"model": "smac"}, "model"),
    ],
)
def test_invalid_settings_are_rejected(
    tmp_path: Path, kwargs: dict[str, float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        _oracle(tmp_path, **kwargs)
