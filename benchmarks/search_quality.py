"""Search quality at equal budget: kt-pipeline's default search against what users
would otherwise run.

Every method gets the same budget in training epochs on the same train/validation/test
split (the pipeline's seeded split), and is scored by the held-out test accuracy of the
model it picks:

* ``pipeline``: ``kt-pipeline search`` with its defaults (the learning-rate range test
  sets each optimizer's range, then Hyperband over the default space, max_epochs 20,
  factor 3: 30 trials, 226 epochs). Its schedule sets the budget every other method gets.
* ``kt_random`` / ``kt_hyperband``: stock KerasTuner ``RandomSearch`` and ``Hyperband``
  with their default settings (Hyperband with the same max_epochs; RandomSearch with
  budget // max_epochs trials of max_epochs epochs) on the hypermodel KerasTuner's
  getting-started guide writes (1-3 Dense layers of 32-512 units, relu/tanh, optional
  dropout, Adam with a log-uniform learning rate), inputs standardised with
  scikit-learn as a user would.
* ``optuna_tpe``: Optuna's TPE sampler with its Hyperband pruner (reporting validation
  accuracy every epoch) on the same space, stopped when the budget is spent.
* ``kt_random_again``: not a baseline but the yardstick's own noise: ``kt_random`` once
  more on the same split with another sampling and initialisation seed (seed +
  ``RESEED``). How often a second draw of RandomSearch reaches the first draw's final
  validation accuracy within a third of its epochs says how much of the budget goal is
  the yardstick's luck (the best of its epochs on a small validation set).
* ``untuned``: Adam 1e-3, two Dense(128) relu layers, batch 32, trained up to the
  budget with early stopping (patience 10, best weights restored).
* ``pipeline_single_model``: not a search of its own: the ``pipeline`` runs' searches
  scored by their best trial's model alone (``export.ensemble = 1``), where the
  ``pipeline`` row scores what the export serves (the average of the best three
  distinct configurations' models, see ``kt_pipeline.ensemble``).
* ``pipeline_random_first``: the pipeline with ``tuner.first_trial = "random"``: no
  known-good first trial, every trial sampled.
* ``pipeline_trial_schedule`` (recorded: its setting was removed): the pipeline with
  each Hyperband round's schedule decaying over that round's epochs.
* ``pipeline_shared_lr``: the pipeline without the range test, one learning-rate range
  (1e-4 to 1e-2) for every optimizer (``search.optimizer_learning_rates = {}``);
  ``pipeline_own_lr``: without the range test, plain SGD and Adagrad searching 1e-3 to
  1e-1 and the others the shared range.
* ``pipeline_bohb`` and ``pipeline_bayesian``: ``tuner = "bohb"`` and ``tuner =
  "bayesian"`` (budget // max_epochs trials) on the shared range, against
  ``pipeline_shared_lr`` (Hyperband on the same space); ``pipeline_bohb_10``: BOHB whose
  model starts at 10 completed trials on a budget (``tuner.bohb_min_points = 10``, as
  Optuna's TPE starts after 10), since BOHB's own rule (hyperparameters + 1) is never
  met by the 30-trial schedule, on the ``own`` ranges, against ``pipeline_own_lr``;
  ``pipeline_bohb_10_range``: the same BOHB on the default's ranges (the range test),
  against ``pipeline``, so the two differ only in how trials are sampled.

Data sets: scikit-learn's bundled ``digits`` and ``breast_cancer``, and ``generated``:
20,000 rows from ``make_classification`` (20 features, 3 classes, 3 % label noise).

Each (method, data set, seed) runs in its own process (``--jobs`` at a time, the CPU
threads split between them) and writes one JSON file, so an interrupted run continues
where it stopped. The summary reports the test accuracy (mean +- std over seeds), the
best-so-far validation accuracy against the epochs spent (a plot per data set), and the
budget each search needed to reach RandomSearch's final validation accuracy, seed by seed
and for the median seed (for every search) and on the curve averaged over seeds (for the
pipeline), and the pipeline against each baseline seed by seed (the same split for both).

Usage:
    python benchmarks/search_quality.py [--seeds 5] [--first-seed 0] [--jobs 2] [--methods ...]
        [--results DIR] [--also-runs DIR ...]
    python benchmarks/search_quality.py --tiny     # what CI runs: every code path, 2 epochs

Writes ``benchmarks/results/search_quality.{md,json}`` and ``search_quality_<data>.png``
(``search_quality_tiny.*`` with ``--tiny``); the per-run files go to
``benchmarks/results/search_quality_runs/``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from keras_baselines import (
    FixedParams,
    OptunaParams,
    best_at,
    best_so_far,
    cpu_model,
    docs_hypermodel,
    fit_log,
    trial_records,
)

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parent.parent

BASELINES = ("pipeline", "kt_random", "kt_hyperband", "optuna_tpe", "untuned")
#: RandomSearch re-drawn (another sampling and initialisation seed, the same split).
REFERENCES = ("kt_random_again",)
#: The re-drawn RandomSearch's seed offset.
RESEED = 1000
VARIANTS = (
    "pipeline_random_first",
    "pipeline_trial_schedule",
    "pipeline_shared_lr",
    "pipeline_own_lr",
    "pipeline_bohb",
    "pipeline_bohb_10",
    "pipeline_bohb_10_range",
    "pipeline_bayesian",
)
#: Variants whose setting was removed (`search.schedule_horizon`): their recorded runs
#: stay in the summary, and nothing runs them again.
RECORDED = ("pipeline_trial_schedule",)
#: Rows read from another method's runs instead of searching again: the pipeline's
#: searches scored by their best trial's model alone (``export.ensemble = 1``).
DERIVED = ("pipeline_single_model",)
# The methods with runs of their own.
SEARCHES = BASELINES + REFERENCES + tuple(v for v in VARIANTS if v not in RECORDED)
#: What ``--tiny`` runs unless ``--methods`` says otherwise: every code path once (the
#: variants are the pipeline's with other settings, which a fast test loads).
TINY_METHODS = BASELINES + REFERENCES
METHODS = BASELINES + REFERENCES + VARIANTS + DERIVED
DATASETS = ("digits", "breast_cancer", "generated")

GENERATED_ROWS = 20_000


def _budget_settings(tiny: bool) -> dict[str, int]:
    """max_epochs and factor of every Hyperband-like method (the pipeline's defaults)."""
    return {"max_epochs": 2, "factor": 3} if tiny else {"max_epochs": 20, "factor": 3}


# --------------------------------------------------------------------------- data


def _data_source(name: str, cache: Path, tiny: bool) -> str:
    """The pipeline's ``data.source`` for a data set (the generated one written once)."""
    if name != "generated":
        return f"builtin:{name}"
    import numpy as np
    from sklearn.datasets import make_classification

    rows = 600 if tiny else GENERATED_ROWS
    path = cache / f"generated_{rows}.npz"
    if not path.exists():
        x, y = make_classification(
            n_samples=rows,
            n_features=20,
            n_informative=10,
            n_redundant=4,
            n_classes=3,
            flip_y=0.03,
            class_sep=0.8,
            random_state=0,
        )
        cache.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial.npz")
        np.savez(partial, x=x.astype("float32"), y=y.astype("int32"))
        partial.replace(path)
    return str(path)


def _arrays(source: str, seed: int) -> dict[str, Any]:
    """The pipeline's split of a data set as standardised arrays (for the baselines)."""
    from sklearn.preprocessing import StandardScaler

    from kt_pipeline.config import DataConfig
    from kt_pipeline.data import load_dataset
    from kt_pipeline.splits import split_dataset

    defaults = DataConfig()
    dataset = load_dataset(source)
    splits = split_dataset(
        dataset,
        validation_fraction=defaults.validation_fraction,
        test_fraction=defaults.test_fraction,
        seed=seed,
    )
    scaler = StandardScaler().fit(splits.train.frame.to_numpy("float32"))

    def scaled(part: Any) -> Any:
        return scaler.transform(part.frame.to_numpy("float32")).astype("float32")

    return {
        "x_train": scaled(splits.train),
        "y_train": splits.train.y,
        "x_val": scaled(splits.validation),
        "y_val": splits.validation.y,
        "x_test": scaled(splits.test),
        "y_test": splits.test.y,
        "classes": dataset.num_classes,
    }


# --------------------------------------------------------------------------- curves


# --------------------------------------------------------------------------- methods


def _test_accuracy(model: Any, data: dict[str, Any]) -> float:
    import numpy as np

    probabilities = np.asarray(model.predict(data["x_test"], verbose=0))
    return float(np.mean(probabilities.argmax(axis=-1) == data["y_test"]))


def _run_keras_tuner(
    method: str,
    data: dict[str, Any],
    *,
    seed: int,
    budget: int,
    settings: dict[str, int],
    work: Path,
) -> dict[str, Any]:
    import keras_tuner

    hypermodel = docs_hypermodel(data["classes"])
    common = {"objective": "val_accuracy", "seed": seed, "directory": str(work)}
    if method in ("kt_random", *REFERENCES):
        tuner: Any = keras_tuner.RandomSearch(
            hypermodel, max_trials=budget // settings["max_epochs"], **common
        )
    else:
        tuner = keras_tuner.Hyperband(
            hypermodel, max_epochs=settings["max_epochs"], factor=settings["factor"], **common
        )
    log = fit_log("val_accuracy")
    tuner.search(
        data["x_train"],
        data["y_train"],
        epochs=settings["max_epochs"],
        validation_data=(data["x_val"], data["y_val"]),
        callbacks=[log()],
        verbose=0,
    )
    records = log.records
    return {
        "test_accuracy": _test_accuracy(tuner.get_best_models(1)[0], data),
        "curve": best_so_far(records),
        "trials": len(records),
    }


def _run_optuna(
    data: dict[str, Any], *, seed: int, budget: int, settings: dict[str, int]
) -> dict[str, Any]:
    import keras
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    hypermodel = docs_hypermodel(data["classes"])
    spent = {"epochs": 0}
    best: dict[str, Any] = {"score": -math.inf, "weights": None, "params": None}
    records: list[dict[str, Any]] = []

    class Report(keras.callbacks.Callback):
        """Reports each epoch to Optuna; keeps the best epoch's weights (as KerasTuner
        checkpoints do) and stops when the pruner or the budget says so."""

        def __init__(self, trial: Any) -> None:
            super().__init__()
            self.trial, self.epochs, self.best, self.weights = trial, 0, -math.inf, None

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            self.epochs += 1
            spent["epochs"] += 1
            score = float(logs["val_accuracy"])
            if score > self.best:
                self.best, self.weights = score, self.model.get_weights()
            self.trial.report(score, epoch)
            if self.trial.should_prune() or spent["epochs"] >= budget:
                self.model.stop_training = True

    def objective(trial: Any) -> float:
        keras.backend.clear_session()
        hp = OptunaParams(trial)
        model = hypermodel(hp)
        report = Report(trial)
        model.fit(
            data["x_train"],
            data["y_train"],
            epochs=settings["max_epochs"],
            validation_data=(data["x_val"], data["y_val"]),
            callbacks=[report],
            verbose=0,
        )
        records.append({"epochs": report.epochs, "score": report.best})
        if report.best > best["score"]:
            best.update(score=report.best, weights=report.weights, params=dict(trial.params))
        return report.best

    sampler = optuna.samplers.TPESampler(seed=seed)
    pruner = optuna.pruners.HyperbandPruner(
        min_resource=1, max_resource=settings["max_epochs"], reduction_factor=settings["factor"]
    )
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    study.optimize(
        objective,
        callbacks=[lambda study, _: study.stop() if spent["epochs"] >= budget else None],
    )
    keras.backend.clear_session()
    model = hypermodel(FixedParams(best["params"]))
    model.build((None, data["x_train"].shape[1]))
    model.set_weights(best["weights"])
    return {
        "test_accuracy": _test_accuracy(model, data),
        "curve": best_so_far(records),
        "trials": len(records),
    }


def _run_untuned(data: dict[str, Any], *, budget: int) -> dict[str, Any]:
    import keras

    model = keras.Sequential(
        [
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(data["classes"], activation="softmax"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    stop = keras.callbacks.EarlyStopping(
        monitor="val_accuracy", mode="max", patience=10, restore_best_weights=True
    )
    history = model.fit(
        data["x_train"],
        data["y_train"],
        epochs=budget,
        validation_data=(data["x_val"], data["y_val"]),
        callbacks=[stop],
        verbose=0,
    )
    scores = history.history["val_accuracy"]
    curve = [[epoch + 1, round(max(scores[: epoch + 1]), 5)] for epoch in range(len(scores))]
    return {"test_accuracy": _test_accuracy(model, data), "curve": curve, "trials": 1}


def pipeline_overrides(
    method: str, source: str, *, seed: int, budget: int, settings: dict[str, int], work: Path
) -> list[str]:
    """The ``--set`` overrides of a pipeline method: the shared budget, and the
    variant's own settings."""
    overrides = [
        f"data.source={source!r}",
        f"runtime.experiment_dir={str(work)!r}",
        f"runtime.seed={seed}",
        f"tuner.max_epochs={settings['max_epochs']}",
        f"tuner.factor={settings['factor']}",
        "export.enabled=false",
        "tuner.objective='val_accuracy'",  # the metric every method is scored by
    ]
    # The learning-rate setups: the default is the range test ("auto"); "shared" is one
    # range for every optimizer; "own" gives plain SGD and Adagrad ten times the range.
    shared = "search.optimizer_learning_rates={}"
    own = "search.optimizer_learning_rates={sgd=[0.001, 0.1], adagrad=[0.001, 0.1]}"
    if method == "pipeline_random_first":
        overrides.append("tuner.first_trial='random'")
    elif method == "pipeline_shared_lr":
        overrides.append(shared)
    elif method == "pipeline_own_lr":
        overrides.append(own)
    elif method == "pipeline_bohb":
        overrides += ["tuner.algorithm='bohb'", shared]
    elif method == "pipeline_bohb_10_range":
        overrides += ["tuner.algorithm='bohb'", "tuner.bohb_min_points=10"]
    elif method == "pipeline_bohb_10":
        overrides += ["tuner.algorithm='bohb'", "tuner.bohb_min_points=10", own]
    elif method == "pipeline_bayesian":
        trials = budget // settings["max_epochs"]
        overrides += ["tuner.algorithm='bayesian'", f"tuner.max_trials={trials}", shared]
    return overrides


def _run_pipeline(
    method: str, source: str, *, seed: int, budget: int, settings: dict[str, int], work: Path
) -> dict[str, Any]:
    from hypermodels.features import model_inputs
    from kt_pipeline.config import load_config
    from kt_pipeline.data import load_dataset
    from kt_pipeline.finish import load_best_model
    from kt_pipeline.pipeline import run_search
    from kt_pipeline.splits import split_dataset

    overrides = pipeline_overrides(
        method, source, seed=seed, budget=budget, settings=settings, work=work
    )
    config = load_config(None, overrides)
    search = run_search(config)
    dataset = load_dataset(source)
    test = split_dataset(
        dataset,
        validation_fraction=config.data.validation_fraction,
        test_fraction=config.data.test_fraction,
        seed=seed,
    ).test
    import numpy as np

    def accuracy(ensemble: int | None) -> float:
        model, schema = load_best_model(config, ensemble=ensemble)
        probabilities = np.asarray(model.predict(model_inputs(schema, test.frame), verbose=0))
        if probabilities.shape[-1] == 1:  # binary: one sigmoid output
            predicted = (probabilities[:, 0] > 0.5).astype("int32")
        else:
            predicted = probabilities.argmax(axis=-1)
        return float(np.mean(predicted == test.y))

    records = trial_records(work)
    return {
        "test_accuracy": accuracy(None),  # what the export serves (export.ensemble)
        "single_model_test_accuracy": accuracy(1),
        "curve": best_so_far(records),
        "trials": len(records),
        "best_hyperparameters": search.best_hyperparameters,
    }


def hyperband_budget(settings: dict[str, int]) -> int:
    """Total epochs of the pipeline's default Hyperband schedule (KerasTuner's own
    bracket arithmetic, as `kt-pipeline plan` prints it)."""
    import keras_tuner

    from kt_pipeline.plan import schedule

    oracle = keras_tuner.oracles.HyperbandOracle(
        objective="val_accuracy", max_epochs=settings["max_epochs"], factor=settings["factor"]
    )
    return schedule(oracle, max_epochs=settings["max_epochs"]).epochs


def run_job(method: str, dataset: str, seed: int, *, tiny: bool, threads: int, out: Path) -> None:
    """One (method, data set, seed): runs it and writes its JSON file."""
    import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    import keras

    # The seed fixes the split; the re-drawn RandomSearch samples and initialises anew.
    search_seed = seed + RESEED if method in REFERENCES else seed
    keras.utils.set_random_seed(search_seed)
    settings = _budget_settings(tiny)
    budget = hyperband_budget(settings)
    cache = Path(tempfile.gettempdir()) / "kt_pipeline_bench_data"
    source = _data_source(dataset, cache, tiny)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        if method.startswith("pipeline"):
            result = _run_pipeline(
                method, source, seed=seed, budget=budget, settings=settings, work=work
            )
        else:
            data = _arrays(source, seed)
            if method in ("kt_random", "kt_hyperband", *REFERENCES):
                result = _run_keras_tuner(
                    method, data, seed=search_seed, budget=budget, settings=settings, work=work
                )
            elif method == "optuna_tpe":
                result = _run_optuna(data, seed=seed, budget=budget, settings=settings)
            else:
                result = _run_untuned(data, budget=budget)
    result.update(
        method=method,
        dataset=dataset,
        seed=seed,
        budget=budget,
        epochs=result["curve"][-1][0] if result["curve"] else 0,
        best_validation=result["curve"][-1][1] if result["curve"] else None,
        seconds=round(time.perf_counter() - started, 1),
        cpu=cpu_model(),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial")
    partial.write_text(json.dumps(result) + "\n", encoding="utf-8")
    partial.replace(out)


# --------------------------------------------------------------------------- summary


def _epochs_to_reach(curve: list[list[float]], target: float) -> float | None:
    return next((spent for spent, best in curve if best >= target - 1e-9), None)


def summarise(
    runs: list[dict[str, Any]], *, command: str, tiny: bool
) -> tuple[str, dict[str, Any]]:
    """The Markdown table and the JSON summary of all finished runs."""
    runs = [*runs, *_single_model_runs(runs)]
    methods = [m for m in METHODS if any(r["method"] == m for r in runs)]
    datasets = [d for d in DATASETS if any(r["dataset"] == d for r in runs)]
    cells: dict[str, dict[str, Any]] = {}
    lines = [
        "# Search quality at equal budget",
        "",
        f"`{command}` ({platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}; test accuracy mean +- std over seeds; every method gets "
        f"the pipeline's default Hyperband budget of {runs[0]['budget']} epochs)",
        "",
        *_header(datasets),
    ]
    for method in methods:
        row = []
        for dataset in datasets:
            cell = [r for r in runs if r["method"] == method and r["dataset"] == dataset]
            scores = [r["test_accuracy"] for r in cell]
            if not scores:
                row.append("-")
                continue
            std = statistics.stdev(scores) if len(scores) > 1 else 0.0
            cells.setdefault(method, {})[dataset] = {
                "test_accuracy_mean": round(statistics.fmean(scores), 4),
                "test_accuracy_std": round(std, 4),
                "seeds": len(scores),
                "epochs_mean": round(statistics.fmean(r["epochs"] for r in cell), 1),
                "seconds_mean": round(statistics.fmean(r["seconds"] for r in cell), 1),
            }
            row.append(f"{statistics.fmean(scores):.4f} +- {std:.4f} (n={len(scores)})")
        lines.append(f"| {method} | " + " | ".join(row) + " |")
    lines += ["", "Epochs spent and seconds per run (mean):", ""]
    lines += _header(datasets)
    for method in methods:
        row = [
            f"{cells[method][d]['epochs_mean']:.0f} ep, {cells[method][d]['seconds_mean']:.0f} s"
            if d in cells[method]
            else "-"
            for d in datasets
        ]
        lines.append(f"| {method} | " + " | ".join(row) + " |")
    lines += _hosts_note(runs, methods)

    budget_goal = _budget_goal_table(runs, methods, datasets)
    goals: dict[str, Any] = {}
    lines += ["", "## Goals", ""]
    for dataset in datasets:
        ours = cells.get("pipeline", {}).get(dataset)
        if ours is None:
            continue
        beaten = [
            m
            for m in BASELINES[1:]
            if dataset in cells.get(m, {})
            and cells[m][dataset]["test_accuracy_mean"] > ours["test_accuracy_mean"]
        ]
        budget = budget_goal.get("pipeline", {}).get(dataset, {})
        fractions = budget.get("fractions", [])
        reached = [f for f in fractions if f is not None]
        goals[dataset] = {
            "baselines_with_higher_mean": beaten,
            "fraction_of_random_budget_to_reach_its_final_validation": fractions,
        }
        median = f"{statistics.median(reached):.2f}" if reached else "never"
        within = budget.get("within_a_third", 0)
        goals[dataset]["seeds_within_a_third"] = within
        mean_fraction = _mean_curve_fraction(runs, "pipeline", dataset)
        goals[dataset]["mean_curve_fraction_of_random_budget"] = mean_fraction
        mean_reach = "never reaches RandomSearch's mean final validation accuracy"
        if mean_fraction is not None:
            mean_reach = (
                f"reaches RandomSearch's mean final validation accuracy at {mean_fraction:.2f} "
                "of its epochs"
            )
        lines.append(
            f"- {dataset}: baselines with a higher mean test accuracy than `pipeline`: "
            f"{', '.join(beaten) or 'none'}; `pipeline` reached RandomSearch's final validation "
            f"accuracy in {len(reached)}/{len(fractions)} seeds, **within a third of "
            f"RandomSearch's epochs in {within}/{len(fractions)}** (median of the seeds that "
            f"reached it {median}; per seed: {fractions}); averaged over seeds, its "
            f"best-so-far curve {mean_reach}."
        )
    if budget_goal:
        lines += [
            "",
            "## Budget to reach RandomSearch's final validation accuracy, every search",
            "",
            "Per data set: the seeds on which the method's best-so-far validation accuracy",
            "reached RandomSearch's final one within a third of RandomSearch's epochs, the",
            "seeds on which it reached it at all, and the median seed's fraction of",
            "RandomSearch's epochs (a seed that never reached it counts as more than any).",
            "",
            *_header([*datasets, "within a third, all data sets"]),
        ]
        for method, by_dataset in budget_goal.items():
            row = [_budget_cell(by_dataset[d]) if d in by_dataset else "-" for d in datasets]
            total = sum(cell["within_a_third"] for cell in by_dataset.values())
            seeds = sum(len(cell["fractions"]) for cell in by_dataset.values())
            lines.append(f"| {method} | " + " | ".join(row) + f" | {total}/{seeds} |")
    at_a_third = _at_a_third(runs, methods, datasets)
    if at_a_third:
        lines += [
            "",
            "## Best-so-far validation accuracy at a third of RandomSearch's epochs",
            "",
            "Mean over seeds of each search's best validation accuracy after a third of",
            "RandomSearch's epochs on that seed, against RandomSearch's final one (first row).",
            "",
            *_header(datasets),
        ]
        for method, by_dataset in at_a_third.items():
            row = [f"{by_dataset[d]:.4f}" if d in by_dataset else "-" for d in datasets]
            lines.append(f"| {method} | " + " | ".join(row) + " |")
    comparisons = _paired_comparisons(runs)
    if comparisons:
        lines += [
            "",
            "## Seed by seed",
            "",
            "Each seed fixes the split, so two methods on one seed face the same data: the",
            "difference in test accuracy (first minus second), and the seeds on which the",
            "first was better, worse or equal.",
            "",
            "| first | second | data set | mean difference | better / worse / equal |",
            "| --- | --- | --- | --- | --- |",
        ]
        for row in comparisons:
            lines.append(
                f"| {row['first']} | {row['second']} | {row['dataset']} | "
                f"{row['mean_difference']:+.4f} | {row['better']} / {row['worse']} / "
                f"{row['equal']} |"
            )
    summary = {
        "cells": cells,
        "goals": goals,
        "budget_goal": budget_goal,
        "best_validation_at_a_third": at_a_third,
        "comparisons": comparisons,
        "command": command,
        "tiny": tiny,
    }
    return "\n".join(lines) + "\n", summary


def _header(columns: list[str]) -> list[str]:
    """A Markdown table's header and rule: a method column, then one per entry."""
    return ["| method | " + " | ".join(columns) + " |", "|" + " --- |" * (len(columns) + 1)]


def _budget_cell(cell: dict[str, Any]) -> str:
    """One data set's budget goal: within a third / seeds (reached; median fraction)."""
    median = "never" if cell["median"] is None else f"{cell['median']:.2f}"
    return (
        f"{cell['within_a_third']}/{len(cell['fractions'])} "
        f"(reached {cell['reached']}; median {median})"
    )


def _hosts_note(runs: list[dict[str, Any]], methods: list[str]) -> list[str]:
    """Which CPU each method's runs used, where they differ: the seconds above are
    only comparable between rows run on one kind of machine."""
    hosts = {
        method: sorted({r.get("cpu") or "not recorded" for r in runs if r["method"] == method})
        for method in methods
    }
    if len({cpu for cpus in hosts.values() for cpu in cpus}) < 2:
        return []
    by_cpu: dict[str, list[str]] = {}
    for method, cpus in hosts.items():
        by_cpu.setdefault(" / ".join(cpus), []).append(method)
    listed = "; ".join(f"{cpu}: {', '.join(names)}" for cpu, names in sorted(by_cpu.items()))
    return [
        "",
        "Seconds are comparable only between rows run on the same CPU (the runs "
        f"accumulate over several days and hosts): {listed}.",
    ]


def _random_runs(runs: list[dict[str, Any]], dataset: str) -> dict[int, dict[str, Any]]:
    """RandomSearch's run of each seed on a data set: the budget goal's yardstick."""
    return {r["seed"]: r for r in runs if r["method"] == "kt_random" and r["dataset"] == dataset}


def _fractions_of_random_budget(
    runs: list[dict[str, Any]], method: str, dataset: str
) -> list[float | None]:
    """Seed by seed, the fraction of RandomSearch's epochs `method` spent before its
    best-so-far validation accuracy reached RandomSearch's final one (None: never)."""
    fractions: list[float | None] = []
    for seed in sorted({r["seed"] for r in runs if r["dataset"] == dataset}):
        by = {r["method"]: r for r in runs if r["dataset"] == dataset and r["seed"] == seed}
        if method in by and "kt_random" in by and by["kt_random"]["curve"]:
            needed = _epochs_to_reach(by[method]["curve"], by["kt_random"]["best_validation"])
            fractions.append(
                None if needed is None else round(needed / by["kt_random"]["epochs"], 3)
            )
    return fractions


def _mean_curve_fraction(runs: list[dict[str, Any]], method: str, dataset: str) -> float | None:
    """The fraction of RandomSearch's (mean) epochs at which `method`'s best-so-far
    validation accuracy, averaged over seeds, first reaches the mean of RandomSearch's
    final ones (None: never). Counted only where every seed has a finished trial."""
    mine = {
        r["seed"]: r["curve"] for r in runs if r["method"] == method and r["dataset"] == dataset
    }
    random = _random_runs(runs, dataset)
    seeds = sorted(mine.keys() & random.keys())
    if not seeds:
        return None
    target = statistics.fmean(random[seed]["best_validation"] for seed in seeds)
    epochs = statistics.fmean(random[seed]["epochs"] for seed in seeds)
    for spent in sorted({spent for seed in seeds for spent, _ in mine[seed]}):
        values = [best_at(mine[seed], spent) for seed in seeds]
        reached = [value for value in values if value is not None]
        if len(reached) == len(seeds) and statistics.fmean(reached) >= target - 1e-9:
            return round(spent / epochs, 3)
    return None


def _budget_goal_table(
    runs: list[dict[str, Any]], methods: list[str], datasets: list[str]
) -> dict[str, dict[str, dict[str, Any]]]:
    """The budget goal for every method with a search of its own (RandomSearch is the
    yardstick, and a derived row shares its pipeline run's curve)."""
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for method in methods:
        if method == "kt_random" or method in DERIVED:
            continue
        for dataset in datasets:
            fractions = _fractions_of_random_budget(runs, method, dataset)
            if fractions:
                table.setdefault(method, {})[dataset] = {
                    "fractions": fractions,
                    "reached": sum(f is not None for f in fractions),
                    "within_a_third": sum(f is not None and f <= 1 / 3 for f in fractions),
                    "median": _median_fraction(fractions),
                }
    return table


def _median_fraction(fractions: list[float | None]) -> float | None:
    """The median seed's fraction of RandomSearch's budget, a seed that never reached
    RandomSearch's final score counting as more than any budget (None: the median seed
    never reached it). Unlike "every seed", it does not ask a search to beat the luck
    of RandomSearch's maximum on each split; unlike the seed-averaged curve, one seed
    that never gets there cannot hide the others."""
    median = statistics.median(math.inf if f is None else f for f in fractions)
    return None if math.isinf(median) else round(median, 3)


def _at_a_third(
    runs: list[dict[str, Any]], methods: list[str], datasets: list[str]
) -> dict[str, dict[str, float]]:
    """Per search and data set, the mean over seeds of the best validation accuracy
    after a third of RandomSearch's epochs (a seed with no finished trial by then
    counts as 0), and RandomSearch's final one as ``kt_random (final)``: the budget
    goal as a level rather than a count, so one lucky maximum weighs as one seed."""
    table: dict[str, dict[str, float]] = {}
    for dataset in datasets:
        random = _random_runs(runs, dataset)
        if not random:
            continue
        finals = [r["best_validation"] for r in random.values()]
        table.setdefault("kt_random (final)", {})[dataset] = round(statistics.fmean(finals), 4)
        for method in methods:
            if method in DERIVED:
                continue
            mine = [
                best_at(r["curve"], random[r["seed"]]["epochs"] / 3) or 0.0
                for r in runs
                if r["method"] == method and r["dataset"] == dataset and r["seed"] in random
            ]
            if mine:
                table.setdefault(method, {})[dataset] = round(statistics.fmean(mine), 4)
    return table


def _single_model_runs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``pipeline_single_model`` rows: each pipeline run's search, scored by its best
    trial's model alone (runs from before the ensemble export have no such score)."""
    return [
        {**r, "method": "pipeline_single_model", "test_accuracy": r["single_model_test_accuracy"]}
        for r in runs
        if r["method"] == "pipeline" and "single_model_test_accuracy" in r
    ]


#: (first, second) method pairs compared seed by seed, where both ran.
_PAIRS = (
    # The goal's comparison, paired: each seed's split is the same for both.
    *(("pipeline", baseline) for baseline in BASELINES[1:]),
    ("pipeline", "pipeline_single_model"),
    # Each scores what it would export (the ensemble).
    ("pipeline", "pipeline_random_first"),
    ("pipeline_trial_schedule", "pipeline"),
    ("pipeline", "pipeline_shared_lr"),
    ("pipeline_bohb", "pipeline_shared_lr"),
    ("pipeline_bayesian", "pipeline_shared_lr"),
    ("pipeline_bohb", "pipeline_bayesian"),
    ("pipeline_own_lr", "pipeline_shared_lr"),
    ("pipeline_bohb_10", "pipeline_own_lr"),
    ("pipeline_bohb_10_range", "pipeline"),
)


def _paired_comparisons(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (pair, data set): the mean per-seed difference in test accuracy and the
    count of seeds on which the first method was better, worse or equal."""
    score = {(r["method"], r["dataset"], r["seed"]): r["test_accuracy"] for r in runs}
    rows = []
    for first, second in _PAIRS:
        for dataset in DATASETS:
            seeds = sorted(
                seed
                for method, data, seed in score
                if method == first and data == dataset and (second, dataset, seed) in score
            )
            if not seeds:
                continue
            diffs = [score[first, dataset, s] - score[second, dataset, s] for s in seeds]
            rows.append(
                {
                    "first": first,
                    "second": second,
                    "dataset": dataset,
                    "seeds": len(seeds),
                    "mean_difference": round(statistics.fmean(diffs), 4),
                    "better": sum(d > 0 for d in diffs),
                    "worse": sum(d < 0 for d in diffs),
                    "equal": sum(d == 0 for d in diffs),
                }
            )
    return rows


def _line_style(method: str, colour: int) -> dict[str, Any]:
    """The default search bold and black, baselines solid, the re-drawn yardstick
    dotted, variants dashed: with a dozen methods, colour alone repeats."""
    if method == "pipeline":
        return {"color": "black", "linewidth": 2.2, "zorder": 5}
    style = "-" if method in BASELINES else ":" if method in REFERENCES else "--"
    return {"color": f"C{colour % 10}", "linestyle": style, "linewidth": 1.2}


def _plot(runs: list[dict[str, Any]], dataset: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    budget = runs[0]["budget"]
    grid = np.arange(1, budget + 1)
    figure, axes = plt.subplots(figsize=(8, 5))
    shown: list[float] = []
    # A derived row has its source's curve.
    for colour, method in enumerate(BASELINES + REFERENCES + VARIANTS):
        curves = [r["curve"] for r in runs if r["method"] == method and r["dataset"] == dataset]
        if not curves:
            continue
        values = np.array([[best_at(c, g) for g in grid] for c in curves], dtype=float)
        started = ~np.isnan(values).all(axis=0)  # no trial has ended before this
        mean = np.nanmean(values[:, started], axis=0)
        axes.plot(grid[started], mean, label=method, **_line_style(method, colour))
        shown += list(mean[grid[started] >= budget // 20])
    random = _random_runs(runs, dataset).values()
    if random:  # the budget goal: RandomSearch's final score within a third of its epochs
        target = statistics.fmean(r["best_validation"] for r in random)
        third = statistics.fmean(r["epochs"] for r in random) / 3
        axes.axhline(target, color="grey", linewidth=0.8, linestyle="-.")
        axes.axvline(third, color="grey", linewidth=0.8, linestyle="-.")
        axes.annotate(
            "RandomSearch's final (mean) / a third of its epochs",
            (third, target),
            xytext=(4, 4),
            textcoords="offset points",
            fontsize=7,
            color="grey",
        )
    if shown:  # the first epochs of the untuned model would squash the rest
        axes.set_ylim(bottom=min(shown) - 0.005)
    axes.set_xlabel("training epochs spent")
    axes.set_ylabel("best validation accuracy so far (mean over seeds)")
    seeds = len({r["seed"] for r in runs if r["dataset"] == dataset})
    axes.set_title(f"{dataset}: best-so-far validation accuracy against budget ({seeds} seeds)")
    axes.legend(fontsize=7, loc="lower right", ncol=2)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--first-seed", type=int, default=0, help="seeds first .. first + seeds - 1 (fresh splits)"
    )
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time")
    parser.add_argument("--methods", help="default: every search (with --tiny: TINY_METHODS)")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--tiny", action="store_true", help="1 seed, a 2-epoch schedule")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument(
        "--also-runs",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="another run folder whose finished runs count too (never run there): "
        "summarises runs made with other --first-seed or --results together",
    )
    parser.add_argument("--job", nargs=3, help=argparse.SUPPRESS)  # one run, in a child
    parser.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.job:
        method, dataset, seed = args.job
        run_job(method, dataset, int(seed), tiny=args.tiny, threads=args.threads, out=args.out)
        return

    name = "search_quality_tiny" if args.tiny else "search_quality"
    runs_dir = args.results / f"{name}_runs"
    seeds = range(args.first_seed, args.first_seed + (1 if args.tiny else args.seeds))
    default = TINY_METHODS if args.tiny else SEARCHES
    methods = [m for m in (args.methods or ",".join(default)).split(",") if m]
    datasets = [d for d in args.datasets.split(",") if d]
    unknown = sorted(set(methods) - set(SEARCHES)) + sorted(set(datasets) - set(DATASETS))
    if unknown:
        parser.error(f"unknown method or data set: {', '.join(unknown)}")
    # Baselines first, seed by seed, so a partial run already compares every method.
    jobs = [
        (m, d, s)
        for group in (BASELINES, REFERENCES, VARIANTS)
        for s in seeds
        for d in datasets
        for m in methods
        if m in group
    ]
    threads = max(1, (os.cpu_count() or 1) // max(1, args.jobs))

    def launch(job: tuple[str, str, int]) -> str:
        method, dataset, seed = job
        out = runs_dir / f"{method}-{dataset}-{seed}.json"
        if any((folder / out.name).exists() for folder in (runs_dir, *args.also_runs)):
            return f"{out.name}: kept"
        command = [
            sys.executable, __file__, "--job", method, dataset, str(seed),
            "--threads", str(threads), "--out", str(out),
        ] + (["--tiny"] if args.tiny else [])  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{method} {dataset} seed {seed} failed:\n{done.stderr[-3000:]}")
        return f"{out.name}: {json.loads(out.read_text())['test_accuracy']:.4f}"

    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for line in pool.map(launch, jobs):
            print(line, flush=True)

    files = {p.name: p for folder in (*args.also_runs, runs_dir) for p in folder.glob("*.json")}
    runs = [json.loads(path.read_text()) for _, path in sorted(files.items())]
    runs = [
        r
        for r in runs
        if r["method"] in methods and r["dataset"] in datasets and r["seed"] in seeds
    ]
    command = " ".join(["python benchmarks/search_quality.py", *sys.argv[1:]])
    text, summary = summarise(runs, command=command, tiny=args.tiny)
    args.results.mkdir(parents=True, exist_ok=True)
    for dataset in datasets:
        _plot(runs, dataset, args.results / f"{name}_{dataset}.png")
    (args.results / f"{name}.md").write_text(text, encoding="utf-8")
    (args.results / f"{name}.json").write_text(json.dumps(summary, indent=2) + "\n", "utf-8")
    print(text)


if __name__ == "__main__":
    main()
