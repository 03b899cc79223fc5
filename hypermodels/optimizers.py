"""Optimizers as searchable hyperparameters, with their own settings as conditions.

An optimizer's own settings (SGD's momentum and Nesterov flag, AdamW's weight decay,
RMSprop's rho) are conditional hyperparameters: they exist only in trials that use
that optimizer, so the search never spends samples on values that have no effect.
Gradient clipping is chosen here too, since it is an optimizer argument.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
import keras_tuner

from hypermodels.fused_optimizers import FUSED
from hypermodels.schedules import LearningRate

__all__ = [
    "CLIPPING",
    "OPTIMIZERS",
    "RANGE_SHARED_WITH",
    "build_optimizer",
    "choose_learning_rate",
]

#: The optimizers a search space may name.
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop", "adagrad", "nadam")

#: Optimizers whose learning-rate range test is another's: Adam's variants take steps
#: of the same scale, so one test serves all three.
RANGE_SHARED_WITH = {"adamw": "adam", "nadam": "adam"}

#: Gradient clipping modes: off, per-variable norm (`clipnorm`), global norm.
CLIPPING = ("none", "norm", "global_norm")

_CLASSES = {
    "adam": keras.optimizers.Adam,
    "adamw": keras.optimizers.AdamW,
    "sgd": keras.optimizers.SGD,
    "rmsprop": keras.optimizers.RMSprop,
    "adagrad": keras.optimizers.Adagrad,
    "nadam": keras.optimizers.Nadam,
}


def _conditional_settings(
    hp: keras_tuner.HyperParameters, choices: Sequence[str], beta2: Sequence[float] = (0.999,)
) -> dict[str, dict[str, Any]]:
    # Conditional scopes are entered whatever the choice, so KerasTuner registers every
    # optimizer's settings on its first build. Declared only on demand they would be
    # missing from the space until a trial happened to pick that optimizer, and that
    # first trial would get the default instead of a sample.
    settings: dict[str, dict[str, Any]] = {name: {} for name in choices}
    if "sgd" in choices:
        with hp.conditional_scope("optimizer", ["sgd"]):
            settings["sgd"] = {
                "momentum": hp.Float("sgd_momentum", 0.0, 0.99),
                "nesterov": hp.Boolean("sgd_nesterov"),
            }
    if "adamw" in choices:
        with hp.conditional_scope("optimizer", ["adamw"]):
            settings["adamw"] = {
                "weight_decay": hp.Float("adamw_weight_decay", 1e-5, 1e-1, sampling="log")
            }
    if "rmsprop" in choices:
        with hp.conditional_scope("optimizer", ["rmsprop"]):
            settings["rmsprop"] = {"rho": hp.Float("rmsprop_rho", 0.8, 0.99)}
    # Adam's second-moment decay: 0.999 is Keras's default; RealMLP uses 0.95. Declared
    # only when searched, so a space that fixes it samples as before.
    adams = [name for name in ("adam", "adamw", "nadam") if name in choices]
    beta2 = list(dict.fromkeys(float(b) for b in beta2))
    if adams and (len(beta2) > 1 or beta2 != [0.999]):
        with hp.conditional_scope("optimizer", adams):
            value = beta2[0] if len(beta2) == 1 else hp.Choice("adam_beta2", beta2)
        for name in adams:
            settings[name] = {**settings[name], "beta_2": value}
    return settings


def _clipping(
    hp: keras_tuner.HyperParameters, choices: Sequence[str], norm_range: tuple[float, float]
) -> dict[str, Any]:
    mode = hp.Choice("gradient_clipping", list(choices))
    norm = None
    if any(choice != "none" for choice in choices):
        with hp.conditional_scope("gradient_clipping", [c for c in choices if c != "none"]):
            low, high = norm_range
            norm = (
                hp.Fixed("clip_norm", float(low))
                if low == high
                else hp.Float("clip_norm", float(low), float(high), sampling="log")
            )
    if mode == "norm":
        return {"clipnorm": norm}
    if mode == "global_norm":
        return {"global_clipnorm": norm}
    return {}


def _log_range(hp: keras_tuner.HyperParameters, name: str, bounds: tuple[float, float]) -> Any:
    low, high = bounds
    if low == high:
        return hp.Fixed(name, float(low))
    return hp.Float(name, float(low), float(high), sampling="log")


def choose_learning_rate(
    hp: keras_tuner.HyperParameters,
    *,
    bounds: tuple[float, float],
    choices: Sequence[str] = OPTIMIZERS,
    by_optimizer: Mapping[str, tuple[float, float]] | None = None,
) -> float:
    """Chooses the learning rate (log scale): ``learning_rate`` within `bounds`, or for
    an optimizer with its own range in `by_optimizer`, ``<optimizer>_learning_rate``.

    Useful rates differ by decades between optimizers (plain SGD and Adagrad want about
    ten times Adam's), so one shared range wastes trials on rates that barely train. An
    optimizer's own rate is a conditional hyperparameter like its other settings
    (``sgd_momentum``), active only in its trials. It has a name of its own because
    KerasTuner cannot keep two hyperparameters of one name under different conditions:
    `HyperParameters.ensure_active_values` drops the value of the active one whenever
    an inactive one comes later in the space.

    Args:
        hp: The trial's hyperparameters.
        bounds: The range of the optimizers without their own.
        choices: The optimizers the search may pick.
        by_optimizer: Optimizer name to its own ``(min, max)`` range.

    Returns:
        The trial's learning rate.
    """
    own = [name for name in choices if by_optimizer and name in by_optimizer]
    if not own:
        return float(_log_range(hp, "learning_rate", bounds))
    assert by_optimizer is not None
    # The optimizer is chosen first so the conditions below have a parent to name.
    hp.Choice("optimizer", list(choices))
    # Every scope is entered whatever the choice, so that KerasTuner registers all of
    # them on its first build; only the active one returns a value.
    rates = []
    shared = [name for name in choices if name not in own]
    if shared:
        with hp.conditional_scope("optimizer", shared):
            rates.append(_log_range(hp, "learning_rate", bounds))
    for name in own:
        with hp.conditional_scope("optimizer", [name]):
            rates.append(_log_range(hp, f"{name}_learning_rate", by_optimizer[name]))
    (rate,) = [r for r in rates if r is not None]
    return float(rate)


def build_optimizer(
    hp: keras_tuner.HyperParameters,
    *,
    learning_rate: LearningRate,
    choices: Sequence[str] = OPTIMIZERS,
    clipping: Sequence[str] = ("none",),
    clip_norm: tuple[float, float] = (1.0, 1.0),
    fused: bool = True,
    adam_beta2: Sequence[float] = (0.999,),
) -> keras.optimizers.Optimizer:
    """Chooses the `optimizer` (and `gradient_clipping`) hyperparameters and builds it.

    Args:
        hp: The trial's hyperparameters.
        learning_rate: A float or a Keras schedule.
        choices: The optimizers the search may pick.
        clipping: The clipping modes the search may pick (see `CLIPPING`).
        clip_norm: Range of the clipping norm (log scale), used when clipping is on.
        fused: Use the optimizer's subclass in `hypermodels.fused_optimizers`: the same
            update as one TensorFlow kernel per weight (plain TensorFlow ops for
            Adagrad and Nadam), which traces and steps faster.
        adam_beta2: Values of Adam's, AdamW's and Nadam's ``beta_2`` to search
            (``adam_beta2``, declared only when there are several).

    Returns:
        A new Keras optimizer.
    """
    name = hp.Choice("optimizer", list(choices))
    settings = _conditional_settings(hp, choices, adam_beta2)
    if name not in _CLASSES:
        raise ValueError(f"Unknown `optimizer`. Expected one of {OPTIMIZERS}. Received: {name!r}")
    cls = FUSED[name] if fused else _CLASSES[name]
    return cls(learning_rate=learning_rate, **settings[name], **_clipping(hp, clipping, clip_norm))
