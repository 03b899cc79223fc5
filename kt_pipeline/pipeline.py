"""The end-to-end job: data, search, results, export, held-out score.

This is the only module (with the CLI) that reads the config; everything below it
takes plain keyword arguments.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import dataclasses
import importlib
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import keras_tuner
import numpy as np
import pandas as pd
import tensorflow as tf

from hypermodels import SearchSpace, TabularSchema, fit_schema
from hypermodels.features import (
    LEVEL_MIN_SHARE,
    RARE_BELOW,
    TARGET_SUFFIX,
    build_inputs,
    embedding_width,
    fit_row_codes,
    fit_target_codes,
    level_shares,
    model_inputs,
    rare_level_columns,
    raw_rows,
    screen_identifiers,
    value_columns,
)
from hypermodels.mlp import EVALUATION_BATCH_SIZE
from hypermodels.optimizers import RANGE_SHARED_WITH
from kt_pipeline import data as data_lib
from kt_pipeline import ensemble as ensemble_lib
from kt_pipeline import splits as splits_lib
from kt_pipeline.config import PipelineConfig, config_to_dict, save_config
from kt_pipeline.errors import SearchAbortedError, UserInputError
from kt_pipeline.export import export_model, model_outputs, score_predictions
from kt_pipeline.lock import experiment_lock
from kt_pipeline.lr_find import (
    RANGE_TEST_STEPS,
    LRFindResult,
    lr_range_test,
    plot_lr_find,
    union_range,
)
from kt_pipeline.model_card import build_card
from kt_pipeline.parallel import TOKEN_ENV, is_loopback, oracle_role, oracle_tls, oracle_token
from kt_pipeline.plan import (
    Plan,
    calibrate,
    describe_space,
    estimate_seconds,
    format_duration,
    model_sizes,
    planned_epochs,
    schedule,
    space_warnings,
)
from kt_pipeline.results import trial_table, write_results
from kt_pipeline.resume import check_resumable, check_search_files
from kt_pipeline.sizing import batch_sizes_for, max_epochs_for, members_for, refit_for
from kt_pipeline.strategy import (
    configure_devices,
    is_multi_worker,
    is_multi_worker_chief,
    make_strategy,
    set_graph_optimizer,
)
from kt_pipeline.tensorboard import EpochTimer
from kt_pipeline.time_budget import TimeBudget
from kt_pipeline.tuners import DEFAULT_MAX_TRIALS, best_trial, build_tuner, trial_seed

__all__ = [
    "SearchSummary",
    "export_best",
    "find_learning_rates",
    "load_best_model",
    "plan_search",
    "resolve_objective",
    "run_search",
]

log = logging.getLogger("kt_pipeline")

#: Layout of an experiment directory.
CONFIG_FILE = "config.toml"
PROJECT_NAME = "search"
TENSORBOARD_DIR = "tensorboard"
EXPORT_DIR = "export"
RESULTS_FILE = "results.csv"
RESULTS_JSON_FILE = "results.json"
BEST_HP_FILE = "best_hyperparameters.json"
SUMMARY_FILE = "summary.json"
FINGERPRINT_FILE = "data_fingerprint.json"
LR_FIND_PLOT = "lr_find.png"
LR_FIND_FILE = "lr_find.json"

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
    exported_trial_ids: list[str]  # the trials whose models the export averages
    results_file: Path
    tensorboard_dir: Path
    trials: int
    completed_trials: int
    seconds: float
    stopped_by_time_budget: bool = False
    exported_refit: str = ""  # the export.refit mode the export took, or "" (none ran)

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


@dataclasses.dataclass(frozen=True)
class _Prepared:
    """The data, split and fitted once, in the forms the search and the export need."""

    dataset: data_lib.Dataset
    splits: splits_lib.Splits
    schema: TabularSchema
    #: The training rows' out-of-fold target encodings (`fit_target_codes`), if any.
    train_codes: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
    #: `level_shares` of the high-cardinality columns, on the split's folds.
    level_shares: Mapping[str, float] = dataclasses.field(default_factory=dict)

    def leak_check(self) -> splits_lib.LeakCheck:
        """What the split may let the search learn that deployment will not give."""
        frame, kinds = self.dataset.frame, self.dataset.kinds
        time_columns = tuple(splits_lib.time_like_columns(frame, kinds))
        return splits_lib.LeakCheck(self.splits.spec, self.schema, time_columns, self.level_shares)

    def inputs(self, part: splits_lib.Split) -> Any:
        codes = self.train_codes if part is self.splits.train else None
        return model_inputs(self.schema, part.frame, target_codes=codes)


def _prepare_data(config: PipelineConfig) -> _Prepared:
    dataset = data_lib.load_dataset(
        config.data.source,
        label=config.data.label,
        task=config.data.task,
        categorical=config.data.categorical,
        numeric=config.data.numeric,
    )
    splits = splits_lib.split_dataset(
        dataset,
        split=config.data.split,
        validation_fraction=config.data.validation_fraction,
        test_fraction=config.data.test_fraction,
        seed=config.runtime.seed,
    )
    # Statistics come from the training split only.
    schema = fit_schema(splits.train.frame, dataset.kinds, min_frequency=config.data.min_frequency)
    codes: dict[str, np.ndarray] = {}
    train, task, seed = splits.train, dataset.task, config.runtime.seed
    # Out-of-fold fits cut the training rows as the split cuts the table.
    shares: dict[str, float] = {}
    if config.data.screen_identifiers or splits.spec.kind == splits_lib.RANDOM:
        shares = level_shares(
            schema, train.frame, train.y, task=task, seed=seed, folds=splits.folds
        )
    if config.data.screen_identifiers:
        schema = screen_identifiers(schema, shares)
    if "target" in config.search.high_cardinality:
        schema, codes = fit_target_codes(
            schema, train.frame, train.y, task=task, seed=seed, folds=splits.folds
        )
    if True in config.search.row_target_encoding:
        schema, row_codes = fit_row_codes(
            schema, train.frame, train.y, task=task, seed=seed, folds=splits.folds
        )
        codes.update(row_codes)
    return _Prepared(
        dataset=dataset, splits=splits, schema=schema, train_codes=codes, level_shares=shares
    )


def _hypermodel_class(path: str) -> type[keras_tuner.HyperModel]:
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


def _sized_for_data(config: PipelineConfig, prepared: _Prepared) -> PipelineConfig:
    """The config with its data-sized defaults resolved for the training split
    (`kt_pipeline.sizing`): the batch sizes with ``search.batch_sizes_auto``, the
    members with ``search.members_auto``, the epoch budget when ``tuner.max_epochs`` is
    0. Every path that builds the tuner or the hypermodel goes through here, so a
    search, its plan and its re-export agree."""
    rows = len(prepared.splits.train)
    if config.search.batch_sizes_auto:
        search = dataclasses.replace(config.search, batch_sizes=batch_sizes_for(rows))
        config = dataclasses.replace(config, search=search)
    if config.search.members_auto:
        search = dataclasses.replace(config.search, members=members_for(rows))
        config = dataclasses.replace(config, search=search)
    if not config.tuner.max_epochs:
        tuner = dataclasses.replace(config.tuner, max_epochs=max_epochs_for(rows))
        config = dataclasses.replace(config, tuner=tuner)
    return config


def _make_hypermodel(
    config: PipelineConfig, prepared: _Prepared, objective: keras_tuner.Objective
) -> keras_tuner.HyperModel:
    config = _sized_for_data(config, prepared)
    y = prepared.splits.train.y
    regression = prepared.dataset.task == "regression"
    space_fields = {f.name for f in dataclasses.fields(SearchSpace)}
    space = SearchSpace(**{k: v for k, v in vars(config.search).items() if k in space_fields})
    return _hypermodel_class(config.search.hypermodel)(
        schema=prepared.schema,
        task=prepared.dataset.task,
        num_classes=prepared.dataset.num_classes,
        target_mean=float(y.mean()) if regression else 0.0,
        target_std=float(y.std()) if regression else 1.0,
        train_size=len(y),
        max_epochs=config.tuner.max_epochs,
        space=space,
        objective=objective,
        steps_per_execution=config.runtime.steps_per_execution,
        jit_compile=config.runtime.jit_compile,
        # Only passed when asked for, so HyperModels without the arguments keep working.
        **({"per_replica_batch": True} if config.runtime.batch_size_is == "per_replica" else {}),
        **({} if config.runtime.fused_optimizers else {"fused_optimizers": False}),
    )


def _objective(config: PipelineConfig, task: str) -> keras_tuner.Objective:
    return resolve_objective(config.tuner.objective, config.tuner.direction, task=task)


def _make_tuner(
    config: PipelineConfig,
    prepared: _Prepared,
    *,
    overwrite: bool,
    strategy: tf.distribute.Strategy | None = None,
    time_budget: TimeBudget | None = None,
) -> keras_tuner.Tuner:
    config = _sized_for_data(config, prepared)
    tuner_cfg = config.tuner
    objective = _objective(config, prepared.dataset.task)
    return build_tuner(
        _make_hypermodel(config, prepared, objective),
        algorithm=tuner_cfg.algorithm,
        objective=objective,
        directory=config.runtime.experiment_dir,
        project_name=PROJECT_NAME,
        seed=config.runtime.seed,
        max_trials=tuner_cfg.max_trials,
        max_epochs=tuner_cfg.max_epochs,
        factor=tuner_cfg.factor,
        hyperband_iterations=tuner_cfg.hyperband_iterations,
        executions_per_trial=tuner_cfg.executions_per_trial,
        max_consecutive_failed_trials=tuner_cfg.max_consecutive_failed_trials,
        max_crashes_per_trial=tuner_cfg.max_crashes_per_trial,
        distribution_strategy=strategy
        or make_strategy(config.runtime.strategy, devices=config.runtime.devices),
        overwrite=overwrite,
        worker_lease_seconds=config.runtime.worker_lease_seconds,
        bohb_min_points=tuner_cfg.bohb_min_points,
        bohb_model=tuner_cfg.bohb_model,
        first_trial=tuner_cfg.first_trial,
        time_budget=time_budget,
    )


def _callbacks(config: PipelineConfig) -> list[Any]:
    experiment = Path(config.runtime.experiment_dir)
    # KerasTuner moves this callback into one folder per trial and adds HParams data;
    # our tuners add the experiment summary, epoch timing and a search-level run.
    return [
        keras.callbacks.TensorBoard(log_dir=str(experiment / TENSORBOARD_DIR)),
        EpochTimer(),
        keras.callbacks.TerminateOnNaN(),
    ]


def load_best_model(
    config: PipelineConfig, *, ensemble: int | None = None
) -> tuple[keras.Model, TabularSchema]:
    """The searched ensemble of an existing experiment, with the schema its inputs
    follow (see `hypermodels.features.model_inputs`): the model the export serves,
    unless ``export.refit`` blended in or swapped in its members trained again.

    Args:
        config: The experiment's config.
        ensemble: The most distinct configurations the ensemble may hold; None takes
            ``export.ensemble``, 1 gives the best trial's model alone.

    Raises:
        UserInputError: the experiment holds no search or no completed trial.
    """
    prepared = _prepare_data(config)
    tuner = _reload_tuner(config, prepared)
    chosen = _select_ensemble(config, tuner, prepared, max_members=ensemble)
    if chosen is None:
        raise UserInputError(f"experiment {config.runtime.experiment_dir!r} has no completed trial")
    return chosen.model, prepared.schema


@dataclasses.dataclass(frozen=True)
class _Ensemble:
    """The export's model and how it was chosen (`kt_pipeline.ensemble`)."""

    model: keras.Model
    members: list[keras_tuner.engine.trial.Trial]  # the best single trial first
    weights: list[float]
    validation_score: float  # the ensemble's objective on the validation split
    best_single_score: float  # the best single candidate's, computed the same way


