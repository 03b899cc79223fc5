"""The end-to-end job: data, search, results, export, held-out score.

This is the only module (with the CLI) that reads the config; everything below it
takes plain keyword arguments.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any

import keras
import keras_tuner

from hypermodels import MLPHyperModel
from kt_pipeline import data as data_lib
from kt_pipeline.config import PipelineConfig, save_config
from kt_pipeline.errors import UserInputError
from kt_pipeline.export import export_model, predict_saved_model, score_predictions
from kt_pipeline.results import write_results
from kt_pipeline.strategy import make_strategy
from kt_pipeline.tuners import build_tuner

__all__ = ["SearchSummary", "export_best", "resolve_objective", "run_search"]

log = logging.getLogger("kt_pipeline")

#: Layout of an experiment directory.
CONFIG_FILE = "config.toml"
PROJECT_NAME = "search"
TENSORBOARD_DIR = "tensorboard"
EXPORT_DIR = "export"
RESULTS_FILE = "results.csv"
BEST_HP_FILE = "best_hyperparameters.json"
SUMMARY_FILE = "summary.json"

_DEFAULT_OBJECTIVES = {"binary": "val_auc", "multiclass": "val_accuracy", "regression": "val_loss"}
_MINIMISED = ("loss", "error", "mse", "mae", "rmse", "mape", "crossentropy")


@dataclasses.dataclass(frozen=True)
class SearchSummary:
    """What a finished search produced, for the CLI's closing report."""

    experiment_dir: Path
    task: str
    objective: str
    best_trial_id: str | None
    best_score: float | None
    best_hyperparameters: dict[str, Any]
    test_scores: dict[str, float]
    export_dir: Path | None
    results_file: Path
    tensorboard_dir: Path
    trials: int
    completed_trials: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        plain = dataclasses.asdict(self)
        return {k: str(v) if isinstance(v, Path) else v for k, v in plain.items()}


def resolve_objective(name: str, direction: str, *, task: str) -> keras_tuner.Objective:
    """Turns ``auto`` into the task's default metric and infers min/max from its name."""
    if name == "auto":
        name = _DEFAULT_OBJECTIVES[task]
    if direction == "auto":
        direction = "min" if any(token in name for token in _MINIMISED) else "max"
    return keras_tuner.Objective(name, direction=direction)


def _prepare_experiment_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserInputError(
            f"experiment directory {str(path)!r} cannot be created: {error.strerror or error}"
        ) from error
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserInputError(f"experiment directory {str(path)!r} is not writable")


def _load_splits(config: PipelineConfig) -> tuple[data_lib.Dataset, data_lib.Splits]:
    dataset = data_lib.load_dataset(
        config.data.source, label=config.data.label, task=config.data.task
    )
    splits = data_lib.split_dataset(
        dataset,
        validation_fraction=config.data.validation_fraction,
        test_fraction=config.data.test_fraction,
        seed=config.runtime.seed,
    )
    return dataset, splits


def _make_hypermodel(
    config: PipelineConfig, dataset: data_lib.Dataset, splits: data_lib.Splits
) -> MLPHyperModel:
    x, y = splits.train.x, splits.train.y
    regression = dataset.task == "regression"
    return MLPHyperModel(
        task=dataset.task,
        num_features=x.shape[1],
        num_classes=dataset.num_classes,
        feature_mean=x.mean(axis=0),
        feature_variance=x.var(axis=0),
        target_mean=float(y.mean()) if regression else 0.0,
        target_std=float(y.std()) if regression else 1.0,
        train_size=len(splits.train),
        max_epochs=config.tuner.max_epochs,
        **dataclasses.asdict(config.search),
    )


def _make_tuner(
    config: PipelineConfig, hypermodel: MLPHyperModel, *, task: str, overwrite: bool
) -> keras_tuner.Tuner:
    tuner_cfg = config.tuner
    return build_tuner(
        hypermodel,
        algorithm=tuner_cfg.algorithm,
        objective=resolve_objective(tuner_cfg.objective, tuner_cfg.direction, task=task),
        directory=config.runtime.experiment_dir,
        project_name=PROJECT_NAME,
        seed=config.runtime.seed,
        max_trials=tuner_cfg.max_trials,
        max_epochs=tuner_cfg.max_epochs,
        factor=tuner_cfg.factor,
        hyperband_iterations=tuner_cfg.hyperband_iterations,
        executions_per_trial=tuner_cfg.executions_per_trial,
        max_consecutive_failed_trials=tuner_cfg.max_consecutive_failed_trials,
        distribution_strategy=make_strategy(
            config.runtime.strategy, devices=config.runtime.devices
        ),
        overwrite=overwrite,
    )


