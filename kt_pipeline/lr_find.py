"""The learning-rate range test (Smith, 2017, "Cyclical Learning Rates for Training
Neural Networks", section 3.3).

A representative model of the search space is trained for a few hundred steps while
its learning rate grows exponentially from `min_lr` to `max_lr`. The loss, smoothed
with a bias-corrected exponential moving average, first stays flat (the rate is too
small to matter), then falls (useful rates), then explodes (too large). The test
stops once the smoothed loss exceeds `divergence` times its best value, or is NaN.

The suggested range, in the spirit of Smith's and fastai's reading of the curve:

* **upper bound** = (rate at the minimum of the smoothed loss) / 10: the minimum sits
  right before divergence, and a whole trial at that rate is too aggressive;
* **lower bound** = (rate of steepest descent of the smoothed loss, before the
  minimum, with the slope read across a quarter of a decade) / 10, at least one decade
  below the upper bound, so the log-scale search still has a range to explore, and at
  most three.

Both are read after the first tenth of the steps, where the average still rests on a
few points. Each step's loss is measured on the same fixed rows of the training split
(`PROBE_ROWS`), not on the batch it trained on: on a heavy-tailed target, which batch
drew an outlier moved the training loss more than any rate too small to train, and the
minimum was read there (a regression table's search got rates near 1e-8).

The representative model is the search space's default hyperparameters (first
choice of each list, lower end of each range) with a constant schedule, since a
schedule would fight the test's own rate.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import keras_tuner
import numpy as np
import tensorflow as tf

from hypermodels.optimizers import OPTIMIZERS, RANGE_SHARED_WITH
from kt_pipeline.config import PipelineConfig
from kt_pipeline.experiment_files import LR_FIND_FILE, LR_FIND_PLOT
from kt_pipeline.prepare import Prepared, prepare_data
from kt_pipeline.schedule import planned_epochs
from kt_pipeline.search_parts import make_hypermodel, objective_for
from kt_pipeline.tuners import DEFAULT_MAX_TRIALS

__all__ = [
    "PROBE_ROWS",
    "RANGE_TEST_SHARE",
    "RANGE_TEST_STEPS",
    "LRFindResult",
    "LearningRates",
    "Sweep",
    "auto_learning_rate",
    "find_learning_rates",
    "found_learning_rates",
    "lr_range_test",
    "plot_lr_find",
    "range_test_plan",
    "suggest_range",
    "union_range",
]

log = logging.getLogger("kt_pipeline")

#: Optimizer steps of one range test.
RANGE_TEST_STEPS = 200

#: Training rows, drawn once, on which every step of a range test is scored.
PROBE_ROWS = 1024

# Decades of learning rate on each side of a point over which the curve's slope is read.
_SLOPE_HALF_WINDOW = 0.125

# The widest suggested range, in decades: a curve whose descent starts far below its
# minimum would otherwise hand the search decades of rates that do not train.
_MAX_DECADES = 3


@dataclasses.dataclass(frozen=True)
class LRFindResult:
    """One range test: the rates tried, the raw and smoothed losses, the suggestion."""

    optimizer: str
    learning_rates: tuple[float, ...]
    losses: tuple[float, ...]
    smoothed: tuple[float, ...]
    steepest: float
    minimum: float
    suggested: tuple[float, float]

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Sweep:
    """The rates a range test walks through, and when it stops.

    Attributes:
        min_lr: First learning rate.
        max_lr: Last learning rate (the test usually stops earlier, on divergence).
        num_steps: Optimizer steps from `min_lr` to `max_lr`, geometrically spaced.
        smoothing: Factor of the loss's exponential moving average.
        divergence: Stop once the smoothed loss exceeds this multiple of its minimum.
    """

    min_lr: float = 1e-7
    max_lr: float = 10.0
    num_steps: int = RANGE_TEST_STEPS
    smoothing: float = 0.98
    divergence: float = 4.0

    def __post_init__(self) -> None:
        if not 0 < self.min_lr < self.max_lr:
            raise ValueError(
                f"Arguments must satisfy 0 < min_lr < max_lr. Received: "
                f"min_lr={self.min_lr}, max_lr={self.max_lr}"
            )


class _RangeTest(keras.callbacks.Callback):
    """Raises the learning rate every batch and records the loss on the probe rows after
    each step; stops on divergence."""

    def __init__(self, *, probe: tuple[Any, Any], sweep: Sweep) -> None:
        super().__init__()
        self.probe = probe
        self._probe_loss: Any = None
        self.rates = np.geomspace(sweep.min_lr, sweep.max_lr, sweep.num_steps)
        self.smoothing = sweep.smoothing
        self.divergence = sweep.divergence
        self.step = 0
        self.average = 0.0
        self.best = math.inf
        self.tried: list[float] = []
        self.losses: list[float] = []
        self.smoothed: list[float] = []

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        model, (x, y) = self.model, self.probe

        @tf.function
        def probe_loss() -> Any:
            return model.compute_loss(x=x, y=y, y_pred=model(x, training=False), training=False)

        self._probe_loss = probe_loss

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.model.optimizer.learning_rate.assign(float(self.rates[self.step]))

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        loss = float(self._probe_loss())
        rate = float(self.rates[self.step])
        self.step += 1
        if not math.isfinite(loss):
            self.model.stop_training = True
            return
        self.average = self.smoothing * self.average + (1 - self.smoothing) * loss
        smoothed = self.average / (1 - self.smoothing**self.step)
        self.tried.append(rate)
        self.losses.append(loss)
        self.smoothed.append(smoothed)
        self.best = min(self.best, smoothed)
        if smoothed > self.divergence * self.best or self.step >= len(self.rates):
            self.model.stop_training = True


def suggest_range(
    learning_rates: Sequence[float], smoothed: Sequence[float]
) -> tuple[float, float, tuple[float, float]]:
    """Reads a range-test curve: the steepest-descent rate, the rate at the minimum of
    the smoothed loss, and the suggested ``(low, high)`` search range (module docstring).

    Raises:
        ValueError: fewer than three points, too few to read a slope.
    """
    if len(learning_rates) < 3:
        raise ValueError(
            "The range test needs at least 3 recorded steps to suggest a range. "
            f"Received: {len(learning_rates)}"
        )
    rates = np.asarray(learning_rates, dtype=float)
    loss = np.asarray(smoothed, dtype=float)
    # The first tenth is skipped (as fastai does): the moving average there rests on a
    # handful of batches, and one lucky batch would read as the minimum or the slope.
    skip = len(loss) // 10
    lowest = skip + int(np.argmin(loss[skip:]))
    # The slope is measured across an eighth of a decade on each side: between
    # neighbouring steps, batch noise in the flat part of the curve outweighs the real
    # but gentle descent of an optimizer such as plain SGD.
    position = np.log10(rates)
    spacing = (position[-1] - position[0]) / max(len(position) - 1, 1)
    reach = max(1, round(_SLOPE_HALF_WINDOW / spacing)) if spacing > 0 else 1
    ahead = np.minimum(np.arange(len(loss)) + reach, len(loss) - 1)
    behind = np.maximum(np.arange(len(loss)) - reach, 0)
    slope = (loss[ahead] - loss[behind]) / np.maximum(position[ahead] - position[behind], 1e-12)
    steepest = skip + int(np.argmin(slope[skip : lowest + 1]))
    high = float(rates[lowest]) / 10
    low = min(float(rates[steepest]) / 10, high / 10)
    low = max(low, high / 10**_MAX_DECADES)
    return float(rates[steepest]), float(rates[lowest]), (low, high)


def _representative_model(
    hypermodel: keras_tuner.HyperModel, *, optimizer: str | None, learning_rate: float
) -> tuple[keras.Model, keras_tuner.HyperParameters]:
    hp = keras_tuner.HyperParameters()
    # Declared first, these Fixed values win over the hypermodel's own Choice/Float.
    hp.Fixed("lr_schedule", "constant")
    hp.Fixed("learning_rate", learning_rate)
    for name in OPTIMIZERS:  # an optimizer with a range of its own reads its own name
        hp.Fixed(f"{name}_learning_rate", learning_rate)
    if optimizer is not None:
        hp.Fixed("optimizer", optimizer)
    model = hypermodel.build(hp)
    return model, hp


def lr_range_test(
    hypermodel: keras_tuner.HyperModel,
    x: Any,
    y: Any,
    *,
    optimizer: str | None = None,
    batch_size: int | None = None,
    sweep: Sweep = Sweep(),
    seed: int = 0,
) -> LRFindResult:
    """Runs the range test on the hypermodel's default model.

    Args:
        hypermodel: A HyperModel whose `build(hp)` reads ``learning_rate``,
            ``lr_schedule`` and ``optimizer`` (as `MLPHyperModel` does).
        x: Training inputs, in the form the model takes.
        y: Training targets.
        optimizer: Optimizer name to test; None keeps the space's default.
        batch_size: Batch size; None takes the ``batch_size`` hyperparameter's default.
        sweep: The rates tried, and when the test stops.
        seed: Seeds the model's initial weights and the batch order.

    Returns:
        The curve and the suggested range.
    """
    keras.utils.set_random_seed(seed)
    model, hp = _representative_model(hypermodel, optimizer=optimizer, learning_rate=sweep.min_lr)
    # The rate changes every step from a batch callback, which Keras calls once per
    # execution: one step per execution, or the rate would move in jumps.
    model.steps_per_execution = 1
    batch_size = batch_size or int(hp.get("batch_size") if "batch_size" in hp else 32)
    rows = len(y)
    steps_per_epoch = max(1, math.ceil(rows / batch_size))
    picked = np.sort(np.random.default_rng(seed).permutation(rows)[:PROBE_ROWS])
    probe = tf.nest.map_structure(
        lambda a: a[picked] if isinstance(a, np.ndarray) else tf.gather(a, picked), (x, y)
    )
    test = _RangeTest(probe=probe, sweep=sweep)
    model.fit(
        x,
        y,
        batch_size=batch_size,
        epochs=math.ceil(sweep.num_steps / steps_per_epoch),
        callbacks=[test],
        verbose=0,
    )
    steepest, minimum, suggested = suggest_range(test.tried, test.smoothed)
    return LRFindResult(
        optimizer=str(hp.get("optimizer")) if "optimizer" in hp else (optimizer or ""),
        learning_rates=tuple(test.tried),
        losses=tuple(test.losses),
        smoothed=tuple(test.smoothed),
        steepest=steepest,
        minimum=minimum,
        suggested=suggested,
    )


def union_range(results: Sequence[LRFindResult]) -> tuple[float, float]:
    """One learning-rate range covering every optimizer's suggestion (the learning rate
    is one hyperparameter shared by all optimizers of the space)."""
    return (
        min(r.suggested[0] for r in results),
        max(r.suggested[1] for r in results),
    )


def plot_lr_find(results: Sequence[LRFindResult], path: str | Path) -> Path:
    """Saves smoothed loss against learning rate (log axis), one curve per optimizer,
    with each suggested range shaded, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(figsize=(7, 4.5))
    try:
        for result in results:
            (line,) = axes.plot(
                result.learning_rates, result.smoothed, label=result.optimizer or "model"
            )
            axes.axvspan(*result.suggested, color=line.get_color(), alpha=0.12)
            axes.axvline(result.minimum, color=line.get_color(), linestyle=":", linewidth=1)
        axes.set_xscale("log")
        axes.set_xlabel("learning rate")
        axes.set_ylabel("smoothed training loss")
        axes.set_title("Learning-rate range test (shaded: suggested range)")
        best = min(min(r.smoothed) for r in results)
        first = max(r.smoothed[0] for r in results)
        axes.set_ylim(bottom=best * 0.9 if best > 0 else None, top=max(first, best) * 1.5)
        axes.legend()
        figure.tight_layout()
        figure.savefig(path, format="png", dpi=100)
    finally:
        plt.close(figure)
    return path