def _select_ensemble(
    config: PipelineConfig,
    tuner: keras_tuner.Tuner,
    prepared: _Prepared,
    *,
    max_members: int | None = None,
) -> _Ensemble | None:
    """Greedy selection on the validation split among the best distinct configurations
    (None when no trial completed)."""
    max_members = max_members or config.export.ensemble
    count = ensemble_lib.CANDIDATES if max_members > 1 else 1
    candidates = ensemble_lib.distinct_best_trials(tuner.oracle, count=count)
    if not candidates:
        return None
    models = [tuner.load_model(trial) for trial in candidates]
    validation = prepared.splits.validation
    x = prepared.inputs(validation)
    predictions = [
        np.asarray(m.predict(x, batch_size=EVALUATION_BATCH_SIZE, verbose=0)) for m in models
    ]
    score = ensemble_lib.validation_scorer(
        prepared.dataset.task,
        tuner.oracle.objective,
        validation.y,
        regression_loss=config.search.regression_loss,
    )
    counts = ensemble_lib.greedy_selection(predictions, score, max_members=max_members)
    chosen = sorted((i for i, c in enumerate(counts) if c), key=lambda i: (-counts[i], i))
    weights = [counts[i] / sum(counts) for i in chosen]
    mean = ensemble_lib.weighted_mean(predictions, counts)
    return _Ensemble(
        model=ensemble_lib.average_models(
            [models[i] for i in chosen],
            inputs=build_inputs(prepared.schema),
            weights=weights,
        ),
        members=[candidates[i] for i in chosen],
        weights=weights,
        validation_score=score(mean)[0],
        best_single_score=max(score(p) for p in predictions)[0],
    )


