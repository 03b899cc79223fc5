"""A plan before compute: what a search will explore, how long it will take, and what
looks wrong with its space, without running it.

Everything is read from the objects the search itself would use: the hyperparameter
space is the tuner's oracle space after KerasTuner's `_populate_initial_space` (so
conditional hyperparameters and their conditions are there), the Hyperband schedule
comes from `HyperbandOracle`'s own bracket arithmetic (`_compat.hyperband_brackets`),
and the smallest and largest models are built for real by the HyperModel.

**Memory per replica** (float32, the largest batch size split over the replicas):

    weights + optimizer slots + gradients + 2 x batch_per_replica x activations

where weights and optimizer slots are the sizes of the built model's and built
optimizer's variables, gradients one copy of the trainable weights, and activations
the sum over layers of each output's size per row (kept for the backward pass, plus
their gradients, hence the 2). It ignores framework workspace and the input pipeline.

**Wall time**: a calibration run trains the smallest and the largest model for a few
epochs (with validation, a TensorBoard log and best-weights checkpoints, like a trial)
at the median batch size of the space. Per
model it measures a steady epoch (the last one) and a per-trial overhead (build,
compile and the first epoch's tracing beyond a steady epoch). The estimate is

    sum over trials of (overhead + epochs trained x epoch time)

with the epoch time and overhead averaged over the two models and the epoch time
scaled by the mean number of steps per epoch over the batch-size choices. Hyperband
promotions train only their new epochs (they resume from the parent's checkpoint).
Early stopping can only shorten trials, so it is an upper bound in that respect.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import statistics
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import keras_tuner
import numpy as np

from hypermodels import TabularSchema
from hypermodels.domains import FIXED, domain
from hypermodels.features import (
    LEVEL_MIN_SHARE,
    RARE_BELOW,
    embedding_width,
    rare_level_columns,
    value_columns,
)
from kt_pipeline.config import PipelineConfig
from kt_pipeline.finish import REFIT_MAX_SHARE
from kt_pipeline.lr_find import RANGE_TEST_SHARE, RANGE_TEST_STEPS, range_test_plan
from kt_pipeline.prepare import Prepared, prepare_data, sized_for_data
from kt_pipeline.schedule import Schedule, schedule
from kt_pipeline.search_parts import make_tuner
from kt_pipeline.sizing import refit_for
from kt_pipeline.splits import TIME

__all__ = [
    "PLAN_WARN_SECONDS",
    "Calibration",
    "HyperparameterInfo",
    "ModelSize",
    "Plan",
    "calibrate",
    "describe_space",
    "estimate_seconds",
    "format_duration",
    "identifier_notes",
    "log_data_notes",
    "model_sizes",
    "plan_search",
    "rare_level_notes",
    "space_warnings",
]

log = logging.getLogger("kt_pipeline")

_FLOAT_BYTES = 4
# Linear sampling over at least this ratio of max/min is "several decades".
_DECADES_RATIO = 100.0
_SUSPECT_DROPOUT = 0.95
_SIZE_NAMES = ("num_layers", "units")


@dataclasses.dataclass(frozen=True)
class HyperparameterInfo:
    """One hyperparameter of the space, as the plan prints it."""

    name: str
    kind: str
    values: str
    scale: str
    conditions: str


@dataclasses.dataclass(frozen=True)
class ModelSize:
    """A model the space can build, its parameters and estimated memory."""

    hyperparameters: dict[str, Any]
    parameters: int
    trainable_parameters: int
    optimizer_slots: int
    activations_per_row: int
    batch_size: int
    memory_bytes: int


@dataclasses.dataclass(frozen=True)
class Calibration:
    """Measured seconds per steady epoch and per-trial overhead, per model."""

    epoch_seconds: tuple[float, ...]
    overhead_seconds: tuple[float, ...]
    batch_size: int
    steps_scale: float

    @property
    def epoch(self) -> float:
        return statistics.fmean(self.epoch_seconds) * self.steps_scale

    @property
    def overhead(self) -> float:
        return statistics.fmean(self.overhead_seconds)


@dataclasses.dataclass(frozen=True)
class Plan:
    """Everything `kt-pipeline plan` prints."""

    space: tuple[HyperparameterInfo, ...]
    schedule: Schedule
    algorithm: str
    smallest: ModelSize
    largest: ModelSize
    replicas: int
    calibration: Calibration | None
    estimated_seconds: float | None
    warnings: tuple[str, ...]
    notes: tuple[str, ...] = ()

    def format(self) -> str:
        """The plan as text for a terminal."""
        lines = ["Search space (oracle space, conditions included):"]
        width = max(len(h.name) for h in self.space) if self.space else 10
        for h in self.space:
            when = f"  when {h.conditions}" if h.conditions else ""
            lines.append(f"  {h.name:<{width}}  {h.kind:<8} {h.values} [{h.scale}]{when}")
        lines.append("")
        lines.append(f"Schedule ({self.algorithm}):")
        for bracket in self.schedule.brackets:
            rounds = ", ".join(
                f"{trials} x {epochs} ep" + (f" (+{trained})" if trained != epochs else "")
                for trials, epochs, trained in bracket.rounds
            )
            lines.append(f"  iteration {bracket.iteration} bracket {bracket.bracket}: {rounds}")
        bound = "" if self.schedule.brackets else " at most"
        lines.append(
            f"  {self.schedule.trials} trials,{bound} {self.schedule.epochs} epochs trained in all"
        )
        lines.append("")
        lines.append(f"Models (memory per replica, {self.replicas} replica(s), float32):")
        for label, size in (("smallest", self.smallest), ("largest", self.largest)):
            shape = ", ".join(
                f"{k}={v}" for k, v in size.hyperparameters.items() if k.startswith(_SIZE_NAMES)
            )
            lines.append(
                f"  {label:<8} {size.parameters:>12,} parameters ({shape}); "
                f"{_mib(size.memory_bytes)} at batch size {size.batch_size}"
            )
        lines.append("")
        if self.calibration is not None and self.estimated_seconds is not None:
            cal = self.calibration
            lines.append(
                "Calibration: "
                + ", ".join(f"{s:.3f} s" for s in cal.epoch_seconds)
                + f" per epoch (smallest, largest) at batch size {cal.batch_size}; "
                f"{cal.overhead:.2f} s overhead per trial"
            )
            lines.append(
                f"Estimated wall time: {format_duration(self.estimated_seconds)} "
                f"({self.schedule.trials} trials, {self.schedule.epochs} epochs)"
            )
            lines.append("")
        if self.notes:
            lines.append("Notes:")
            lines.extend(f"  - {n}" for n in self.notes)
        if self.warnings:
            lines.append("Warnings:")
            lines.extend(f"  - {w}" for w in self.warnings)
        else:
            lines.append("Warnings: none")
        return "\n".join(lines)


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def format_duration(seconds: float) -> str:
    """``45 s``, ``12.5 min``, ``2.3 h``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