# The range test in a job -------------------------------------------------------


def find_learning_rates(
    config: PipelineConfig,
    *,
    optimizers: Sequence[str | None] | None = None,
    plot_path: Path | None = None,
    prepared: Prepared | None = None,
    max_seconds: float | None = None,
) -> list[LRFindResult]:
    """Runs the learning-rate range test on the space's default model for each of
    `optimizers` (None: every optimizer of the space; ``[None]``: the space's default),
    on the training split. With `max_seconds`, no test starts once they are spent.
    Saves the plot to `plot_path` when given."""
    prepared = prepared or prepare_data(config)
    hypermodel = make_hypermodel(config, prepared, objective_for(config, prepared.dataset.task))
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
RANGE_TEST_SHARE = 0.2


def range_test_plan(config: PipelineConfig, train_rows: int) -> dict[str, str]:
    """Each optimizer of the space that the range test will measure, mapped to the
    optimizer whose test it takes (`RANGE_SHARED_WITH`): one test per group, in the
    space's order, as many as fit in `RANGE_TEST_SHARE` of the search's steps."""
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
    affordable = int(RANGE_TEST_SHARE * steps // RANGE_TEST_STEPS)
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


def auto_learning_rate(
    config: PipelineConfig, prepared: Prepared, *, save: bool = True
) -> PipelineConfig:
    """``search.learning_rate = "auto"``: the range test sets the learning-rate range of
    each optimizer it measures (`range_test_plan`); `learning_rate` becomes the union
    of them when every optimizer has its own, and stays as configured for the others.
    `save` writes the curves and the plot to the experiment (the workers of a parallel
    search, which run the same seeded test, leave that to the chief)."""
    experiment = Path(config.runtime.experiment_dir)
    plot = experiment / LR_FIND_PLOT if save else None
    plan = range_test_plan(config, len(prepared.splits.train))
    budget = config.tuner.time_budget
    results = find_learning_rates(
        config,
        optimizers=list(dict.fromkeys(plan.values())),
        prepared=prepared,
        plot_path=plot,
        max_seconds=RANGE_TEST_SHARE * budget if budget else None,
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


def found_learning_rates(experiment: Path) -> LearningRates | None:
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