#: The most a refit may add to the search's training time under ``export.refit =
#: "auto"``: the refit scales with the search, so this bounds the export's share of the
#: whole job; the caps tried are in ``benchmarks/README.md`` ("Time at size").
REFIT_MAX_SHARE = 0.5


def refit_cost_share(tuner: keras_tuner.Tuner, chosen: _Ensemble, *, rows_ratio: float) -> float:
    """The refit's expected training time over the search's: each member's seconds per
    epoch in its trial, times its refit epochs and the share of rows the refit adds
    (`rows_ratio`: training + validation rows over training rows). Trials without
    timings count as free."""
    table = trial_table(tuner).set_index("trial_id")
    searched = float(table["seconds"].fillna(0.0).sum())
    refit = 0.0
    for trial in chosen.members:
        seconds, epochs = table.loc[trial.trial_id, ["seconds", "epochs"]]
        if not pd.isna(seconds) and not pd.isna(epochs) and epochs:
            refit += float(seconds) / float(epochs) * refit_epochs(trial)
    return refit * rows_ratio / searched if searched else 0.0


def refit_epochs(trial: keras_tuner.engine.trial.Trial) -> int:
    """Epochs from scratch to the trial's best score: a Hyperband promotion starts at
    its parent's last epoch (``tuner/initial_epoch``), and KerasTuner counts the best
    step within the trial's own run."""
    return int(trial.hyperparameters.values.get("tuner/initial_epoch", 0)) + trial.best_step + 1


def _refit(
    config: PipelineConfig,
    tuner: keras_tuner.Tuner,
    prepared: _Prepared,
    chosen: _Ensemble,
    *,
    with_test: bool = False,
) -> tuple[keras.Model, dict[str, Any]]:
    """The chosen members trained again on the training and validation rows (and the
    test rows `with_test`; ``export.refit``), averaged with the same weights, and what
    the card records."""
    splits = prepared.splits
    parts = [splits.train, splits.validation, *([splits.test] if with_test else [])]
    frame = pd.concat([part.frame for part in parts], ignore_index=True)
    y = np.concatenate([part.y for part in parts])
    others = [prepared.inputs(part) for part in parts[1:]] if prepared.train_codes else []
    codes = {  # out-of-fold codes for the training rows, fitted codes for the others
        name: np.concatenate([values, *(x[name + TARGET_SUFFIX].numpy() for x in others)])
        for name, values in prepared.train_codes.items()
    }
    x = model_inputs(prepared.schema, frame, target_codes=codes)
    hypermodel = copy.copy(tuner.hypermodel)
    if hasattr(hypermodel, "train_size"):  # the schedule spans the refit's steps
        hypermodel.train_size = len(y)
    strategy = tuner.distribution_strategy
    models, epochs = [], {}
    for trial in chosen.members:
        hp = trial.hyperparameters.copy()
        if "early_stopping_patience" in hp.values:  # no validation rows to stop on
            hp.values["early_stopping_patience"] = 0
        epochs[trial.trial_id] = refit_epochs(trial)
        keras.utils.set_random_seed(trial_seed(config.runtime.seed, trial.trial_id))
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            model = hypermodel.build(hp)
            hypermodel.fit(hp, model, x, y, epochs=epochs[trial.trial_id], verbose=0)
        models.append(model)
    log.info("refit %d model(s) on %d rows (export.refit)", len(models), len(y))
    averaged = ensemble_lib.average_models(
        models, inputs=build_inputs(prepared.schema), weights=chosen.weights
    )
    return averaged, {"rows": len(y), "epochs": epochs}


def _reload_tuner(config: PipelineConfig, prepared: _Prepared) -> keras_tuner.Tuner:
    experiment = Path(config.runtime.experiment_dir)
    if not (experiment / PROJECT_NAME).is_dir():
        raise UserInputError(
            f"experiment directory {str(experiment)!r} holds no search (no {PROJECT_NAME!r} folder)"
        )
    return _make_tuner(config, prepared, overwrite=False)


@dataclasses.dataclass(frozen=True)
class Exported:
    """What `export_best` published."""

    directory: Path
    # Measured on the reloaded SavedModel; under a time split with a refit, on the model
    # before the test rows joined it (`export_best`).
    test_scores: dict[str, float]
    trial_ids: list[str]  # the trials whose models the export averages
    refit: str = ""  # the export.refit mode the export took, or "" (none ran)


