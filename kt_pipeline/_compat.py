"""Every hook kt-pipeline has into KerasTuner's, Keras's and TensorFlow's private
internals, in one place.

KerasTuner is in maintenance mode and its defects are fixed here, in our layer. Each
hook was written against the versions in `WRITTEN_FOR`; `check_versions` refuses
others with one line, since a private name may have moved. Nothing here changes
anyone's behaviour on import: `apply` installs the global fix (once per process), and
`build_tuner` calls it; `patch_keras_multi_worker` is installed only where a
multi-worker strategy is built. Each hook has a test in ``tests/test_compat.py`` or
beside the feature it serves.

The HyperModel package stands alone (it does not import kt-pipeline), so its two
Keras hooks stay with it: `hypermodels.step_functions` (the symbolic build before the
first step) and `hypermodels.fused_optimizers` (the backend update step).
"""

from __future__ import annotations

import contextlib
import copy
import errno
import functools
import json
import math
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Any

import keras
import keras_tuner
import numpy as np
import tensorflow as tf
from keras_tuner.src import protos
from keras_tuner.src import utils as kt_utils
from keras_tuner.src.distribute import oracle_chief, oracle_client
from keras_tuner.src.distribute import utils as dist_utils
from keras_tuner.src.engine import conditions as conditions_module
from keras_tuner.src.engine import oracle as oracle_module
from keras_tuner.src.engine import trial as trial_module
from keras_tuner.src.engine import tuner_utils
from keras_tuner.src.engine.tuner import maybe_compute_model_size
from tensorflow.python.framework import ops as tf_ops

from kt_pipeline.errors import UserInputError

__all__ = [
    "IDLE_WAIT_SECONDS",
    "WRITTEN_FOR",
    "KerasTunerFixes",
    "OptimizerHooks",
    "OracleHooks",
    "TunerHooks",
    "answer_first_draw",
    "apply",
    "check_versions",
    "defer_oracle_saves",
    "dist_utils",
    "forget_worker",
    "gradient_registry",
    "hyperband_brackets",
    "locked",
    "oracle_chief",
    "oracle_client",
    "oracle_lock",
    "patch_keras_multi_worker",
    "protos",
    "reseed_oracle",
    "retry_queue",
    "symbolic_build",
    "trial_module",
    "tuner_utils",
    "write_running_trials_every",
]

#: The versions (prefixes) the hooks were written against: distribution name -> prefix.
WRITTEN_FOR = {"keras-tuner": "1.4.8", "keras": "3.", "tensorflow": "2.21."}

_applied = False


def check_versions(installed: dict[str, str] | None = None) -> None:
    """Refuses a KerasTuner, Keras or TensorFlow the hooks were not written for.

    Raises:
        UserInputError: one line naming the package, the version found and the one
            expected.
    """
    for name, prefix in WRITTEN_FOR.items():
        version = (installed or {}).get(name) or metadata.version(name)
        if not version.startswith(prefix):
            raise UserInputError(
                f"kt-pipeline's fixes to KerasTuner, Keras and TensorFlow were written for "
                f"{name} {prefix}*; found {name} {version}. Install the versions "
                "pyproject.toml pins."
            )


def apply(*, worker_stub: Callable[[str], Any] | None = None) -> None:
    """Checks the versions and installs the global fixes, once per process: KerasTuner's
    `Parent.to_proto` without its stray print, and its state files written whole.
    `worker_stub` (`kt_pipeline.parallel.worker_stub`) makes the channel a worker's
    `OracleClient` calls the chief through."""
    global _applied, _worker_stub
    if worker_stub is not None:
        _worker_stub = worker_stub
    if _applied:
        return
    check_versions()
    conditions_module.Parent.to_proto = _quiet_parent_to_proto
    kt_utils.save_json = _save_json_whole
    tuner_utils.SaveBestEpoch._save_model = _save_checkpoint_if_it_fits
    oracle_client.OracleClient.__init__ = _client_that_names_itself
    oracle_client.OracleClient.create_trial = _create_or_wait
    oracle_module.Oracle._check_consecutive_failures = _check_trailing_failures
    oracle_client.OracleClient.update_trial = _update_unless_taken_back
    oracle_client.OracleClient.end_trial = _end_unless_taken_back
    _applied = True