# The space ------------------------------------------------------------------------


def _bounds(hp: Any) -> tuple[Any, Any]:
    values = domain(hp).values()
    if values is None:
        return hp.min_value, hp.max_value
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    return (min(numbers), max(numbers)) if numbers else (None, None)


def _conditions(hp: Any) -> str:
    return " and ".join(
        f"{c.name} in {list(c.values)}" for c in hp.conditions if hasattr(c, "values")
    )


def describe_space(hyperparameters: keras_tuner.HyperParameters) -> list[HyperparameterInfo]:
    """Each hyperparameter with its range or choices, scale and activation conditions."""
    infos = []
    for hp in hyperparameters.space:
        if hp.name.startswith("tuner/"):
            continue
        kind, values = type(hp).__name__, domain(hp)
        if values.kind == FIXED:
            text, scale = repr(hp.value), "fixed"
        elif values.discrete:
            text, scale = str(values.values()), "choice"
        else:
            step = f" step {values.step}" if values.step else ""
            text, scale = f"[{values.low}, {values.high}]{step}", values.sampling
        infos.append(HyperparameterInfo(hp.name, kind, text, scale, _conditions(hp)))
    return infos


def _never_active(hyperparameters: keras_tuner.HyperParameters) -> list[str]:
    """Conditional hyperparameters whose conditions no value of their parent meets."""
    by_name = {hp.name: hp for hp in hyperparameters.space}
    dead: dict[str, str] = {}
    # Parents are declared before children, so one pass in order propagates.
    for hp in hyperparameters.space:
        for condition in hp.conditions:
            parent = by_name.get(condition.name)
            wanted = list(getattr(condition, "values", []))
            if parent is None:
                dead[hp.name] = f"its parent {condition.name!r} is not in the space"
            elif parent.name in dead:
                dead[hp.name] = f"its parent {parent.name!r} is never active"
            else:
                possible = domain(parent).values()
                if possible is not None and not set(map(str, wanted)) & set(map(str, possible)):
                    dead[hp.name] = f"it needs {parent.name} in {wanted}, which can be {possible}"
            if hp.name in dead:
                break
    return [f"`{name}` can never be active: {why}" for name, why in dead.items()]


