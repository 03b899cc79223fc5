"""One writer per experiment directory, and never a resume on other rows."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import make_frame, tiny_search_args

from kt_pipeline.cli import main
from kt_pipeline.errors import UserInputError
from kt_pipeline.lock import LOCK_FILE, experiment_lock


def _files(folder: Path) -> dict[str, int]:
    """Each file's modification time, the lock file left out."""
    return {
        str(p.relative_to(folder)): p.stat().st_mtime_ns
        for p in folder.rglob("*")
        if p.is_file() and p.name != LOCK_FILE
    }


def test_a_second_holder_is_refused_with_the_first_ones_pid(tmp_path: Path) -> None:
    with (
        experiment_lock(tmp_path),
        pytest.raises(UserInputError, match=rf"in use by another search \(pid {os.getpid()} on "),
        experiment_lock(tmp_path),
    ):
        pass
    with experiment_lock(tmp_path):  # released at the end of the block
        pass


def test_a_lock_left_by_a_dead_process_is_taken_over(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    record = {"pid": 999_999_999, "host": "gone", "started": "2026-01-01T00:00:00+00:00"}
    (tmp_path / LOCK_FILE).write_text(json.dumps(record))  # its process held no lock
    with caplog.at_level("INFO", logger="kt_pipeline"), experiment_lock(tmp_path):
        held = json.loads((tmp_path / LOCK_FILE).read_text())
    assert held["pid"] == os.getpid()
    assert "taking over from pid 999999999 on gone" in caplog.text


def test_a_search_on_a_directory_in_use_exits_2_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data.csv"
    make_frame(120).to_csv(data, index=False)
    experiment = tmp_path / "experiment"
    assert main(tiny_search_args(experiment, data)) == 0
    before = _files(experiment)
    capsys.readouterr()
    with experiment_lock(experiment):  # another search holds it
        assert main(tiny_search_args(experiment, data)) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "is in use by another search" in error[0]
    assert _files(experiment) == before


def test_resuming_on_changed_labels_exits_2_and_overwrite_starts_afresh(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data.csv"
    frame = make_frame(120)
    frame.to_csv(data, index=False)
    experiment = tmp_path / "experiment"
    assert main(tiny_search_args(experiment, data)) == 0
    before = _files(experiment)
    frame["label"] = frame["label"].iloc[::-1].to_numpy()  # same values, other rows
    frame.to_csv(data, index=False)
    capsys.readouterr()
    assert main(tiny_search_args(experiment, data)) == 2
    error = capsys.readouterr().err.strip()
    assert "is not the data the search in" in error and "fingerprint" in error
    assert "--overwrite" in error and len(error.splitlines()) == 1
    assert _files(experiment) == before
    assert main([*tiny_search_args(experiment, data), "--overwrite"]) == 0
