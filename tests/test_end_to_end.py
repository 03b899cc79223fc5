"""The installed command, run as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_frame, tiny_search_args

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
    summary = json.loads((experiment / "summary.json").read_text())
    assert summary["completed_trials"] == 2
    assert Path(summary["export_dir"], "saved_model.pb").is_file()


def test_module_entry_point_and_bad_input_exit_code(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kt_pipeline", "search", "--max-epochs", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "kt-pipeline: error: `tuner.max_epochs` must be > 0. Received: 0"
    )
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "experiments").exists()
