"""Real tables: kt-pipeline's default search against what tabular users run instead.

Each (method, table, seed) sees the same data: the table split 80/20 by the seed
(stratified for classification). Every method fits on the 80 % and is scored on the
20 % that nothing else saw:

* ``pipeline``: the ``kt-pipeline search`` command given the 80 % as a Parquet file,
  its label and the seed, nothing else (it splits validation and its own test rows off
  the 80 %). Its exported SavedModel is scored on the 20 % through
  ``tf.saved_model.load`` with the raw columns, as a client that imports nothing of ours.
  Seconds are the whole command, everything included. ``pipeline_<variant>`` runs the
  same with config overrides (`PIPELINE_VARIANTS`: candidates for the next default);
  only ``--methods`` runs them. `RECORDED` names are earlier defaults: their runs stay
  in the summary to compare with, and nothing runs them again.
* ``lightgbm``, ``xgboost``, ``hist_gb``: LightGBM, XGBoost and scikit-learn's
  HistGradientBoosting with their defaults, string columns as pandas categories
  (HistGradientBoosting takes at most 255 levels per category; a column with more is
  given as its integer codes, as a user would).
* ``lightgbm_pipeline_rows``: LightGBM's defaults fitted on the rows the pipeline
  trains on (its split of the 80 %, without its validation and its own test rows):
  the comparison on equal data, which says how much of a gap to LightGBM is rows the
  pipeline keeps out to choose and to report its held-out score.
* ``realmlp_td``: pytabkit's RealMLP-TD with its defaults (string columns as pandas
  categories), the untuned MLP a tuned search must beat. It needs PyTorch, so it is an
  optional reference (``pip install -e '.[reference]'``), never run by CI.
* ``kt_random``, ``kt_hyperband``, ``optuna_tpe``: KerasTuner's RandomSearch and
  Hyperband and Optuna's TPE (with its Hyperband pruner) on the model KerasTuner's
  getting-started guide tunes, the columns encoded as a user would with scikit-learn
  (median-imputed and standardised numbers, one-hot strings with at most 32 levels
  each). They train and validate on the rows the pipeline does (its split of the 80 %,
  without the pipeline's own test rows), tune the pipeline's objective (val_auc,
  val_accuracy or val_loss in the label's units, as the pipeline reports it), and get the
  pipeline's budget in epochs (the epochs its run on the same seed trained, or 100
  without one). Their best-so-far validation curves and the pipeline's give the
  summary's anytime table.

Scores are points: AUC x 100 for binary tables, accuracy x 100 for multiclass, R^2 x 100
for regression. Each run is one process writing one JSON file, so an interrupted
benchmark continues where it stopped; the summary gives each method's mean +- std over
seeds and seconds per table, and the pipeline against LightGBM seed by seed.

Usage:
    python benchmarks/real_table_quality.py [--seeds 5] [--first-seed 0]
        [--methods pipeline,lightgbm,...] [--tables fair,benefits,...] [--tiny]
        [--summary-only]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

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
from real_tables import TABLES, Table

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parent.parent
# Environment variable that carries `--keep-experiments` to the per-run child processes.
_KEEP = "REAL_TABLE_KEEP_EXPERIMENTS"
TEST_FRACTION = 0.2
DEFAULT_BUDGET = 100  # epochs for a Keras baseline with no pipeline run to match
MAX_ONE_HOT = 32
TINY_ROWS = 1_500
TINY_BUDGET, TINY_EPOCHS = 6, 2  # the tiny run's Keras baselines: epochs in all, per trial


# --------------------------------------------------------------------------- data


def split(table: Table, seed: int, *, tiny: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The seeded 80/20 split (stratified for classification); `tiny` keeps 1,500 rows."""
    from sklearn.model_selection import train_test_split

    frame = table.load()
    if tiny:
        frame = frame.sample(n=min(TINY_ROWS, len(frame)), random_state=seed)
    stratify = frame[table.label] if table.task != "regression" else None
    train, test = train_test_split(
        frame, test_size=TEST_FRACTION, random_state=seed, stratify=stratify
    )
    return train.reset_index(drop=True), test.reset_index(drop=True)


def _features(frame: pd.DataFrame, table: Table) -> pd.DataFrame:
    return frame.drop(columns=[table.label])


def _string_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]


def _classes(train: pd.DataFrame, table: Table) -> list[Any]:
    return sorted(train[table.label].unique())


