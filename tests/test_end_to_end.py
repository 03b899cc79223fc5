"""The installed command, run as a user runs it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_frame, make_mixed_frame, random_search_args, tiny_search_args
from test_export import serve_csv_in_fresh_process

from hypermodels.features import model_inputs
from kt_pipeline.config import load_config
from kt_pipeline.data import read_rows
from kt_pipeline.finish import load_best_model

pytestmark = pytest.mark.slow


def _command() -> str:
    return str(Path(sys.executable).with_name("kt-pipeline"))


def test_installed_command_runs_a_search_end_to_end(tmp_path: Path) -> None:
    data = tmp_path / "data.csv"
    make_frame(200, task="multiclass").to_csv(data, index=False)
    experiment = tmp_path / "experiment"
    result = subprocess.run(
        [_command(), *tiny_search_args(experiment, data)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Held-out test (reloaded SavedModel): accuracy" in result.stdout
    assert f"tensorboard --logdir {experiment / 'tensorboard'}" in result.stdout
    # No TensorFlow C++ lines (oneDNN, "failed call to cuInit") before our own output.
    native = [
        line for line in result.stderr.splitlines() if re.match(r"[IWEF]\d{4} |WARNING: All", line)
    ]
    assert not native, native
    summary = json.loads((experiment / "summary.json").read_text())
    assert summary["completed_trials"] == 2
    assert Path(summary["export_dir"], "saved_model.pb").is_file()


def test_module_entry_point_and_bad_input_exit_code(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kt_pipeline", "search", "--max-epochs", "-2"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "kt-pipeline: error: `tuner.max_epochs` must be >= 0. Received: -2"
    )
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "experiments").exists()


def test_mixed_csv_is_tuned_and_served_raw_rows_from_a_fresh_process(tmp_path: Path) -> None:
    data = tmp_path / "mixed.csv"
    make_mixed_frame(300).to_csv(data, index=False)
    experiment = tmp_path / "experiment"
    args = random_search_args(
        experiment,
        data,
        max_trials=2,
        # 5 epochs: at 3, a batch-normalised trial can win on validation AUC with a test
        # accuracy near 0.6 on these 210 training rows, below the floor asserted below.
        max_epochs=5,
        overrides=(
            "search.units=[16]",
            "search.learning_rate=[0.005, 0.02]",
            "export.refit='off'",  # the served model is the searched one, compared below
        ),
    )
    result = subprocess.run([_command(), *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "1 integer_categorical, 2 numeric, 1 string_categorical" in result.stderr
    summary = json.loads((experiment / "summary.json").read_text())
    export_dir = Path(summary["export_dir"])

    served = serve_csv_in_fresh_process(export_dir, data)

    config = load_config(experiment / "config.toml")
    model, schema = load_best_model(config)
    frame = read_rows(data, kinds={c.name: c.kind for c in schema.columns})
    in_memory = model.predict(model_inputs(schema, frame), verbose=0)
    np.testing.assert_allclose(served["probabilities"][:, 1], in_memory[:, 0], atol=1e-5)
    assert summary["test_scores"]["accuracy"] > 0.7
