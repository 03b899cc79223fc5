"""TensorBoard logging that KerasTuner leaves out.

KerasTuner moves a `keras.callbacks.TensorBoard` callback into one folder per trial
(``<root>/<trial id>/execution<n>``) and adds the HParams plugin's session data. It
never writes the experiment summary (``hparams_config``), so the HParams dashboard
guesses each domain from the values it happened to see, a trial that fails has no
session end (or no session at all), and nothing describes the search as a whole.
`TensorBoardTunerMixin` adds, in our layer:

* the ``hparams_config`` experiment summary, written once per experiment with every
  hyperparameter's domain from the oracle's search space and the compiled metrics;
* a session end with ``STATUS_FAILURE`` for failed trials (and a session start when
  the trial failed before training began);
* per-epoch wall time and training samples per second (`EpochTimer`) next to the
  metrics and learning rate that Keras's callback writes;
* Hyperband's bookkeeping values (``tuner/trial_id`` is the parent of a promotion) as
  session hyperparameters and a text summary; epochs already continue from the parent
  because Keras's callback uses ``initial_epoch``;
* a search-level run (``<root>/search``) with the best objective so far per trial and
  per second of search.
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import keras
import keras_tuner
import tensorflow as tf
from tensorboard.plugins.hparams import api as hparams_api
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.plugins.hparams import summary as hparams_summary

from hypermodels.domains import INT, domain
from kt_pipeline import parallel
from kt_pipeline._compat import tuner_utils

__all__ = [
    "HYPERBAND_VALUES",
    "SEARCH_RUN",
    "EpochTimer",
    "TensorBoardTunerMixin",
    "hparams_from_space",
    "metrics_from_names",
]

#: Folder of the search-level run (and the experiment summary) under the TensorBoard root.
SEARCH_RUN = "search"

#: Hyperband's bookkeeping values, logged as session hyperparameters.
HYPERBAND_VALUES = (
    "tuner/trial_id",
    "tuner/initial_epoch",
    "tuner/epochs",
    "tuner/bracket",
    "tuner/round",
)

_CONFIG_SUFFIX = ".hparams_config"


def _domain(hp: Any) -> Any:
    """The HParams domain of one KerasTuner hyperparameter, as KerasTuner's own
    session data declares it (a stepped range is a discrete set)."""
    values = domain(hp)
    if values.discrete:
        return hparams_api.Discrete(list(values.choices))
    if values.kind == INT:
        if values.step not in (None, 1):
            return hparams_api.Discrete(values.values())
        return hparams_api.IntInterval(int(values.low), int(values.high))
    return hparams_api.RealInterval(float(values.low), float(values.high))


def hparams_from_space(space: list[Any], *, hyperband: bool = False) -> list[hparams_api.HParam]:
    """HParams with declared domains for every hyperparameter of a KerasTuner space.

    Args:
        space: ``tuner.oracle.hyperparameters.space``.
        hyperband: Also declare Hyperband's `HYPERBAND_VALUES` (no domain).
    """
    hparams = [hparams_api.HParam(hp.name, _domain(hp)) for hp in space]
    if hyperband:
        hparams += [hparams_api.HParam(name) for name in HYPERBAND_VALUES]
    return hparams


def metrics_from_names(names: list[str]) -> list[hparams_api.Metric]:
    """HParams metrics for Keras log names: ``val_x`` is ``epoch_x`` of the validation
    run, anything else ``epoch_x`` of the train run (where Keras's callback writes)."""
    metrics = []
    for name in sorted(names):
        if name.startswith("val_"):
            tag, group = f"epoch_{name[4:]}", "validation"
        else:
            tag, group = f"epoch_{name}", "train"
        metrics.append(hparams_api.Metric(tag, group=group, display_name=name))
    return metrics


class EpochTimer(keras.callbacks.Callback):
    """Writes each epoch's wall time and training samples per second.

    Training throughput counts the time from the epoch's start to the start of its
    validation pass, so validation does not dilute it. `TensorBoardTunerMixin` sets
    `log_dir` (the trial's folder) and `samples` (training rows) before each trial.
    """

    def __init__(self, log_dir: str | None = None, samples: int | None = None) -> None:
        super().__init__()
        self.log_dir = log_dir
        self.samples = samples
        self._writer: Any = None
        self._epoch_start = 0.0
        self._train_end: float | None = None

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self.log_dir is not None:
            self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "train"))

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch_start = time.perf_counter()
        self._train_end = None

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self._train_end is None:
            self._train_end = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self._writer is None:
            return
        now = time.perf_counter()
        train_seconds = (self._train_end or now) - self._epoch_start
        with self._writer.as_default(step=epoch):
            tf.summary.scalar("epoch_seconds", now - self._epoch_start)
            if self.samples and train_seconds > 0:
                tf.summary.scalar("epoch_samples_per_second", self.samples / train_seconds)
        self._writer.flush()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _rows(x: Any) -> int | None:
    try:
        first = tf.nest.flatten(x)[0]
        return int(first.shape[0])
    except (IndexError, TypeError, AttributeError):
        return None