def _callbacks(config: PipelineConfig, objective: keras_tuner.Objective) -> list[Any]:
    experiment = Path(config.runtime.experiment_dir)
    # KerasTuner moves this callback into one folder per trial and adds HParams data.
    callbacks: list[Any] = [keras.callbacks.TensorBoard(log_dir=str(experiment / TENSORBOARD_DIR))]
    if config.tuner.early_stopping_patience:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=objective.name,
                mode=objective.direction,
                patience=config.tuner.early_stopping_patience,
            )
        )
    callbacks.append(keras.callbacks.TerminateOnNaN())
    return callbacks


def export_best(
    config: PipelineConfig,
    *,
    tuner: keras_tuner.Tuner | None = None,
    dataset: data_lib.Dataset | None = None,
    splits: data_lib.Splits | None = None,
) -> tuple[Path | None, dict[str, float]]:
    """Exports the best trial's model and scores the test split on the reloaded export.

    With no tuner given, the experiment in ``runtime.experiment_dir`` is reloaded.

    Returns:
        The export folder (None when no trial completed) and the test scores.
    """
    if dataset is None or splits is None:
        dataset, splits = _load_splits(config)
    if tuner is None:
        experiment = Path(config.runtime.experiment_dir)
        if not (experiment / PROJECT_NAME).is_dir():
            raise UserInputError(
                f"experiment directory {str(experiment)!r} holds no search "
                f"(no {PROJECT_NAME!r} folder)"
            )
        tuner = _make_tuner(
            config, _make_hypermodel(config, dataset, splits), task=dataset.task, overwrite=False
        )
    best_trials = tuner.oracle.get_best_trials(1)
    if not best_trials:
        return None, {}
    best = best_trials[0]
    model = tuner.load_model(best)
    export_dir = export_model(
        model,
        export_root=Path(config.runtime.experiment_dir) / EXPORT_DIR,
        task=dataset.task,
        feature_names=dataset.feature_names,
        class_names=dataset.class_names,
        version=config.export.version,
        info={
            "trial_id": best.trial_id,
            "objective": tuner.oracle.objective.name,
            "validation_score": best.score,
            "data": dataset.name,
            "hyperparameters": best.hyperparameters.values,
        },
    )
    # The held-out score comes from the reloaded SavedModel, exactly what is served.
    outputs = predict_saved_model(export_dir, splits.test.x)
    return export_dir, score_predictions(outputs, splits.test.y, task=dataset.task)


def run_search(config: PipelineConfig, *, overwrite: bool = False) -> SearchSummary:
    """Runs the whole job described by `config`.

    Bad input (data, paths) raises `UserInputError` before anything is written to
    the experiment directory.
    """
    started = time.perf_counter()
    dataset, splits = _load_splits(config)
    experiment = Path(config.runtime.experiment_dir)
    _prepare_experiment_dir(experiment)
    keras.utils.set_random_seed(config.runtime.seed)
    log.info(
        "data %s: %s task, %d train / %d validation / %d test rows, %d features",
        dataset.name,
        dataset.task,
        len(splits.train),
        len(splits.validation),
        len(splits.test),
        dataset.x.shape[1],
    )

    hypermodel = _make_hypermodel(config, dataset, splits)
    tuner = _make_tuner(config, hypermodel, task=dataset.task, overwrite=overwrite)
    save_config(config, experiment / CONFIG_FILE)
    objective = tuner.oracle.objective
    # Hyperband hands a promoted trial its parent's checkpoint, optimizer slots
    # included, while the new model's optimizer has none yet; Keras warns for every
    # promotion. The weights themselves load.
    warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
    tuner.search(
        splits.train.x,
        splits.train.y,
        validation_data=(splits.validation.x, splits.validation.y),
        epochs=config.tuner.max_epochs,
        callbacks=_callbacks(config, objective),
        verbose=1 if config.runtime.verbose else 0,
    )

    results_file = experiment / RESULTS_FILE
    table = write_results(tuner, results_file)
    best_trials = tuner.oracle.get_best_trials(1)
    best = best_trials[0] if best_trials else None
    best_hp = dict(best.hyperparameters.values) if best else {}
    (experiment / BEST_HP_FILE).write_text(json.dumps(best_hp, indent=2), encoding="utf-8")

    export_dir: Path | None = None
    test_scores: dict[str, float] = {}
    if config.export.enabled and best is not None:
        export_dir, test_scores = export_best(config, tuner=tuner, dataset=dataset, splits=splits)

    summary = SearchSummary(
        experiment_dir=experiment,
        task=dataset.task,
        objective=f"{objective.name} ({objective.direction})",
        best_trial_id=best.trial_id if best else None,
        best_score=best.score if best else None,
        best_hyperparameters=best_hp,
        test_scores=test_scores,
        export_dir=export_dir,
        results_file=results_file,
        tensorboard_dir=experiment / TENSORBOARD_DIR,
        trials=len(table),
        completed_trials=int((table["status"] == "COMPLETED").sum()) if len(table) else 0,
        seconds=round(time.perf_counter() - started, 1),
    )
    (experiment / SUMMARY_FILE).write_text(json.dumps(summary.to_json(), indent=2), "utf-8")
    return summary
