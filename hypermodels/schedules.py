"""Learning-rate schedules as searchable hyperparameters.

Each schedule is one of Keras's own (`keras.optimizers.schedules`); this module only
decides which one a trial gets and over how many steps it decays.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import keras_tuner

__all__ = ["SCHEDULES", "build_schedule"]

#: The schedules a search space may name.
SCHEDULES = ("constant", "cosine", "exponential")

# Exponential decay ends a full-length trial at this fraction of the initial rate,
# the same end point as a common "divide by 10" step schedule.
_EXPONENTIAL_FINAL_FRACTION = 0.1


def build_schedule(
    hp: keras_tuner.HyperParameters,
    *,
    learning_rate: float,
    decay_steps: int,
    choices: Sequence[str] = SCHEDULES,
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """Chooses the `lr_schedule` hyperparameter and returns the learning rate to use.

    Args:
        hp: The trial's hyperparameters.
        learning_rate: The initial learning rate.
        decay_steps: Optimizer steps over which the schedule decays; the pipeline
            passes the steps of the longest trial, so schedules are comparable across
            Hyperband rounds of different lengths.
        choices: The schedules the search may pick.

    Returns:
        A float for ``constant``, else a Keras `LearningRateSchedule`.
    """
    name = hp.Choice("lr_schedule", list(choices))
    decay_steps = max(1, int(decay_steps))
    if name == "constant":
        return learning_rate
    if name == "cosine":
        return keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=decay_steps)
    if name == "exponential":
        return keras.optimizers.schedules.ExponentialDecay(
            learning_rate, decay_steps=decay_steps, decay_rate=_EXPONENTIAL_FINAL_FRACTION
        )
    raise ValueError(f"Unknown `lr_schedule`. Expected one of {SCHEDULES}. Received: {name!r}")
