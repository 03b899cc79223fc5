"""The data prepared once for a job: loaded, split, its schema and out-of-fold codes
fitted on the training rows, and the config's data-sized defaults resolved for it."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from hypermodels import TabularSchema, fit_schema
from hypermodels.features import (
    fit_row_codes,
    fit_target_codes,
    level_shares,
    model_inputs,
    screen_identifiers,
)
from kt_pipeline import data as data_lib
from kt_pipeline import splits as splits_lib
from kt_pipeline.config import PipelineConfig
from kt_pipeline.errors import UserInputError
from kt_pipeline.sizing import batch_sizes_for, folds_for, max_epochs_for, members_for
from kt_pipeline.strategy import (
    configure_devices,
    is_multi_worker_chief,
    make_strategy,
    set_graph_optimizer,
)

if TYPE_CHECKING:
    import tensorflow as tf

__all__ = ["Prepared", "prepare_data", "set_up_devices", "sized_for_data"]

log = logging.getLogger("kt_pipeline")


@dataclasses.dataclass(frozen=True)
class Prepared:
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

    def search_data(self) -> tuple[tuple[Any, np.ndarray], dict[str, Any]]:
        """A trial's `fit` arguments: ``(x, y)`` and the keywords, the validation data
        (and, for cross-validated trials, each fold model's sample weights and the
        one-hot choice of the model that scores each row: `splits_lib.TrialFolds`)."""
        train, folds = self.splits.train, self.splits.trial_folds
        x = self.inputs(train)
        if folds is None:
            validation = self.splits.validation
            return (x, train.y), {"validation_data": (self.inputs(validation), validation.y)}
        weights, scored = folds.weights()
        rows = folds.scored_rows()
        if len(rows) == len(train.y):
            return (x, train.y), {"sample_weight": weights, "validation_data": (x, train.y, scored)}
        scored_x = keras.tree.map_structure(lambda values: np.asarray(values)[rows], x)
        return (x, train.y), {
            "sample_weight": weights,
            "validation_data": (scored_x, train.y[rows], scored[rows]),
        }


def _auto_folds(config: PipelineConfig, splits: splits_lib.Splits, *, rows: int) -> int:
    """The folds ``data.folds_auto`` sizes from one validation part's `splits`
    (`kt_pipeline.sizing.folds_for`): none where members were chosen by hand (folds
    replace them)."""
    if tuple(config.search.members) != (1,) and not config.search.members_auto:
        return 1
    groups = splits.validation.groups
    validation_groups = len(np.unique(groups)) if groups is not None else 0
    folds = folds_for(rows, split_kind=splits.spec.kind, validation_groups=validation_groups)
    if folds > 1:
        log.info(
            "data.folds (auto): %d folds, as one validation part would hold only %d groups",
            folds, validation_groups,
        )  # fmt: skip
    return folds


def prepare_data(config: PipelineConfig) -> Prepared:
    dataset = data_lib.load_dataset(
        config.data.source,
        label=config.data.label,
        task=config.data.task,
        categorical=config.data.categorical,
        numeric=config.data.numeric,
    )
    split = functools.partial(
        splits_lib.split_dataset,
        dataset,
        split=config.data.split,
        validation_fraction=config.data.validation_fraction,
        test_fraction=config.data.test_fraction,
        seed=config.runtime.seed,
    )
    splits = split(folds=1 if config.data.folds_auto else config.data.folds)
    folds = _auto_folds(config, splits, rows=len(dataset.y)) if config.data.folds_auto else 1
    if folds > 1:
        try:
            splits = split(folds=folds)
        except UserInputError:
            log.info(
                "data.folds (auto): %d folds cannot be cut from these training rows; one "
                "validation part scores the trials", folds,
            )  # fmt: skip

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
    return Prepared(
        dataset=dataset, splits=splits, schema=schema, train_codes=codes, level_shares=shares
    )


def sized_for_data(config: PipelineConfig, prepared: Prepared) -> PipelineConfig:
    """The config with its data-sized defaults resolved for the training split
    (`kt_pipeline.sizing`): the folds ``data.folds_auto`` cut (`prepare_data`), the
    batch sizes with ``search.batch_sizes_auto``, the
    members with ``search.members_auto``, the epoch budget when ``tuner.max_epochs`` is
    0. Every path that builds the tuner or the hypermodel goes through here, so a
    search, its plan and its re-export agree."""
    rows = len(prepared.splits.train)
    if config.data.folds_auto:  # as `prepare_data` cut them
        folds = prepared.splits.trial_folds
        data = dataclasses.replace(config.data, folds=folds.count if folds else 1)
        config = dataclasses.replace(config, data=data)
    if config.search.batch_sizes_auto:
        search = dataclasses.replace(config.search, batch_sizes=batch_sizes_for(rows))
        config = dataclasses.replace(config, search=search)
    if config.search.members_auto and config.data.folds == 1:  # fold models are members
        search = dataclasses.replace(config.search, members=members_for(rows))
        config = dataclasses.replace(config, search=search)
    if not config.tuner.max_epochs:
        tuner = dataclasses.replace(config.tuner, max_epochs=max_epochs_for(rows))
        config = dataclasses.replace(config, tuner=tuner)
    return config


def set_up_devices(config: PipelineConfig) -> tuple[PipelineConfig, tf.distribute.Strategy]:
    """The devices, the graph options and the strategy, before any other TensorFlow
    work; the other tasks of a multi-worker trial get an experiment of their own."""
    configure_devices(
        memory_growth=config.runtime.memory_growth,
        mixed_precision=config.runtime.mixed_precision,
    )
    # Also before any function runs: TensorFlow fixes the option on the first call.
    set_graph_optimizer(config.runtime.graph_optimizer)
    # Before any other TensorFlow work: a multi-worker strategy configures the runtime.
    strategy = make_strategy(config.runtime.strategy, devices=config.runtime.devices)
    if is_multi_worker_chief(strategy):
        return config, strategy
    # The other tasks of a multi-worker trial compute with the chief but keep their files
    # apart; only the chief's experiment is the result, and its export.
    task = json.loads(os.environ["TF_CONFIG"])["task"]
    scratch = (
        Path(config.runtime.experiment_dir) / "multi_worker" / f"{task['type']}_{task['index']}"
    )
    config = dataclasses.replace(
        config,
        runtime=dataclasses.replace(config.runtime, experiment_dir=str(scratch)),
        export=dataclasses.replace(config.export, enabled=False),
    )
    return config, strategy