def space_warnings(hyperparameters: keras_tuner.HyperParameters, *, train_rows: int) -> list[str]:
    """Signs of a space that wastes the search: a learning rate on a linear scale over
    several decades, dropout of (almost) 1, more units than training rows, a batch size
    above the training set, conditional hyperparameters that can never be active."""
    warnings = []
    for hp in hyperparameters.space:
        name = hp.name
        low, high = _bounds(hp)
        if low is None:
            continue
        if (
            "learning_rate" in name
            and domain(hp).kind != FIXED
            and domain(hp).sampling == "linear"  # a choice counts as linear
            and (low <= 0 or high / low >= _DECADES_RATIO)
        ):
            decades = "from 0" if low <= 0 else f"over {math.log10(high / low):.0f} decades"
            warnings.append(
                f"`{name}` is on a linear scale {decades} ([{low}, {high}]): "
                f"{1 - 0.1:.0%} of samples land in the top decade; use a log scale"
            )
        if "dropout" in name and high >= _SUSPECT_DROPOUT:
            warnings.append(
                f"`{name}` reaches {high}: a dropout of (almost) 1 drops every unit "
                "and the layer learns nothing"
            )
        if name.startswith("units") and high > train_rows:
            warnings.append(
                f"`{name}` reaches {high} units, more than the {train_rows} training rows"
            )
        if name == "batch_size" and high > train_rows:
            warnings.append(
                f"`batch_size` reaches {high}, above the {train_rows} training rows "
                "(one partial batch per epoch)"
            )
    return warnings + _never_active(hyperparameters)


# Models -----------------------------------------------------------------------------


# Hyperparameters whose larger values make a larger model (the numeric embeddings'
# sizes count once an embedding is chosen).
_SIZES = (
    "num_layers",
    "units",
    "embedding_dim",
    "periodic_frequencies",
    "piecewise_bins",
    "members",
)


def _is_size(name: str) -> bool:
    return name in _SIZES or name.startswith("units_")


