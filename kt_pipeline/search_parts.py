"""The search's parts built from a config and the prepared data: the HyperModel, the
objective, the tuner and the callbacks, built the same way by the search, its plan,
the range test and a re-export."""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Any

import keras
import keras_tuner
import tensorflow as tf

from hypermodels import Execution, SearchSpace, Target
from kt_pipeline.config import PipelineConfig
from kt_pipeline.errors import UserInputError
from kt_pipeline.experiment_files import PROJECT_NAME, TENSORBOARD_DIR
from kt_pipeline.prepare import Prepared, sized_for_data
from kt_pipeline.strategy import make_strategy
from kt_pipeline.tensorboard import EpochTimer
from kt_pipeline.time_budget import TimeBudget
from kt_pipeline.tuners import TunerSpec, build_tuner

__all__ = [
    "hypermodel_class",
    "make_hypermodel",
    "make_tuner",
    "objective_for",
    "reload_tuner",
    "resolve_objective",
    "trial_callbacks",
]

_DEFAULT_OBJECTIVES = {"binary": "val_auc", "multiclass": "val_accuracy", "regression": "val_loss"}


_MINIMISED = ("loss", "error", "mse", "mae", "rmse", "mape", "crossentropy")


def resolve_objective(name: str, direction: str, *, task: str) -> keras_tuner.Objective:
    """Turns ``auto`` into the task's default metric and infers min/max from its name."""
    if name == "auto":
        name = _DEFAULT_OBJECTIVES[task]
    if direction == "auto":
        direction = "min" if any(token in name for token in _MINIMISED) else "max"
    return keras_tuner.Objective(name, direction=direction)


def hypermodel_class(path: str) -> type[keras_tuner.HyperModel]:
    module_name, _, attribute = path.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise UserInputError(
            f"`search.hypermodel` cannot be imported: {path!r} ({type(error).__name__}: {error})"
        ) from error
    if not (isinstance(cls, type) and issubclass(cls, keras_tuner.HyperModel)):
        raise UserInputError(
            f"`search.hypermodel` must name a keras_tuner.HyperModel subclass. Received: {path!r}"
        )
    return cls


def make_hypermodel(
    config: PipelineConfig, prepared: Prepared, objective: keras_tuner.Objective
) -> keras_tuner.HyperModel:
    config = sized_for_data(config, prepared)
    y = prepared.splits.train.y
    space_fields = {f.name for f in dataclasses.fields(SearchSpace)}
    space = SearchSpace(**{k: v for k, v in vars(config.search).items() if k in space_fields})
    runtime = config.runtime
    folds = prepared.splits.trial_folds
    # Only a cross-validated search asks the hypermodel for fold models.
    fold_models = {"folds": folds.count} if folds is not None else {}
    return hypermodel_class(config.search.hypermodel)(
        **fold_models,
        schema=prepared.schema,
        task=prepared.dataset.task,
        target=Target.of(y, task=prepared.dataset.task, num_classes=prepared.dataset.num_classes),
        train_size=len(y),
        max_epochs=config.tuner.max_epochs,
        space=space,
        objective=objective,
        execution=Execution(
            steps_per_execution=runtime.steps_per_execution,
            jit_compile=runtime.jit_compile,
            fused_optimizers=runtime.fused_optimizers,
            per_replica_batch=runtime.batch_size_is == "per_replica",
        ),
    )


def objective_for(config: PipelineConfig, task: str) -> keras_tuner.Objective:
    return resolve_objective(config.tuner.objective, config.tuner.direction, task=task)


def make_tuner(
    config: PipelineConfig,
    prepared: Prepared,
    *,
    overwrite: bool,
    strategy: tf.distribute.Strategy | None = None,
    time_budget: TimeBudget | None = None,
) -> keras_tuner.Tuner:
    config = sized_for_data(config, prepared)
    objective = objective_for(config, prepared.dataset.task)
    spec = TunerSpec(
        objective=objective,
        directory=config.runtime.experiment_dir,
        settings=config.tuner,
        project_name=PROJECT_NAME,
        seed=config.runtime.seed,
        overwrite=overwrite,
        worker_lease_seconds=config.runtime.worker_lease_seconds,
    )
    strategy = strategy or make_strategy(config.runtime.strategy, devices=config.runtime.devices)
    return build_tuner(
        make_hypermodel(config, prepared, objective),
        spec,
        distribution_strategy=strategy,
        time_budget=time_budget,
    )


def trial_callbacks(config: PipelineConfig) -> list[Any]:
    experiment = Path(config.runtime.experiment_dir)
    # KerasTuner moves this callback into one folder per trial and adds HParams data;
    # our tuners add the experiment summary, epoch timing and a search-level run.
    return [
        keras.callbacks.TensorBoard(log_dir=str(experiment / TENSORBOARD_DIR)),
        EpochTimer(),
        keras.callbacks.TerminateOnNaN(),
    ]


def reload_tuner(config: PipelineConfig, prepared: Prepared) -> keras_tuner.Tuner:
    experiment = Path(config.runtime.experiment_dir)
    if not (experiment / PROJECT_NAME).is_dir():
        raise UserInputError(
            f"experiment directory {str(experiment)!r} holds no search (no {PROJECT_NAME!r} folder)"
        )
    return make_tuner(config, prepared, overwrite=False)
