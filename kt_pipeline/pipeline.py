"""The end-to-end job as its named steps: prepare (the data, the config sized for it,
the learning-rate range test), search, then finish (the results, the export and its
held-out score). Each step calls the module that owns its concern: `prepare`,
`lr_find`, `search_parts`, `finish`."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import keras_tuner
import tensorflow as tf

from kt_pipeline.config import PipelineConfig, config_to_dict, save_config
from kt_pipeline.errors import SearchAbortedError, UserInputError
from kt_pipeline.experiment_files import (
    BEST_HP_FILE,
    CONFIG_FILE,
    PROJECT_NAME,
    RESULTS_FILE,
    RESULTS_JSON_FILE,
    SUMMARY_FILE,
    TENSORBOARD_DIR,
    prepare_experiment_dir,
)
from kt_pipeline.finish import export_best
from kt_pipeline.lock import experiment_lock
from kt_pipeline.lr_find import auto_learning_rate, found_learning_rates
from kt_pipeline.parallel import TOKEN_ENV, is_loopback, oracle_role, oracle_tls, oracle_token
from kt_pipeline.plan import log_data_notes
from kt_pipeline.prepare import Prepared, prepare_data, set_up_devices, sized_for_data
from kt_pipeline.results import write_results
from kt_pipeline.resume import check_fingerprint, check_resumable, check_search_files
from kt_pipeline.search_parts import hypermodel_class, make_tuner, trial_callbacks
from kt_pipeline.strategy import is_multi_worker
from kt_pipeline.time_budget import TimeBudget
from kt_pipeline.tuners import best_trial

__all__ = ["SearchSummary", "run_search"]

log = logging.getLogger("kt_pipeline")


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
    test_intervals: dict[str, Any] = dataclasses.field(default_factory=dict)  # held_out

    def to_json(self) -> dict[str, Any]:
        plain = dataclasses.asdict(self)
        return {k: str(v) if isinstance(v, Path) else v for k, v in plain.items()}


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
    callbacks: Sequence[keras.callbacks.Callback] = (),
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
        callbacks: The caller's Keras callbacks, for every trial's `fit`.
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
            return _run_search(
                config, overwrite=overwrite, role=role, started=started, callbacks=callbacks
            )
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
            return _run_search(
                config, overwrite=overwrite, role=role, started=started, callbacks=callbacks
            )
    finally:  # `runtime.mixed_precision` is for this job, not for the caller's process
        keras.mixed_precision.set_global_policy(policy)


@dataclasses.dataclass(frozen=True)
class _Job:
    """A job ready to search: its config resolved for the data, and what it runs on."""

    config: PipelineConfig  # sized for the data, learning rates found
    prepared: Prepared
    strategy: tf.distribute.Strategy
    budget: TimeBudget | None
    experiment: Path


def _run_search(
    config: PipelineConfig,
    *,
    overwrite: bool,
    role: str,
    started: float,
    callbacks: Sequence[keras.callbacks.Callback],
) -> SearchSummary:
    """The job as three steps: prepare the data and the config, search, then write the
    results and the export."""
    with contextlib.ExitStack() as held:
        job = _prepare_job(config, overwrite=overwrite, role=role, started=started, held=held)
        tuner = _search(job, overwrite=overwrite, role=role, callbacks=callbacks)
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
    seconds = config.tuner.time_budget
    budget = TimeBudget(seconds, started=started) if seconds else None
    hypermodel_class(config.search.hypermodel)  # fail on a bad path before writing
    config, strategy = set_up_devices(config)
    prepared = prepare_data(config)
    config = sized_for_data(config, prepared)
    dataset = prepared.dataset
    experiment = Path(config.runtime.experiment_dir)
    prepare_experiment_dir(experiment)
    if role != "worker":  # workers write through the chief's oracle
        held.enter_context(experiment_lock(experiment))
    resuming = not overwrite and (experiment / PROJECT_NAME).is_dir()
    range_test = config.search.learning_rate_auto
    if resuming and range_test:
        found = found_learning_rates(experiment)
        if found is not None:  # keep them: a new test could move the space under old trials
            config, range_test = found.apply(config), False
    if resuming:
        check_search_files(experiment / PROJECT_NAME)
        check_resumable(experiment / CONFIG_FILE, config_to_dict(config))
    check_fingerprint(experiment, dataset, resuming=resuming, save=role != "worker")
    if config.runtime.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(config.runtime.seed)
    log_data_notes(prepared, min_frequency=config.data.min_frequency)
    if range_test:
        config = auto_learning_rate(config, prepared, save=role != "worker")
    return _Job(config, prepared, strategy, budget, experiment)


def _search(
    job: _Job, *, overwrite: bool, role: str, callbacks: Sequence[keras.callbacks.Callback]
) -> keras_tuner.Tuner:
    """Builds the tuner, saves the config beside it and runs the trials."""
    config, prepared = job.config, job.prepared
    tuner = make_tuner(
        config, prepared, overwrite=overwrite, strategy=job.strategy, time_budget=job.budget
    )
    if role != "worker":
        save_config(config, job.experiment / CONFIG_FILE)
    data, data_kwargs = prepared.search_data()
    try:
        tuner.search(
            *data,
            **data_kwargs,
            epochs=config.tuner.max_epochs,
            callbacks=[*trial_callbacks(config), *callbacks],
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
        test_intervals=exported.test_intervals if exported else {},
        results_file=results_file,
        tensorboard_dir=experiment / TENSORBOARD_DIR,
        trials=len(table),
        completed_trials=int((table["status"] == "COMPLETED").sum()) if len(table) else 0,
        seconds=round(time.monotonic() - started, 1),
        stopped_by_time_budget=job.budget is not None and job.budget.spent,
    )
    (experiment / SUMMARY_FILE).write_text(json.dumps(summary.to_json(), indent=2), "utf-8")
    return summary