def _extreme_values(
    space: keras_tuner.HyperParameters,
    *,
    largest: bool,
    optimizer: str | None,
    numeric_embedding: str | None = None,
) -> keras_tuner.HyperParameters:
    hp = space.copy()
    if numeric_embedding is not None:  # first: it activates its own sizes
        hp.values["numeric_embedding"] = numeric_embedding
        hp.ensure_active_values()
    pick = max if largest else min
    # Depth first, so that the per-layer widths it activates get values too.
    for names in (("num_layers",), None):
        for param in hp.space:
            if (names and param.name not in names) or not _is_size(param.name):
                continue
            low, high = _bounds(param)
            if low is not None and hp.is_active(param):
                hp.values[param.name] = pick(low, high)
        hp.ensure_active_values()
    switches = ("batch_norm", "value_embedding", "row_target_encoding")
    for param in hp.space:
        if param.name in switches and domain(param).kind != FIXED:
            hp.values[param.name] = largest
        if param.name == "optimizer" and optimizer is not None:
            hp.values["optimizer"] = optimizer
    hp.ensure_active_values()
    return hp


def _variable_count(variables: Sequence[Any]) -> int:
    return int(sum(np.prod(v.shape) for v in variables))


def _size(
    hypermodel: keras_tuner.HyperModel,
    hp: keras_tuner.HyperParameters,
    *,
    batch_size: int,
    replicas: int,
) -> tuple[ModelSize, keras.Model]:
    # No full garbage collection per build (0.25 s each, half of `plan` on a small
    # table): Python's collector frees the last model's cycles anyway.
    keras.backend.clear_session(free_memory=False)
    model = hypermodel.build(hp)
    optimizer = getattr(model, "optimizer", None)
    slots = 0
    if optimizer is not None:
        if not optimizer.built:
            optimizer.build(model.trainable_variables)
        slots = _variable_count(
            [v for v in optimizer.variables if len(v.shape) > 0]  # not the counters
        )
    activations = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        for output in keras.tree.flatten(layer.output):
            activations += int(np.prod([d or 1 for d in output.shape[1:]]))
    weights = _variable_count(model.weights)
    trainable = _variable_count(model.trainable_weights)
    per_replica = max(1, math.ceil(batch_size / max(1, replicas)))
    memory = _FLOAT_BYTES * (weights + slots + trainable + 2 * per_replica * activations)
    size = ModelSize(
        hyperparameters={k: v for k, v in hp.values.items() if not k.startswith("tuner/")},
        parameters=weights,
        trainable_parameters=trainable,
        optimizer_slots=slots,
        activations_per_row=activations,
        batch_size=batch_size,
        memory_bytes=memory,
    )
    return size, model


def _choices(space: keras_tuner.HyperParameters, name: str) -> list[Any]:
    for hp in space.space:
        if hp.name == name:
            return domain(hp).values() or []
    return []


def model_sizes(
    hypermodel: keras_tuner.HyperModel,
    space: keras_tuner.HyperParameters,
    *,
    replicas: int = 1,
) -> tuple[ModelSize, ModelSize]:
    """The smallest and the largest model of the space, built for real: depth, widths
    and embedding sizes at their ends, batch normalisation and value embeddings off/on,
    and for the largest the optimizer and numeric embedding that take the most memory.
    Memory is per replica at the largest batch size."""
    batch_sizes = [int(b) for b in _choices(space, "batch_size")] or [32]
    batch = max(batch_sizes)
    smallest_hp = _extreme_values(space, largest=False, optimizer=None)
    smallest, _ = _size(hypermodel, smallest_hp, batch_size=batch, replicas=replicas)
    largest: ModelSize | None = None
    for optimizer in _choices(space, "optimizer") or [None]:
        for embedding in _choices(space, "numeric_embedding") or [None]:
            hp = _extreme_values(
                space, largest=True, optimizer=optimizer, numeric_embedding=embedding
            )
            size, _ = _size(hypermodel, hp, batch_size=batch, replicas=replicas)
            if largest is None or size.memory_bytes > largest.memory_bytes:
                largest = size
    assert largest is not None
    return smallest, largest


# Calibration --------------------------------------------------------------------------


