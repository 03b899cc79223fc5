"""KerasTuner tuners with the pipeline's guarantees added by subclassing.

What the subclasses add to KerasTuner's own Hyperband, BayesianOptimization and
RandomSearch:

* **Seeds that hold.** KerasTuner replaces ``seed=0`` with a random seed; ours keeps
  it. Each trial's weights are initialised from a seed derived from the experiment
  seed and the trial id, so a trial is reproducible on its own.
* **Trial accounting.** Wall time and epochs of every trial are written to
  ``trial_<id>/stats.json`` for the results table.
* **Checkpoints that restore the optimizer.** Hyperband promotions and reloaded best
  models get their optimizer state back (KerasTuner silently drops it).
"""

from __future__ import annotations

import json
import logging
import os
import time
import zlib
from typing import Any

import keras
import keras_tuner
import numpy as np

from kt_pipeline import parallel

__all__ = ["ALGORITHMS", "DEFAULT_MAX_TRIALS", "TRIAL_STATS_FILE", "build_tuner", "trial_seed"]

ALGORITHMS = ("hyperband", "bayesian", "random")

#: Trials for random and Bayesian search when the config leaves `max_trials` at 0.
DEFAULT_MAX_TRIALS = 20

#: Per-trial file with wall time and epochs.
TRIAL_STATS_FILE = "stats.json"

log = logging.getLogger("kt_pipeline")


def trial_seed(seed: int, trial_id: str) -> int:
    """A stable per-trial seed: the same experiment seed and trial id give the same seed."""
    return zlib.crc32(f"{seed}:{trial_id}".encode()) % (2**31 - 1)


def _honour_seed(oracle: keras_tuner.Oracle, seed: int) -> None:
    """Undoes KerasTuner's ``seed or random.randint(...)`` on a fresh oracle.

    A resumed oracle already carries the seed it saved, so it is left alone.
    """
    if oracle.trials:
        return
    oracle.seed = seed
    oracle._seed_state = seed
    if hasattr(oracle, "_random_state"):  # BayesianOptimizationOracle
        oracle._random_state = np.random.RandomState(seed)
        oracle.gpr = oracle._make_gpr()