def export_best(
    config: PipelineConfig,
    *,
    tuner: keras_tuner.Tuner | None = None,
    prepared: _Prepared | None = None,
) -> Exported | None:
    """Exports the search's model (the best trial's, or the average of the best
    ``export.ensemble`` distinct configurations') and scores the test split on the
    reloaded export.

    Under a time split (``data.split = time:...``) with a refit, the test rows are the
    latest, the likest to those the model will serve: their score is measured on the
    refitted model, and then the members are trained again with them, and that model
    is exported (the card's ``refit.test_rows_included``).

    With no tuner given, the experiment in ``runtime.experiment_dir`` is reloaded.

    Returns:
        The export, or None when no trial completed.
    """
    prepared = prepared or _prepare_data(config)
    tuner = tuner or _reload_tuner(config, prepared)
    chosen = _select_ensemble(config, tuner, prepared)
    if chosen is None:
        return None
    best = ensemble_lib.distinct_best_trials(tuner.oracle, count=1)[0]
    members, model = chosen.members, chosen.model
    refit: dict[str, Any] = {}
    mode = config.export.refit
    if mode != "off" and config.tuner.time_budget:
        log.info("export.refit is skipped: a time budget is set (tuner.time_budget)")
        mode = "off"
    if mode == "auto" and not refit_for(len(prepared.splits.train.y)):
        log.info(
            "export.refit (auto) is skipped: %d training rows, more than a refit pays for "
            "(kt_pipeline.sizing.refit_for)", len(prepared.splits.train.y),
        )  # fmt: skip
        mode = "off"
    if mode == "auto":
        splits = prepared.splits
        rows_ratio = (len(splits.train.y) + len(splits.validation.y)) / len(splits.train.y)
        share = refit_cost_share(tuner, chosen, rows_ratio=rows_ratio)
        # Under a time split the searched models know only the oldest rows: blended in,
        # they would pull the served model back in time.
        refit_as = "replace" if splits.spec.kind == splits_lib.TIME else "blend"
        mode = "off" if share > REFIT_MAX_SHARE else refit_as
        log.info(
            "export.refit (auto) is %s: it adds about %.0f%% to the search's training "
            "time (at most %.0f%%)",
            {"off": "skipped", "blend": "blended", "replace": "served alone (a time split)"}[mode],
            100 * share, 100 * REFIT_MAX_SHARE,
        )  # fmt: skip
    dataset = prepared.dataset
    test = prepared.splits.test
    held_out: dict[str, float] = {}  # measured before the test rows joined the model

    def refitted(*, with_test: bool) -> tuple[keras.Model, dict[str, Any]]:
        refit_model, record = _refit(config, tuner, prepared, chosen, with_test=with_test)
        if mode == "replace":
            return refit_model, {**record, "mode": mode}
        inputs = build_inputs(prepared.schema)
        return ensemble_lib.average_models([chosen.model, refit_model], inputs=inputs), {
            **record,
            "mode": mode,
        }

    if mode != "off":
        model, refit = refitted(with_test=False)
        if prepared.splits.spec.kind == splits_lib.TIME:
            # The latest rows are the likest to those the model will serve: score the
            # held-out rows first, then train the members again with them.
            outputs = model_outputs(
                model,
                raw_rows(prepared.schema, test.frame),
                schema=prepared.schema,
                task=dataset.task,
                class_names=dataset.class_names,
            )
            held_out = score_predictions(outputs, test.y, task=dataset.task)
            model, refit = refitted(with_test=True)
            log.info(
                "export: held-out score measured, then the members trained again with the "
                "latest (test) rows too, %d rows in all (data.split = %s)",
                refit["rows"],
                prepared.splits.spec,
            )
            refit["test_rows_included"] = True
    test_scores: dict[str, float] = {}

    def score(outputs: dict[str, np.ndarray]) -> dict[str, float]:
        test_scores.update(held_out or score_predictions(outputs, test.y, task=dataset.task))
        return test_scores

    metrics = {
        name: best.metrics.get_last_value(name)
        for name in best.metrics.metrics
        if name.startswith("val_")
    }
    # The held-out score comes from the reloaded SavedModel, verified against the
    # in-memory model: exactly what is served.
    export_dir = export_model(
        model,
        export_root=Path(config.runtime.experiment_dir) / EXPORT_DIR,
        task=dataset.task,
        schema=prepared.schema,
        class_names=dataset.class_names,
        version=config.export.version,
        info={
            "trial_id": best.trial_id,
            "objective": tuner.oracle.objective.name,
            "validation_score": best.score,
            "data": dataset.name,
            "hyperparameters": best.hyperparameters.values,
            "ensemble": [trial.trial_id for trial in members],
            "ensemble_weights": chosen.weights,
        },
        verify_rows=raw_rows(prepared.schema, test.frame),
        card=build_card(
            hyperparameters=dict(best.hyperparameters.values),
            objective=tuner.oracle.objective.name,
            validation_score=best.score,
            validation_metrics={k: float(v) for k, v in metrics.items() if v is not None},
            data_source=dataset.name,
            task=dataset.task,
            class_names=[str(c) for c in dataset.class_names],
            schema=prepared.schema,
            seed=config.runtime.seed,
            trial_id=best.trial_id,
            ensemble=[
                {
                    "trial_id": trial.trial_id,
                    "validation_score": trial.score,
                    "weight": weight,
                    "hyperparameters": dict(trial.hyperparameters.values),
                }
                for trial, weight in zip(members, chosen.weights, strict=True)
            ],
            ensemble_validation={
                "selected": chosen.validation_score,
                "best_single": chosen.best_single_score,
            },
            refit=refit,
            config=config_to_dict(config),
            split=prepared.splits.to_json(),
        ),
        score=score,
        fresh_process=config.export.verify_in_fresh_process,
    )
    return Exported(
        export_dir,
        dict(test_scores),
        [trial.trial_id for trial in members],
        refit=refit.get("mode", ""),
    )


def find_learning_rates(
    config: PipelineConfig,
    *,
    optimizers: Sequence[str | None] | None = None,
    plot_path: Path | None = None,
    prepared: _Prepared | None = None,
    max_seconds: float | None = None,
) -> list[LRFindResult]:
    """Runs the learning-rate range test on the space's default model for each of
    `optimizers` (None: every optimizer of the space; ``[None]``: the space's default),
    on the training split. With `max_seconds`, no test starts once they are spent.
    Saves the plot to `plot_path` when given."""
    prepared = prepared or _prepare_data(config)
    hypermodel = _make_hypermodel(config, prepared, _objective(config, prepared.dataset.task))
    train = prepared.splits.train
    started = time.monotonic()
    results: list[LRFindResult] = []
    for name in list(config.search.optimizers) if optimizers is None else optimizers:
        if max_seconds is not None and results and time.monotonic() - started >= max_seconds:
            break
        results.append(
            lr_range_test(
                hypermodel,
                prepared.inputs(train),
                train.y,
                optimizer=name,
                seed=config.runtime.seed,
            )
        )
    if plot_path is not None and results:
        plot_lr_find(results, plot_path)
    return results