class _EpochTimer(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.ends: list[float] = []

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.ends.append(time.perf_counter())


def calibrate(
    hypermodel: keras_tuner.HyperModel,
    space: keras_tuner.HyperParameters,
    models: Sequence[ModelSize],
    *,
    x: Any,
    y: Any,
    validation_data: tuple[Any, ...],
    sample_weight: Any = None,
    epochs: int = 3,
    scratch_dir: str | None = None,
) -> Calibration:
    """Trains each of `models` (their hyperparameters) for `epochs` epochs with
    validation and times them (see the module docstring), on a trial's data
    (`Prepared.search_data`: its sample weights too, for fold models). With
    `scratch_dir`, each epoch also writes what a KerasTuner trial writes: a TensorBoard
    log and a checkpoint of the best weights so far."""
    batch_sizes = sorted(int(b) for b in _choices(space, "batch_size")) or [32]
    batch = batch_sizes[len(batch_sizes) // 2]
    rows = len(y)
    steps = math.ceil(rows / batch)
    scale = statistics.fmean(math.ceil(rows / b) for b in batch_sizes) / steps
    epoch_seconds: list[float] = []
    overheads: list[float] = []
    for size in models:
        hp = space.copy()
        hp.values.update(size.hyperparameters)
        started = time.perf_counter()
        keras.backend.clear_session(free_memory=False)
        model = hypermodel.build(hp)
        timer = _EpochTimer()
        callbacks: list[keras.callbacks.Callback] = []
        if scratch_dir is not None:
            folder = f"{scratch_dir}/calibration_{len(epoch_seconds)}"
            callbacks = [
                keras.callbacks.TensorBoard(log_dir=folder),
                keras.callbacks.ModelCheckpoint(
                    f"{folder}/checkpoint.weights.h5",
                    monitor="val_loss",
                    save_best_only=True,
                    save_weights_only=True,
                ),
            ]
        if "batch_size" in hp.values:
            hp.values["batch_size"] = batch
        # The hypermodel's own `fit`, as a trial trains: its input pipeline, its batches
        # of one fold's rows for fold models' validation, its callbacks.
        fit_kwargs = {"sample_weight": sample_weight} if sample_weight is not None else {}
        hypermodel.fit(
            hp,
            model,
            x,
            y,
            epochs=epochs,
            **fit_kwargs,
            validation_data=validation_data,
            callbacks=[*callbacks, timer],
            verbose=0,
        )
        steady = timer.ends[-1] - timer.ends[-2] if len(timer.ends) > 1 else 0.0
        total = timer.ends[-1] - started
        epoch_seconds.append(steady)
        overheads.append(max(0.0, total - steady * len(timer.ends)))
    return Calibration(tuple(epoch_seconds), tuple(overheads), batch, scale)


def estimate_seconds(plan_schedule: Schedule, calibration: Calibration) -> float:
    """Wall time of the whole search from its schedule and a calibration."""
    return sum(
        calibration.overhead + epochs * calibration.epoch
        for epochs in plan_schedule.epochs_per_trial
    )


# The plan of a job -------------------------------------------------------------


#: `plan` warns when a search without a time budget is estimated to take longer.
PLAN_WARN_SECONDS = 30 * 60


def plan_search(config: PipelineConfig, *, calibration_epochs: int = 3) -> Plan:
    """The search's plan (`kt_pipeline.plan`) without running it; 0 calibration epochs
    skips the timing. The experiment directory is not touched: the tuner is built in a
    temporary folder."""
    prepared = prepare_data(config)
    epochs_auto = not config.tuner.max_epochs
    config = sized_for_data(config, prepared)
    splits = prepared.splits
    with tempfile.TemporaryDirectory(prefix="kt-plan-") as scratch:
        runtime = dataclasses.replace(config.runtime, experiment_dir=scratch)
        tuner = make_tuner(dataclasses.replace(config, runtime=runtime), prepared, overwrite=True)
        space = tuner.oracle.get_space()
        replicas = tuner.distribution_strategy.num_replicas_in_sync
        smallest, largest = model_sizes(tuner.hypermodel, space, replicas=replicas)
        plan_schedule = schedule(tuner.oracle, max_epochs=config.tuner.max_epochs)
        warnings = space_warnings(space, train_rows=len(splits.train))
        warnings += _rare_level_warnings(prepared.schema, treatments=config.search.high_cardinality)
        notes = _plan_notes(
            config,
            train_rows=len(splits.train),
            epochs_auto=epochs_auto,
            split_kind=splits.spec.kind,
        )
        notes += splits.notes()
        leaks = prepared.leak_check()
        warnings += leaks.warnings()
        notes += leaks.notes()
        notes += rare_level_notes(prepared.schema, min_frequency=config.data.min_frequency)
        notes += identifier_notes(prepared.schema, prepared.level_shares)
        notes += _value_embedding_notes(prepared.schema, choices=config.search.value_embeddings)
        notes += _row_code_notes(prepared.schema, choices=config.search.row_target_encoding)
        calibration = None
        if calibration_epochs:
            (x, y), data_kwargs = prepared.search_data()
            calibration = calibrate(
                tuner.hypermodel,
                space,
                [smallest, largest],
                x=x,
                y=y,
                **data_kwargs,
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


def _plan_notes(
    config: PipelineConfig, *, train_rows: int, epochs_auto: bool, split_kind: str
) -> list[str]:
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
        tested = range_test_plan(config, train_rows)
        groups = list(dict.fromkeys(tested.values()))
        untested = [name for name in config.search.optimizers if name not in tested]
        notes.append(
            f"the learning-rate range test runs first ({RANGE_TEST_STEPS} steps for each of "
            f"{', '.join(groups) or 'no optimizer'}; not in the estimate) and gives "
            f"{', '.join(tested) or 'no optimizer'} its own <optimizer>_learning_rate range"
            + (
                f"; {', '.join(untested)} keep learning_rate (a small search tests only "
                f"what {RANGE_TEST_SHARE:.0%} of its training steps pay for)"
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
    elif config.export.enabled and config.export.refit == "auto" and split_kind == TIME:
        notes.append(
            "the export trains its members again on every row, the latest periods "
            'included, whatever it costs (export.refit = "auto" under a time split; not '
            "in the estimate)"
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


def rare_level_notes(schema: TabularSchema, *, min_frequency: int) -> list[str]:
    """Categorical columns whose training rows are mostly in rare values, but for those
    the screening left out of the network."""
    return [
        f"column {c.name!r}: {c.levels:,} levels, {c.rare_share:.0%} of training rows in "
        f"levels seen fewer than {RARE_BELOW} times; "
        + (
            f"levels seen fewer than {min_frequency} times share one bucket"
            if min_frequency > 1
            else "each keeps its own value (data.min_frequency = 1)"
        )
        for c in rare_level_columns(schema)
        if c.treatment != "drop"  # left out: `identifier_notes` says so
    ]


def identifier_notes(schema: TabularSchema, shares: Mapping[str, float]) -> list[str]:
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
    embeds it, `search.high_cardinality`, or the screening left it out)."""
    if "embedding" not in treatments:
        return []
    widths = {c.name: embedding_width(c) for c in schema.categorical if c.treatment != "drop"}
    others = len(schema.numeric) + sum(c.has_missing for c in schema.numeric)
    warnings = []
    for column in rare_level_columns(schema):
        if column.name not in widths:  # left out of the network
            continue
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


def log_data_notes(prepared: Prepared, *, min_frequency: int) -> None:
    """The rows, the split and what the data decided, in the search log."""
    dataset, splits = prepared.dataset, prepared.splits
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
    for note in rare_level_notes(prepared.schema, min_frequency=min_frequency):
        log.info("data: %s", note)
    for note in identifier_notes(prepared.schema, prepared.level_shares):
        log.info("data: %s", note)
