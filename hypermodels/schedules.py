"""Learning-rate schedules as searchable hyperparameters.

Every schedule is Keras's own (`keras.optimizers.schedules` or, for reduce-on-plateau,
the `ReduceLROnPlateau` callback); this module decides which one a trial gets and
over how many optimizer steps it runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

import keras
import keras_tuner

__all__ = ["DEFAULT_SCHEDULES", "SCHEDULES", "build_schedule", "schedule_callbacks"]

#: The schedules a search space may name. ``flat_cosine`` holds the rate for the first
#: half of training, then decays it along a cosine (RealMLP's schedule).
SCHEDULES = (
    "constant",
    "step",
    "exponential",
    "cosine",
    "cosine_warmup",
    "reduce_on_plateau",
    "flat_cosine",
)
#: The schedules the default space searches.
DEFAULT_SCHEDULES = SCHEDULES[:6]

# Exponential decay ends a full-length trial at this fraction of the initial rate, the
# same end point as the step schedule's first drop.
_EXPONENTIAL_FINAL_FRACTION = 0.1
# The step schedule divides the rate by 10 at half and at three quarters of training.
_STEP_BOUNDARIES = (0.5, 0.75)
_STEP_FACTOR = 0.1
# The flat-then-cosine schedule holds the rate for this share of training.
_FLAT_FRACTION = 0.5
# Reduce-on-plateau halves the rate after this many epochs without improvement.
_PLATEAU_FACTOR = 0.5
_PLATEAU_PATIENCE = 2

LearningRate: TypeAlias = float | keras.optimizers.schedules.LearningRateSchedule


def build_schedule(
    hp: keras_tuner.HyperParameters,
    *,
    learning_rate: float,
    decay_steps: int,
    choices: Sequence[str] = SCHEDULES,
) -> LearningRate:
    """Chooses the `lr_schedule` hyperparameter and returns the learning rate to use.

    Args:
        hp: The trial's hyperparameters.
        learning_rate: The initial (peak, with warm-up) learning rate.
        decay_steps: Optimizer steps of a full-length trial; the pipeline derives them
            from the steps per epoch at the trial's batch size, so Hyperband rounds of
            different lengths follow one schedule.
        choices: The schedules the search may pick.

    Returns:
        A float for ``constant`` and ``reduce_on_plateau``, else a Keras schedule.
    """
    name = hp.Choice("lr_schedule", list(choices))
    warmup_fraction = None
    if "cosine_warmup" in choices:  # declared whatever the choice; see optimizers.py
        with hp.conditional_scope("lr_schedule", ["cosine_warmup"]):
            warmup_fraction = hp.Float("warmup_fraction", 0.02, 0.2)
    steps = max(2, int(decay_steps))
    schedules = keras.optimizers.schedules
    if name in ("constant", "reduce_on_plateau"):
        return learning_rate
    if name == "step":
        boundaries = [max(1, int(steps * b)) for b in _STEP_BOUNDARIES]
        values = [learning_rate * _STEP_FACTOR**i for i in range(len(boundaries) + 1)]
        return schedules.PiecewiseConstantDecay(boundaries, values)
    if name == "exponential":
        return schedules.ExponentialDecay(
            learning_rate, decay_steps=steps, decay_rate=_EXPONENTIAL_FINAL_FRACTION
        )
    if name == "cosine":
        return schedules.CosineDecay(learning_rate, decay_steps=steps)
    if name == "cosine_warmup":
        assert warmup_fraction is not None
        warmup = max(1, int(steps * warmup_fraction))
        return schedules.CosineDecay(
            0.0,
            decay_steps=max(1, steps - warmup),
            warmup_target=learning_rate,
            warmup_steps=warmup,
        )
    if name == "flat_cosine":
        flat = max(1, int(steps * _FLAT_FRACTION))
        # Keras's warm-up from the rate to itself is the flat part.
        return schedules.CosineDecay(
            learning_rate,
            decay_steps=max(1, steps - flat),
            warmup_target=learning_rate,
            warmup_steps=flat,
        )
    raise ValueError(f"Unknown `lr_schedule`. Expected one of {SCHEDULES}. Received: {name!r}")


def schedule_callbacks(hp: keras_tuner.HyperParameters) -> list[keras.callbacks.Callback]:
    """Callbacks a schedule needs during `fit` (reduce-on-plateau is one)."""
    if hp.get("lr_schedule") == "reduce_on_plateau":
        return [
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss",
                factor=_PLATEAU_FACTOR,
                patience=_PLATEAU_PATIENCE,
                verbose=0,
            )
        ]
    return []