if TYPE_CHECKING:  # the tuner mixins are only ever mixed into a KerasTuner tuner
    from keras_tuner import Tuner as TunerMixinBase
else:
    TunerMixinBase = object


class TensorBoardTunerMixin(TunerMixinBase):
    """The TensorBoard additions listed in the module docstring, for a KerasTuner tuner.

    Mixed in before the KerasTuner tuner class. It acts only when the search's
    callbacks hold a `keras.callbacks.TensorBoard`; its ``log_dir`` is the root.
    """

    oracle: keras_tuner.Oracle

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._tb_root: str | None = None
        self._tb_search_writer: Any = None
        self._tb_started = time.monotonic()
        self._tb_rows: int | None = None
        self._tb_trial_dirs: dict[str, str] = {}

    def on_search_begin(self) -> None:
        self._tb_started = time.monotonic()
        super().on_search_begin()

    def run_trial(self, trial: keras_tuner.engine.trial.Trial, *args: Any, **kwargs: Any) -> Any:
        self._tb_rows = _rows(args[0] if args else kwargs.get("x"))
        return super().run_trial(trial, *args, **kwargs)

    def configure_trial_logs(
        self, callbacks: list[Any], trial: keras_tuner.engine.trial.Trial, run: Callable[[], None]
    ) -> None:
        boards = [c for c in callbacks if isinstance(c, keras.callbacks.TensorBoard)]
        if not boards:
            return
        self._tb_root = str(boards[0].log_dir)
        run()
        log_dir = str(boards[0].log_dir)
        self._tb_trial_dirs[trial.trial_id] = log_dir
        extras = _hyperband_values(trial.hyperparameters.values)
        if extras:
            # KerasTuner's session data leaves out the `tuner/` values; add them.
            for index, callback in enumerate(callbacks):
                if isinstance(callback, hparams_api.KerasCallback):
                    hparams = tuner_utils.convert_hyperparams_to_hparams(
                        trial.hyperparameters, hparams_api
                    )
                    hparams.update(extras)
                    callbacks[index] = hparams_api.KerasCallback(
                        writer=log_dir, hparams=hparams, trial_id=trial.trial_id
                    )
            with tf.summary.create_file_writer(log_dir).as_default():
                parent = str(extras["tuner/trial_id"]) or "none"
                tf.summary.text("parent_trial_id", parent, step=int(extras["tuner/initial_epoch"]))
        for callback in callbacks:
            if isinstance(callback, EpochTimer):
                callback.log_dir = log_dir
                callback.samples = self._tb_rows

    def on_trial_end(self, trial: keras_tuner.engine.trial.Trial) -> None:
        super().on_trial_end(trial)
        if self._tb_root is None:
            return
        if trial.status != keras_tuner.engine.trial.TrialStatus.COMPLETED:
            self._end_failed_session(trial)
        elif not glob.glob(os.path.join(self._tb_root, SEARCH_RUN, f"*{_CONFIG_SUFFIX}")):
            self._write_experiment_config(list(trial.metrics.metrics))
        self._write_search_scalars(trial)

    def on_search_end(self) -> None:
        super().on_search_end()
        if self._tb_search_writer is not None:
            self._tb_search_writer.close()
            self._tb_search_writer = None

    def _write_experiment_config(self, metric_names: list[str]) -> None:
        assert self._tb_root is not None
        hyperband = isinstance(self.oracle, keras_tuner.oracles.HyperbandOracle)
        writer = tf.summary.create_file_writer(
            os.path.join(self._tb_root, SEARCH_RUN), filename_suffix=_CONFIG_SUFFIX
        )
        with writer.as_default():
            hparams_api.hparams_config(
                # `get_space()`, unlike `.hyperparameters`, also works on a parallel
                # worker, whose oracle is KerasTuner's OracleClient.
                hparams=hparams_from_space(self.oracle.get_space().space, hyperband=hyperband),
                metrics=metrics_from_names(metric_names),
            )
        writer.close()

    def _end_failed_session(self, trial: keras_tuner.engine.trial.Trial) -> None:
        assert self._tb_root is not None
        log_dir = self._tb_trial_dirs.get(trial.trial_id) or os.path.join(
            self._tb_root, trial.trial_id, "execution0"
        )
        started = _has_session_start(log_dir)
        writer = tf.summary.create_file_writer(log_dir)
        with writer.as_default():
            if not started:  # it failed before training, so no session began
                hparams = tuner_utils.convert_hyperparams_to_hparams(
                    trial.hyperparameters, hparams_api
                )
                hparams.update(_hyperband_values(trial.hyperparameters.values))
                hparams_api.hparams(hparams, trial_id=trial.trial_id)
            end = hparams_summary.session_end_pb(api_pb2.STATUS_FAILURE)
            tf.summary.experimental.write_raw_pb(end.SerializeToString(), step=0)
            reason = (trial.message or trial.status).strip().splitlines()[-1]
            tf.summary.text("failure", f"{trial.status}: {reason}", step=0)
        writer.close()

    def _write_search_scalars(self, trial: keras_tuner.engine.trial.Trial) -> None:
        assert self._tb_root is not None
        if parallel.is_worker():
            # A parallel worker's OracleClient cannot count the ended trials of all the
            # workers; the search-level run is written by single-process searches only.
            return
        best = [t for t in self.oracle.get_best_trials(1) if t.score is not None]
        if self._tb_search_writer is None:
            self._tb_search_writer = tf.summary.create_file_writer(
                os.path.join(self._tb_root, SEARCH_RUN)
            )
        finished = len(self.oracle.end_order)
        seconds = round(time.monotonic() - self._tb_started)
        with self._tb_search_writer.as_default():
            if trial.score is not None:
                tf.summary.scalar("trial_objective", trial.score, step=finished)
            if best:
                score = float(best[0].score)
                tf.summary.scalar("best_objective_by_trial", score, step=finished)
                tf.summary.scalar("best_objective_by_second", score, step=seconds)
        self._tb_search_writer.flush()


def _hyperband_values(values: dict[str, Any]) -> dict[str, Any]:
    if "tuner/epochs" not in values:
        return {}
    return {
        name: values.get(name, "" if name == "tuner/trial_id" else 0) for name in HYPERBAND_VALUES
    }


def _has_session_start(log_dir: str) -> bool:
    """Whether the trial's run already holds a session start (written when training began)."""
    for path in glob.glob(os.path.join(log_dir, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            if any(v.tag == hparams_metadata.SESSION_START_INFO_TAG for v in event.summary.value):
                return True
    return False
