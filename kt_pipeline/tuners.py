"""KerasTuner tuners with the pipeline's guarantees added by subclassing.

What the subclasses add to KerasTuner's own Hyperband, BayesianOptimization and
RandomSearch:

* **Seeds that hold.** KerasTuner replaces ``seed=0`` with a random seed; ours keeps
  it. KerasTuner draws hyperparameter *i* of a search from ``random.Random(seed + i)``,
  so seed 2 replays seed 1's draws shifted by one and the two searches soon sample
  the very same configurations; ours starts each seed's counter at a point hashed
  from the seed, so different seeds draw independent searches. Each trial's weights
  are initialised from a seed derived from the experiment seed and the trial id, so a
  trial is reproducible on its own.
* **Trial accounting.** Wall time and epochs of every trial are written to
  ``trial_<id>/stats.json`` for the results table.
* **Checkpoints that restore the optimizer.** Hyperband promotions and reloaded best
  models get their optimizer state back (KerasTuner silently drops it).
* **Failures with a reason.** A trial whose build or fit raises is recorded as FAILED
  with a one-line reason (the traceback goes to ``trial_<id>/error.txt``); a trial
  whose loss turns NaN or infinite is FAILED with reason ``diverged`` instead of
  COMPLETED with a meaningless score. Only real errors count towards
  ``max_consecutive_failed_trials``: divergence is a normal outcome of a
  learning-rate search and never aborts it.
* **Crash-safe resume.** A trial's unfinished attempts are counted in
  ``trial_<id>/crashes.json``, written before it runs and removed when it ends, so a
  trial that kills the process (out of memory, a segfault) is recorded as FAILED after
  ``max_crashes_per_trial`` attempts instead of being retried on every restart. On
  reload, a trial left RUNNING runs again and a trial whose result was saved is kept
  (KerasTuner loses the first and re-runs the second when the kill lands between its
  two state files).
* **One best trial, however often it is reloaded.** KerasTuner's `Oracle.reload` reads
  the trial files in ``tf.io.gfile.glob`` order, which changes from call to call, and
  ranks trials with a stable sort, so trials that tie on score (common for accuracy
  on a small validation set) came back in a different order on every reload: the
  export and its ensemble members could differ from the search's reported best trial
  and from one export of the same experiment to the next. Reloaded trials are put
  back in the order they were created, so ties go to the earliest trial, as they do
  during the search.
* **Bounded memory.** The graphs TensorFlow keeps for every traced train step are
  released when the trial ends (`kt_pipeline.graph_memory`).
* **A wall-clock budget.** With ``time_budget``, no trial starts that the time left
  cannot fit and training stops at the epoch that uses it up (`kt_pipeline.time_budget`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
import traceback
import zlib
from collections.abc import Callable
from typing import Any

import keras
import keras_tuner
import numpy as np

from kt_pipeline import parallel
from kt_pipeline._compat import (
    KerasTunerFixes,
    TunerHooks,
    answer_first_draw,
    apply,
    reseed_oracle,
)
from kt_pipeline.bohb import BOHB
from kt_pipeline.errors import DiskFullError, SearchAbortedError, is_disk_full
from kt_pipeline.graph_memory import released_custom_gradients
from kt_pipeline.progress import SearchProgress
from kt_pipeline.tensorboard import TensorBoardTunerMixin, TunerMixinBase
from kt_pipeline.time_budget import TimeBudget, TimeBudgetSpent

__all__ = [
    "ALGORITHMS",
    "CRASHES_FILE",
    "DEFAULT_MAX_EPOCHS",
    "DEFAULT_MAX_TRIALS",
    "DIVERGED",
    "ERROR_FILE",
    "FIRST_TRIALS",
    "TRIAL_STATS_FILE",
    "SearchAbortedError",
    "TunerSettings",
    "TunerSpec",
    "best_trial",
    "build_tuner",
    "completed_trials",
    "sampling_start",
    "trial_seed",
]

ALGORITHMS = ("hyperband", "bayesian", "random", "bohb", "grid")

#: Trials for random and Bayesian search when the config leaves `max_trials` at 0.
DEFAULT_MAX_TRIALS = 20

#: Hyperband's longest round when `build_tuner` is given none (``max_epochs = 0``).
DEFAULT_MAX_EPOCHS = 20

#: Per-trial file with wall time and epochs.
TRIAL_STATS_FILE = "stats.json"

#: Per-trial count of attempts that started and never ended (the process died).
CRASHES_FILE = "crashes.json"

#: Per-trial traceback of a failed trial.
ERROR_FILE = "error.txt"

#: The failure reason of a trial whose loss became NaN or infinite.
DIVERGED = "diverged"

_COMPLETED = keras_tuner.engine.trial.TrialStatus.COMPLETED
_FAILED = keras_tuner.engine.trial.TrialStatus.FAILED


def completed_trials(oracle: keras_tuner.Oracle) -> list[keras_tuner.engine.trial.Trial]:
    """The COMPLETED trials with a finite score, best first.

    KerasTuner's `get_best_trials` falls back to failed trials when too few completed;
    a failed or diverged trial must never be exported or averaged into an export.
    """
    return [
        t
        for t in oracle.get_best_trials(len(oracle.trials))
        if t.status == _COMPLETED and t.score is not None and np.isfinite(t.score)
    ]


def best_trial(oracle: keras_tuner.Oracle) -> keras_tuner.engine.trial.Trial | None:
    """The best COMPLETED trial, or None (see `completed_trials`)."""
    completed = completed_trials(oracle)
    return completed[0] if completed else None


def _diverged(histories: Any) -> bool:
    """Whether any execution's training or validation loss became NaN or infinite."""
    for history in histories if isinstance(histories, list) else [histories]:
        if not isinstance(history, keras.callbacks.History):
            continue
        for key in ("loss", "val_loss"):
            if not np.all(np.isfinite(np.asarray(history.history.get(key, []), dtype=float))):
                return True
    return False


