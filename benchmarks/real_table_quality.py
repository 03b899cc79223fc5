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
* ``lightgbm``, ``xgboost``, ``hist_gb``, ``catboost``: LightGBM, XGBoost,
  scikit-learn's HistGradientBoosting and CatBoost with their defaults, string columns
  as pandas categories (HistGradientBoosting takes at most 255 levels per category; a
  column with more is given as its integer codes, as a user would), for CatBoost as
  strings named in its ``cat_features``. ``--tiny`` gives CatBoost 20 iterations.
* ``lightgbm_tuned``: LightGBM tuned by Optuna's TPE (seeded) for the wall time the
  default pipeline took on the same table, split and seed (its run file's seconds; the
  mean of its other seeds where that run is missing, else 120 s). Each trial trains on
  the 80 % less a validation part cut the way the table is split (a random, stratified
  15 %; the latest 15 % of rows under a time split; 15 % of the groups under a group
  split), stops early on it (50 rounds without a better loss, 2,000 at most) and is
  scored there in the benchmark's metric. Trials stop when the time left would not
  hold one more and the refit, which trains the best trial's parameters and rounds on
  the whole 80 %: what a user with those minutes would serve. ``--tiny`` runs 2 trials.
* ``lightgbm_pipeline_rows``: LightGBM's defaults fitted on the rows the pipeline
  trains on (its split of the 80 %, without its validation and its own test rows):
  the comparison on equal data, which says how much of a gap to LightGBM is rows the
  pipeline keeps out to choose and to report its held-out score.
* ``realmlp_td``: pytabkit's RealMLP-TD with its defaults (string columns as pandas
  categories, missing numbers filled with the training median), the untuned MLP a
  tuned search must beat. It needs PyTorch, so it is an optional reference (``pip
  install -e '.[reference]'``), never run by CI.
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

Tables with a time or entity structure also run under their deployment split
(`real_tables.Table.deploy`), as a column of their own, ``<table>@time`` or
``<table>@group``: the benchmark's 20 % is then the latest rows by the time column (the
cut between two distinct times nearest 20 %, so that rows of one time stay together) or
a seeded 20 % of the groups (`table_splits`), and ``kt-pipeline search`` is given the
matching ``--split time:COLUMN`` or ``--split group:COLUMN``. Under a time split the
seed changes only the searches (and the trees' seeds), never the rows: the outer split
is the same on every seed. The Keras searches and ``lightgbm_pipeline_rows`` take the
pipeline's own cut of the 80 % (`kt_pipeline.splits.split_indices`) there too.

Every run file records the code it ran (``commit``: ``git rev-parse --short HEAD``, and
``dirty``: whether kt_pipeline/ or hypermodels/ had uncommitted changes), the CPU, its
split and, for the pipeline, the experiment's resolved ``config.toml``. The summary says
which commits each method's runs come from and refuses to mix commits in the default's
row unless ``--allow-mixed-commits`` is given (then it warns).

Scores are points: AUC x 100 for binary tables, accuracy x 100 for multiclass, R^2 x 100
for regression. Each run is one process writing one JSON file, so an interrupted
benchmark continues where it stopped; the summary gives each method's mean +- std over
seeds and seconds per table, and the pipeline against LightGBM seed by seed.

Usage:
    python benchmarks/real_table_quality.py [--seeds 5] [--first-seed 0]
        [--methods pipeline,lightgbm,...] [--tables fair,males_wage@time,...] [--tiny]
        [--summary-only] [--allow-mixed-commits] [--summary-name NAME]
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
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The code whose commit each run file records: this checkout's, not an installed copy.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
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
from table_splits import RANDOM, holdout
from table_splits import parse as parse_split

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parent.parent
# Environment variable that carries `--keep-experiments` to the per-run child processes.
_KEEP = "REAL_TABLE_KEEP_EXPERIMENTS"
TEST_FRACTION = 0.2
DEFAULT_BUDGET = 100  # epochs for a Keras baseline with no pipeline run to match
MAX_ONE_HOT = 32
TINY_ROWS = 1_500
TINY_BUDGET, TINY_EPOCHS = 6, 2  # the tiny run's Keras baselines: epochs in all, per trial
TINY_CATBOOST_ITERATIONS = 20
TINY_TRIALS = 2  # lightgbm_tuned's trials under --tiny
VALIDATION_FRACTION = 0.15  # lightgbm_tuned's validation part of the 80 %
DEFAULT_SECONDS = 120.0  # lightgbm_tuned's budget with no pipeline run to match
MAX_ROUNDS, PATIENCE = 2_000, 50  # lightgbm_tuned's boosting rounds: at most, early stopping
TINY_ROUNDS, TINY_PATIENCE = 100, 10
NOT_RECORDED = "not recorded"  # the commit of a run from before commits were recorded


# --------------------------------------------------------------------------- tables x splits


def table_key(table: Table, spec: str) -> str:
    """The benchmark's name of `table` under split `spec`: the table's own name under
    the random split (so earlier runs keep theirs), ``<name>@time`` or ``<name>@group``
    under a deployment split."""
    return table.name if spec == RANDOM else f"{table.name}@{parse_split(spec)[0]}"


#: Every table under every split it runs, by key: each table's random split, then its
#: deployment splits (`Table.deploy`), in `TABLES`' order.
SPLITS: dict[str, tuple[Table, str]] = {
    table_key(table, spec): (table, spec)
    for table in TABLES.values()
    for spec in (RANDOM, *table.deploy)
}


def run_key(run: dict[str, Any]) -> str:
    """The table key of a run file (runs from before splits were recorded: random)."""
    return table_key(TABLES[run["table"]], run.get("split", RANDOM))


def code_version() -> dict[str, Any]:
    """The commit the benchmark runs (``git rev-parse --short HEAD``) and whether
    kt_pipeline/ or hypermodels/ differ from it (``dirty``); both None outside a git
    checkout."""

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False
        )

    head = git("rev-parse", "--short", "HEAD")
    if head.returncode != 0:
        return {"commit": None, "dirty": None}
    status = git("status", "--porcelain", "--", "kt_pipeline", "hypermodels")
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}


