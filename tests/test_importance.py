from __future__ import annotations

import numpy as np
import pytest

from kt_pipeline.importance import hyperparameter_importance


def test_the_dominant_hyperparameter_ranks_first() -> None:
    rng = np.random.default_rng(0)
    rows = 60
    x = np.column_stack(
        [
            rng.uniform(-4, -2, rows),  # log10 learning rate: drives the objective
            rng.integers(0, 4, rows),  # a categorical code with a small effect
            rng.uniform(0, 0.5, rows),  # dropout: no effect at all
            rng.integers(1, 4, rows),  # depth: no effect at all
        ]
    )
    y = -((x[:, 0] + 3.0) ** 2) + 0.05 * x[:, 1] + 0.01 * rng.normal(size=rows)
    names = ["learning_rate", "activation", "dropout", "num_layers"]
    ranking = hyperparameter_importance(x, y, names, seed=1)
    assert ranking[0][0] == "learning_rate"
    shares = dict(ranking)
    assert shares["learning_rate"] > 0.5
    assert shares["learning_rate"] > 5 * max(shares["dropout"], shares["num_layers"])
    assert sum(shares.values()) <= 1.05  # first-order shares of one decomposition


def test_a_categorical_effect_is_found_through_its_codes() -> None:
    rng = np.random.default_rng(3)
    x = np.column_stack([rng.integers(0, 3, 40), rng.uniform(0, 1, 40)])
    y = np.array([0.2, 0.9, 0.5])[x[:, 0].astype(int)] + 0.01 * x[:, 1]
    assert hyperparameter_importance(x, y, ["optimizer", "dropout"])[0][0] == "optimizer"


def test_a_constant_objective_explains_nothing() -> None:
    x = np.arange(6, dtype=float).reshape(3, 2)
    assert hyperparameter_importance(x, np.ones(3), ["a", "b"]) == [("a", 0.0), ("b", 0.0)]


def test_shapes_must_agree() -> None:
    with pytest.raises(ValueError, match=r"Received: x.shape=\(3, 2\)"):
        hyperparameter_importance(np.zeros((3, 2)), np.zeros(3), ["a"])


def test_our_ranking_agrees_with_optunas_fanova_evaluator() -> None:
    """Ours exists for what Optuna's evaluators skip (conditional hyperparameters,
    which are missing from some trials); where both apply, they must agree."""
    import optuna

    rng = np.random.default_rng(3)
    rows = 80
    x = np.column_stack([rng.uniform(0, 1, rows), rng.uniform(0, 1, rows), rng.uniform(0, 1, rows)])
    y = 4.0 * x[:, 0] ** 2 + 1.0 * x[:, 1] + 0.05 * rng.normal(size=rows)  # x2 is noise
    names = ["strong", "weak", "noise"]
    ours = [name for name, _ in hyperparameter_importance(x, y, names)]

    distribution = optuna.distributions.FloatDistribution(0.0, 1.0)
    study = optuna.create_study(direction="maximize")
    study.add_trials(
        [
            optuna.trial.create_trial(
                params=dict(zip(names, map(float, row), strict=True)),
                distributions=dict.fromkeys(names, distribution),
                value=float(value),
            )
            for row, value in zip(x, y, strict=True)
        ]
    )
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    theirs = list(optuna.importance.get_param_importances(study, evaluator=evaluator))
    assert ours == theirs == ["strong", "weak", "noise"]
