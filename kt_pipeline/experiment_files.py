"""What an experiment directory holds, by name: the files every step reads or writes,
in one place so that a step and the tools that read its output agree."""

from __future__ import annotations

import os
from pathlib import Path

from kt_pipeline.errors import UserInputError

CONFIG_FILE = "config.toml"
PROJECT_NAME = "search"
TENSORBOARD_DIR = "tensorboard"
EXPORT_DIR = "export"
RESULTS_FILE = "results.csv"
RESULTS_JSON_FILE = "results.json"
BEST_HP_FILE = "best_hyperparameters.json"
SUMMARY_FILE = "summary.json"
FINGERPRINT_FILE = "data_fingerprint.json"
LR_FIND_PLOT = "lr_find.png"
LR_FIND_FILE = "lr_find.json"


def prepare_experiment_dir(path: Path) -> None:
    """Creates the directory, or says in one line why it cannot be written."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserInputError(
            f"experiment directory {str(path)!r} cannot be created: {error.strerror or error}"
        ) from error
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserInputError(f"experiment directory {str(path)!r} is not writable")
