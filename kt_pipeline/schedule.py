"""The trials and epochs a search will run, from its oracle or its settings alone:
Hyperband's bracket arithmetic read from KerasTuner's own (`_compat.hyperband_brackets`),
and the configurations a grid search visits."""

from __future__ import annotations

import dataclasses
from typing import Any

import keras_tuner

from kt_pipeline._compat import hyperband_brackets

__all__ = ["Bracket", "Schedule", "grid_size", "planned_epochs", "schedule"]


@dataclasses.dataclass(frozen=True)
class Bracket:
    """One Hyperband bracket: per round, (trials, epochs reached, epochs trained)."""

    iteration: int
    bracket: int
    rounds: tuple[tuple[int, int, int], ...]


@dataclasses.dataclass(frozen=True)
class Schedule:
    """The trials and epochs a search will run.

    Attributes:
        brackets: Hyperband's brackets (empty for random and Bayesian search).
        trials: Trials the search runs (Hyperband: counting each promotion as a trial,
            as KerasTuner does).
        epochs: Epochs trained in all (an upper bound for random/Bayesian search).
        epochs_per_trial: For each trial, the epochs it trains.
    """

    brackets: tuple[Bracket, ...]
    trials: int
    epochs: int
    epochs_per_trial: tuple[int, ...]


def schedule(oracle: keras_tuner.Oracle, *, max_epochs: int) -> Schedule:
    """The trials and epochs a search runs; for Hyperband (and BOHB) read from the
    oracle's own bracket arithmetic, in the order KerasTuner runs the brackets."""
    if isinstance(oracle, keras_tuner.oracles.HyperbandOracle):
        brackets = []
        per_trial: list[int] = []
        for iteration in range(int(oracle.hyperband_iterations)):
            for bracket, rounds in hyperband_brackets(oracle):
                for size, _, trained in rounds:
                    per_trial.extend([trained] * size)
                brackets.append(Bracket(iteration, bracket, tuple(rounds)))
        if oracle.max_trials:  # our build_tuner lets max_trials cap Hyperband
            per_trial = per_trial[: oracle.max_trials]
        return Schedule(tuple(brackets), len(per_trial), sum(per_trial), tuple(per_trial))
    trials = int(oracle.max_trials or 0)
    if isinstance(oracle, keras_tuner.oracles.GridSearchOracle):
        size = grid_size(oracle.get_space())
        trials = min(trials, size) if trials else size
    per_trial = [max_epochs] * trials
    return Schedule((), trials, sum(per_trial), tuple(per_trial))


def grid_size(hyperparameters: keras_tuner.HyperParameters) -> int:
    """The configurations KerasTuner's grid search visits: each active
    hyperparameter's values multiplied, summed over the values of the parents that
    switch conditional ones on. The grid holds each default too, and a range without
    a step has 10 evenly spaced values, to which its default (its low end) adds one."""
    space = list(hyperparameters.space)
    parents = {condition.name for hp in space for condition in hp.conditions}

    def grid_values(hp: Any) -> list[Any]:
        return list(dict.fromkeys([hp.default, *hp.values]))

    def count(index: int, chosen: dict[str, Any]) -> int:
        for position in range(index, len(space)):
            hp = space[position]
            if not all(condition.is_active(chosen) for condition in hp.conditions):
                continue
            if hp.name in parents:  # branch: later conditions depend on its value
                return sum(count(position + 1, {**chosen, hp.name: v}) for v in grid_values(hp))
            return len(grid_values(hp)) * count(position + 1, chosen)
        return 1

    return count(0, {})


def planned_epochs(
    *,
    algorithm: str,
    max_trials: int,
    max_epochs: int,
    factor: int,
    hyperband_iterations: int,
    default_trials: int,
) -> int:
    """Epochs a search will train in all (an upper bound without Hyperband), from its
    settings alone: Hyperband's arithmetic on a throwaway oracle."""
    if algorithm in ("hyperband", "bohb"):
        oracle = keras_tuner.oracles.HyperbandOracle(
            objective="val_loss",
            max_epochs=max_epochs,
            factor=factor,
            hyperband_iterations=hyperband_iterations,
        )
        oracle.max_trials = max_trials or None
        return schedule(oracle, max_epochs=max_epochs).epochs
    return (max_trials or default_trials) * max_epochs
