"""Searchable Keras models for KerasTuner.

Each HyperModel follows KerasTuner's contract (`build(hp)` returns a compiled model,
`fit(hp, model, ...)` trains it), so it runs under the kt-pipeline or under any
plain KerasTuner tuner.
"""

from hypermodels.features import COLUMN_KINDS, Column, TabularSchema, fit_schema
from hypermodels.mlp import (
    ACTIVATIONS,
    DEFAULT_SPACE,
    INITIALIZERS,
    REGRESSION_LOSSES,
    TASKS,
    Execution,
    MLPHyperModel,
    SearchSpace,
    Target,
)
from hypermodels.optimizers import CLIPPING, OPTIMIZERS, build_optimizer
from hypermodels.schedules import SCHEDULES, build_schedule, schedule_callbacks

__all__ = [
    "ACTIVATIONS",
    "CLIPPING",
    "COLUMN_KINDS",
    "DEFAULT_SPACE",
    "INITIALIZERS",
    "OPTIMIZERS",
    "REGRESSION_LOSSES",
    "SCHEDULES",
    "TASKS",
    "Column",
    "Execution",
    "MLPHyperModel",
    "SearchSpace",
    "TabularSchema",
    "Target",
    "build_optimizer",
    "build_schedule",
    "fit_schema",
    "schedule_callbacks",
]