@contextlib.contextmanager
def oracle_lock(oracle: Any) -> Iterator[None]:
    """Holds the oracle's own lock (the one KerasTuner's `synchronized` takes) for a
    block, re-entrantly, and releases it even when the block raises: KerasTuner's
    decorator leaves the lock held after an exception, so every later call waits
    forever. KerasTuner's methods called inside see the lock held by this thread."""
    thread = threading.current_thread().name
    if oracle_module.THREADS[oracle] == thread:
        yield
        return
    oracle_module.LOCKS[oracle].acquire()
    oracle_module.THREADS[oracle] = thread
    try:
        yield
    finally:
        oracle_module.THREADS[oracle] = None
        oracle_module.LOCKS[oracle].release()


def locked(function: Callable[..., Any]) -> Callable[..., Any]:
    """`function(oracle, ...)` under `oracle_lock(oracle)`."""

    @functools.wraps(function)
    def call(oracle: Any, *args: Any, **kwargs: Any) -> Any:
        with oracle_lock(oracle):
            return function(oracle, *args, **kwargs)

    return call


_original_client_init = oracle_client.OracleClient.__init__
_original_create_trial = oracle_client.OracleClient.create_trial
_original_update_trial = oracle_client.OracleClient.update_trial
_original_end_trial = oracle_client.OracleClient.end_trial


# The channel a worker's `OracleClient` calls the chief through (`apply`).
_worker_stub: Callable[[str], Any] | None = None


def _client_that_names_itself(self: Any, oracle: Any) -> None:
    """KerasTuner's worker-side `OracleClient`, on the channel `apply` was given
    (`kt_pipeline.parallel.worker_stub`: the search's token and the worker's id on every
    call, TLS where the search has a CA); KerasTuner's own channel sends neither and is
    always in clear."""
    _original_client_init(self, oracle)
    if _worker_stub is not None:
        self.stub = _worker_stub(self.tuner_id)


#: Seconds a worker told to wait (``IDLE``: no trial now, but one may come back to the
#: queue) waits before it asks again; KerasTuner's worker asks again at once.
IDLE_WAIT_SECONDS = 1.0


def _create_or_wait(self: Any, tuner_id: str) -> Any:
    """KerasTuner's `create_trial`; an ``IDLE`` answer returns after
    `IDLE_WAIT_SECONDS`, so a worker with nothing to do neither spins on the chief
    nor waits inside it, where it would hold one of its threads."""
    trial = _original_create_trial(self, tuner_id)
    if trial.status == trial_module.TrialStatus.IDLE:
        _idle_wait(IDLE_WAIT_SECONDS)
    return trial


def _idle_wait(seconds: float) -> None:
    threading.Event().wait(seconds)


def _taken_back(error: Exception) -> bool:
    """Whether the chief refused a call because the trial is not this worker's (its
    lease ran out and the trial went to another worker, or it already ended)."""
    import grpc

    return isinstance(error, grpc.RpcError) and error.code() == grpc.StatusCode.PERMISSION_DENIED


def _update_unless_taken_back(self: Any, trial_id: str, metrics: Any, step: int = 0) -> Any:
    """KerasTuner's `update_trial`, except that a report the chief refuses because the
    trial is not this worker's any more is dropped with a warning instead of crashing
    the worker."""
    try:
        return _original_update_trial(self, trial_id, metrics, step)
    except Exception as error:
        if not _taken_back(error):
            raise
        _log_taken_back(trial_id, error)
        return trial_module.Trial(self.get_space(), status=trial_module.TrialStatus.STOPPED)


def _end_unless_taken_back(self: Any, trial: Any) -> None:
    """KerasTuner's `end_trial`, except that the end of a trial the chief took back is
    dropped with a warning: another worker runs it."""
    try:
        _original_end_trial(self, trial)
    except Exception as error:
        if not _taken_back(error):
            raise
        _log_taken_back(trial.trial_id, error)


