"""The Python front door: `search` runs the whole job from a notebook or a script,
`load` reads a finished or interrupted one back, and both return a `SearchResult`.

The command line and these calls share one config and one job
(`kt_pipeline.pipeline.run_search`). A DataFrame or an ``(x, y)`` pair is stored in
the experiment directory under a name made from its content, so the saved config
names the exact rows a search ran on, and resuming with other rows is refused like
any other change to the search.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import json
import logging
import math
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from kt_pipeline.errors import UserInputError

__all__ = ["SearchResult", "load", "search"]

log = logging.getLogger("kt_pipeline")

#: Where `search` stores the rows it was given as Python objects.
INPUTS_DIR = "inputs"
_ARRAY_LABEL = "label"  # the label column of an (x, y) pair, in `SearchResult.predict`'s view

# `search`'s flat keywords and the config keys they set (the CLI's shorthands).
_KEYWORDS = {
    "label": "data.label",
    "split": "data.split",
    "folds": "data.folds",
    "experiment_dir": "runtime.experiment_dir",
    "tuner": "tuner.algorithm",
    "max_trials": "tuner.max_trials",
    "max_epochs": "tuner.max_epochs",
    "time_budget": "tuner.time_budget",
    "seed": "runtime.seed",
}


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """What a search found, read from its experiment directory.

    Attributes:
        experiment_dir: The search's folder.
        export_dir: The newest verified SavedModel (``export/<version>``), or None.
        task: ``binary``, ``multiclass`` or ``regression`` (empty when unknown: a
            search interrupted before its first trial finished).
        objective: What the search maximised or minimised, e.g. ``val_auc (max)``.
        best_trial_id: The best completed trial, or None.
        best_score: Its validation score.
        best_hyperparameters: Its active hyperparameter values.
        test_scores: The export's held-out scores, measured on the reloaded SavedModel.
        test_intervals: Their bootstrap intervals (`kt_pipeline.held_out`): ``level``,
            ``resampled`` (rows or groups) and ``metrics`` ({name: [low, high]}).
        finished: Whether the search ran to its end (else it was interrupted).
    """

    experiment_dir: Path
    export_dir: Path | None
    task: str
    objective: str
    best_trial_id: str | None
    best_score: float | None
    best_hyperparameters: dict[str, Any]
    test_scores: dict[str, float]
    finished: bool
    test_intervals: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def results(self) -> pd.DataFrame:
        """One row per trial: status, objective, epochs, seconds, failure reason and
        hyperparameters (the table ``results.csv`` holds)."""
        from kt_pipeline.results import read_table

        return read_table(self.experiment_dir / _project())

    @functools.cached_property
    def model(self) -> Any:
        """The exported SavedModel, loaded with `tf.saved_model.load`."""
        import tensorflow as tf

        return tf.saved_model.load(str(self._export()))

    def predict(self, rows: pd.DataFrame | np.ndarray) -> pd.DataFrame:
        """The export's predictions, one row per input row: ``value`` for regression;
        ``label``, ``class_id`` and ``probability_<class>`` for classification.

        Args:
            rows: A frame with the feature columns (others, such as the label, are
                ignored), or a 2-D array with the columns in training order.

        Raises:
            UserInputError: no export, or rows that lack a column or hold a value it
                cannot take.
        """
        from hypermodels.features import TabularSchema
        from kt_pipeline.data import feature_rows
        from kt_pipeline.export import load_model_info, prediction_table

        export = self._export()
        schema = TabularSchema.from_json(load_model_info(export)["schema"])
        frame = feature_rows(
            rows, kinds={c.name: c.kind for c in schema.columns}, source="predict rows"
        )
        return prediction_table(export, frame, loaded=self.model)

    def best_models(self, n: int = 1) -> list[Any]:
        """The `n` best trials' trained Keras models, best first, ready to fine-tune or
        inspect: KerasTuner's ``get_best_models``, each taking the raw columns as the
        export does (``{input name: 1-D array}``, names in the model card) with the
        lookups in front. They are the searched models, before any ensemble or refit.

        Raises:
            UserInputError: the folder's search cannot be read back.
        """
        from kt_pipeline.config import load_config
        from kt_pipeline.experiment_files import CONFIG_FILE
        from kt_pipeline.finish import trial_models

        here = {"runtime.experiment_dir": str(self.experiment_dir)}  # wherever it now is
        config = load_config(self.experiment_dir / CONFIG_FILE, settings=here)
        return trial_models(config, count=n)

    def report(self, *, top_k: int = 10) -> Any:
        """Writes ``results.csv``, the plots and ``report/report.md``, and returns the
        `kt_pipeline.report.Report` (its ``to_text()`` is what ``kt-pipeline report``
        prints)."""
        from kt_pipeline.report import write_report

        return write_report(self.experiment_dir, top_k=top_k)

    def _export(self) -> Path:
        if self.export_dir is None:
            raise UserInputError(
                f"experiment {str(self.experiment_dir)!r} has no verified export to predict "
                "with; run `kt-pipeline export` on it"
            )
        return self.export_dir


def search(
    data: pd.DataFrame | tuple[Any, Any] | str | os.PathLike[str] | None = None,
    *,
    label: str | None = None,
    split: str | None = None,
    folds: int | Literal["auto"] | None = None,
    experiment_dir: str | os.PathLike[str] | None = None,
    hypermodel: type | str | None = None,
    tuner: str | None = None,
    max_trials: int | None = None,
    max_epochs: int | None = None,
    time_budget: str | float | None = None,
    seed: int | None = None,
    config: str | os.PathLike[str] | None = None,
    settings: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    callbacks: Sequence[Any] | None = None,
    verbose: bool = True,
) -> SearchResult:
    """Runs a search, exports its best model and returns what it found.

    Example:
        ```python
        import kt_pipeline as ktp

        result = ktp.search(frame, label="churned", experiment_dir="runs/churn",
                            max_trials=10, settings={"search.num_layers": [1, 3]})
        result.predict(new_rows)
        ```

    Args:
        data: A pandas DataFrame (with `label`), an ``(x, y)`` pair of arrays, a
            ``.csv``/``.parquet``/``.npz`` path, or ``builtin:NAME``; None keeps the
            config's (``builtin:digits`` by default).
        label: The label column of a DataFrame or a CSV/Parquet file.
        split: How rows are cut into train, validation and test: ``"random"`` (the
            default), ``"time:COLUMN"``, ``"group:COLUMN[,COLUMN...]"`` or
            ``"column:COLUMN"`` (`kt_pipeline.splits`).
        folds: Cross-validate each trial on this many folds of the training rows,
            cut as `split` cuts them, and export the fold models (``data.folds``);
            ``"auto"``, the config's default, sizes them for the table
            (`kt_pipeline.sizing.folds_for`).
        experiment_dir: Where the search, its logs and its export go.
        hypermodel: A `keras_tuner.HyperModel` subclass taking our constructor
            arguments (see `hypermodels.MLPHyperModel`), or its ``"module:Class"`` path.
        tuner: ``hyperband`` (the default), ``bohb``, ``bayesian``, ``random`` or ``grid``.
        max_trials: Trials to run (0: the tuner's own budget).
        max_epochs: Epochs of the longest trial (0: sized for the table).
        time_budget: Wall-clock budget: seconds, or a duration such as ``"10m"``.
        seed: Fixes the split, the search's sampling and the weights.
        config: A TOML config file, applied before the keywords.
        settings: Any other setting as ``{"section.key": value}``, e.g.
            ``{"export.refit": "off"}``; the same keys as ``--set``.
        overwrite: Discard a search already in `experiment_dir` instead of resuming it.
        callbacks: Keras callbacks for every trial's `fit`, as KerasTuner's
            ``tuner.search(callbacks=...)`` takes them (each trial gets its own copy).
        verbose: Log each trial's line to stderr when the ``kt_pipeline`` logger has
            no handler of its own.

    Raises:
        UserInputError: bad data or settings; nothing in `experiment_dir` is changed.
        SearchAbortedError: too many trials in a row failed.
        ExportVerificationError: the reloaded export did not predict what the model did.
    """
    from kt_pipeline.config import load_config
    from kt_pipeline.pipeline import run_search

    config_file = None if config is None else Path(config)
    values = _settings(
        settings,
        label=label,
        split=split,
        folds=folds,
        experiment_dir=None if experiment_dir is None else str(experiment_dir),
        tuner=tuner,
        max_trials=max_trials,
        max_epochs=max_epochs,
        time_budget=time_budget,
        seed=seed,
    )
    if hypermodel is not None:
        values["search.hypermodel"] = _hypermodel_path(hypermodel)
    stored = None
    if isinstance(data, pd.DataFrame | tuple):
        # Validate every other setting before anything is written.
        experiment = Path(load_config(config_file, settings=values).runtime.experiment_dir)
        stored = _store(data, experiment, label=values.get("data.label"))
        values["data.source"] = str(stored.path)
        if isinstance(data, tuple):
            values.pop("data.label", None)
    elif data is not None:
        values["data.source"] = os.fspath(data)
    try:
        resolved = load_config(config_file, settings=values)
        with _logging(verbose):
            run_search(resolved, overwrite=overwrite, callbacks=callbacks or ())
    except UserInputError:
        if stored is not None and stored.created:  # bad input leaves the folder as it was
            stored.path.unlink(missing_ok=True)
        raise
    return load(resolved.runtime.experiment_dir)


def load(experiment_dir: str | os.PathLike[str]) -> SearchResult:
    """The result of the search in `experiment_dir`, finished or interrupted.

    Raises:
        UserInputError: the folder holds no search.
    """
    from kt_pipeline.experiment_files import SUMMARY_FILE
    from kt_pipeline.model_card import load_card
    from kt_pipeline.results import load_trials, search_objective

    experiment = Path(experiment_dir)
    project = experiment / _project()
    if not (project / "oracle.json").is_file():
        raise UserInputError(
            f"experiment directory {str(experiment)!r} holds no search "
            f"(no {_project()}/oracle.json)"
        )
    trials = load_trials(project)
    name, direction = search_objective(experiment, trials)
    scored = [t for t in trials.values() if t.status == "COMPLETED" and _finite(t.score)]
    best = None
    if scored:
        pick = min if direction == "min" else max
        best = pick(scored, key=lambda t: (t.score, t.trial_id))
    summary_file = experiment / SUMMARY_FILE
    summary = json.loads(summary_file.read_text("utf-8")) if summary_file.is_file() else {}
    export = _newest_export(experiment)
    card = load_card(export) if export is not None else {}
    hp = best.hyperparameters if best is not None else None
    return SearchResult(
        experiment_dir=experiment,
        export_dir=export,
        task=str(card.get("task") or summary.get("task") or ""),
        objective=f"{name} ({direction})",
        best_trial_id=best.trial_id if best is not None else None,
        best_score=float(best.score) if best is not None else None,
        best_hyperparameters=(
            {k: v for k, v in hp.values.items() if hp.is_active(k)} if hp is not None else {}
        ),
        test_scores=dict(card.get("test_metrics") or {}),
        finished=summary_file.is_file(),
        test_intervals=dict(card.get("test_intervals") or {}),
    )


# --------------------------------------------------------------------------- helpers


def _project() -> str:
    from kt_pipeline.experiment_files import PROJECT_NAME

    return PROJECT_NAME


def _finite(score: Any) -> bool:
    return isinstance(score, int | float) and math.isfinite(score)


def _settings(settings: Mapping[str, Any] | None, **keywords: Any) -> dict[str, Any]:
    values = dict(settings or {})
    for keyword, value in keywords.items():
        if value is None:
            continue
        key = _KEYWORDS[keyword]
        if key in values:
            raise UserInputError(
                f"`{keyword}` and settings[{key!r}] both set {key}. "
                f"Received: {value!r} and {values[key]!r}"
            )
        values[key] = value
    return values


def _hypermodel_path(hypermodel: Any) -> str:
    """``module:Class`` for a HyperModel class the job (and a worker) can import."""
    import keras_tuner

    if isinstance(hypermodel, str):
        return hypermodel
    if not (isinstance(hypermodel, type) and issubclass(hypermodel, keras_tuner.HyperModel)):
        raise UserInputError(
            "`hypermodel` must be a keras_tuner.HyperModel subclass or its 'module:Class' "
            "path (kt-pipeline constructs it for the table, so pass the class, not an "
            f"instance). Received: {hypermodel!r}"
        )
    path = f"{hypermodel.__module__}:{hypermodel.__qualname__}"
    try:
        found = getattr(importlib.import_module(hypermodel.__module__), hypermodel.__qualname__)
    except (ImportError, AttributeError):
        found = None
    if found is not hypermodel:
        raise UserInputError(
            "`hypermodel` must be importable by its module and name (defined at the top "
            f"level of a module or notebook). Received: {path!r}"
        )
    return path


@dataclasses.dataclass(frozen=True)
class _Stored:
    path: Path
    created: bool  # by this call: removed again if the search refuses the input


def _store(data: Any, experiment: Path, *, label: str | None) -> _Stored:
    """Writes a DataFrame (Parquet) or an ``(x, y)`` pair (NPZ) under the experiment's
    `INPUTS_DIR`, named by a hash of its content; the same rows reuse the same file."""
    if isinstance(data, tuple):
        if len(data) != 2:
            raise UserInputError(f"`data` as a tuple must be (x, y). Received {len(data)} items")
        x, y = (np.asarray(part) for part in data)
        if x.ndim != 2 or y.ndim != 1 or len(x) != len(y):
            raise UserInputError(
                "`data` as (x, y) needs a 2-D x and a 1-D y with one label per row. "
                f"Received shapes {x.shape} and {y.shape}"
            )
        if x.dtype == object or y.dtype == object:
            raise UserInputError(
                "`data` as (x, y) takes numeric or string arrays, not Python objects "
                f"(use a DataFrame for mixed columns). Received dtypes {x.dtype} and {y.dtype}"
            )
        digest = hashlib.sha256()
        for part in (x, y):
            digest.update(f"{part.dtype}{part.shape}".encode())
            digest.update(np.ascontiguousarray(part).tobytes())
        path = experiment / INPUTS_DIR / f"arrays-{digest.hexdigest()[:16]}.npz"
        return _write_once(path, lambda target: np.savez(target, x=x, y=y))
    if not label:
        raise UserInputError(
            "`label` must name the label column of the DataFrame. Received: "
            f"{label!r} (columns: {', '.join(map(str, data.columns))})"
        )
    if label not in data.columns:
        raise UserInputError(
            f"label column {label!r} is not in the DataFrame "
            f"(columns: {', '.join(map(str, data.columns))})"
        )
    frame = data.rename(columns=str)
    if frame.columns.duplicated().any():
        duplicated = frame.columns[frame.columns.duplicated()][0]
        raise UserInputError(f"the DataFrame has two columns named {duplicated!r}")
    layout = json.dumps([list(frame.columns), [str(dtype) for dtype in frame.dtypes]])
    digest = hashlib.sha256(layout.encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    path = experiment / INPUTS_DIR / f"frame-{digest.hexdigest()[:16]}.parquet"
    return _write_once(path, lambda target: _to_parquet(frame, target))


def _to_parquet(frame: pd.DataFrame, target: Path) -> None:
    import pyarrow

    try:
        frame.to_parquet(target, index=False)
    except (pyarrow.ArrowException, ValueError, TypeError) as error:
        raise UserInputError(
            f"the DataFrame cannot be stored for the search: {str(error).splitlines()[0]}"
        ) from error


def _write_once(path: Path, write: Any) -> _Stored:
    """Writes `path` through a partial file renamed into place, unless it exists."""
    if path.is_file():
        return _Stored(path, created=False)
    folder_existed = path.parent.is_dir()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial{path.suffix}")
    try:
        write(partial)
        partial.replace(path)
    except BaseException:
        if not folder_existed:
            shutil.rmtree(path.parent, ignore_errors=True)
        raise
    finally:
        partial.unlink(missing_ok=True)
    return _Stored(path, created=True)


def _newest_export(experiment: Path) -> Path | None:
    from kt_pipeline.experiment_files import EXPORT_DIR
    from kt_pipeline.model_card import GOOD_MARKER

    root = experiment / EXPORT_DIR
    versions = [p for p in root.glob("*") if p.name.isdigit() and (p / GOOD_MARKER).is_file()]
    return max(versions, key=lambda p: int(p.name)) if versions else None


@contextmanager
def _logging(verbose: bool) -> Iterator[None]:
    """Shows the search's lines on stderr for this call, unless the caller has already
    routed the ``kt_pipeline`` logger (or asked for quiet)."""
    if not verbose or log.hasHandlers():
        yield
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