def _reason(error: BaseException) -> str:
    """A one-line failure reason: the exception type and the first line of its message."""
    if isinstance(error, keras_tuner.errors.FailedTrialError) and str(error) == DIVERGED:
        return DIVERGED
    first = next((line for line in str(error).splitlines() if line.strip()), "")
    text = f"{type(error).__name__}: {first.strip()}" if first else type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _read_crashes(path: str) -> int:
    try:
        with open(path, encoding="utf-8") as handle:
            return int(json.load(handle)["crashed_attempts"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _write_crashes(path: str, count: int) -> None:
    """Writes the count durably (temp file, fsync, rename), or removes it at 0."""
    if count <= 0:
        if os.path.exists(path):
            os.remove(path)
        return
    temporary = f"{path}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump({"crashed_attempts": count}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


log = logging.getLogger("kt_pipeline")


def trial_seed(seed: int, trial_id: str) -> int:
    """A stable per-trial seed: the same experiment seed and trial id give the same seed."""
    return zlib.crc32(f"{seed}:{trial_id}".encode()) % (2**31 - 1)


def sampling_start(seed: int) -> int:
    """Where an experiment seed's hyperparameter draws start.

    KerasTuner's oracles seed the *i*-th draw of a search with ``seed_state + i``
    (`Oracle._random_values`) and start ``seed_state`` at the seed itself, so the
    draws of seeds 1 and 2 are one stream offset by one draw. As soon as one search
    draws one conditional hyperparameter more than the other, the offsets cancel and
    both sample identical configurations from then on. Starting each seed at a 63-bit
    hash puts the streams of any two seeds astronomically far apart.
    """
    digest = hashlib.sha256(f"kt-pipeline search seed {seed}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def _chief_tls() -> tuple[bytes, bytes] | None:
    """The chief's TLS key and certificate, when the search set them (`parallel.TLS_ENV`)."""
    files = parallel.oracle_tls(
        cert=os.environ.get(parallel.TLS_ENV["cert"], ""),
        key=os.environ.get(parallel.TLS_ENV["key"], ""),
    )
    return (files["key"], files["cert"]) if files else None


def _honour_seed(oracle: keras_tuner.Oracle, seed: int) -> None:
    """Undoes KerasTuner's ``seed or random.randint(...)`` on a fresh oracle, and starts
    its draws at `sampling_start` so different seeds sample independent searches.

    A resumed oracle already carries the seed and draw counter it saved, so it is left
    alone.
    """
    if oracle.trials:
        return
    reseed_oracle(oracle, seed=seed, start=sampling_start(seed))


#: How a fresh search picks its first trial (`build_tuner`'s ``first_trial``).
FIRST_TRIALS = ("recommended", "random")


def _start_from_recommended(oracle: keras_tuner.Oracle, hypermodel: Any) -> None:
    """Makes a fresh oracle's first trial the hypermodel's recommended configuration.

    Every KerasTuner oracle (and `BOHBOracle`) draws a new trial's values from
    `_random_values`; the first call is answered with
    ``hypermodel.starting_values(space)`` instead, and later calls sample as before. A
    hypermodel without `starting_values`, or a resumed oracle, is left alone.
    """
    starting_values = getattr(hypermodel, "starting_values", None)
    if starting_values is None or oracle.trials:
        return

    answer_first_draw(oracle, lambda: dict(starting_values(oracle.hyperparameters)))


class _DiskFull(BaseException):
    """Carries a disk-full error past KerasTuner, which records any `Exception` raised
    in a trial as the trial's failure."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class _PipelineTunerMixin(TunerMixinBase):
    """Per-trial seeding, accounting, failure reasons and crash counting, mixed in
    before a KerasTuner tuner class."""

    oracle: keras_tuner.Oracle

    def __init__(
        self,
        *args: Any,
        seed: int,
        worker_lease_seconds: float = 60.0,
        max_consecutive_failed_trials: int = 3,
        max_crashes_per_trial: int = 2,
        first_trial: str = "recommended",
        time_budget: TimeBudget | None = None,
        **kwargs: Any,
    ) -> None:
        self._experiment_seed = seed
        self._budget = time_budget
        self._fit_epochs = 0
        self._lease_seconds = worker_lease_seconds
        self._heartbeat: parallel.TrialHeartbeat | None = None
        self._max_failures = max_consecutive_failed_trials
        self._max_crashes = max_crashes_per_trial
        self._current_trial_id: str | None = None
        self._trial_started: dict[str, float] = {}
        self._trial_epochs: dict[str, int] = {}
        self._failure: dict[str, tuple[str, str]] = {}
        # KerasTuner's own check counts diverged trials too; `_check_failures` replaces it
        # (None never equals a count, so the oracle never aborts by itself).
        super().__init__(*args, seed=seed, max_consecutive_failed_trials=None, **kwargs)
        # A worker's oracle is KerasTuner's OracleClient around the local one.
        oracle = getattr(self.oracle, "_oracle", self.oracle)
        _honour_seed(oracle, seed)
        if first_trial == "recommended":
            _start_from_recommended(oracle, self.hypermodel)
        self._progress = SearchProgress(self.oracle, bar=False)  # `search` draws one

    def search(self, *fit_args: Any, **fit_kwargs: Any) -> None:
        """Runs the search; in a parallel search's chief, serves the oracle with worker
        leases (`kt_pipeline.parallel`) instead of KerasTuner's lease-less server."""
        if not parallel.is_chief():
            self._fit_epochs = int(fit_kwargs.get("epochs") or 1)
            if self._budget is not None:
                callbacks = [*(fit_kwargs.get("callbacks") or []), self._budget.callback()]
                fit_kwargs = {**fit_kwargs, "callbacks": callbacks}
            if parallel.is_worker():
                stop = parallel.StopWhenTakenBack(lambda: self._heartbeat)
                fit_kwargs = {
                    **fit_kwargs,
                    "callbacks": [*(fit_kwargs.get("callbacks") or []), stop],
                }
            try:
                super().search(*fit_args, **fit_kwargs)
            except TimeBudgetSpent as stop:
                log.info("%s: the search stops here", stop)
                self.on_search_end()
            return
        if "verbose" in fit_kwargs:
            self.oracle.verbose = fit_kwargs["verbose"]
        self.save()
        host, port = os.environ["KERASTUNER_ORACLE_IP"], os.environ["KERASTUNER_ORACLE_PORT"]
        parallel.serve_oracle(
            self.oracle,
            address=parallel.join_address(host, port),
            lease_seconds=self._lease_seconds,
            token=os.environ.get(parallel.TOKEN_ENV) or None,
            tls=_chief_tls(),
        )

    def on_search_begin(self) -> None:
        self._progress = SearchProgress(self.oracle)
        super().on_search_begin()

    def on_search_end(self) -> None:
        super().on_search_end()
        self._progress.close()

    def _trial_file(self, trial_id: str, name: str) -> str:
        return os.path.join(self.get_trial_dir(trial_id), name)

    def guard_trial(self, trial: keras_tuner.engine.trial.Trial, run: Callable[[], None]) -> None:
        crashes_file = self._trial_file(trial.trial_id, CRASHES_FILE)
        crashes = _read_crashes(crashes_file)
        if crashes >= self._max_crashes:
            trial.status = _FAILED
            trial.message = f"crashed the process {crashes} times (killed, out of memory?)"
            _write_crashes(crashes_file, 0)
            return
        _write_crashes(crashes_file, crashes + 1)  # stays if the process dies in the trial
        try:
            with released_custom_gradients():  # else every trial's graphs stay in memory
                run()
        except _DiskFull as full:  # the trial stays RUNNING, so a resume runs it again
            _write_crashes(crashes_file, crashes)
            raise DiskFullError(
                f"the disk is full: {full.error} (trial {trial.trial_id} runs again when "
                "the search is resumed with the same command once there is space)"
            ) from full.error
        except (Exception, KeyboardInterrupt):  # the process survives: not a crash
            _write_crashes(crashes_file, crashes)
            raise
        _write_crashes(crashes_file, 0)
        if trial.status != _COMPLETED and trial.trial_id in self._failure:
            reason, details = self._failure.pop(trial.trial_id)
            trial.message = reason
            with open(self._trial_file(trial.trial_id, ERROR_FILE), "w", encoding="utf-8") as f:
                f.write(details)

    def record_trial(self, trial: keras_tuner.engine.trial.Trial, run: Callable[[], None]) -> None:
        try:
            run()
        except Exception as error:
            if is_disk_full(error):  # not the trial's fault: stop, and run it again later
                raise _DiskFull(error) from error
            if isinstance(error, parallel.TrialTakenBack):  # not the trial's fault either
                raise
            self._failure[trial.trial_id] = (_reason(error), traceback.format_exc())
            raise

    def _budget_applies(self) -> bool:
        """The budget stops nothing until a trial has completed, so a search always
        has a model to export (`StopAtDeadline` cuts that first trial short)."""
        return self._budget is not None and bool(completed_trials(self.oracle))

    def pre_create_trial(self) -> None:
        if self._budget is not None and self._budget_applies() and self._budget.left() <= 0:
            self._budget.check(1)
        super().pre_create_trial()

    def _planned_epochs(self, trial: keras_tuner.engine.trial.Trial) -> int:
        """Epochs the trial will train at most (a Hyperband round's, or the search's)."""
        values = trial.hyperparameters.values
        if "tuner/epochs" in values:
            return int(values["tuner/epochs"]) - int(values.get("tuner/initial_epoch", 0))
        return self._fit_epochs

    def on_trial_begin(self, trial: keras_tuner.engine.trial.Trial) -> None:
        if self._budget is not None and self._budget_applies():  # before any trial file
            self._budget.check(self._planned_epochs(trial))
        self._trial_started[trial.trial_id] = time.perf_counter()
        if parallel.is_worker():
            self._heartbeat = parallel.TrialHeartbeat(
                self.oracle.stub,
                trial.trial_id,
                interval=self._lease_seconds / parallel.HEARTBEATS_PER_LEASE,
            )
            self._heartbeat.start()
        super().on_trial_begin(trial)

    def run_trial(self, trial: keras_tuner.engine.trial.Trial, *args: Any, **kwargs: Any) -> Any:
        self._current_trial_id = trial.trial_id
        histories = super().run_trial(trial, *args, **kwargs)
        epochs = [len(h.epoch) for h in histories if isinstance(h, keras.callbacks.History)]
        self._trial_epochs[trial.trial_id] = max(epochs, default=0)
        if _diverged(histories):  # TerminateOnNaN stopped it; its score means nothing
            raise keras_tuner.errors.FailedTrialError(DIVERGED)
        return histories

    def before_build(self, hp: keras_tuner.HyperParameters) -> None:
        # Runs after KerasTuner's `clear_session()`, which would wipe an earlier seed.
        if self._current_trial_id is not None:
            keras.utils.set_random_seed(trial_seed(self._experiment_seed, self._current_trial_id))

    def on_trial_end(self, trial: keras_tuner.engine.trial.Trial) -> None:
        heartbeat, self._heartbeat = self._heartbeat, None
        if heartbeat is not None:
            heartbeat.stop()
            if heartbeat.lost.is_set():  # another worker runs it: leave its files alone
                log.warning(
                    "trial %s went to another worker while this one was out of touch; "
                    "its run here is dropped",
                    trial.trial_id,
                )
                self._trial_started.pop(trial.trial_id, None)
                self._trial_epochs.pop(trial.trial_id, None)
                self.save()
                return
        started = self._trial_started.pop(trial.trial_id, None)
        stats = {
            "seconds": None if started is None else round(time.perf_counter() - started, 3),
            "epochs": self._trial_epochs.pop(trial.trial_id, 0),
            "worker": self.tuner_id,
            "finished_at": round(time.time(), 3),  # wall clock, comparable across workers
        }
        trial_dir = self.get_trial_dir(trial.trial_id)
        with open(os.path.join(trial_dir, TRIAL_STATS_FILE), "w", encoding="utf-8") as handle:
            json.dump(stats, handle)
        if self._budget is not None and stats["seconds"] is not None:
            self._budget.record(epochs=stats["epochs"], seconds=stats["seconds"])
        super().on_trial_end(trial)
        self._progress.trial_finished(trial, stats["seconds"])
        self._check_failures()

    def _check_failures(self) -> None:
        """Aborts after `max_consecutive_failed_trials` errors in a row; diverged trials
        neither count nor break the run of errors. The chief checks for a parallel search
        (a worker's OracleClient cannot list the ended trials)."""
        if parallel.is_worker():
            return
        errors: list[keras_tuner.engine.trial.Trial] = []
        for trial_id in self.oracle.end_order:
            trial = self.oracle.trials[trial_id]
            if trial.status != _FAILED:
                errors = []
            elif trial.message != DIVERGED:
                errors.append(trial)
        if len(errors) >= self._max_failures:
            raise SearchAbortedError(
                f"search stopped: {len(errors)} trials in a row failed "
                f"(tuner.max_consecutive_failed_trials = {self._max_failures}); "
                f"last reason: {errors[-1].message}"
            )


class HyperbandTuner(
    _PipelineTunerMixin, TensorBoardTunerMixin, TunerHooks, keras_tuner.Hyperband, KerasTunerFixes
):
    """KerasTuner's Hyperband with the pipeline's seeding, accounting and promotions
    that keep their optimizer state."""


class BOHBTuner(_PipelineTunerMixin, TensorBoardTunerMixin, TunerHooks, BOHB, KerasTunerFixes):
    """BOHB (`kt_pipeline.bohb`): Hyperband's schedule with TPE proposals, plus the
    pipeline's seeding, accounting and optimizer-state promotions."""


class BayesianTuner(
    _PipelineTunerMixin,
    TensorBoardTunerMixin,
    TunerHooks,
    keras_tuner.BayesianOptimization,
    KerasTunerFixes,
):
    """KerasTuner's Bayesian optimisation with the pipeline's seeding and accounting."""


class RandomTuner(
    _PipelineTunerMixin,
    TensorBoardTunerMixin,
    TunerHooks,
    keras_tuner.RandomSearch,
    KerasTunerFixes,
):
    """KerasTuner's random search with the pipeline's seeding and accounting."""


class GridTuner(
    _PipelineTunerMixin, TensorBoardTunerMixin, TunerHooks, keras_tuner.GridSearch, KerasTunerFixes
):
    """KerasTuner's grid search (every combination of the space's values, in order)
    with the pipeline's seeding and accounting."""


@dataclasses.dataclass(frozen=True)
class TunerSettings:
    """The search algorithm and its budget, as users set them: each is documented in
    `kt_pipeline.config.TunerConfig`, which adds the objective and the time budget.

    ``max_trials = 0`` lets Hyperband run its schedule, grid search its whole grid, and
    gives the other algorithms `DEFAULT_MAX_TRIALS`; ``max_epochs = 0`` is
    `DEFAULT_MAX_EPOCHS` here (the pipeline sizes it for the training rows first).
    """

    algorithm: str = "hyperband"
    max_trials: int = 0
    max_epochs: int = 0
    factor: int = 3
    hyperband_iterations: int = 1
    executions_per_trial: int = 1
    max_consecutive_failed_trials: int = 3
    max_crashes_per_trial: int = 2
    bohb_min_points: int = 0
    bohb_model: str = "kde"
    first_trial: str = "recommended"

    def __post_init__(self) -> None:
        if self.first_trial not in FIRST_TRIALS:
            raise ValueError(
                f"Argument `first_trial` must be one of {FIRST_TRIALS}. "
                f"Received: first_trial={self.first_trial!r}"
            )
        if self.algorithm not in ALGORITHMS:
            raise ValueError(
                f"Argument `algorithm` must be one of {ALGORITHMS}. "
                f"Received: algorithm={self.algorithm!r}"
            )


@dataclasses.dataclass(frozen=True)
class TunerSpec:
    """The tuner `build_tuner` builds: its settings, objective, seed and folder, and
    how long a parallel search waits for a silent worker (the runtime's
    ``worker_lease_seconds``)."""

    objective: keras_tuner.Objective
    directory: str
    settings: TunerSettings = TunerSettings()
    project_name: str = "search"
    seed: int = 0
    overwrite: bool = False
    worker_lease_seconds: float = 60.0


def build_tuner(
    hypermodel: keras_tuner.HyperModel,
    spec: TunerSpec,
    *,
    distribution_strategy: Any = None,
    time_budget: TimeBudget | None = None,
) -> keras_tuner.Tuner:
    """Builds `spec`'s tuner around a hypermodel.

    Args:
        hypermodel: A `keras_tuner.HyperModel`.
        spec: The algorithm, its settings, the objective and the folder.
        distribution_strategy: A `tf.distribute.Strategy` for each trial, or None.
        time_budget: Stops the search when the time left cannot fit the next trial
            (`kt_pipeline.time_budget`); None runs every planned trial.
    """
    apply(worker_stub=parallel.worker_stub)  # our fixes to KerasTuner's globals, once
    settings = spec.settings
    common: dict[str, Any] = {
        "hypermodel": hypermodel,
        "distribution_strategy": distribution_strategy,
        "time_budget": time_budget,
        "objective": spec.objective,
        "seed": spec.seed,
        "directory": spec.directory,
        "project_name": spec.project_name,
        "overwrite": spec.overwrite,
        "worker_lease_seconds": spec.worker_lease_seconds,
        "executions_per_trial": settings.executions_per_trial,
        "max_consecutive_failed_trials": settings.max_consecutive_failed_trials,
        "max_crashes_per_trial": settings.max_crashes_per_trial,
        "first_trial": settings.first_trial,
    }
    tuner: keras_tuner.Tuner
    if settings.algorithm in ("hyperband", "bohb"):
        extra: dict[str, Any] = (
            {"min_points_in_model": settings.bohb_min_points, "model": settings.bohb_model}
            if settings.algorithm == "bohb"
            else {}
        )
        tuner_class = HyperbandTuner if settings.algorithm == "hyperband" else BOHBTuner
        tuner = tuner_class(
            max_epochs=settings.max_epochs or DEFAULT_MAX_EPOCHS,
            factor=settings.factor,
            hyperband_iterations=settings.hyperband_iterations,
            **common,
            **extra,
        )
        # HyperbandOracle takes no max_trials, but its base Oracle honours one.
        tuner.oracle.max_trials = settings.max_trials or None
    elif settings.algorithm == "bayesian":
        tuner = BayesianTuner(max_trials=settings.max_trials or DEFAULT_MAX_TRIALS, **common)
    elif settings.algorithm == "random":
        tuner = RandomTuner(max_trials=settings.max_trials or DEFAULT_MAX_TRIALS, **common)
    else:
        tuner = GridTuner(max_trials=settings.max_trials or None, **common)
    return tuner