# --------------------------------------------------------------------------- data


def split(
    table: Table, seed: int, *, tiny: bool, spec: str = RANDOM
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The 80/20 split: seeded rows (stratified for classification), or under a
    deployment `spec` the latest 20 % by time or a seeded 20 % of the groups
    (`table_splits.holdout`); `tiny` first keeps 1,500 seeded rows."""
    from sklearn.model_selection import train_test_split

    frame = table.load()
    if tiny:
        frame = frame.sample(n=min(TINY_ROWS, len(frame)), random_state=seed)
    if spec != RANDOM:
        kept, held = holdout(frame, spec, fraction=TEST_FRACTION, seed=seed)
        return frame.iloc[kept].reset_index(drop=True), frame.iloc[held].reset_index(drop=True)
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
    spec: str = RANDOM,
) -> dict[str, Any]:
    import tensorflow as tf

    from kt_pipeline.export import MODEL_INFO_FILE
    from kt_pipeline.model_card import load_card

    data = work / "train.parquet"
    train.to_parquet(data)
    experiment = work / "experiment"
    command = [
        sys.executable,
        "-m",
        "kt_pipeline",
        "search",
        "--data", str(data),
        "--label", table.label,
        "--experiment-dir", str(experiment),
        "--seed", str(seed),
        *[item for text in overrides for item in ("--set", text)],
    ] + (["--max-epochs", "3", "--max-trials", "3"] if tiny else [])  # fmt: skip
    if spec != RANDOM:  # the same cut of the 80 % as the benchmark's of the table
        command += ["--split", spec]
    # A count target (pharmacy visits) has few enough values to pass for classes.
    command += ["--set", f"data.task={table.task!r}"]
    started = time.perf_counter()
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"kt-pipeline failed ({done.returncode}):\n{done.stderr[-3000:]}")
    summary = json.loads((experiment / "summary.json").read_text(encoding="utf-8"))
    serve = tf.saved_model.load(summary["export_dir"]).signatures["serving_default"]
    features = _features(test, table)
    # The export's own map of column to input name (a column named ``self`` is served
    # as ``self_``), as a client reads it.
    info = json.loads((Path(summary["export_dir"]) / MODEL_INFO_FILE).read_text("utf-8"))
    column_of = {name: column for column, name in info["inputs"].items()}
    inputs = {}
    for name, spec in serve.structured_input_signature[1].items():
        column = features[column_of[name]]
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
    card = load_card(summary["export_dir"])
    sign = -1.0 if table.task == "regression" else 1.0  # its objective: val_loss there
    return {
        "score": score(table, y_true, prediction),
        "seconds": round(seconds, 1),
        "epochs": epochs,
        "curve": best_so_far(trial_records(experiment / "search", sign=sign)),
        "trials": summary["trials"],
        "search_seconds": summary["seconds"],
        # The pipeline's own held-out score, on its own test rows (the latest or unseen
        # groups' share of the 80 % under a deployment split): what it tells its user.
        "reported": 100.0 * float(summary["test_scores"][table.metric]),
        # Its 95 % bootstrap interval (`kt_pipeline.held_out`), where it gave one.
        "reported_interval": [
            100.0 * bound
            for bound in (summary.get("test_intervals") or {})
            .get("metrics", {})
            .get(table.metric, [])
        ]
        or None,
        # The score it chose its model by (the ensemble's, on the validation rows or out
        # of fold), in the benchmark's metric: how much its choice flattered it.
        "validation": _validation_score(table, card, train),
        # What the export served (`export.refit`'s mode, and whether the latest rows
        # joined it under a time split): the model card's ``refit``, {} where none ran.
        "refit": card.get("refit") or {},
        "config": tomllib.loads((experiment / "config.toml").read_text(encoding="utf-8")),
    }


def _validation_score(table: Table, card: dict[str, Any], train: pd.DataFrame) -> float | None:
    """The export's ensemble score on the rows the search scored trials on (its model
    card's ``ensemble_validation``), in the benchmark's metric: AUC or accuracy as they
    are, a regression's mean squared error as R^2 against the variance of the 80 %'s
    labels; None where the objective is another metric."""
    selected = float(card["ensemble_validation"]["selected"])
    objective = card["objective"]
    if table.task == "regression" and objective == "val_loss":
        loss = card["config"]["search"]["regression_loss"]
        if loss != "mse":
            return None
        # The ensemble score is maximised: a loss enters it negated.
        return 100.0 * (1.0 - abs(selected) / float(np.var(train[table.label].to_numpy(float))))
    if objective == f"val_{table.metric}":
        return 100.0 * selected
    return None


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


def _lightgbm(
    x_train: pd.DataFrame, x_test: pd.DataFrame, *, regression: bool, seed: int, tiny: bool
) -> tuple[Any, pd.DataFrame, pd.DataFrame]:
    import lightgbm

    cls: Any = lightgbm.LGBMRegressor if regression else lightgbm.LGBMClassifier
    return cls(random_state=seed, verbose=-1), x_train, x_test


def _xgboost(
    x_train: pd.DataFrame, x_test: pd.DataFrame, *, regression: bool, seed: int, tiny: bool
) -> tuple[Any, pd.DataFrame, pd.DataFrame]:
    import xgboost

    cls: Any = xgboost.XGBRegressor if regression else xgboost.XGBClassifier
    return cls(random_state=seed, enable_categorical=True), x_train, x_test


def _hist_gb(
    x_train: pd.DataFrame, x_test: pd.DataFrame, *, regression: bool, seed: int, tiny: bool
) -> tuple[Any, pd.DataFrame, pd.DataFrame]:
    from sklearn import ensemble

    for name in _string_columns(x_train):
        if len(x_train[name].cat.categories) > 255:  # its limit: integer codes instead
            x_train[name] = x_train[name].cat.codes.astype("float64").replace(-1, np.nan)
            x_test[name] = x_test[name].cat.codes.astype("float64").replace(-1, np.nan)
    cls: Any = (
        ensemble.HistGradientBoostingRegressor
        if regression
        else ensemble.HistGradientBoostingClassifier
    )
    return cls(random_state=seed, categorical_features="from_dtype"), x_train, x_test


def _catboost(
    x_train: pd.DataFrame, x_test: pd.DataFrame, *, regression: bool, seed: int, tiny: bool
) -> tuple[Any, pd.DataFrame, pd.DataFrame]:
    from catboost import CatBoostClassifier, CatBoostRegressor

    strings = _string_columns(x_train)
    for frame in (x_train, x_test):  # CatBoost takes text categories, without gaps
        for name in strings:
            frame[name] = frame[name].astype("string").fillna("<missing>").astype(object)
    cls: Any = CatBoostRegressor if regression else CatBoostClassifier
    model = cls(
        random_seed=seed,
        cat_features=strings,
        verbose=False,
        allow_writing_files=False,  # no catboost_info/ in the working directory
        **({"iterations": TINY_CATBOOST_ITERATIONS} if tiny else {}),
    )
    return model, x_train, x_test


#: Gradient-boosted trees with their library's defaults: each builds its model from the
#: training and held-out features (string columns as pandas categories), returning them
#: as the model takes them.
TREES: dict[str, Callable[..., tuple[Any, pd.DataFrame, pd.DataFrame]]] = {
    "lightgbm": _lightgbm,
    "xgboost": _xgboost,
    "hist_gb": _hist_gb,
    "catboost": _catboost,
}


def _run_trees(
    method: str, table: Table, train: pd.DataFrame, test: pd.DataFrame, *, seed: int, tiny: bool
) -> dict[str, Any]:
    classes = _classes(train, table)
    x_train, x_test = _categories(_features(train, table), _features(test, table))
    y_train, y_test = _targets(train, table, classes), _targets(test, table, classes)
    regression = table.task == "regression"
    started = time.perf_counter()
    model, x_train, x_test = TREES[method](
        x_train, x_test, regression=regression, seed=seed, tiny=tiny
    )
    model.fit(x_train, y_train)
    prediction = model.predict(x_test) if regression else model.predict_proba(x_test)
    seconds = time.perf_counter() - started
    return {"score": score(table, y_test, prediction), "seconds": round(seconds, 2)}


def _seconds_budget(runs_dir: Path, key: str, seed: int) -> tuple[float, str]:
    """`lightgbm_tuned`'s wall time: the pipeline's seconds on this table key and seed,
    else the mean of its other seeds, else `DEFAULT_SECONDS`; and where it came from."""
    path = runs_dir / f"pipeline-{key}-{seed}.json"
    if path.exists():
        return float(json.loads(path.read_text(encoding="utf-8"))["seconds"]), path.name
    others = [
        float(json.loads(p.read_text(encoding="utf-8"))["seconds"])
        for p in sorted(runs_dir.glob(f"pipeline-{key}-*.json"))
        if p.stem.rsplit("-", 1)[1].isdigit()
    ]
    if others:
        return float(np.mean(others)), f"mean of {len(others)} pipeline seeds"
    return DEFAULT_SECONDS, "default"


def _run_lightgbm_tuned(
    table: Table,
    spec: str,
    train: pd.DataFrame,
    test: pd.DataFrame,
    *,
    seed: int,
    budget: float,
    tiny: bool,
) -> dict[str, Any]:
    """LightGBM tuned by Optuna's TPE within `budget` seconds, validated on a part of
    `train` cut as `spec` cuts the table, then refitted on all of `train`."""
    import lightgbm
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.perf_counter()
    classes = _classes(train, table)
    regression = table.task == "regression"
    x_all, x_test = _categories(_features(train, table), _features(test, table))
    y_all, y_test = _targets(train, table, classes), _targets(test, table, classes)
    fit, val = holdout(
        train,
        spec,
        fraction=VALIDATION_FRACTION,
        seed=seed,
        stratify=None if regression else y_all,
    )
    cls: Any = lightgbm.LGBMRegressor if regression else lightgbm.LGBMClassifier
    rounds, patience = (TINY_ROUNDS, TINY_PATIENCE) if tiny else (MAX_ROUNDS, PATIENCE)

    def predict(model: Any, x: pd.DataFrame) -> np.ndarray:
        return np.asarray(model.predict(x) if regression else model.predict_proba(x))

    def params(trial: Any) -> dict[str, Any]:
        return {
            "learning_rate": trial.suggest_float("learning_rate", 0.005, 0.3, log=True),
            "num_leaves": trial.suggest_int("num_leaves", 4, 256, log=True),
            "min_child_samples": trial.suggest_int("min_child_samples", 2, 200, log=True),
            "colsample_bytree": trial.suggest_float("colsample_bytree", 0.4, 1.0),
            "subsample": trial.suggest_float("subsample", 0.4, 1.0),
            "reg_alpha": trial.suggest_float("reg_alpha", 1e-8, 10.0, log=True),
            "reg_lambda": trial.suggest_float("reg_lambda", 1e-8, 10.0, log=True),
        }

    def objective(trial: Any) -> float:
        model = cls(
            n_estimators=rounds, subsample_freq=1, random_state=seed, verbose=-1, **params(trial)
        )
        model.fit(
            x_all.iloc[fit],
            y_all[fit],
            eval_X=(x_all.iloc[val],),
            eval_y=(y_all[val],),
            callbacks=[lightgbm.early_stopping(patience, verbose=False)],
        )
        trial.set_user_attr("rounds", int(model.best_iteration_ or rounds))
        return score(table, y_all[val], predict(model, x_all.iloc[val]))

    def enough(study: Any, _: Any) -> None:
        """Stops when the time left would not hold one more trial and the refit (each
        taken as long as the mean trial so far)."""
        spent = [t.duration.total_seconds() for t in study.trials if t.duration]
        if time.perf_counter() - started + 2 * float(np.mean(spent)) > budget:
            study.stop()

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(
        objective,
        n_trials=TINY_TRIALS if tiny else None,
        timeout=None if tiny else budget,
        callbacks=[] if tiny else [enough],
    )
    best = study.best_trial
    model = cls(
        n_estimators=best.user_attrs["rounds"],
        subsample_freq=1,
        random_state=seed,
        verbose=-1,
        **best.params,
    )
    model.fit(x_all, y_all)
    prediction = predict(model, x_test)
    return {
        "score": score(table, y_test, prediction),
        "seconds": round(time.perf_counter() - started, 1),
        "budget_seconds": round(budget, 1),
        "trials": len(study.trials),
        "validation_score": round(study.best_value, 3),
        "best_params": {**best.params, "rounds": best.user_attrs["rounds"]},
        "validation_rows": len(val),
        "refit": True,
    }


def _run_realmlp(
    table: Table, train: pd.DataFrame, test: pd.DataFrame, *, seed: int
) -> dict[str, Any]:
    """pytabkit's RealMLP-TD with its defaults, on the CPU's two threads."""
    from pytabkit import RealMLP_TD_Classifier, RealMLP_TD_Regressor

    classes = _classes(train, table)
    x_train, x_test = _categories(_features(train, table), _features(test, table))
    # RealMLP refuses missing numbers; its users fill them with the training median.
    numbers = x_train.select_dtypes("number").columns
    medians = x_train[numbers].median()
    x_train[numbers], x_test[numbers] = (
        x_train[numbers].fillna(medians),
        x_test[numbers].fillna(medians),
    )
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


def pipeline_parts(
    table: Table, train: pd.DataFrame, seed: int, work: Path, spec: str = RANDOM
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The positions in `train` of the pipeline's own train, validation and test rows
    when it is given `train` with this seed and split."""
    from kt_pipeline.config import DataConfig
    from kt_pipeline.data import load_dataset
    from kt_pipeline.splits import split_indices

    path = work / "train.parquet"
    train.to_parquet(path)
    defaults = DataConfig()
    return split_indices(
        load_dataset(str(path), label=table.label, task=table.task),
        split=spec,
        validation_fraction=defaults.validation_fraction,
        test_fraction=defaults.test_fraction,
        seed=seed,
    )


def _pipeline_rows(
    table: Table, train: pd.DataFrame, seed: int, work: Path, spec: str = RANDOM
) -> tuple[Any, Any]:
    """The rows the pipeline trains and validates on when given `train` with this seed
    and split (its own test rows are left out), so that every Keras search sees the same
    data and their validation scores can be compared."""
    fit, validation, _ = pipeline_parts(table, train, seed, work, spec)
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
    spec: str = RANDOM,
) -> dict[str, Any]:
    import keras

    classes = _classes(train, table)
    regression = table.task == "regression"
    fit_rows, val_rows = _pipeline_rows(table, train, seed, work, spec)
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
    """A search that ``--keep-experiments`` kept, reloaded: its table key (`SPLITS`),
    config, data, tuner and the benchmark's held-out rows as model inputs and labels
    (for re-scoring it)."""

    key: str
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
    """Reloads the kept run in `work` (``<table key>-<seed>[_<variant>]``)."""
    from hypermodels.features import model_inputs
    from kt_pipeline.config import load_config
    from kt_pipeline.prepare import prepare_data
    from kt_pipeline.search_parts import reload_tuner

    key, rest = work.name.rsplit("-", 1)
    seed, _, variant = rest.partition("_")
    table = SPLITS[key][0]
    experiment = work / "experiment"
    config = load_config(
        experiment / "config.toml", [f"runtime.experiment_dir={str(experiment)!r}"]
    )
    prepared = prepare_data(config)
    test = pd.read_parquet(work / "test.parquet")
    if prepared.dataset.task == "regression":
        y_test = test[table.label].to_numpy("float64")
    else:
        index = {str(name): i for i, name in enumerate(prepared.dataset.class_names)}
        y_test = test[table.label].astype(str).map(index).to_numpy("int64")
    return KeptRun(
        key=key,
        table=table,
        variant=variant or "default",
        seed=int(seed),
        config=config,
        prepared=prepared,
        tuner=reload_tuner(config, prepared),
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
    # Cross-validated trials (#47): five fold models per trial, scored out of fold.
    "pipeline_folds": ["data.folds=5"],
    "pipeline_folds3": ["data.folds=3"],
    # The default before data.folds = "auto" cross-validated group splits of few groups.
    "pipeline_one_part": ["data.folds=1"],
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
    # High-cardinality columns whose levels explain nothing left out (#43): the
    # default since it was measured; without it, every such column is searched over.
    "pipeline_screen": ["data.screen_identifiers=true"],
    "pipeline_no_screen": ["data.screen_identifiers=false"],
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
    "catboost": "trees",
    "lightgbm_pipeline_rows": "trees",
    "lightgbm_tuned": "tuned",
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


def _budget(runs_dir: Path, key: str, seed: int) -> int:
    """The pipeline's epochs on this table key and seed, the Keras baselines' budget."""
    path = runs_dir / f"pipeline-{key}-{seed}.json"
    if path.exists():
        return int(json.loads(path.read_text(encoding="utf-8"))["epochs"]) or DEFAULT_BUDGET
    return DEFAULT_BUDGET


def run_job(method: str, key: str, seed: int, *, tiny: bool, out: Path) -> dict[str, Any]:
    """One (method, table key, seed): runs it and writes its JSON file."""
    table, spec = SPLITS[key]
    code = code_version()  # before the run: the code it imports
    train, test = split(table, seed, tiny=tiny, spec=spec)
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        if METHODS[method] == "ours":
            if os.environ.get(_KEEP):  # `--keep-experiments`: for later re-exports
                suffix = method.removeprefix("pipeline")
                work = Path(os.environ[_KEEP]) / f"{key}-{seed}{suffix}"
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
                spec=spec,
            )
        elif method == "lightgbm_pipeline_rows":
            fit, _ = _pipeline_rows(table, train, seed, work, spec)
            result = _run_trees(
                "lightgbm", table, fit.reset_index(drop=True), test, seed=seed, tiny=tiny
            )
            result["fit_rows"] = len(fit)
        elif METHODS[method] == "trees":
            result = _run_trees(method, table, train, test, seed=seed, tiny=tiny)
        elif METHODS[method] == "tuned":
            budget, source = _seconds_budget(out.parent, key, seed)
            result = _run_lightgbm_tuned(
                table, spec, train, test, seed=seed, budget=budget, tiny=tiny
            )
            result["budget_from"] = source
        elif METHODS[method] == "reference":
            result = _run_realmlp(table, train, test, seed=seed)
        else:
            budget = TINY_BUDGET if tiny else _budget(out.parent, key, seed)
            result = _run_keras_baseline(
                method, table, train, test, seed=seed, budget=budget, work=work, spec=spec
            )
    result.update(
        method=method,
        table=table.name,
        split=spec,
        seed=seed,
        metric=table.metric,
        train_rows=len(train),
        test_rows=len(test),
        cpu=cpu_model(),
        **code,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial")
    partial.write_text(json.dumps(result) + "\n", encoding="utf-8")
    partial.replace(out)
    return result


# --------------------------------------------------------------------------- summary


class MixedCommits(ValueError):
    """The default's runs in a summary come from more than one commit."""


def _code_label(run: dict[str, Any]) -> str:
    """A run's commit, ``+dirty`` where kt_pipeline/ or hypermodels/ had changes."""
    if not run.get("commit"):
        return NOT_RECORDED
    return run["commit"] + ("+dirty" if run.get("dirty") else "")


def _code(runs: list[dict[str, Any]], methods: list[str], tables: list[str]) -> dict[str, Any]:
    """Per method and table key: the commits its runs come from."""
    code: dict[str, dict[str, list[str]]] = {}
    for method in methods:
        for key in tables:
            labels = {_code_label(r) for r in runs if r["method"] == method and r["key"] == key}
            if labels:
                code.setdefault(method, {})[key] = sorted(labels)
    return code


def summarise(
    runs: list[dict[str, Any]], *, command: str, allow_mixed_commits: bool = False
) -> tuple[str, dict[str, Any]]:
    """The Markdown tables and JSON summary: score and seconds per method and table
    key (a table under one split), the pipeline against every method seed by seed, and
    the commits each method's runs come from.

    Raises:
        MixedCommits: the default's (``pipeline``) runs come from more than one commit
            (a run from before commits were recorded counts as one of them), unless
            `allow_mixed_commits`; then the Markdown warns.
    """
    runs = [{**run, "key": run_key(run)} for run in runs]
    frame = pd.DataFrame(runs)
    tables = [k for k in SPLITS if k in set(frame["key"])]
    methods = [m for m in METHODS if m in set(frame["method"])]
    code = _code(runs, methods, tables)
    default_code = sorted(set().union(*code.get("pipeline", {}).values()))
    if len(default_code) > 1 and not allow_mixed_commits:
        raise MixedCommits(
            f"the default's runs come from {len(default_code)} commits "
            f"({', '.join(default_code)}): run them again at one commit, or pass "
            "--allow-mixed-commits to summarise them anyway (the summary then says so)"
        )
    grouped = frame.groupby(["method", "key"])
    stats = grouped["score"].agg(["mean", "std", "count"]).fillna(0.0)
    seconds = grouped["seconds"].mean()
    header = ["| method | " + " | ".join(tables) + " |", "|---" * (len(tables) + 1) + "|"]
    metrics = ", ".join(f"{t} {SPLITS[t][0].metric}" for t in tables)
    deployed = [f"{t} (`{SPLITS[t][1]}`)" for t in tables if SPLITS[t][1] != RANDOM]
    held_out = sorted({SPLITS[t][0].name for t in tables if SPLITS[t][0].held_out})
    lines = [
        "# Real tables: the default search against what tabular users run",
        "",
        f"`{command}` ({platform.machine()}, {os.cpu_count()} CPUs; {metrics}; points = "
        "metric x 100 on the 20 % held out, mean +- std over seeds (n))",
        "",
    ]
    if deployed:
        lines += [
            "Under a deployment split (`<table>@time`, `<table>@group`) the 20 % held out "
            "is the latest rows by time or a seeded fifth of the groups, and the pipeline "
            "splits the rest the same way: " + ", ".join(deployed) + ". Under a time "
            "split every seed holds out the same rows: seeds vary the searches only.",
            "",
        ]
    if held_out:
        lines += [
            "Held-out tables (scored when a default changes, never deciding one): "
            + ", ".join(held_out)
            + ".",
            "",
        ]
    if len(default_code) > 1:
        lines += [
            f"**Warning: the default's runs come from {len(default_code)} commits** "
            f"({', '.join(default_code)}; *Code of the runs* below says which).",
            "",
        ]
    lines += header
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
    reported = _reported(frame, tables)
    if reported:
        lines += [
            "",
            "## What the pipeline reports against what the held-out 20 % gives",
            "",
            "The default's own held-out score (its test rows: the latest or unseen groups'",
            "share of the 80 % under a deployment split) minus its score on the benchmark's",
            "20 %, mean and largest gap over the seeds, in points; and on how many of the",
            "seeds that reported a 95 % interval the 20 %'s score fell inside it.",
            "",
            "| table | reported | held-out 20 % | reported - held out | largest gap (seeds) "
            "| inside the interval |",
            "|---|---|---|---|---|---|",
        ]
        for table, gap in reported.items():
            inside = f"{gap['inside']}/{gap['intervals']}" if gap["intervals"] else "-"
            lines.append(
                f"| {table} | {gap['reported']:.2f} | {gap['score']:.2f} | "
                f"{gap['gap']:+.2f} | {gap['largest_gap']:+.2f} ({gap['seeds']}) | {inside} |"
            )
    optimism = _optimism(frame, tables)
    if optimism:
        lines += [
            "",
            "## What the search's choice claims against what the held-out 20 % gives",
            "",
            "The export's ensemble score on the rows the search scored its trials on (the",
            "validation rows, or out of fold with `data.folds`; a regression's loss as R^2",
            "against the 80 %'s variance) minus its score on the benchmark's 20 %: mean",
            "over the seeds (n), in points. The search picks what scored best there, so",
            "the gap is its optimism.",
            "",
            header[0],
            header[1],
        ]
        for method, by_table in optimism.items():
            gaps = [
                f"{by_table[t]['gap']:+.2f} ({by_table[t]['seeds']})" if t in by_table else "-"
                for t in tables
            ]
            lines.append(f"| {method} | " + " | ".join(gaps) + " |")
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
    lines += [
        "",
        "## Code of the runs",
        "",
        "The commit each method's runs come from (`+dirty`: kt_pipeline/ or hypermodels/",
        f"had uncommitted changes; `{NOT_RECORDED}`: run before commits were recorded).",
        "",
    ]
    for method, by_table in code.items():
        labels = sorted({label for values in by_table.values() for label in values})
        if len(labels) == 1:
            lines.append(f"- {method}: {labels[0]}")
        else:
            parts = [f"{key} {', '.join(values)}" for key, values in by_table.items()]
            lines.append(f"- {method}: " + "; ".join(parts))
    summary = {
        "cells": cells,
        "against_lightgbm": pairs,
        "against": against,
        "anytime": anytime,
        "reported": reported,
        "optimism": optimism,
        "tables": {
            key: {
                "table": SPLITS[key][0].name,
                "split": SPLITS[key][1],
                "role": SPLITS[key][0].role,
            }
            for key in tables
        },
        "code": code,
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
            curves.setdefault((run["method"], run_key(run)), {})[run["seed"]] = run["curve"]
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


def _reported(frame: pd.DataFrame, tables: list[str]) -> dict[str, dict[str, Any]]:
    """Per table key, the default's own reported held-out score against its score on
    the benchmark's held-out rows (runs that recorded it)."""
    if "reported" not in frame:
        return {}
    runs = frame[(frame["method"] == "pipeline") & frame["reported"].notna()]
    found = {}
    for table in tables:
        rows = runs[runs["key"] == table]
        if rows.empty:
            continue
        gaps = rows["reported"] - rows["score"]
        bounds = [
            (b, score)
            for b, score in zip(
                rows.get("reported_interval", pd.Series([None] * len(rows))),
                rows["score"],
                strict=True,
            )
            if isinstance(b, list) and b
        ]
        found[table] = {
            "intervals": len(bounds),
            "inside": sum(low <= score <= high for (low, high), score in bounds),
            "reported": round(float(rows["reported"].mean()), 2),
            "score": round(float(rows["score"].mean()), 2),
            "gap": round(float(gaps.mean()), 2),
            "largest_gap": round(float(gaps.loc[gaps.abs().idxmax()]), 2),
            "seeds": len(rows),
        }
    return found


def _optimism(frame: pd.DataFrame, tables: list[str]) -> dict[str, dict[str, Any]]:
    """Per pipeline method and table key, the mean of its recorded validation score
    minus its held-out score (`_validation_score`; runs that recorded one)."""
    if "validation" not in frame:
        return {}
    runs = frame[frame["validation"].notna()]
    found: dict[str, dict[str, Any]] = {}
    for (method, table), rows in runs.groupby(["method", "key"]):
        if table in tables:
            gaps = rows["validation"] - rows["score"]
            found.setdefault(str(method), {})[str(table)] = {
                "gap": round(float(gaps.mean()), 2),
                "seeds": len(rows),
            }
    return found


def _against(frame: pd.DataFrame, first: str, second: str) -> list[dict[str, Any]]:
    """Per table key: the mean per-seed difference in points, and the seeds `first` won."""
    scores = frame.pivot_table(index=["key", "seed"], columns="method", values="score")
    if first not in scores or second not in scores:
        return []
    both = scores[[first, second]].dropna()
    rows = []
    for table in [t for t in SPLITS if t in both.index.get_level_values("key")]:
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
    parser.add_argument(
        "--tables",
        default=",".join(SPLITS),
        help="comma-separated table keys: a table's name (random split), or "
        "<name>@time / <name>@group (its deployment split), of " + ", ".join(SPLITS),
    )
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
    parser.add_argument(
        "--allow-mixed-commits",
        action="store_true",
        help="summarise the default's runs even where they come from several commits",
    )
    parser.add_argument(
        "--summary-name",
        default="",
        help="write the summary as results/NAME.md and .json (default: the runs' own "
        "name), e.g. to summarise the deployment splits' runs, all of one commit, apart",
    )
    parser.add_argument("--job", nargs=3, help=argparse.SUPPRESS)  # one run, in a child
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.keep_experiments:
        os.environ[_KEEP] = str(args.keep_experiments.resolve())
    if args.job:
        method, key, seed = args.job
        run_job(method, key, int(seed), tiny=args.tiny, out=args.out)
        return
    name = "real_table_quality_tiny" if args.tiny else "real_table_quality"
    runs_dir = args.results / f"{name}_runs"
    seeds = range(args.first_seed, args.first_seed + (1 if args.tiny else args.seeds))
    methods = [m for m in args.methods.split(",") if m]
    tables = [t for t in args.tables.split(",") if t]
    unknown = sorted(set(methods) - set(METHODS)) + sorted(set(tables) - set(SPLITS))
    if unknown:
        parser.error(f"unknown method or table: {', '.join(unknown)}")
    # Seed by seed, the pipeline first: its epochs are the Keras baselines' budget.
    for seed in [] if args.summary_only else seeds:
        for key in tables:
            for method in methods:
                out = runs_dir / f"{method}-{key}-{seed}.json"
                if out.exists() or METHODS[method] == "recorded":
                    continue
                command = [sys.executable, __file__, "--job", method, key, str(seed)]
                command += ["--out", str(out)] + (["--tiny"] if args.tiny else [])
                env = {**os.environ, "PYTHONPATH": str(ROOT)}
                done = subprocess.run(command, env=env, capture_output=True, text=True)
                if done.returncode != 0:
                    raise RuntimeError(f"{method} {key} {seed} failed:\n{done.stderr[-3000:]}")
                result = json.loads(out.read_text(encoding="utf-8"))
                print(f"{out.name}: {result['score']:.2f} in {result['seconds']} s", flush=True)
    runs = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(runs_dir.glob("*.json"))]
    runs = [r for r in runs if r["method"] in methods and run_key(r) in tables]
    runs = [r for r in runs if r["seed"] in seeds]
    command = " ".join(["python benchmarks/real_table_quality.py", *sys.argv[1:]])
    try:
        text, summary = summarise(
            runs, command=command, allow_mixed_commits=args.allow_mixed_commits
        )
    except MixedCommits as error:
        parser.error(str(error))
    summary_name = args.summary_name or name
    (args.results / f"{summary_name}.md").write_text(text, encoding="utf-8")
    (args.results / f"{summary_name}.json").write_text(
        json.dumps(summary, indent=2) + "\n", "utf-8"
    )
    print(text)


if __name__ == "__main__":
    main()