#: The range test spends at most this share of the search's planned training steps
#: (and, under a time budget, of its seconds), so a small search tests few optimizers.
_RANGE_TEST_SHARE = 0.2


def _range_test_plan(config: PipelineConfig, train_rows: int) -> dict[str, str]:
    """Each optimizer of the space that the range test will measure, mapped to the
    optimizer whose test it takes (`RANGE_SHARED_WITH`): one test per group, in the
    space's order, as many as fit in `_RANGE_TEST_SHARE` of the search's steps."""
    groups: dict[str, list[str]] = {}
    for name in config.search.optimizers:
        groups.setdefault(RANGE_SHARED_WITH.get(name, name), []).append(name)
    tuner = config.tuner
    epochs = planned_epochs(
        algorithm=tuner.algorithm,
        max_trials=tuner.max_trials,
        max_epochs=tuner.max_epochs,
        factor=tuner.factor,
        hyperband_iterations=tuner.hyperband_iterations,
        default_trials=DEFAULT_MAX_TRIALS,
    )
    sizes = config.search.batch_sizes
    steps = epochs * sum(math.ceil(train_rows / b) for b in sizes) / len(sizes)
    affordable = int(_RANGE_TEST_SHARE * steps // RANGE_TEST_STEPS)
    return {name: members[0] for members in list(groups.values())[:affordable] for name in members}


@dataclasses.dataclass(frozen=True)
class LearningRates:
    """The learning-rate ranges an ``"auto"`` search's range test found."""

    bounds: tuple[float, float]
    by_optimizer: dict[str, tuple[float, float]]

    def apply(self, config: PipelineConfig) -> PipelineConfig:
        search = dataclasses.replace(
            config.search, learning_rate=self.bounds, optimizer_learning_rates=self.by_optimizer
        )
        return dataclasses.replace(config, search=search)


def _auto_learning_rate(
    config: PipelineConfig, prepared: _Prepared, *, save: bool = True
) -> PipelineConfig:
    """``search.learning_rate = "auto"``: the range test sets the learning-rate range of
    each optimizer it measures (`_range_test_plan`); `learning_rate` becomes the union
    of them when every optimizer has its own, and stays as configured for the others.
    `save` writes the curves and the plot to the experiment (the workers of a parallel
    search, which run the same seeded test, leave that to the chief)."""
    experiment = Path(config.runtime.experiment_dir)
    plot = experiment / LR_FIND_PLOT if save else None
    plan = _range_test_plan(config, len(prepared.splits.train))
    budget = config.tuner.time_budget
    results = find_learning_rates(
        config,
        optimizers=list(dict.fromkeys(plan.values())),
        prepared=prepared,
        plot_path=plot,
        max_seconds=_RANGE_TEST_SHARE * budget if budget else None,
    )
    measured = {r.optimizer: r.suggested for r in results}
    by_optimizer = {name: measured[test] for name, test in plan.items() if test in measured}
    untested = [name for name in config.search.optimizers if name not in by_optimizer]
    bounds = config.search.learning_rate if untested or not results else union_range(results)
    found = LearningRates(bounds=bounds, by_optimizer=by_optimizer)
    for name, (low, high) in found.by_optimizer.items():
        log.info("learning-rate range test: %s learning_rate in [%.3g, %.3g]", name, low, high)
    if untested:
        log.info(
            "learning-rate range test: not run for %s (a small search, see "
            "`kt-pipeline plan`); learning_rate in [%.3g, %.3g]",
            ", ".join(untested),
            *bounds,
        )
    if save:
        saved = {
            "bounds": found.bounds,
            "by_optimizer": found.by_optimizer,
            "tests": [r.to_json() for r in results],
        }
        (experiment / LR_FIND_FILE).write_text(json.dumps(saved), "utf-8")
    return found.apply(config)


def _found_learning_rates(experiment: Path) -> LearningRates | None:
    """The ranges an ``"auto"`` search's range test saved, None if unreadable."""
    try:
        saved = json.loads((experiment / LR_FIND_FILE).read_text("utf-8"))
        low, high = saved["bounds"]
        by_optimizer = {
            str(name): (float(a), float(b)) for name, (a, b) in saved["by_optimizer"].items()
        }
        return LearningRates(bounds=(float(low), float(high)), by_optimizer=by_optimizer)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


#: `plan` warns when a search without a time budget is estimated to take longer.
PLAN_WARN_SECONDS = 30 * 60


def plan_search(config: PipelineConfig, *, calibration_epochs: int = 3) -> Plan:
    """The search's plan (`kt_pipeline.plan`) without running it; 0 calibration epochs
    skips the timing. The experiment directory is not touched: the tuner is built in a
    temporary folder."""
    prepared = _prepare_data(config)
    epochs_auto = not config.tuner.max_epochs
    config = _sized_for_data(config, prepared)
    splits = prepared.splits
    with tempfile.TemporaryDirectory(prefix="kt-plan-") as scratch:
        runtime = dataclasses.replace(config.runtime, experiment_dir=scratch)
        tuner = _make_tuner(dataclasses.replace(config, runtime=runtime), prepared, overwrite=True)
        space = tuner.oracle.get_space()
        replicas = tuner.distribution_strategy.num_replicas_in_sync
        smallest, largest = model_sizes(tuner.hypermodel, space, replicas=replicas)
        plan_schedule = schedule(tuner.oracle, max_epochs=config.tuner.max_epochs)
        warnings = space_warnings(space, train_rows=len(splits.train))
        warnings += _rare_level_warnings(prepared.schema, treatments=config.search.high_cardinality)
        notes = _plan_notes(config, train_rows=len(splits.train), epochs_auto=epochs_auto)
        notes += splits.notes()
        leaks = prepared.leak_check()
        warnings += leaks.warnings()
        notes += leaks.notes()
        notes += _rare_level_notes(prepared.schema, min_frequency=config.data.min_frequency)
        notes += _identifier_notes(prepared.schema, prepared.level_shares)
        notes += _value_embedding_notes(prepared.schema, choices=config.search.value_embeddings)
        notes += _row_code_notes(prepared.schema, choices=config.search.row_target_encoding)
        calibration = None
        if calibration_epochs:
            calibration = calibrate(
                tuner.hypermodel,
                space,
                [smallest, largest],
                x=prepared.inputs(splits.train),
                y=splits.train.y,
                validation_data=(prepared.inputs(splits.validation), splits.validation.y),
                epochs=calibration_epochs,
                scratch_dir=scratch,
            )
    estimated = estimate_seconds(plan_schedule, calibration) if calibration else None
    if estimated is not None:
        warnings += _time_warnings(estimated, budget=config.tuner.time_budget)
    return Plan(
        space=tuple(describe_space(space)),
        schedule=plan_schedule,
        algorithm=config.tuner.algorithm,
        smallest=smallest,
        largest=largest,
        replicas=replicas,
        calibration=calibration,
        estimated_seconds=estimated,
        warnings=tuple(warnings),
        notes=tuple(notes),
    )


def _plan_notes(config: PipelineConfig, *, train_rows: int, epochs_auto: bool) -> list[str]:
    """What the search decides from the data and the budget, for `plan`."""
    notes = []
    if config.search.batch_sizes_auto:
        notes.append(
            f"batch sizes {list(config.search.batch_sizes)} for {train_rows} training rows "
            '(search.batch_sizes = "auto")'
        )
    if config.search.members_auto:
        notes.append(
            f"members {list(config.search.members)} for {train_rows} training rows "
            '(search.members = "auto")'
        )
    if epochs_auto:
        notes.append(
            f"at most {config.tuner.max_epochs} epochs a trial for {train_rows} training rows "
            "(tuner.max_epochs = 0)"
        )
    if config.search.learning_rate_auto:
        tested = _range_test_plan(config, train_rows)
        groups = list(dict.fromkeys(tested.values()))
        untested = [name for name in config.search.optimizers if name not in tested]
        notes.append(
            f"the learning-rate range test runs first ({RANGE_TEST_STEPS} steps for each of "
            f"{', '.join(groups) or 'no optimizer'}; not in the estimate) and gives "
            f"{', '.join(tested) or 'no optimizer'} its own <optimizer>_learning_rate range"
            + (
                f"; {', '.join(untested)} keep learning_rate (a small search tests only "
                f"what {_RANGE_TEST_SHARE:.0%} of its training steps pay for)"
                if untested
                else ""
            )
        )
    if config.tuner.time_budget:
        notes.append(f"time budget {format_duration(config.tuner.time_budget)} (tuner.time_budget)")
    elif config.export.enabled and config.export.refit == "auto" and not refit_for(train_rows):
        notes.append(
            f"no refit for {train_rows} training rows: the export serves the searched "
            'ensemble (export.refit = "auto", kt_pipeline.sizing.refit_for)'
        )
    elif config.export.enabled and config.export.refit == "auto":
        notes.append(
            "the export blends in its members trained again on training + validation rows "
            f"where that costs at most {REFIT_MAX_SHARE:.0%} of the search's training time "
            '(export.refit = "auto"; not in the estimate)'
        )
    elif config.export.enabled and config.export.refit != "off":
        notes.append(
            "the export trains its members again on training + validation rows "
            f'(export.refit = "{config.export.refit}"; not in the estimate)'
        )
    return notes


def _value_embedding_notes(schema: TabularSchema, *, choices: Sequence[bool]) -> list[str]:
    """The numeric columns whose repeated values the search may embed."""
    columns = [schema.numeric[i] for i in value_columns(schema)]
    if not columns or True not in choices:
        return []
    named = ", ".join(f"{c.name!r} ({len(c.values):,})" for c in columns[:8])
    more = f" and {len(columns) - 8} more" if len(columns) > 8 else ""
    how = "searched" if False in choices else "on"
    return [
        f"value embeddings {how} (search.value_embeddings) for {len(columns)} numeric "
        f"column(s) whose rows repeat values: {named}{more}"
    ]


def _row_code_notes(schema: TabularSchema, *, choices: Sequence[bool]) -> list[str]:
    """The key that groups the rows and how much it repeats, where the row target
    encoding is offered."""
    rows = schema.rows
    if rows is None or True not in choices:
        return []
    repeated = sum(rows.counts[1:])
    how = "searched" if False in choices else "on"
    key = ", ".join(rows.key or schema.names)
    return [
        f"row target encoding {how} (search.row_target_encoding): rows grouped by "
        f"{key}; {repeated:,} of {repeated + rows.counts[0]:,} training rows share their "
        f"group with another row ({len(rows.vocabulary):,} groups)"
    ]


def _rare_level_notes(schema: TabularSchema, *, min_frequency: int) -> list[str]:
    """Categorical columns whose training rows are mostly in rare values."""
    return [
        f"column {c.name!r}: {c.levels:,} levels, {c.rare_share:.0%} of training rows in "
        f"levels seen fewer than {RARE_BELOW} times; "
        + (
            f"levels seen fewer than {min_frequency} times share one bucket"
            if min_frequency > 1
            else "each keeps its own value (data.min_frequency = 1)"
        )
        for c in rare_level_columns(schema)
    ]


def _identifier_notes(schema: TabularSchema, shares: Mapping[str, float]) -> list[str]:
    """What each high-cardinality column's levels are worth, and what that decided
    (`data.screen_identifiers`)."""
    notes = []
    for column in schema.categorical:
        if column.name not in shares:
            continue
        worth = (
            f"column {column.name!r}: its levels explain {shares[column.name]:.1%} of what "
            "the other columns' main effects leave"
        )
        notes.append(
            f"{worth} (less than {LEVEL_MIN_SHARE:.1%}): left out of the network "
            "(data.screen_identifiers)"
            if column.treatment == "drop"
            else f"{worth}: the search decides how it enters (search.high_cardinality)"
        )
    return notes


def _rare_level_warnings(schema: TabularSchema, *, treatments: Sequence[str]) -> list[str]:
    """A mostly-rare column whose embedding is wider than all other inputs together:
    the first layer sees more of it than of everything else (unless the search never
    embeds it, `search.high_cardinality`)."""
    if "embedding" not in treatments:
        return []
    widths = {c.name: embedding_width(c) for c in schema.categorical}
    others = len(schema.numeric) + sum(c.has_missing for c in schema.numeric)
    warnings = []
    for column in rare_level_columns(schema):
        rest = others + sum(w for name, w in widths.items() if name != column.name)
        if widths[column.name] > rest:
            warnings.append(
                f"column {column.name!r} (mostly rare levels) gets a {widths[column.name]}-wide "
                f"embedding, more than the other {rest} input features together; raise "
                "data.min_frequency, search its treatment (search.high_cardinality = "
                "['embedding', 'frequency', 'target', 'hashing', 'drop']) or drop the column"
            )
    return warnings


def _time_warnings(estimated: float, *, budget: float) -> list[str]:
    if budget and estimated > budget:
        return [
            f"the estimated wall time ({format_duration(estimated)}) exceeds the time budget "
            f"({format_duration(budget)}, --time-budget / tuner.time_budget): the search will stop "
            "before its schedule ends"
        ]
    if not budget and estimated > PLAN_WARN_SECONDS:
        return [
            f"the estimated wall time ({format_duration(estimated)}) exceeds "
            f"{format_duration(PLAN_WARN_SECONDS)}: set --time-budget (tuner.time_budget) to bound "
            "it, or lower tuner.max_epochs"
        ]
    return []


def _worker_summary(
    experiment: Path, task: str, objective: keras_tuner.Objective, started: float
) -> SearchSummary:
    return SearchSummary(
        experiment_dir=experiment,
        task=task,
        objective=f"{objective.name} ({objective.direction})",
        best_trial_id=None,
        best_score=None,
        best_hyperparameters={},
        test_scores={},
        export_dir=None,
        exported_trial_ids=[],
        results_file=experiment / RESULTS_FILE,
        tensorboard_dir=experiment / TENSORBOARD_DIR,
        trials=0,
        completed_trials=0,
        seconds=round(time.monotonic() - started, 1),
    )


def run_search(
    config: PipelineConfig,
    *,
    overwrite: bool = False,
    role: str = "standalone",
    worker_id: str = "worker0",
    started: float | None = None,
) -> SearchSummary:
    """Runs the whole job described by `config`.

    Bad input (data, paths) raises `UserInputError` before anything is written to
    the experiment directory.

    Args:
        config: The experiment.
        overwrite: Discard an existing search in the experiment directory.
        role: ``standalone``; or, in a parallel search (`kt_pipeline.parallel`),
            ``chief`` (serves the oracle at ``runtime.oracle_address``, then writes the
            results and the export) or ``worker`` (runs trials the chief hands out).
        worker_id: A worker's id, unique in the search.
        started: When the job started (`time.monotonic`), which ``tuner.time_budget``
            counts from: the CLI passes its own start, before TensorFlow's import.
            None: now.
    """
    started = time.monotonic() if started is None else started
    policy = keras.mixed_precision.global_policy()
    if config.tuner.time_budget and role != "standalone":
        raise UserInputError(
            "`tuner.time_budget` is not supported in a parallel search yet (--workers, "
            f"--role). Received: {config.tuner.time_budget:g} s"
        )
    try:
        if role == "standalone":
            return _run_search(config, overwrite=overwrite, role=role, started=started)
        runtime = config.runtime
        address = (runtime.oracle_bind if role == "chief" else "") or runtime.oracle_address
        token = oracle_token(runtime.oracle_token_file)
        open_door = not token and not runtime.oracle_insecure and not is_loopback(address)
        if role == "chief" and open_door:
            raise UserInputError(
                f"the chief would bind {address!r} beyond loopback with no token: anyone "
                f"who reaches it could take trials or forge results. Set {TOKEN_ENV} (the "
                "same for the workers) or --oracle-token-file, or pass --insecure"
            )
        tls_files = (
            {"cert": runtime.oracle_tls_cert, "key": runtime.oracle_tls_key}
            if role == "chief"
            else {"ca": runtime.oracle_tls_ca}
        )
        oracle_tls(**tls_files)  # unreadable files end the job before it starts
        with oracle_role(
            tuner_id="chief" if role == "chief" else worker_id,
            address=address,
            token=token,
            tls_files=tls_files,
        ):
            return _run_search(config, overwrite=overwrite, role=role, started=started)
    finally:  # `runtime.mixed_precision` is for this job, not for the caller's process
        keras.mixed_precision.set_global_policy(policy)


def _check_fingerprint(
    experiment: Path, dataset: data_lib.Dataset, *, resuming: bool, save: bool
) -> None:
    """Refuses to resume a search on rows other than the ones it ran on, then records
    the rows' fingerprint (`data.fingerprint`) for the next run.

    Raises:
        UserInputError: the saved fingerprint differs; the directory is left as it was.
    """
    path = experiment / FINGERPRINT_FILE
    current = data_lib.fingerprint(dataset)
    if resuming and path.is_file():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))["fingerprint"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise UserInputError(
                f"{str(path)!r} is not readable ({error}): remove it to resume without the "
                "check, or pass --overwrite to start afresh"
            ) from error
        if saved != current:
            raise UserInputError(
                f"data {dataset.name!r} is not the data the search in {str(experiment)!r} "
                f"ran on (fingerprint {saved} then, {current} now): pass --overwrite to start "
                "afresh, or choose another --experiment-dir"
            )
    if save:
        record = {"data": dataset.name, "fingerprint": current}
        partial = path.with_name(f"{path.name}.partial")  # a full disk leaves the old one
        try:
            partial.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
            partial.replace(path)
        finally:
            partial.unlink(missing_ok=True)


@dataclasses.dataclass(frozen=True)
class _Job:
    """A job ready to search: its config resolved for the data, and what it runs on."""

    config: PipelineConfig  # sized for the data, learning rates found
    prepared: _Prepared
    strategy: tf.distribute.Strategy
    budget: TimeBudget | None
    experiment: Path


def _run_search(
    config: PipelineConfig, *, overwrite: bool, role: str, started: float
) -> SearchSummary:
    """The job as three steps: prepare the data and the config, search, then write the
    results and the export."""
    with contextlib.ExitStack() as held:
        job = _prepare_job(config, overwrite=overwrite, role=role, started=started, held=held)
        tuner = _search(job, overwrite=overwrite, role=role)
        if role == "worker":  # the chief writes the results and the export
            objective = tuner.oracle.objective
            return _worker_summary(job.experiment, job.prepared.dataset.task, objective, started)
        return _finish(job, tuner, started=started)


def _prepare_job(
    config: PipelineConfig,
    *,
    overwrite: bool,
    role: str,
    started: float,
    held: contextlib.ExitStack,
) -> _Job:
    """Checks the input, sets up the devices and the seed, splits the data, sizes the
    config for it, takes the experiment's lock (into `held`, for the job's life) and
    runs the learning-rate range test; nothing is written to the experiment directory
    before the input is known to be good."""
    budget = (
        TimeBudget(config.tuner.time_budget, started=started) if config.tuner.time_budget else None
    )
    _hypermodel_class(config.search.hypermodel)  # fail on a bad path before writing
    configure_devices(
        memory_growth=config.runtime.memory_growth,
        mixed_precision=config.runtime.mixed_precision,
    )
    # Also before any function runs: TensorFlow fixes the option on the first call.
    set_graph_optimizer(config.runtime.graph_optimizer)
    # Before any other TensorFlow work: a multi-worker strategy configures the runtime.
    strategy = make_strategy(config.runtime.strategy, devices=config.runtime.devices)
    if not is_multi_worker_chief(strategy):
        # The other tasks of a multi-worker trial compute with the chief but keep their
        # files apart; only the chief's experiment is the result, and its export.
        task = json.loads(os.environ["TF_CONFIG"])["task"]
        scratch = (
            Path(config.runtime.experiment_dir)
            / "multi_worker"
            / (f"{task['type']}_{task['index']}")
        )
        config = dataclasses.replace(
            config,
            runtime=dataclasses.replace(config.runtime, experiment_dir=str(scratch)),
            export=dataclasses.replace(config.export, enabled=False),
        )
    prepared = _prepare_data(config)
    config = _sized_for_data(config, prepared)
    dataset, splits = prepared.dataset, prepared.splits
    experiment = Path(config.runtime.experiment_dir)
    _prepare_experiment_dir(experiment)
    if role != "worker":  # workers write through the chief's oracle
        held.enter_context(experiment_lock(experiment))
    resuming = not overwrite and (experiment / PROJECT_NAME).is_dir()
    range_test = config.search.learning_rate_auto
    if resuming and range_test:
        found = _found_learning_rates(experiment)
        if found is not None:  # keep them: a new test could move the space under old trials
            config, range_test = found.apply(config), False
    if resuming:
        check_search_files(experiment / PROJECT_NAME)
        check_resumable(experiment / CONFIG_FILE, config_to_dict(config))
    _check_fingerprint(experiment, dataset, resuming=resuming, save=role != "worker")
    if config.runtime.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(config.runtime.seed)
    kinds = collections.Counter(dataset.kinds.values())
    log.info(
        "data %s: %s task, %d train / %d validation / %d test rows, columns: %s",
        dataset.name,
        dataset.task,
        len(splits.train),
        len(splits.validation),
        len(splits.test),
        ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items())),
    )
    for note in splits.notes():
        log.info("split: %s", note)
    for warning in prepared.leak_check().warnings():
        log.warning("split: %s", warning)
    for note in _rare_level_notes(prepared.schema, min_frequency=config.data.min_frequency):
        log.info("data: %s", note)
    for note in _identifier_notes(prepared.schema, prepared.level_shares):
        log.info("data: %s", note)
    if range_test:
        config = _auto_learning_rate(config, prepared, save=role != "worker")
    return _Job(config, prepared, strategy, budget, experiment)


