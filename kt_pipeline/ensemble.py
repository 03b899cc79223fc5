"""The export's model: the best distinct configurations' models, averaged.

Why: picking the single best of some fifty trials on a small validation set picks
partly on that set's noise. On digits (270 validation rows) the chosen model's
validation accuracy overstates its test accuracy by 0.013 on average, against 0.004
for a model nobody searched (`benchmarks/search_quality.py`). Averaging the
predicted probabilities (or values) of the few best *distinct* configurations spends
no extra training, since their checkpoints are already saved, and leans less on any
one validation score. The cost is inference: an ensemble of three runs three networks.

Hyperband continues a configuration in new trials (the same values with larger
``tuner/epochs``); those are one configuration, represented by its best-scoring trial,
so an ensemble never averages a model with its own earlier checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import keras_tuner

from kt_pipeline.tuners import completed_trials

__all__ = ["MAX_ENSEMBLE", "average_models", "configuration_key", "distinct_best_trials"]

#: The most models an export may average (each one is run on every request).
MAX_ENSEMBLE = 10

# Values KerasTuner's Hyperband adds to a trial (bracket, round, epochs, parent id):
# bookkeeping, not part of the configuration.
_TUNER_PREFIX = "tuner/"


def configuration_key(values: Mapping[str, Any]) -> str:
    """The trial's configuration as text, without the tuner's bookkeeping values."""
    return json.dumps(
        {k: v for k, v in values.items() if not k.startswith(_TUNER_PREFIX)},
        sort_keys=True,
        default=str,
    )


def distinct_best_trials(
    oracle: keras_tuner.Oracle, *, count: int
) -> list[keras_tuner.engine.trial.Trial]:
    """Up to `count` completed trials with different configurations, best first.

    Each configuration is represented by its best-scoring completed trial; failed and
    diverged trials never count (see `kt_pipeline.tuners.completed_trials`).
    """
    chosen: dict[str, keras_tuner.engine.trial.Trial] = {}
    for trial in completed_trials(oracle):
        chosen.setdefault(configuration_key(trial.hyperparameters.values), trial)
        if len(chosen) == count:
            break
    return list(chosen.values())


def average_models(models: Sequence[keras.Model], *, inputs: Any) -> keras.Model:
    """One model whose output is the mean of `models`' outputs on the same inputs.

    Args:
        models: Trained models that take the same inputs and give outputs of one
            shape (probabilities or values). Renamed ``member_<i>``: a functional
            model needs unique layer names, and every trial's model has the same one.
        inputs: Fresh `keras.Input` tensors (one, or a dict) in the members' layout.

    Returns:
        The single model itself when there is one; otherwise a functional model
        named ``ensemble``.
    """
    if not models:
        raise ValueError("average_models needs at least one model")
    if len(models) == 1:
        return models[0]
    for index, model in enumerate(models):
        model.name = f"member_{index}"
    outputs = [model(inputs) for model in models]
    mean = keras.layers.Average(dtype="float32", name="average")(outputs)
    return keras.Model(inputs, mean, name="ensemble")
