"""Optimizers as searchable hyperparameters, with their own settings as conditions.

An optimizer's own settings (SGD's momentum, AdamW's weight decay) are conditional
hyperparameters: they exist only in trials that use that optimizer, so the search
never spends samples on values that have no effect.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

import keras
import keras_tuner

__all__ = ["OPTIMIZERS", "build_optimizer"]

#: The optimizers a search space may name.
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop", "adagrad")

LearningRate: TypeAlias = float | keras.optimizers.schedules.LearningRateSchedule


def build_optimizer(
    hp: keras_tuner.HyperParameters,
    *,
    learning_rate: LearningRate,
    choices: Sequence[str] = OPTIMIZERS,
) -> keras.optimizers.Optimizer:
    """Chooses the `optimizer` hyperparameter and builds it.

    Args:
        hp: The trial's hyperparameters.
        learning_rate: A float or a Keras schedule.
        choices: The optimizers the search may pick.

    Returns:
        A new Keras optimizer.
    """
    name = hp.Choice("optimizer", list(choices))
    # Conditional scopes are entered whatever the choice, so KerasTuner registers
    # every optimizer's settings when it first builds the model; declared only on
    # demand, they would be missing from the space until a trial happened to pick
    # that optimizer, and that first trial would get the default, not a sample.
    momentum = weight_decay = None
    if "sgd" in choices:
        with hp.conditional_scope("optimizer", ["sgd"]):
            momentum = hp.Float("sgd_momentum", 0.0, 0.99)
    if "adamw" in choices:
        with hp.conditional_scope("optimizer", ["adamw"]):
            weight_decay = hp.Float("adamw_weight_decay", 1e-5, 1e-1, sampling="log")

    if name == "adam":
        return keras.optimizers.Adam(learning_rate=learning_rate)
    if name == "adamw":
        return keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=weight_decay)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=learning_rate, momentum=momentum)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=learning_rate)
    if name == "adagrad":
        return keras.optimizers.Adagrad(learning_rate=learning_rate)
    raise ValueError(f"Unknown `optimizer`. Expected one of {OPTIMIZERS}. Received: {name!r}")