def _search(job: _Job, *, overwrite: bool, role: str) -> keras_tuner.Tuner:
    """Builds the tuner, saves the config beside it and runs the trials."""
    config, prepared, splits = job.config, job.prepared, job.prepared.splits
    tuner = _make_tuner(
        config, prepared, overwrite=overwrite, strategy=job.strategy, time_budget=job.budget
    )
    if role != "worker":
        save_config(config, job.experiment / CONFIG_FILE)
    try:
        tuner.search(
            prepared.inputs(splits.train),
            splits.train.y,
            validation_data=(prepared.inputs(splits.validation), splits.validation.y),
            epochs=config.tuner.max_epochs,
            callbacks=_callbacks(config),
            verbose=1 if config.runtime.verbose else 0,
        )
    except SearchAbortedError:
        if role != "worker":  # the failed trials' reasons, for the user
            write_results(
                tuner,
                job.experiment / RESULTS_FILE,
                json_path=job.experiment / RESULTS_JSON_FILE,
                split=config.data.split,
            )
        raise
    return tuner


def _finish(job: _Job, tuner: keras_tuner.Tuner, *, started: float) -> SearchSummary:
    """Writes the results table, the best hyperparameters, the export and the summary."""
    config, experiment = job.config, job.experiment
    objective = tuner.oracle.objective
    results_file = experiment / RESULTS_FILE
    table = write_results(
        tuner, results_file, json_path=experiment / RESULTS_JSON_FILE, split=config.data.split
    )
    best = best_trial(tuner.oracle)
    best_hp = dict(best.hyperparameters.values) if best else {}
    (experiment / BEST_HP_FILE).write_text(json.dumps(best_hp, indent=2), encoding="utf-8")

    exported = None
    if config.export.enabled and best is not None:
        if is_multi_worker(job.strategy):
            # The other tasks have left: build the export model on this process alone.
            tuner.distribution_strategy = None
        exported = export_best(config, tuner=tuner, prepared=job.prepared)

    summary = SearchSummary(
        experiment_dir=experiment,
        task=job.prepared.dataset.task,
        objective=f"{objective.name} ({objective.direction})",
        best_trial_id=best.trial_id if best else None,
        best_score=best.score if best else None,
        best_hyperparameters=best_hp,
        test_scores=exported.test_scores if exported else {},
        export_dir=exported.directory if exported else None,
        exported_trial_ids=exported.trial_ids if exported else [],
        exported_refit=exported.refit if exported else "",
        results_file=results_file,
        tensorboard_dir=experiment / TENSORBOARD_DIR,
        trials=len(table),
        completed_trials=int((table["status"] == "COMPLETED").sum()) if len(table) else 0,
        seconds=round(time.monotonic() - started, 1),
        stopped_by_time_budget=job.budget is not None and job.budget.spent,
    )
    (experiment / SUMMARY_FILE).write_text(json.dumps(summary.to_json(), indent=2), "utf-8")
    return summary
