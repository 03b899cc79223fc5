"""The job's last step: the served model chosen among the trials (`ensemble`), trained
again where that pays (``export.refit``), exported and scored on the held-out rows
(`export`)."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import logging
from pathlib import Path
from typing import Any

import keras
import keras_tuner
import numpy as np
import pandas as pd

from hypermodels import TabularSchema
from hypermodels.features import (
    TARGET_SUFFIX,
    ServingEncoder,
    build_inputs,
    model_inputs,
    raw_rows,
    serving_signature,
)
from hypermodels.mlp import EVALUATION_BATCH_SIZE
from kt_pipeline import ensemble as ensemble_lib
from kt_pipeline import splits as splits_lib
from kt_pipeline.config import PipelineConfig, config_to_dict
from kt_pipeline.errors import UserInputError
from kt_pipeline.experiment_files import EXPORT_DIR
from kt_pipeline.export import Verification, export_model, model_outputs
from kt_pipeline.held_out import score_intervals, score_predictions
from kt_pipeline.model_card import ModelCard
from kt_pipeline.prepare import Prepared, prepare_data
from kt_pipeline.results import trial_table
from kt_pipeline.search_parts import reload_tuner
from kt_pipeline.sizing import refit_for
from kt_pipeline.tuners import trial_seed

__all__ = [
    "REFIT_MAX_SHARE",
    "Ensemble",
    "Exported",
    "export_best",
    "load_best_model",
    "refit_cost_share",
    "refit_epochs",
    "refit_members",
    "refit_mode",
    "scored_predictions",
    "select_ensemble",
    "trial_models",
]

log = logging.getLogger("kt_pipeline")


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
    prepared = prepare_data(config)
    tuner = reload_tuner(config, prepared)
    chosen = select_ensemble(config, tuner, prepared, max_members=ensemble)
    if chosen is None:
        raise UserInputError(f"experiment {config.runtime.experiment_dir!r} has no completed trial")
    return chosen.model, prepared.schema


def trial_models(config: PipelineConfig, *, count: int) -> list[keras.Model]:
    """The `count` best completed trials' trained models, best first, each taking the
    raw columns as the export does (one 1-D input per column, named as
    `TabularSchema.input_names` names them), with the lookups the export carries in
    front: KerasTuner's ``get_best_models`` for models a user can feed a table.

    Raises:
        UserInputError: the experiment holds no search.
    """
    prepared = prepare_data(config)
    with contextlib.redirect_stdout(io.StringIO()):  # KerasTuner prints "Reloading Tuner"
        tuner = reload_tuner(config, prepared)
    encoder = ServingEncoder(prepared.schema)
    models = []
    for trial in tuner.oracle.get_best_trials(count):
        inputs = {
            name: keras.Input(shape=(), dtype=spec.dtype.name, name=name)
            for name, spec in serving_signature(prepared.schema).items()
        }
        trained = tuner.load_model(trial)
        models.append(keras.Model(inputs, trained(encoder(inputs)), name=f"trial_{trial.trial_id}"))
    return models


@dataclasses.dataclass(frozen=True)
class Ensemble:
    """The export's model and how it was chosen (`kt_pipeline.ensemble`)."""

    model: keras.Model
    members: list[keras_tuner.engine.trial.Trial]  # the best single trial first
    weights: list[float]
    validation_score: float  # the ensemble's objective on the validation split
    best_single_score: float  # the best single candidate's, computed the same way