class _PipelineTunerMixin:
    """Per-trial seeding and accounting, mixed in before a KerasTuner tuner class."""

    oracle: keras_tuner.Oracle

    def __init__(
        self, *args: Any, seed: int, worker_lease_seconds: float = 60.0, **kwargs: Any
    ) -> None:
        self._experiment_seed = seed
        self._lease_seconds = worker_lease_seconds
        self._heartbeat: parallel.TrialHeartbeat | None = None
        self._current_trial_id: str | None = None
        self._trial_started: dict[str, float] = {}
        self._trial_epochs: dict[str, int] = {}
        super().__init__(*args, seed=seed, **kwargs)  # type: ignore[call-arg]
        # A worker's oracle is KerasTuner's OracleClient around the local one.
        _honour_seed(getattr(self.oracle, "_oracle", self.oracle), seed)

    def search(self, *fit_args: Any, **fit_kwargs: Any) -> None:
        """Runs the search; in a parallel search's chief, serves the oracle with worker
        leases (`kt_pipeline.parallel`) instead of KerasTuner's lease-less server."""
        if not parallel.is_chief():
            super().search(*fit_args, **fit_kwargs)  # type: ignore[misc]
            return
        if "verbose" in fit_kwargs:
            self.oracle.verbose = fit_kwargs["verbose"]
        self.save()  # type: ignore[attr-defined]
        host, port = os.environ["KERASTUNER_ORACLE_IP"], os.environ["KERASTUNER_ORACLE_PORT"]
        parallel.serve_oracle(
            self.oracle, address=f"{host}:{port}", lease_seconds=self._lease_seconds
        )

    def on_trial_begin(self, trial: keras_tuner.engine.trial.Trial) -> None:
        self._trial_started[trial.trial_id] = time.perf_counter()
        if parallel.is_worker():
            self._heartbeat = parallel.TrialHeartbeat(
                self.oracle.stub,
                trial.trial_id,
                interval=self._lease_seconds / parallel.HEARTBEATS_PER_LEASE,
            )
            self._heartbeat.start()
        super().on_trial_begin(trial)  # type: ignore[misc]

    def run_trial(self, trial: keras_tuner.engine.trial.Trial, *args: Any, **kwargs: Any) -> Any:
        self._current_trial_id = trial.trial_id
        histories = super().run_trial(trial, *args, **kwargs)  # type: ignore[misc]
        epochs = [len(h.epoch) for h in histories if isinstance(h, keras.callbacks.History)]
        self._trial_epochs[trial.trial_id] = max(epochs, default=0)
        return histories

    def _build_hypermodel(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        # Runs after KerasTuner's `clear_session()`, which would wipe an earlier seed.
        if self._current_trial_id is not None:
            keras.utils.set_random_seed(trial_seed(self._experiment_seed, self._current_trial_id))
        return super()._build_hypermodel(hp)  # type: ignore[misc]

    def on_trial_end(self, trial: keras_tuner.engine.trial.Trial) -> None:
        if self._heartbeat is not None:
            self._heartbeat.stop()
            self._heartbeat = None
        started = self._trial_started.pop(trial.trial_id, None)
        stats = {
            "seconds": None if started is None else round(time.perf_counter() - started, 3),
            "epochs": self._trial_epochs.pop(trial.trial_id, 0),
            "worker": self.tuner_id,  # type: ignore[attr-defined]
            "finished_at": round(time.time(), 3),  # wall clock, comparable across workers
        }
        trial_dir = self.get_trial_dir(trial.trial_id)  # type: ignore[attr-defined]
        with open(os.path.join(trial_dir, TRIAL_STATS_FILE), "w", encoding="utf-8") as handle:
            json.dump(stats, handle)
        super().on_trial_end(trial)  # type: ignore[misc]
        _log_trial(self.oracle, trial, stats["seconds"])


def _log_trial(
    oracle: keras_tuner.Oracle, trial: keras_tuner.engine.trial.Trial, seconds: float | None
) -> None:
    objective = oracle.objective.name
    score = "n/a" if trial.score is None else f"{trial.score:.4f}"
    best = [t for t in oracle.get_best_trials(1) if t.score is not None]
    best_text = f"{best[0].score:.4f} (trial {best[0].trial_id})" if best else "n/a"
    total = f"/{oracle.max_trials}" if oracle.max_trials else ""
    # A parallel worker's OracleClient does not know how many trials have ended.
    ended = "?" if parallel.is_worker() else str(len(oracle.end_order))
    log.info(
        "trial %s%s (id %s) %s | %s %s | best %s | %s s",
        ended,
        total,
        trial.trial_id,
        trial.status,
        objective,
        score,
        best_text,
        "?" if seconds is None else f"{seconds:.1f}",
    )


class _OptimizerStateTuner(keras_tuner.Tuner):
    """Builds each model's optimizer before any checkpoint is loaded into it.

    KerasTuner's checkpoints hold the optimizer's variables (its step counter and
    moments), but a freshly compiled model has an unbuilt optimizer, so Keras skips
    them with a warning: a Hyperband promotion restarts its optimizer from step 0 and
    `load_model` drops the state. With the optimizer built first, both restore it.
    In the MRO this class sits below Hyperband, so it runs before Hyperband's own
    parent-checkpoint restore.
    """

    def _build_hypermodel(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        model = super()._build_hypermodel(hp)
        optimizer = getattr(model, "optimizer", None)
        if optimizer is not None and not optimizer.built:
            with keras_tuner.engine.tuner.maybe_distribute(self.distribution_strategy):
                optimizer.build(model.trainable_variables)
        return model


class HyperbandTuner(_PipelineTunerMixin, keras_tuner.Hyperband, _OptimizerStateTuner):
    """KerasTuner's Hyperband with the pipeline's seeding, accounting and promotions
    that keep their optimizer state."""


class BayesianTuner(_PipelineTunerMixin, keras_tuner.BayesianOptimization, _OptimizerStateTuner):
    """KerasTuner's Bayesian optimisation with the pipeline's seeding and accounting."""


class RandomTuner(_PipelineTunerMixin, keras_tuner.RandomSearch, _OptimizerStateTuner):
    """KerasTuner's random search with the pipeline's seeding and accounting."""


def build_tuner(
    hypermodel: keras_tuner.HyperModel,
    *,
    algorithm: str,
    objective: keras_tuner.Objective,
    directory: str,
    project_name: str = "search",
    seed: int = 0,
    max_trials: int = 0,
    max_epochs: int = 20,
    factor: int = 3,
    hyperband_iterations: int = 1,
    executions_per_trial: int = 1,
    max_consecutive_failed_trials: int = 3,
    distribution_strategy: Any = None,
    overwrite: bool = False,
    worker_lease_seconds: float = 60.0,
) -> keras_tuner.Tuner:
    """Builds the named tuner around a hypermodel.

    Args:
        hypermodel: A `keras_tuner.HyperModel`.
        algorithm: ``hyperband``, ``bayesian`` or ``random``.
        objective: The metric and its direction.
        directory: Folder that holds the tuner's project.
        project_name: Subfolder of `directory` for the trials.
        seed: Search seed; 0 is a seed like any other.
        max_trials: 0 lets Hyperband run its schedule and gives the other algorithms
            `DEFAULT_MAX_TRIALS`; a positive value caps Hyperband too.
        max_epochs: Hyperband's longest round.
        factor: Hyperband's reduction factor.
        hyperband_iterations: Hyperband's schedule repeats.
        executions_per_trial: Models trained per trial.
        max_consecutive_failed_trials: The search stops after this many failures in a row.
        distribution_strategy: A `tf.distribute.Strategy` for each trial, or None.
        overwrite: Discard an existing project in `directory`.
        worker_lease_seconds: In a parallel search, how long the chief waits for a
            silent worker before handing its trial to another (`kt_pipeline.parallel`).
    """
    common: dict[str, Any] = {
        "hypermodel": hypermodel,
        "objective": objective,
        "seed": seed,
        "directory": directory,
        "project_name": project_name,
        "overwrite": overwrite,
        "executions_per_trial": executions_per_trial,
        "max_consecutive_failed_trials": max_consecutive_failed_trials,
        "distribution_strategy": distribution_strategy,
        "worker_lease_seconds": worker_lease_seconds,
    }
    tuner: keras_tuner.Tuner
    if algorithm == "hyperband":
        tuner = HyperbandTuner(
            max_epochs=max_epochs,
            factor=factor,
            hyperband_iterations=hyperband_iterations,
            **common,
        )
        # HyperbandOracle takes no max_trials, but its base Oracle honours one.
        tuner.oracle.max_trials = max_trials or None
    elif algorithm == "bayesian":
        tuner = BayesianTuner(max_trials=max_trials or DEFAULT_MAX_TRIALS, **common)
    elif algorithm == "random":
        tuner = RandomTuner(max_trials=max_trials or DEFAULT_MAX_TRIALS, **common)
    else:
        raise ValueError(
            f"Argument `algorithm` must be one of {ALGORITHMS}. Received: algorithm={algorithm!r}"
        )
    return tuner