def _log_taken_back(trial_id: str, error: Any) -> None:
    import logging

    logging.getLogger("kt_pipeline").warning(
        "trial %s: the chief refused this worker's result (%s); the trial is not ours any more",
        trial_id,
        error.details(),
    )


_original_save_model = tuner_utils.SaveBestEpoch._save_model

#: Free space a checkpoint needs beyond its weights and optimizer slots (HDF5's own).
_CHECKPOINT_SLACK = 1 << 20


def _save_checkpoint_if_it_fits(self: Any) -> None:
    """KerasTuner's best-epoch checkpoint, written only when the disk has room for it.

    HDF5 (under Keras's ``save_weights``) crashes the whole process with a segmentation
    fault when the disk fills while it closes the file; refusing the write beforehand
    turns that into an `OSError` (ENOSPC) the search can report and resume from. The
    estimate counts every variable (weights and optimizer slots) twice, for HDF5's
    metadata and chunking.
    """
    folder = os.path.dirname(os.path.abspath(self.filepath))
    if "://" not in str(self.filepath) and os.path.isdir(folder):
        variables = [*self.model.variables]
        optimizer = getattr(self.model, "optimizer", None)
        variables += list(getattr(optimizer, "variables", []) or [])
        needed = 2 * sum(int(np.prod(v.shape)) * 4 for v in variables) + _CHECKPOINT_SLACK
        free = shutil.disk_usage(folder).free
        if free < needed:
            raise OSError(
                errno.ENOSPC,
                f"No space left on device: {free} bytes free, a checkpoint needs about {needed}",
                self.filepath,
            )
    _original_save_model(self)


_original_save_json = kt_utils.save_json


