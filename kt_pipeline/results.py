"""The results table: one row per trial, read from the tuner's own trial records."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import keras_tuner
import pandas as pd

from kt_pipeline.tuners import TRIAL_STATS_FILE

__all__ = ["trial_table", "write_results"]

_FIXED_COLUMNS = ["trial_id", "status", "objective", "epochs", "seconds", "reason"]


def _stats(tuner: keras_tuner.Tuner, trial_id: str) -> dict[str, Any]:
    path = os.path.join(tuner.project_dir, f"trial_{trial_id}", TRIAL_STATS_FILE)
    try:
        with open(path, encoding="utf-8") as handle:
            stats: dict[str, Any] = json.load(handle)
            return stats
    except (OSError, ValueError):
        return {}


def trial_table(tuner: keras_tuner.Tuner) -> pd.DataFrame:
    """Every trial the oracle knows, in id order, with its active hyperparameter values.

    Hyperband's bookkeeping values (``tuner/epochs``, ``tuner/initial_epoch``,
    ``tuner/trial_id`` of the parent) are kept, so a promoted trial can be traced.
    ``reason`` says why a trial failed (``diverged``, the error, or repeated crashes);
    a failed trial has no objective value.
    """
    rows = []
    for trial_id, trial in sorted(tuner.oracle.trials.items()):
        stats = _stats(tuner, trial_id)
        row: dict[str, Any] = {
            "trial_id": trial_id,
            "status": trial.status,
            "objective": trial.score if trial.status == "COMPLETED" else None,
            "epochs": stats.get("epochs"),
            "seconds": stats.get("seconds"),
            "reason": "" if trial.status == "COMPLETED" else (trial.message or ""),
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
    return frame[_FIXED_COLUMNS + others]


def write_results(tuner: keras_tuner.Tuner, path: str | Path) -> pd.DataFrame:
    """Writes the results table as CSV and returns it."""
    frame = trial_table(tuner)
    frame.to_csv(path, index=False)
    return frame