def _targets(frame: pd.DataFrame, table: Table, classes: list[Any]) -> np.ndarray:
    if table.task == "regression":
        return frame[table.label].to_numpy("float64")
    index = {c: i for i, c in enumerate(classes)}
    return frame[table.label].map(index).fillna(-1).to_numpy("int64")


def score(table: Table, y_true: np.ndarray, prediction: np.ndarray) -> float:
    """Points: AUC, accuracy or R^2, x 100. `prediction` is class probabilities
    (rows x classes) for classification, values for regression."""
    from sklearn.metrics import accuracy_score, r2_score, roc_auc_score

    if table.task == "regression":
        return 100.0 * float(r2_score(y_true, prediction))
    if table.metric == "auc":
        return 100.0 * float(roc_auc_score(y_true, prediction[:, 1]))
    return 100.0 * float(accuracy_score(y_true, prediction.argmax(axis=1)))


# --------------------------------------------------------------------------- methods


def _run_pipeline(
    table: Table,
    train: pd.DataFrame,
    test: pd.DataFrame,
    *,
    seed: int,
    work: Path,
    tiny: bool,
    overrides: list[str],
) -> dict[str, Any]:
    import tensorflow as tf

    data = work / "train.parquet"
    train.to_parquet(data)
    experiment = work / "experiment"
    command = [
        str(Path(sys.executable).with_name("kt-pipeline")),
        "search",
        "--data", str(data),
        "--label", table.label,
        "--experiment-dir", str(experiment),
        "--seed", str(seed),
        *[item for text in overrides for item in ("--set", text)],
    ] + (["--max-epochs", "3", "--max-trials", "3"] if tiny else [])  # fmt: skip
    if tiny:  # 1,500 rows of a count target have few enough values to pass for classes
        command += ["--set", f"data.task={table.task!r}"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"kt-pipeline failed ({done.returncode}):\n{done.stderr[-3000:]}")
    summary = json.loads((experiment / "summary.json").read_text(encoding="utf-8"))
    serve = tf.saved_model.load(summary["export_dir"]).signatures["serving_default"]
    features = _features(test, table)
    inputs = {}
    for name, spec in serve.structured_input_signature[1].items():
        column = features[name]
        if spec.dtype == tf.string:
            inputs[name] = tf.constant(column.astype("string").fillna("").to_numpy(str))
        else:
            inputs[name] = tf.constant(column.to_numpy(spec.dtype.as_numpy_dtype))
    outputs = serve(**inputs)
    if table.task == "regression":
        prediction = outputs["value"].numpy()
        y_true = test[table.label].to_numpy("float64")
    else:
        prediction = outputs["probabilities"].numpy()
        # The export's classes are the label's values in sorted text order.
        names = [n.decode() for n in np.unique(train[table.label].astype(str)).astype(bytes)]
        index = {name: i for i, name in enumerate(names)}
        y_true = test[table.label].astype(str).map(index).to_numpy("int64")
    epochs = _epochs_trained(experiment)
    sign = -1.0 if table.task == "regression" else 1.0  # its objective: val_loss there
    return {
        "score": score(table, y_true, prediction),
        "seconds": round(seconds, 1),
        "epochs": epochs,
        "curve": best_so_far(trial_records(experiment / "search", sign=sign)),
        "trials": summary["trials"],
        "search_seconds": summary["seconds"],
    }


def _epochs_trained(experiment: Path) -> int:
    """Epochs trained by all trials of an experiment (each trial's ``stats.json``)."""
    return sum(
        json.loads(path.read_text(encoding="utf-8"))["epochs"]
        for path in (experiment / "search").rglob("stats.json")
    )