def _save_json_whole(path: str, obj: Any) -> str:
    """KerasTuner's `save_json` (its oracle's, tuners' and trials' state), written to a
    partial file and renamed into place: a full disk or a kill mid-write leaves the
    previous file, which a resume can read, instead of half a new one."""
    if "://" in str(path):  # gs:// and the like: no rename there
        result: str = _original_save_json(path, obj)
        return result
    text = json.dumps(obj)
    partial = f"{path}.partial"
    try:
        with open(partial, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(partial, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(partial)
    return text


# ------------------------------------------------------------------ KerasTuner


def _quiet_parent_to_proto(self: Any) -> Any:
    """`keras_tuner` 1.4.8's `Parent.to_proto` without its stray ``print``.

    KerasTuner prints the first value of every conditional scope each time a search
    space or trial crosses the wire, so a parallel search floods its output with lines
    such as ``True`` or ``sgd``. Same conversion, no print.
    """
    proto = protos.get_proto()
    first = self.values[0]
    if isinstance(first, str):
        values = [proto.Value(string_value=v) for v in self.values]
    elif isinstance(first, bool):
        values = [proto.Value(boolean_value=v) for v in self.values]
    elif isinstance(first, int):
        values = [proto.Value(int_value=v) for v in self.values]
    else:
        values = [proto.Value(float_value=v) for v in self.values]
    return proto.Condition(parent=proto.Condition.Parent(name=self.name, values=values))


class TunerHooks:
    """KerasTuner's private `Tuner` steps that our tuners extend, each handed on under a
    name of ours: mixed in right before the search algorithm's class, each runs our hook
    with KerasTuner's own step as `run`, so no other module names KerasTuner's privates.

    * `guard_trial`: around ``_try_run_and_update_trial`` (crash counting, disk full);
    * `record_trial`: around ``_run_and_update_trial`` (a failed trial's reason);
    * `before_build`: before ``_build_hypermodel`` (the trial's seed, after KerasTuner's
      ``clear_session()``);
    * `configure_trial_logs`: around ``_configure_tensorboard_dir`` (TensorBoard).
    """

    def _try_run_and_update_trial(self, trial: Any, *args: Any, **kwargs: Any) -> None:
        step = super()._try_run_and_update_trial  # type: ignore[misc]
        self.guard_trial(trial, functools.partial(step, trial, *args, **kwargs))

    def guard_trial(self, trial: Any, run: Callable[[], None]) -> None:
        run()

    def _run_and_update_trial(self, trial: Any, *args: Any, **kwargs: Any) -> None:
        step = super()._run_and_update_trial  # type: ignore[misc]
        self.record_trial(trial, functools.partial(step, trial, *args, **kwargs))

    def record_trial(self, trial: Any, run: Callable[[], None]) -> None:
        run()

    def _build_hypermodel(self, hp: Any) -> Any:
        self.before_build(hp)
        return super()._build_hypermodel(hp)  # type: ignore[misc]

    def before_build(self, hp: Any) -> None:
        return None

    def _configure_tensorboard_dir(self, callbacks: Any, trial: Any, execution: int = 0) -> None:
        step = super()._configure_tensorboard_dir  # type: ignore[misc]
        self.configure_trial_logs(
            callbacks, trial, functools.partial(step, callbacks, trial, execution)
        )

    def configure_trial_logs(self, callbacks: Any, trial: Any, run: Callable[[], None]) -> None:
        run()


class OracleHooks:
    """KerasTuner's private `Oracle` step that BOHB extends, under a name of ours:
    `propose` is given ``_random_values`` as `random` (KerasTuner's own draw)."""

    def _random_values(self) -> dict[str, Any] | None:
        return self.propose(super()._random_values)  # type: ignore[misc]

    def propose(self, random: Callable[[], dict[str, Any] | None]) -> dict[str, Any] | None:
        return random()

    def next_seed(self) -> int:
        """A new seed from the oracle's saved draw counter (``_seed_state``), which
        KerasTuner's own draws advance too: a resumed search draws as an uninterrupted
        one would."""
        self._seed_state: int
        self._seed_state += 1
        return int(self._seed_state)

    def seed_counter(self) -> int:
        """The draw counter as it stands, without advancing it."""
        return int(self._seed_state)

    def tried(self, values: dict[str, Any]) -> bool:
        """Whether a trial already ran these values (KerasTuner's ``_duplicate``)."""
        return bool(self._duplicate(values))  # type: ignore[attr-defined]


class OptimizerHooks:
    """Keras's private `Optimizer._backend_update_step`, where Keras updates every
    weight of a step, handed on as `update_all` (`hypermodels.fused_optimizers`)."""

    def _backend_update_step(
        self, grads: Any, trainable_variables: Any, learning_rate: Any
    ) -> None:
        step = super()._backend_update_step  # type: ignore[misc]
        self.update_all(functools.partial(step, grads, trainable_variables, learning_rate))

    def update_all(self, run: Callable[[], None]) -> None:
        run()

    def slot(self, name: str, variable: Any) -> Any:
        """The optimizer's `name` state of `variable` (``momentums``, ``velocities``,
        ``accumulators``): Keras keeps each in a private list, in the order of
        ``_get_variable_index``."""
        index = self._get_variable_index(variable)  # type: ignore[attr-defined]
        slots = getattr(self, f"_{name}", None)
        return (slots if slots is not None else getattr(self, name))[index]  # SGD's: public

    def add_slots(self, name: str, var_list: list[Any], prefix: str) -> None:
        """Creates `name` state for every variable, where Keras's `slot` reads it."""
        slots = self.add_optimizer_variables(var_list, prefix)  # type: ignore[attr-defined]
        setattr(self, f"_{name}", slots)

    def state(self, name: str) -> Any:
        """Keras's private step state ``_<name>`` (Nadam's ``u_product``)."""
        return getattr(self, f"_{name}")


def symbolic_build(model: Any, batch: Any) -> None:
    """Keras's own build of a model's training state from symbolic tensors of a batch
    (``Model._symbolic_build``; it also builds the optimizer)."""
    model._symbolic_build(data_batch=batch)


class KerasTunerFixes(keras_tuner.Tuner):
    """Where KerasTuner 1.4.8's `Tuner` is wrong for us, fixed; in the MRO this class
    sits below the search algorithm (Hyperband's parent-checkpoint restore runs after
    `_build_hypermodel` here).

    * Optimizer state. KerasTuner's checkpoints hold the optimizer's variables (its
      step counter and moments), but a freshly compiled model has an unbuilt
      optimizer, so Keras skips them with a warning: a Hyperband promotion restarts its
      optimizer from step 0 and `load_model` drops the state. With the optimizer built
      first, both restore it. (Keeping variables out of the traced train step is
      `MLPHyperModel.fit`'s part: `hypermodels.step_functions`.)
    * Two full garbage collections before every model build (`clear_session()`'s and
      its own), about 0.25 s each in a process holding TensorFlow: more than a small
      trial's training. Python's own collector frees the last trial's cycles anyway;
      the traced graphs that would outlive it are `graph_memory`'s concern.
    * Finding the conditional hyperparameters builds the whole model once per condition
      (about 20 builds for the default space); a hypermodel with a ``declare(hp)``
      method (`MLPHyperModel.declare`) only declares them.
    * A reloaded oracle holds its trials in file-listing order, so score ties broke
      differently on every reload (`_order_trials`), and a process killed between
      KerasTuner's two state files left a trial neither queued nor ended
      (`_repair_interrupted`).
    """

    def reload(self) -> None:
        super().reload()
        _order_trials(self.oracle)
        _repair_interrupted(self.oracle)

    def _activate_all_conditions(self) -> None:
        declare = getattr(self.hypermodel, "declare", None)
        if declare is None:
            super()._activate_all_conditions()
            return
        # KerasTuner's loop, with `declare` for `build`.
        never_active: list[Any] = []
        once_active: list[Any] = []
        hp = self.oracle.get_space()
        while True:
            declare(hp)
            self.oracle.update_space(hp)
            for conditions in hp.active_scopes:
                if conditions not in once_active:
                    once_active.append(copy.deepcopy(conditions))
                if conditions in never_active:
                    never_active.remove(conditions)
            for conditions in hp.inactive_scopes:
                if conditions not in once_active:
                    never_active.append(copy.deepcopy(conditions))
            if not never_active:
                return
            hp = self.oracle.get_space()
            for condition in never_active[0]:
                hp.values[condition.name] = condition.values[0]
            hp.ensure_active_values()

    def _try_build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        keras.backend.clear_session(free_memory=False)
        model = self._build_hypermodel(hp)
        if not isinstance(model, keras.Model):
            raise keras_tuner.errors.FatalTypeError(
                "Expected the model-building function, or HyperModel.build() to return a "
                f"valid Keras Model instance. Received: {model} of type {type(model)}."
            )
        size = maybe_compute_model_size(model)
        if self.max_model_size and size > self.max_model_size:
            raise keras_tuner.errors.FailedTrialError(
                f"Oversized model: {size} parameters. Skip model."
            )
        return model

    def _build_hypermodel(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        model = super()._build_hypermodel(hp)
        optimizer = getattr(model, "optimizer", None)
        if optimizer is not None and not optimizer.built:
            with keras_tuner.engine.tuner.maybe_distribute(self.distribution_strategy):
                optimizer.build(model.trainable_variables)
        return model


# ------------------------------------------------------------------ Keras


def patch_keras_multi_worker() -> None:
    """Works around two Keras 3 defects that stop any `fit` under
    `MultiWorkerMirroredStrategy` (Keras 3.13's TensorFlow trainer):

    * before the first step, `_maybe_symbolic_build` all-reduces the whole first batch
      (inputs and labels, a nest) with `strategy.reduce`, which the collective ops reject
      ("Attempt to convert a value ... PerReplica"); the build only needs the batch's
      shapes and dtypes, so this process's first replica's batch is used instead;
    * after each step, `reduce_per_replica` averages the scalar logs over ``axis=0``
      ("Invalid reduction dimension 0 for input with 0 dimensions"); they are averaged
      across the workers as scalars instead.

    Applied only in processes that build a multi-worker strategy.
    """
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    if getattr(tf_trainer, "_kt_pipeline_patched", False):
        return
    original_reduce = tf_trainer.reduce_per_replica

    def reduce_per_replica(values: Any, strategy: Any, reduction: str) -> Any:
        if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(
            strategy
        ):
            return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return original_reduce(values, strategy, reduction)

    def maybe_symbolic_build(self: Any, iterator: Any = None, data_batch: Any = None) -> None:
        if self._distribute_strategy is None:
            return
        strategy = self.distribute_strategy
        if iterator is not None:
            for _, _, it in iterator:
                data_batch = tree.map_structure(
                    lambda v: (
                        strategy.experimental_local_results(v)[0]
                        if isinstance(v, tf.distribute.DistributedValues)
                        else v
                    ),
                    next(it),
                )
                break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    tf_trainer.reduce_per_replica = reduce_per_replica
    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    tf_trainer._kt_pipeline_patched = True


# ------------------------------------------------------------------ oracle internals


def hyperband_brackets(
    oracle: keras_tuner.oracles.HyperbandOracle,
) -> list[tuple[int, list[tuple[int, int, int]]]]:
    """One Hyperband iteration as KerasTuner runs it: each bracket (largest first) with
    its rounds as (trials, epochs reached, epochs trained in the round), from the
    oracle's own bracket arithmetic."""
    brackets = []
    for bracket in reversed(range(oracle._get_num_brackets())):
        rounds = []
        for round_num in range(oracle._get_num_rounds(bracket)):
            epochs = oracle._get_epochs(bracket, round_num)
            previous = oracle._get_epochs(bracket, round_num - 1) if round_num else 0
            rounds.append((oracle._get_size(bracket, round_num), epochs, epochs - previous))
        brackets.append((bracket, rounds))
    return brackets


def retry_queue(oracle: keras_tuner.Oracle) -> list[str]:
    """The ids of the trials the oracle will hand out again (KerasTuner pops from the
    end), the list itself so callers can edit it."""
    queue: list[str] = oracle._retry_queue
    return queue


def forget_worker(oracle: keras_tuner.Oracle, tuner_id: str) -> str | None:
    """Drops a worker from the oracle and queues its running trial to run again
    (`Oracle.create_trial` hands out the retry queue first, hyperparameters and all);
    returns that trial's id, or None when it held none."""
    oracle.tuner_ids.discard(tuner_id)
    trial = oracle.ongoing_trials.pop(tuner_id, None)
    if trial is None:
        return None
    retry_queue(oracle).append(trial.trial_id)
    return str(trial.trial_id)


def _check_trailing_failures(self: Any) -> None:
    """KerasTuner's check that too many trials in a row failed, on the run of failures
    at the end of the order alone: it runs after every trial's end, so an earlier run
    would have raised then. KerasTuner's walks every ended trial each time, under the
    oracle's lock, a cost that grows with the search. No limit (None): no check."""
    if self.max_consecutive_failed_trials is None:
        return
    failed = 0
    for trial_id in reversed(self.end_order):
        if self.trials[trial_id].status != trial_module.TrialStatus.FAILED:
            break
        failed += 1
    if failed >= self.max_consecutive_failed_trials:
        last = self.trials[self.end_order[-1]]
        raise RuntimeError(
            "Number of consecutive failures exceeded the limit "
            f"of {self.max_consecutive_failed_trials}.\n" + (last.message or "")
        )


def defer_oracle_saves(oracle: keras_tuner.Oracle) -> Callable[..., None]:
    """Makes ``oracle.save()`` only note that the oracle's state changed, and returns
    ``flush(every=0.0)``, which writes it (``oracle.json``) when it changed and `every`
    seconds have passed since the last write (at once with `every` = 0, whatever the clock).

    KerasTuner writes the whole state, every trial id and value hash, on each trial's
    start and end, under the oracle's lock: in a parallel search's chief that grows to
    most of a trial's cost as trials accumulate (`benchmarks/oracle_load.py`). A state
    file a little behind the trial files is what a chief killed between the two writes
    already leaves, and a resume repairs it (`_repair_interrupted`).
    """
    save, changed, last = oracle.save, threading.Event(), [-math.inf]
    oracle.save = changed.set

    def flush(*, every: float = 0.0, clock: Callable[[], float] = time.monotonic) -> None:
        now = clock()
        if changed.is_set() and (every <= 0 or now - last[0] >= every):
            with oracle_lock(oracle):
                changed.clear()
                save()
            last[0] = now

    return flush


def write_running_trials_every(
    oracle: keras_tuner.Oracle, seconds: float, *, clock: Callable[[], float] = time.monotonic
) -> None:
    """Makes `oracle` write a running trial's file (its metrics so far) at most every
    `seconds`, and at once when the trial starts or ends. KerasTuner writes it on every
    report, under the oracle's lock: in a parallel search's chief, a disk write per
    worker per epoch, the largest share of the chief's time under load
    (`benchmarks/oracle_load.py`). A reloaded oracle drops a running trial's metrics
    anyway (`_repair_interrupted`); the writes left keep a live search's table current."""
    save = oracle._save_trial
    written: dict[str, float] = {}

    def save_trial(trial: Any) -> None:
        now = clock()
        if trial.status != trial_module.TrialStatus.RUNNING or (
            now - written.get(trial.trial_id, -math.inf) >= seconds
        ):
            written[trial.trial_id] = now
            save(trial)

    oracle._save_trial = save_trial


def reseed_oracle(oracle: keras_tuner.Oracle, *, seed: int, start: int) -> None:
    """Gives a fresh oracle `seed` and starts its draw counter at `start`; the
    Bayesian oracle's random state and Gaussian process are rebuilt from the seed."""
    oracle.seed = seed
    oracle._seed_state = start
    if hasattr(oracle, "_random_state"):  # BayesianOptimizationOracle
        oracle._random_state = np.random.RandomState(seed)
        oracle.gpr = oracle._make_gpr()


def answer_first_draw(oracle: keras_tuner.Oracle, draw: Callable[[], dict[str, Any]]) -> None:
    """The oracle's next draw of new values (`_random_values`, which every KerasTuner
    oracle and `BOHBOracle` use) is answered by `draw`; later draws sample as before."""

    def first() -> dict[str, Any]:
        del oracle._random_values  # back to the class's own sampling
        return draw()

    oracle._random_values = first


def gradient_registry() -> dict[str, Any]:
    """TensorFlow's process-wide gradient registry (`kt_pipeline.graph_memory`); empty
    if the private attribute moves."""
    registry = getattr(getattr(tf_ops, "_gradient_registry", None), "_registry", None)
    return registry if isinstance(registry, dict) else {}


def _order_trials(oracle: keras_tuner.Oracle) -> None:
    """Puts a reloaded oracle's trials in the order they were created (ids count up),
    the order a live search holds them in, so score ties break the same way."""
    oracle.trials = dict(sorted(oracle.trials.items(), key=lambda item: (len(item[0]), item[0])))


_ENDED = (
    trial_module.TrialStatus.COMPLETED,
    trial_module.TrialStatus.FAILED,
    trial_module.TrialStatus.INVALID,
)


def _repair_interrupted(oracle: keras_tuner.Oracle) -> None:
    """Makes a reloaded oracle agree with the trial files a killed process left.

    KerasTuner writes ``trial.json`` and then ``oracle.json``. Killed between the two
    when a trial starts, the trial stays RUNNING but is not queued to run again (and
    counts towards `max_trials`), so it is queued here. Killed between the two when a
    trial ends, the finished trial is queued to run again, so it is taken off the
    queue and its end recorded. A trial that runs again starts without the metrics an
    interrupted attempt may have reported (KerasTuner would keep them as its result).
    Runs after `_order_trials`, so the trials are visited oldest first.
    """
    queued = retry_queue(oracle)
    for trial_id, trial in oracle.trials.items():
        if trial.status == trial_module.TrialStatus.RUNNING and trial_id not in queued:
            queued.insert(0, trial_id)  # the queue pops from its end: oldest runs last
        elif trial.status in _ENDED and trial_id in queued:
            queued.remove(trial_id)
            if trial_id not in oracle.end_order:
                oracle.end_order.append(trial_id)
        if trial_id in queued:
            trial.metrics = type(trial.metrics)()  # a fresh MetricsTracker
            trial.score = trial.best_step = None
