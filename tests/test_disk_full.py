"""A full disk: one line and exit 1, the previous export still loads, and the same
command resumes once there is space. The disk is a small tmpfs the test mounts (root
only; skipped with the reason elsewhere)."""

from __future__ import annotations

import contextlib
import errno
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import tensorflow as tf
from conftest import make_frame, random_search_args

from kt_pipeline.cli import main
from kt_pipeline.errors import is_disk_full

pytestmark = pytest.mark.slow


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"a tmpfs cannot be mounted here: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True, timeout=30, check=False)


def _fill(disk: Path, *, leave: int) -> Path:
    """Writes a file that leaves about `leave` bytes free on `disk`."""
    filler = disk / "filler"
    chunk = b"\0" * 65_536
    with open(filler, "wb") as handle, contextlib.suppress(OSError):
        while True:
            handle.write(chunk)
            handle.flush()
    size = filler.stat().st_size
    with open(filler, "r+b") as handle:
        handle.truncate(max(0, size - leave))
    return filler


def test_disk_full_mid_search_is_one_line_and_the_same_command_resumes(
    small_disk: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data.csv"
    make_frame(120).to_csv(data, index=False)
    experiment = small_disk / "experiment"
    overrides = ("search.units=[8]", "search.num_layers=1", "search.batch_sizes=[16]")
    first = random_search_args(experiment, data, max_trials=2, max_epochs=2, overrides=overrides)
    assert main(first) == 0
    more = random_search_args(experiment, data, max_trials=5, max_epochs=2, overrides=overrides)

    filler = _fill(small_disk, leave=48_000)
    capsys.readouterr()
    assert main(more) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "the disk is full" in error[0], error
    assert "Traceback" not in "\n".join(error)
    export = experiment / "export" / "1"
    assert (export / "assets.extra" / "GOOD").is_file()
    tf.saved_model.load(str(export))  # the previous export still loads
    assert not list((experiment / "export").glob(".staging-*"))

    filler.unlink()  # space is back: the same command resumes
    assert main(more) == 0
    table = pd.read_csv(experiment / "results.csv", dtype={"trial_id": str})
    assert len(table) == 5 and (table["status"] == "COMPLETED").all()  # none lost to the disk


def test_disk_full_is_recognised_from_errno_or_from_the_message() -> None:
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    wrapped = RuntimeError("saving the checkpoint failed")
    wrapped.__cause__ = OSError("Unable to create file (errno = 28, 'No space left on device')")
    assert is_disk_full(wrapped)
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
