"""The results table: one row per trial, read from the tuner's own trial records.

A trial that failed keeps its row, with the last line of KerasTuner's error message
as ``reason``. `trial_table` reads a live tuner; `load_trials` reads the same records
back from a project folder, so a finished experiment can be reported on without its
data or model code.
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras_tuner
import pandas as pd

from kt_pipeline.tuners import TRIAL_STATS_FILE

__all__ = [
    "failure_reason",
    "load_trials",
    "read_table",
    "search_objective",
    "search_split",
    "trial_table",
    "write_results",
]

_FIXED_COLUMNS = ["trial_id", "status", "objective", "epochs", "seconds", "worker", "reason"]

#: `frame.attrs` key of the columns whose values are all integers: pandas stores such a
#: column as floats when some trial lacks it (a conditional hyperparameter, a failed
#: trial's epochs), and the written files should still say 64, not 64.0.
_INTEGER_COLUMNS = "integer_columns"


def _stats(project_dir: str, trial_id: str) -> dict[str, Any]:
    path = os.path.join(project_dir, f"trial_{trial_id}", TRIAL_STATS_FILE)
    try:
        with open(path, encoding="utf-8") as handle:
            stats: dict[str, Any] = json.load(handle)
            return stats
    except (OSError, ValueError):
        return {}


def failure_reason(message: str | None) -> str | None:
    """The last non-empty line of a failed trial's message (the exception), or None."""
    lines = [line.strip() for line in (message or "").splitlines() if line.strip()]
    return lines[-1] if lines else None


def load_trials(project_dir: str | Path) -> dict[str, keras_tuner.engine.trial.Trial]:
    """The trials a KerasTuner project folder holds (its ``trial_<id>/trial.json``)."""
    trials = {}
    for path in glob.glob(os.path.join(str(project_dir), "trial_*", "trial.json")):
        trial = keras_tuner.engine.trial.Trial.load(path)
        trials[trial.trial_id] = trial
    return trials


def read_table(project_dir: str | Path) -> pd.DataFrame:
    """The results table of a KerasTuner project folder, as `trial_table` gives it."""
    return _table(load_trials(project_dir), str(project_dir))


def search_objective(
    experiment: Path, trials: Mapping[str, keras_tuner.engine.trial.Trial]
) -> tuple[str, str]:
    """The objective's name and direction: from ``summary.json`` when the search
    finished, otherwise the metric whose best value is each completed trial's score."""
    summary = experiment / "summary.json"
    if summary.is_file():
        match = re.fullmatch(r"(\S+) \((min|max)\)", json.loads(summary.read_text())["objective"])
        if match:
            return match.group(1), match.group(2)
    for trial in trials.values():
        if trial.score is None:
            continue
        names = sorted(trial.metrics.metrics, key=lambda n: (not n.startswith("val_"), n))
        for name in names:
            best = trial.metrics.get_best_value(name)
            if best is not None and math.isclose(best, trial.score):
                return name, trial.metrics.get_direction(name)
    return "objective", "max"


def search_split(experiment: Path) -> str:
    """The search's ``data.split`` from its saved ``config.toml`` (``random`` for an
    experiment from before splits were chosen; empty when the config is unreadable)."""
    try:
        saved = tomllib.loads((experiment / "config.toml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return ""
    return str(saved.get("data", {}).get("split", "random"))


def trial_table(tuner: keras_tuner.Tuner) -> pd.DataFrame:
    """Every trial the oracle knows, in id order, with its active hyperparameter values.

    Hyperband's bookkeeping values (``tuner/epochs``, ``tuner/initial_epoch``,
    ``tuner/trial_id`` of the parent) are kept, so a promoted trial can be traced.
    ``reason`` says why a trial failed (``diverged``, the error, or repeated crashes);
    a failed trial has no objective value.
    """
    return _table(tuner.oracle.trials, tuner.project_dir)


def _table(trials: Mapping[str, keras_tuner.engine.trial.Trial], project_dir: str) -> pd.DataFrame:
    rows = []
    for trial_id, trial in sorted(trials.items()):
        stats = _stats(project_dir, trial_id)
        row: dict[str, Any] = {
            "trial_id": trial_id,
            "status": trial.status,
            "objective": trial.score if trial.status == "COMPLETED" else None,
            "epochs": stats.get("epochs"),
            "seconds": stats.get("seconds"),
            "worker": stats.get("worker"),  # the tuner id that finished the trial
            "reason": None if trial.status == "COMPLETED" else failure_reason(trial.message),
        }
        hp = trial.hyperparameters
        row.update(
            {
                name: value
                for name, value in hp.values.items()
                if hp.is_active(name) or name.startswith("tuner/")
            }
        )
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=_FIXED_COLUMNS)
    others = [c for c in frame.columns if c not in _FIXED_COLUMNS]
    frame = frame[_FIXED_COLUMNS + others]
    frame.attrs[_INTEGER_COLUMNS] = [
        column
        for column in frame.columns
        if (values := [row[column] for row in rows if not _missing(row.get(column))])
        and all(isinstance(v, int) and not isinstance(v, bool) for v in values)
    ]
    return frame


def write_results(
    tuner: keras_tuner.Tuner | str | Path,
    path: str | Path,
    *,
    json_path: str | Path | None = None,
    split: str = "",
) -> pd.DataFrame:
    """Writes the results table as CSV (and as JSON records when `json_path` is given)
    and returns it.

    Args:
        tuner: A tuner, or the folder of its project (read with `load_trials`).
        path: The CSV file.
        json_path: Optional JSON file: one object per trial with its ``hyperparameters``.
        split: The search's ``data.split``, written in a ``split`` column after the
            fixed ones: what every objective was measured on.
    """
    if isinstance(tuner, keras_tuner.Tuner):
        frame = trial_table(tuner)
    else:
        frame = _table(load_trials(tuner), str(tuner))
    written = frame.astype(dict.fromkeys(frame.attrs.get(_INTEGER_COLUMNS, []), "Int64"))
    fixed_columns = list(_FIXED_COLUMNS)
    if split:
        written.insert(len(_FIXED_COLUMNS), "split", split)
        fixed_columns.append("split")
    written.to_csv(path, index=False)
    if json_path is not None:
        records = []
        for row in written.to_dict(orient="records"):
            fixed = {k: _plain(row[k]) for k in fixed_columns}
            fixed["hyperparameters"] = {
                k: _plain(v) for k, v in row.items() if k not in fixed_columns and not _missing(v)
            }
            records.append(fixed)
        Path(json_path).write_text(json.dumps(records, indent=2), encoding="utf-8")
    return frame


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and value != value)


def _plain(value: Any) -> Any:
    """JSON-ready: NaN becomes null, numpy scalars Python numbers."""
    if _missing(value):
        return None
    return value.item() if hasattr(value, "item") else value
