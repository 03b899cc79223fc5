"""Searchable Keras models for KerasTuner.

Each HyperModel follows KerasTuner's contract (`build(hp)` returns a compiled model,
`fit(hp, model, ...)` trains it), so it runs under the kt-pipeline or under any
plain KerasTuner tuner.
"""

from hypermodels.mlp import ACTIVATIONS, DEFAULT_SPACE, TASKS, MLPHyperModel, SearchSpace
from hypermodels.optimizers import OPTIMIZERS, build_optimizer
from hypermodels.schedules import SCHEDULES, build_schedule

__all__ = [
    "ACTIVATIONS",
    "DEFAULT_SPACE",
    "OPTIMIZERS",
    "SCHEDULES",
    "TASKS",
    "MLPHyperModel",
    "SearchSpace",
    "build_optimizer",
    "build_schedule",
]