def _categories(train: pd.DataFrame, test: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """String columns as pandas categories with the training split's levels."""
    train, test = train.copy(), test.copy()
    for name in _string_columns(train):
        levels = sorted(train[name].dropna().astype(str).unique())
        train[name] = pd.Categorical(train[name].astype(str), categories=levels)
        test[name] = pd.Categorical(test[name].astype(str), categories=levels)
    return train, test


def _run_trees(
    method: str, table: Table, train: pd.DataFrame, test: pd.DataFrame, *, seed: int
) -> dict[str, Any]:
    classes = _classes(train, table)
    x_train, x_test = _categories(_features(train, table), _features(test, table))
    y_train, y_test = _targets(train, table, classes), _targets(test, table, classes)
    regression = table.task == "regression"
    started = time.perf_counter()
    if method == "lightgbm":
        import lightgbm

        cls: Any = lightgbm.LGBMRegressor if regression else lightgbm.LGBMClassifier
        model = cls(random_state=seed, verbose=-1)
    elif method == "xgboost":
        import xgboost

        cls = xgboost.XGBRegressor if regression else xgboost.XGBClassifier
        model = cls(random_state=seed, enable_categorical=True)
    else:
        from sklearn import ensemble

        for name in _string_columns(x_train):
            if len(x_train[name].cat.categories) > 255:  # its limit: integer codes instead
                x_train[name] = x_train[name].cat.codes.astype("float64").replace(-1, np.nan)
                x_test[name] = x_test[name].cat.codes.astype("float64").replace(-1, np.nan)
        cls = (
            ensemble.HistGradientBoostingRegressor
            if regression
            else ensemble.HistGradientBoostingClassifier
        )
        model = cls(random_state=seed, categorical_features="from_dtype")
    model.fit(x_train, y_train)
    prediction = model.predict(x_test) if regression else model.predict_proba(x_test)
    seconds = time.perf_counter() - started
    return {"score": score(table, y_test, prediction), "seconds": round(seconds, 2)}


def _run_realmlp(
    table: Table, train: pd.DataFrame, test: pd.DataFrame, *, seed: int
) -> dict[str, Any]:
    """pytabkit's RealMLP-TD with its defaults, on the CPU's two threads."""
    from pytabkit import RealMLP_TD_Classifier, RealMLP_TD_Regressor

    classes = _classes(train, table)
    x_train, x_test = _categories(_features(train, table), _features(test, table))
    y_train, y_test = _targets(train, table, classes), _targets(test, table, classes)
    regression = table.task == "regression"
    cls: Any = RealMLP_TD_Regressor if regression else RealMLP_TD_Classifier
    model = cls(random_state=seed, device="cpu", n_threads=os.cpu_count() or 1)
    started = time.perf_counter()
    model.fit(x_train, y_train)
    prediction = model.predict(x_test) if regression else model.predict_proba(x_test)
    seconds = time.perf_counter() - started
    return {"score": score(table, y_test, prediction), "seconds": round(seconds, 1)}


def _user_encoding(table: Table, train: pd.DataFrame) -> Any:
    """The column encoding a scikit-learn user writes for a Keras model."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    features = _features(train, table)
    strings = _string_columns(features)
    numbers = [c for c in features.columns if c not in strings]
    one_hot = OneHotEncoder(
        handle_unknown="infrequent_if_exist", max_categories=MAX_ONE_HOT, sparse_output=False
    )
    return ColumnTransformer(
        [
            ("numbers", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numbers),
            ("strings", make_pipeline(SimpleImputer(strategy="most_frequent"), one_hot), strings),
        ]
    ).fit(features)


def _pipeline_rows(table: Table, train: pd.DataFrame, seed: int, work: Path) -> tuple[Any, Any]:
    """The rows the pipeline trains and validates on when given `train` with this seed
    (its own test rows are left out), so that every Keras search sees the same data and
    their validation scores can be compared."""
    from kt_pipeline.config import DataConfig
    from kt_pipeline.data import load_dataset, split_indices

    path = work / "train.parquet"
    train.to_parquet(path)
    defaults = DataConfig()
    fit, validation, _ = split_indices(
        load_dataset(str(path), label=table.label, task=table.task),
        validation_fraction=defaults.validation_fraction,
        test_fraction=defaults.test_fraction,
        seed=seed,
    )
    return train.iloc[fit], train.iloc[validation]


#: Each task's objective, as the pipeline's default (``tuner.objective = "auto"``).
OBJECTIVES = {
    "binary": ("val_auc", "max"),
    "multiclass": ("val_accuracy", "max"),
    "regression": ("val_loss", "min"),
}


def _run_keras_baseline(
    method: str,
    table: Table,
    train: pd.DataFrame,
    test: pd.DataFrame,
    *,
    seed: int,
    budget: int,
    work: Path,
) -> dict[str, Any]:
    import keras

    classes = _classes(train, table)
    regression = table.task == "regression"
    fit_rows, val_rows = _pipeline_rows(table, train, seed, work)
    started = time.perf_counter()
    encoding = _user_encoding(table, fit_rows)

    def arrays(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        x = encoding.transform(_features(frame, table)).astype("float32")
        y = _targets(frame, table, classes)
        if regression:  # standardised, as a user would for an MSE loss (and the pipeline)
            y = (y - y_mean) / y_std
        return x, y.astype("float32" if regression else "int64")

    raw = _targets(fit_rows, table, classes)
    y_mean, y_std = (float(raw.mean()), float(raw.std()) or 1.0) if regression else (0.0, 1.0)
    x_fit, y_fit = arrays(fit_rows)
    x_val, y_val = arrays(val_rows)
    x_test = encoding.transform(_features(test, table)).astype("float32")
    hypermodel = docs_hypermodel(len(classes), task=table.task)
    objective, direction = OBJECTIVES[table.task]
    sign = 1.0 if direction == "max" else -1.0
    max_epochs = TINY_EPOCHS if budget <= TINY_BUDGET else 20
    keras.utils.set_random_seed(seed)
    if method == "optuna_tpe":
        model, records = _optuna_search(
            hypermodel, (x_fit, y_fit), (x_val, y_val), objective, direction, seed, budget,
            max_epochs=max_epochs,
        )  # fmt: skip
    else:
        import keras_tuner

        common = {
            "objective": keras_tuner.Objective(objective, direction),
            "seed": seed,
            "directory": str(work),
        }
        if method == "kt_random":
            tuner: Any = keras_tuner.RandomSearch(
                hypermodel, max_trials=max(1, budget // max_epochs), **common
            )
        else:
            tuner = keras_tuner.Hyperband(hypermodel, max_epochs=max_epochs, factor=3, **common)
        log = fit_log(objective, sign=sign)
        tuner.search(
            x_fit,
            y_fit,
            epochs=max_epochs,
            validation_data=(x_val, y_val),
            callbacks=[log()],
            verbose=0,
        )
        model = tuner.get_best_models(1)[0]
        records = log.records
    if regression:  # val_loss in the label's units, as the pipeline's (its head rescales)
        records = [
            {**r, "score": None if r["score"] is None else r["score"] * y_std**2} for r in records
        ]
    prediction = np.asarray(model.predict(x_test, verbose=0))
    if regression:
        prediction = prediction[:, 0] * y_std + y_mean
    elif table.task == "binary":  # one sigmoid output
        prediction = np.column_stack([1.0 - prediction[:, 0], prediction[:, 0]])
    y_test = _targets(test, table, classes)
    return {
        "score": score(table, y_test, prediction),
        "seconds": round(time.perf_counter() - started, 1),
        "epochs": sum(record["epochs"] for record in records),
        "curve": best_so_far(records),
    }


def _optuna_search(
    hypermodel: Callable[[Any], Any],
    fit: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray],
    objective: str,
    direction: str,
    seed: int,
    budget: int,
    *,
    max_epochs: int,
) -> tuple[Any, list[dict[str, Any]]]:
    """Optuna's TPE with its Hyperband pruner, stopped when `budget` epochs are spent;
    returns the best epoch's model and each trial's epochs and best score (higher is
    better)."""
    import keras
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sign = 1.0 if direction == "max" else -1.0
    spent = {"epochs": 0}
    records: list[dict[str, Any]] = []
    best: dict[str, Any] = {"score": -math.inf, "weights": None, "params": None}

    class Report(keras.callbacks.Callback):
        def __init__(self, trial: Any) -> None:
            super().__init__()
            self.trial, self.best, self.weights, self.epochs = trial, -math.inf, None, 0

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            spent["epochs"] += 1
            self.epochs += 1
            value = sign * float(logs[objective])
            if value > self.best:
                self.best, self.weights = value, self.model.get_weights()
            self.trial.report(value, epoch)
            if self.trial.should_prune() or spent["epochs"] >= budget:
                self.model.stop_training = True

    def run(trial: Any) -> float:
        keras.backend.clear_session()
        model = hypermodel(OptunaParams(trial))
        report = Report(trial)
        model.fit(
            *fit, epochs=max_epochs, validation_data=validation, callbacks=[report], verbose=0
        )
        records.append({"epochs": report.epochs, "score": report.best})
        if report.best > best["score"]:
            best.update(score=report.best, weights=report.weights, params=dict(trial.params))
        return report.best

    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=max_epochs, reduction_factor=3
        ),
    )
    study.optimize(
        run, callbacks=[lambda study, _: study.stop() if spent["epochs"] >= budget else None]
    )
    keras.backend.clear_session()
    model = hypermodel(FixedParams(best["params"]))
    model.build((None, fit[0].shape[1]))
    model.set_weights(best["weights"])
    return model, records


@dataclasses.dataclass
class KeptRun:
    """A search that ``--keep-experiments`` kept, reloaded: its config, data, tuner and
    the benchmark's held-out rows as model inputs and labels (for re-scoring it)."""

    table: Table
    variant: str
    seed: int
    config: Any
    prepared: Any
    tuner: Any
    x_test: Any
    y_test: np.ndarray

    def points(self, output: np.ndarray) -> float:
        """Held-out points of a model output (probabilities or values)."""
        task = self.prepared.dataset.task
        if task == "binary":
            positive = output.reshape(-1, 1)
            output = np.concatenate([1 - positive, positive], axis=1)
        elif task == "regression":
            output = output.reshape(-1)
        return round(score(self.table, self.y_test, output), 3)


def load_kept(work: Path) -> KeptRun:
    """Reloads the kept run in `work` (``<table>-<seed>[_<variant>]``)."""
    from hypermodels.features import model_inputs
    from kt_pipeline.config import load_config
    from kt_pipeline.pipeline import _prepare_data, _reload_tuner

    table_name, rest = work.name.rsplit("-", 1)
    seed, _, variant = rest.partition("_")
    table = TABLES[table_name]
    experiment = work / "experiment"
    config = load_config(
        experiment / "config.toml", [f"runtime.experiment_dir={str(experiment)!r}"]
    )
    prepared = _prepare_data(config)
    test = pd.read_parquet(work / "test.parquet")
    if prepared.dataset.task == "regression":
        y_test = test[table.label].to_numpy("float64")
    else:
        index = {str(name): i for i, name in enumerate(prepared.dataset.class_names)}
        y_test = test[table.label].astype(str).map(index).to_numpy("int64")
    return KeptRun(
        table=table,
        variant=variant or "default",
        seed=int(seed),
        config=config,
        prepared=prepared,
        tuner=_reload_tuner(config, prepared),
        x_test=model_inputs(prepared.schema, test.drop(columns=[table.label])),
        y_test=y_test,
    )


#: Every method: its group in the summary, and whether it is a Keras search that needs
#: the pipeline's epoch budget.
#: The default search with config overrides: candidates for the next default, run
#: side by side with it (``pipeline``: no options at all).
PIPELINE_VARIANTS: dict[str, list[str]] = {
    "pipeline": [],
    # The default before the numeric search: standardised numbers, no embedding.
    "pipeline_standardize": [
        "search.numeric_scalings=['standardize']",
        "search.numeric_embeddings=['none']",
    ],
    "pipeline_quantile": [
        "search.numeric_scalings=['quantile']",
        "search.numeric_embeddings=['none']",
    ],
    # BOHB with its model from 10 completed trials on a budget: its own kernels, or
    # Optuna's multivariate TPE sampler (#23's "a maintained sampler").
    "pipeline_bohb": ["tuner.algorithm='bohb'", "tuner.bohb_min_points=10"],
    "pipeline_bohb_tpe": [
        "tuner.algorithm='bohb'",
        "tuner.bohb_min_points=10",
        "tuner.bohb_model='optuna_tpe'",
    ],
    "pipeline_anchors": [  # RealMLP's and TabM's optimisation choices, searched
        "search.adam_beta2=[0.999, 0.95]",
        "search.label_smoothing=[0.0, 0.1]",
        "search.schedules=['cosine', 'cosine_warmup', 'flat_cosine', 'constant']",
    ],
    "pipeline_min_frequency": ["data.min_frequency=5"],
    "pipeline_refit": ["export.refit='replace'"],
    # The default before export.refit = "auto": the searched ensemble served.
    "pipeline_refit_off": ["export.refit='off'"],
    "pipeline_high_cardinality": [
        "search.high_cardinality=['embedding', 'frequency', 'target', 'drop']"
    ],
    "pipeline_hashing": ["search.high_cardinality=['hashing']"],
    # Longer trials on small tables (RealMLP trains 256 epochs; the default's longest
    # trial has 20 up to 100,000 rows).
    "pipeline_epochs_60": ["tuner.max_epochs=60"],
    # Embeddings of repeated numeric values (`ValueIds`), searched.
    "pipeline_value_embeddings": ["search.value_embeddings=[false, true]"],
    # The target encoding of a row's group, where a key qualifies: never (the default
    # before it was searched), or on wherever one does.
    "pipeline_row_target_off": ["search.row_target_encoding=[false]"],
    "pipeline_row_target_on": ["search.row_target_encoding=[true]"],
    # A shared-weight ensemble of 16 members in every model (TabM-mini), or searched.
    "pipeline_members_on": ["search.members=[16]"],
    "pipeline_members": ["search.members=[1, 16]"],
    # The refit blended in at any size: the default's "auto" did so up to 9c00287 wherever
    # it cost at most half the search, and now stops at 100,000 training rows.
    "pipeline_refit_blend": ["export.refit='blend'"],
}

#: Earlier defaults whose code is gone: their recorded runs stay in the summary, to
#: compare with, and nothing runs them again.
RECORDED: dict[str, str] = {
    "pipeline_range_test_on_batches": "the default before 56f43ea: its range test read "
    "each batch's own loss, and numeric columns had no value embeddings",
    "pipeline_whole_row_key": "the default before the row's group was keyed on chosen "
    "columns: the row target encoding keyed on every column, with scikit-learn's own "
    "smoothing",
    "pipeline_weak_keys": "the default with keys down to 1 % of the residual "
    "(`features.ROW_MIN_SCORE` = 0.01): fair's key qualified",
}

METHODS: dict[str, str] = {
    **dict.fromkeys(PIPELINE_VARIANTS, "ours"),
    **dict.fromkeys(RECORDED, "recorded"),
    "lightgbm": "trees",
    "xgboost": "trees",
    "hist_gb": "trees",
    "lightgbm_pipeline_rows": "trees",
    "realmlp_td": "reference",
    "kt_random": "keras",
    "kt_hyperband": "keras",
    "optuna_tpe": "keras",
}

#: What a run compares when ``--methods`` is not given: the default search, the trees
#: and the Keras baselines (not the variants, nor the reference that needs PyTorch).
DEFAULT_METHODS = tuple(
    m
    for m in METHODS
    if m == "pipeline"
    or (m not in PIPELINE_VARIANTS and METHODS[m] not in {"reference", "recorded"})
)


def _budget(runs_dir: Path, table: str, seed: int) -> int:
    """The pipeline's epochs on this table and seed, the Keras baselines' budget."""
    path = runs_dir / f"pipeline-{table}-{seed}.json"
    if path.exists():
        return int(json.loads(path.read_text(encoding="utf-8"))["epochs"]) or DEFAULT_BUDGET
    return DEFAULT_BUDGET


def run_job(method: str, table_name: str, seed: int, *, tiny: bool, out: Path) -> dict[str, Any]:
    """One (method, table, seed): runs it and writes its JSON file."""
    table = TABLES[table_name]
    train, test = split(table, seed, tiny=tiny)
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        if METHODS[method] == "ours":
            if os.environ.get(_KEEP):  # `--keep-experiments`: for later re-exports
                suffix = method.removeprefix("pipeline")
                work = Path(os.environ[_KEEP]) / f"{table_name}-{seed}{suffix}"
                shutil.rmtree(work, ignore_errors=True)
                work.mkdir(parents=True)
                test.to_parquet(work / "test.parquet")
            result = _run_pipeline(
                table,
                train,
                test,
                seed=seed,
                work=work,
                tiny=tiny,
                overrides=PIPELINE_VARIANTS[method],
            )
        elif method == "lightgbm_pipeline_rows":
            fit, _ = _pipeline_rows(table, train, seed, work)
            result = _run_trees("lightgbm", table, fit.reset_index(drop=True), test, seed=seed)
            result["fit_rows"] = len(fit)
        elif METHODS[method] == "trees":
            result = _run_trees(method, table, train, test, seed=seed)
        elif METHODS[method] == "reference":
            result = _run_realmlp(table, train, test, seed=seed)
        else:
            budget = TINY_BUDGET if tiny else _budget(out.parent, table_name, seed)
            result = _run_keras_baseline(
                method, table, train, test, seed=seed, budget=budget, work=work
            )
    result.update(
        method=method,
        table=table_name,
        seed=seed,
        metric=table.metric,
        train_rows=len(train),
        test_rows=len(test),
        cpu=cpu_model(),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial")
    partial.write_text(json.dumps(result) + "\n", encoding="utf-8")
    partial.replace(out)
    return result


# --------------------------------------------------------------------------- summary


def summarise(runs: list[dict[str, Any]], *, command: str) -> tuple[str, dict[str, Any]]:
    """The Markdown tables and JSON summary: score and seconds per method and table,
    and the pipeline against LightGBM seed by seed."""
    frame = pd.DataFrame(runs)
    tables = [t for t in TABLES if t in set(frame["table"])]
    methods = [m for m in METHODS if m in set(frame["method"])]
    grouped = frame.groupby(["method", "table"])
    stats = grouped["score"].agg(["mean", "std", "count"]).fillna(0.0)
    seconds = grouped["seconds"].mean()
    header = ["| method | " + " | ".join(tables) + " |", "|---" * (len(tables) + 1) + "|"]
    metrics = ", ".join(f"{t} {TABLES[t].metric}" for t in tables)
    lines = [
        "# Real tables: the default search against what tabular users run",
        "",
        f"`{command}` ({platform.machine()}, {os.cpu_count()} CPUs; {metrics}; points = "
        "metric x 100 on the 20 % held out, mean +- std over seeds (n))",
        "",
        *header,
    ]
    cells: dict[str, dict[str, Any]] = {}
    for method in methods:
        row = []
        for table in tables:
            if (method, table) not in stats.index:
                row.append("-")
                continue
            mean, std, count = stats.loc[(method, table)]
            cells.setdefault(method, {})[table] = {
                "score_mean": round(float(mean), 2),
                "score_std": round(float(std), 2),
                "seeds": int(count),
                "seconds_mean": round(float(seconds.loc[(method, table)]), 1),
            }
            row.append(f"{mean:.2f} +- {std:.2f} ({int(count)})")
        lines.append(f"| {method} | " + " | ".join(row) + " |")
    lines += ["", "Seconds per run (mean; the pipeline's include everything):", "", *header]
    for method in methods:
        row = [
            f"{cells[method][t]['seconds_mean']:.1f}" if t in cells.get(method, {}) else "-"
            for t in tables
        ]
        lines.append(f"| {method} | " + " | ".join(row) + " |")
    pairs = _against(frame, "pipeline", "lightgbm")
    against = {m: _against(frame, "pipeline", m) for m in methods if m != "pipeline"}
    against = {m: rows for m, rows in against.items() if rows}
    if against:
        lines += [
            "",
            "## The pipeline against each method, seed by seed",
            "",
            "Mean difference in points (the pipeline minus the method) over the seeds both",
            "ran, and the seeds the pipeline was better / worse.",
            "",
            *header,
        ]
        for method, rows in against.items():
            by_table = {row["table"]: row for row in rows}
            row_cells = [
                f"{by_table[t]['mean_difference']:+.2f} ({by_table[t]['better']}/"
                f"{by_table[t]['worse']})"
                if t in by_table
                else "-"
                for t in tables
            ]
            lines.append(f"| {method} | " + " | ".join(row_cells) + " |")
    anytime = _anytime(runs, methods, tables)
    if anytime:
        lines += [
            "",
            "## Anytime: how soon each search reaches RandomSearch's final validation score",
            "",
            "The share of RandomSearch's (mean) epochs after which a search's best-so-far",
            "validation score, averaged over the seeds both ran, first reaches the mean of",
            "RandomSearch's final ones (the goal: 1/3 or less; `never`: not within its own",
            "budget). Every search validates on the same rows, the pipeline's validation",
            "split, with the pipeline's objective (val_auc, val_accuracy or val_loss).",
            "",
            *header,
        ]
        for method, by_table in anytime.items():
            row_cells = []
            for t in tables:
                cell = by_table.get(t)
                if cell is None:
                    row_cells.append("-")
                else:
                    share = "never" if cell["share"] is None else f"{cell['share']:.2f}"
                    row_cells.append(f"{share} ({cell['seeds']})")
            lines.append(f"| {method} | " + " | ".join(row_cells) + " |")
    summary = {
        "cells": cells,
        "against_lightgbm": pairs,
        "against": against,
        "anytime": anytime,
        "command": command,
    }
    return "\n".join(lines) + "\n", summary


def _anytime(
    runs: list[dict[str, Any]], methods: list[str], tables: list[str]
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per search method and table: the share of RandomSearch's mean epochs at which its
    seed-averaged best-so-far validation score reaches RandomSearch's mean final one."""
    curves: dict[tuple[str, str], dict[int, list[list[float]]]] = {}
    for run in runs:
        if run.get("curve"):
            curves.setdefault((run["method"], run["table"]), {})[run["seed"]] = run["curve"]
    result: dict[str, dict[str, dict[str, Any]]] = {}
    for method in methods:
        if method == "kt_random":
            continue
        for table in tables:
            mine = curves.get((method, table), {})
            random = curves.get(("kt_random", table), {})
            seeds = sorted(mine.keys() & random.keys())
            if not seeds:
                continue
            target = float(np.mean([random[seed][-1][1] for seed in seeds]))
            epochs = float(np.mean([random[seed][-1][0] for seed in seeds]))
            share = None
            for spent in sorted({spent for seed in seeds for spent, _ in mine[seed]}):
                values = [best_at(mine[seed], spent) for seed in seeds]
                if all(v is not None for v in values) and np.mean(values) >= target - 1e-9:
                    share = round(spent / epochs, 3)
                    break
            result.setdefault(method, {})[table] = {"share": share, "seeds": len(seeds)}
    return result


def _against(frame: pd.DataFrame, first: str, second: str) -> list[dict[str, Any]]:
    """Per table: the mean per-seed difference in points, and the seeds `first` won."""
    scores = frame.pivot_table(index=["table", "seed"], columns="method", values="score")
    if first not in scores or second not in scores:
        return []
    both = scores[[first, second]].dropna()
    rows = []
    for table in [t for t in TABLES if t in both.index.get_level_values("table")]:
        difference = both.loc[table, first] - both.loc[table, second]
        rows.append(
            {
                "table": table,
                "mean_difference": round(float(difference.mean()), 2),
                "better": int((difference > 0).sum()),
                "worse": int((difference < 0).sum()),
                "seeds": len(difference),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        help=f"comma-separated, of {', '.join(METHODS)}",
    )
    parser.add_argument("--tables", default=",".join(TABLES))
    parser.add_argument("--tiny", action="store_true", help=f"{TINY_ROWS} rows, 1 seed")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument(
        "--summary-only", action="store_true", help="summarise the finished runs, run nothing"
    )
    parser.add_argument(
        "--keep-experiments",
        type=Path,
        help="keep each pipeline run's experiment (and its split) in DIR/<table>-<seed>",
    )
    parser.add_argument("--job", nargs=3, help=argparse.SUPPRESS)  # one run, in a child
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.keep_experiments:
        os.environ[_KEEP] = str(args.keep_experiments.resolve())
    if args.job:
        method, table, seed = args.job
        run_job(method, table, int(seed), tiny=args.tiny, out=args.out)
        return
    name = "real_table_quality_tiny" if args.tiny else "real_table_quality"
    runs_dir = args.results / f"{name}_runs"
    seeds = range(args.first_seed, args.first_seed + (1 if args.tiny else args.seeds))
    methods = [m for m in args.methods.split(",") if m]
    tables = [t for t in args.tables.split(",") if t]
    unknown = sorted(set(methods) - set(METHODS)) + sorted(set(tables) - set(TABLES))
    if unknown:
        parser.error(f"unknown method or table: {', '.join(unknown)}")
    # Seed by seed, the pipeline first: its epochs are the Keras baselines' budget.
    for seed in [] if args.summary_only else seeds:
        for table in tables:
            for method in methods:
                out = runs_dir / f"{method}-{table}-{seed}.json"
                if out.exists() or METHODS[method] == "recorded":
                    continue
                command = [sys.executable, __file__, "--job", method, table, str(seed)]
                command += ["--out", str(out)] + (["--tiny"] if args.tiny else [])
                env = {**os.environ, "PYTHONPATH": str(ROOT)}
                done = subprocess.run(command, env=env, capture_output=True, text=True)
                if done.returncode != 0:
                    raise RuntimeError(f"{method} {table} {seed} failed:\n{done.stderr[-3000:]}")
                result = json.loads(out.read_text(encoding="utf-8"))
                print(f"{out.name}: {result['score']:.2f} in {result['seconds']} s", flush=True)
    runs = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(runs_dir.glob("*.json"))]
    runs = [r for r in runs if r["method"] in methods and r["table"] in tables]
    runs = [r for r in runs if r["seed"] in seeds]
    command = " ".join(["python benchmarks/real_table_quality.py", *sys.argv[1:]])
    text, summary = summarise(runs, command=command)
    (args.results / f"{name}.md").write_text(text, encoding="utf-8")
    (args.results / f"{name}.json").write_text(json.dumps(summary, indent=2) + "\n", "utf-8")
    print(text)


if __name__ == "__main__":
    main()