def select_ensemble(
    config: PipelineConfig,
    tuner: keras_tuner.Tuner,
    prepared: Prepared,
    *,
    max_members: int | None = None,
) -> Ensemble | None:
    """Greedy selection among the best distinct configurations on the rows the trials
    were scored on: the validation split, or out of fold (`scored_predictions`); None
    when no trial completed."""
    max_members = max_members or config.export.ensemble
    count = ensemble_lib.CANDIDATES if max_members > 1 else 1
    candidates = ensemble_lib.distinct_best_trials(tuner.oracle, count=count)
    if not candidates:
        return None
    models = [tuner.load_model(trial) for trial in candidates]
    predictions, y = scored_predictions(models, prepared)
    score = ensemble_lib.validation_scorer(
        prepared.dataset.task,
        tuner.oracle.objective,
        y,
        regression_loss=config.search.regression_loss,
    )
    counts = ensemble_lib.greedy_selection(predictions, score, max_members=max_members)
    chosen = sorted((i for i, c in enumerate(counts) if c), key=lambda i: (-counts[i], i))
    weights = [counts[i] / sum(counts) for i in chosen]
    mean = ensemble_lib.weighted_mean(predictions, counts)
    return Ensemble(
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


def scored_predictions(
    models: list[keras.Model], prepared: Prepared
) -> tuple[list[np.ndarray], np.ndarray]:
    """Each model's predictions on the rows trials are scored on, and their labels: the
    validation rows, or for cross-validated trials each scored row's out-of-fold
    prediction (the fold model that never trained on it), as AutoGluon's weighted
    ensemble selects on its bagged models' out-of-fold predictions."""
    if prepared.splits.trial_folds is None:
        validation = prepared.splits.validation
        x = prepared.inputs(validation)
        predicted = [m.predict(x, batch_size=EVALUATION_BATCH_SIZE, verbose=0) for m in models]
        return [np.asarray(p) for p in predicted], validation.y
    _, data_kwargs = prepared.search_data()
    x, y, scored = data_kwargs["validation_data"]
    predictions = []
    for model in models:  # the fold models' own outputs, (rows, folds, outputs)
        folds = keras.Model(model.inputs, model.outputs)
        stacked = np.asarray(folds.predict(x, batch_size=EVALUATION_BATCH_SIZE, verbose=0))
        predictions.append((stacked * scored[..., None]).sum(axis=1))
    return predictions, y


#: The most a refit may add to the search's training time under ``export.refit =
#: "auto"``: the refit scales with the search, so this bounds the export's share of the
#: whole job; the caps tried are in ``benchmarks/README.md`` ("Time at size").
REFIT_MAX_SHARE = 0.5


def refit_cost_share(tuner: keras_tuner.Tuner, chosen: Ensemble, *, rows_ratio: float) -> float:
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


def refit_members(
    config: PipelineConfig,
    tuner: keras_tuner.Tuner,
    prepared: Prepared,
    chosen: Ensemble,
    *,
    with_test: bool = False,
) -> tuple[keras.Model, dict[str, Any]]:
    """The chosen members trained again, one network each (whatever ``data.folds``),
    on the training and validation rows (and the
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
    if getattr(hypermodel, "folds", 1) > 1:  # one network per configuration, on every row
        hypermodel.folds = 1
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


@dataclasses.dataclass(frozen=True)
class Exported:
    """What `export_best` published."""

    directory: Path
    # Measured on the reloaded SavedModel; under a time split with a refit, on the model
    # before the test rows joined it (`export_best`).
    test_scores: dict[str, float]
    trial_ids: list[str]  # the trials whose models the export averages
    # `held_out.score_intervals` of `test_scores`: how far another draw of such rows
    # would move them.
    test_intervals: dict[str, Any] = dataclasses.field(default_factory=dict)
    refit: str = ""  # the export.refit mode the export took, or "" (none ran)


def export_best(
    config: PipelineConfig,
    *,
    tuner: keras_tuner.Tuner | None = None,
    prepared: Prepared | None = None,
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
    prepared = prepared or prepare_data(config)
    tuner = tuner or reload_tuner(config, prepared)
    chosen = select_ensemble(config, tuner, prepared)
    if chosen is None:
        return None
    best = ensemble_lib.distinct_best_trials(tuner.oracle, count=1)[0]
    mode = refit_mode(config, tuner, prepared, chosen)
    model, refit, held_out = _served_model(config, tuner, prepared, chosen, mode=mode)
    dataset, test = prepared.dataset, prepared.splits.test
    measured: dict[str, Any] = {}

    def score(outputs: dict[str, np.ndarray]) -> dict[str, Any]:
        measured.update(held_out or _held_out(outputs, prepared, seed=config.runtime.seed))
        return measured

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
            **_members(chosen),
        },
        verify=Verification(
            rows=raw_rows(prepared.schema, test.frame),
            card=_card(config, tuner, prepared, chosen, best=best, refit=refit),
            score=score,
            fresh=config.export.verify_in_fresh_process,
        ),
    )
    return Exported(
        export_dir,
        dict(measured.get("test_metrics") or {}),
        _members(chosen)["ensemble"],
        refit=refit.get("mode", ""),
        test_intervals=dict(measured.get("test_intervals") or {}),
    )


def _held_out(outputs: dict[str, np.ndarray], prepared: Prepared, *, seed: int) -> dict[str, Any]:
    """The card's held-out fields: the test rows' scores and their intervals."""
    test, task = prepared.splits.test, prepared.dataset.task
    intervals = score_intervals(outputs, test.y, task=task, groups=test.groups, seed=seed)
    if intervals and prepared.splits.spec.kind == splits_lib.TIME:
        # Drawing the latest rows again says nothing of how the next period differs.
        intervals["caveat"] = "a later period may fall outside them"
    return {
        "test_metrics": score_predictions(outputs, test.y, task=task),
        "test_intervals": intervals,
    }


def _members(chosen: Ensemble) -> dict[str, Any]:
    """The export's members and their weights, as its metadata records them."""
    return {
        "ensemble": [trial.trial_id for trial in chosen.members],
        "ensemble_weights": chosen.weights,
    }


def refit_mode(
    config: PipelineConfig, tuner: keras_tuner.Tuner, prepared: Prepared, chosen: Ensemble
) -> str:
    """``export.refit`` resolved for this search: ``off``, ``blend`` or ``replace``
    (``auto`` weighs the refit's cost, `REFIT_MAX_SHARE`, and the split)."""
    mode = config.export.refit
    if mode != "off" and config.tuner.time_budget:
        log.info("export.refit is skipped: a time budget is set (tuner.time_budget)")
        return "off"
    if mode == "auto" and not refit_for(len(prepared.splits.train.y)):
        log.info(
            "export.refit (auto) is skipped: %d training rows, more than a refit pays for "
            "(kt_pipeline.sizing.refit_for)", len(prepared.splits.train.y),
        )  # fmt: skip
        return "off"
    if mode == "auto" and prepared.splits.spec.kind == splits_lib.TIME:
        # The searched models never saw the latest periods, the rows likest to those
        # served, so they are trained on them whatever it costs: a model without them
        # can miss the next periods by half its score (`benchmarks/README.md`).
        log.info("export.refit (auto) is served alone: a time split")
        return "replace"
    if mode == "auto":
        splits = prepared.splits
        rows_ratio = (len(splits.train.y) + len(splits.validation.y)) / len(splits.train.y)
        # A cross-validated trial timed its fold models; the refit trains one network.
        folds = splits.trial_folds.count if splits.trial_folds else 1
        share = refit_cost_share(tuner, chosen, rows_ratio=rows_ratio) / folds
        mode = "off" if share > REFIT_MAX_SHARE else "blend"
        log.info(
            "export.refit (auto) is %s: it adds about %.0f%% to the search's training "
            "time (at most %.0f%%)",
            {"off": "skipped", "blend": "blended"}[mode], 100 * share, 100 * REFIT_MAX_SHARE,
        )  # fmt: skip
    return mode


def _served_model(
    config: PipelineConfig,
    tuner: keras_tuner.Tuner,
    prepared: Prepared,
    chosen: Ensemble,
    *,
    mode: str,
) -> tuple[keras.Model, dict[str, Any], dict[str, Any]]:
    """The model to export, the card's refit record, and the held-out fields
    (`_held_out`) where they were measured before the test rows joined the model (a
    time split), else {}."""
    if mode == "off":
        return chosen.model, {}, {}

    def refitted(*, with_test: bool) -> tuple[keras.Model, dict[str, Any]]:
        refit_model, record = refit_members(config, tuner, prepared, chosen, with_test=with_test)
        if mode == "replace":
            return refit_model, {**record, "mode": mode}
        inputs = build_inputs(prepared.schema)
        return ensemble_lib.average_models([chosen.model, refit_model], inputs=inputs), {
            **record,
            "mode": mode,
        }

    model, refit = refitted(with_test=False)
    if prepared.splits.spec.kind != splits_lib.TIME:
        return model, refit, {}
    # The latest rows are the likest to those the model will serve: score the held-out
    # rows first, then train the members again with them.
    dataset, test = prepared.dataset, prepared.splits.test
    outputs = model_outputs(
        model,
        raw_rows(prepared.schema, test.frame),
        schema=prepared.schema,
        task=dataset.task,
        class_names=dataset.class_names,
    )
    held_out = _held_out(outputs, prepared, seed=config.runtime.seed)
    retrained, with_test = refitted(with_test=True)
    # No rows are left to check the retrained model on, but it has seen the test rows: a
    # higher loss on them than the model that never saw them means its training failed
    # or was a draw (a one-epoch refit), and the measured model is served instead. A
    # looser bar (the rows' mean) served males_wage@time's draw, 77 points worse on
    # the next years (`benchmarks/README.md`, "Cross-validated trials").
    loss = ensemble_lib.validation_scorer(
        dataset.task,
        keras_tuner.Objective("val_loss", "min"),
        test.y,
        regression_loss=config.search.regression_loss,
    )
    x = prepared.inputs(test)
    measured, fitted = (
        -loss(np.asarray(m.predict(x, batch_size=EVALUATION_BATCH_SIZE, verbose=0)))[0]
        for m in (model, retrained)
    )
    if fitted > measured:
        log.warning(
            "export: the members trained again with the latest (test) rows have a higher "
            "loss on those rows (%.4g) than the measured model, which never saw them "
            "(%.4g): that training failed, and the measured model is served",
            fitted, measured,
        )  # fmt: skip
        return model, {**refit, "test_rows_included": False}, held_out
    log.info(
        "export: held-out score measured, then the members trained again with the "
        "latest (test) rows too, %d rows in all (data.split = %s)",
        with_test["rows"],
        prepared.splits.spec,
    )
    return retrained, {**with_test, "test_rows_included": True}, held_out


def _card(
    config: PipelineConfig,
    tuner: keras_tuner.Tuner,
    prepared: Prepared,
    chosen: Ensemble,
    *,
    best: keras_tuner.engine.trial.Trial,
    refit: dict[str, Any],
) -> dict[str, Any]:
    """The model card of the export (`model_card.ModelCard`)."""
    dataset = prepared.dataset
    metrics = {
        name: best.metrics.get_last_value(name)
        for name in best.metrics.metrics
        if name.startswith("val_")
    }
    return ModelCard(
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
            for trial, weight in zip(chosen.members, chosen.weights, strict=True)
        ],
        ensemble_validation={
            "selected": chosen.validation_score,
            "best_single": chosen.best_single_score,
        },
        refit=refit,
        config=config_to_dict(config),
        split=prepared.splits.to_json(),
    ).to_json()
