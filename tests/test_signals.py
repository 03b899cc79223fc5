"""SIGTERM (what `docker stop` and Kubernetes send) and Ctrl-C: one line with the
command that resumes, exit 143 or 130, and a resume that loses nothing."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import make_frame, random_search_args, stalling_env

from kt_pipeline import cli


@pytest.mark.slow
def test_sigterm_mid_trial_says_how_to_resume_and_the_resume_completes(tmp_path: Path) -> None:
    data = tmp_path / "data.csv"
    make_frame(200).to_csv(data, index=False)
    experiment = tmp_path / "experiment"
    args = random_search_args(
        experiment,
        data,
        max_trials=4,
        max_epochs=40,
        overrides=(
            # The first trial to train stalls until interrupted (`custom_models`), so the
            # signal lands mid-trial however fast the machine; the resume does not stall.
            "search.hypermodel='custom_models:StallingHyperModel'",
            "search.units=[8]",
            "search.num_layers=1",
            "search.batch_sizes=[8]",
        ),
    )
    command = [sys.executable, "-m", "kt_pipeline", *args]
    stall = tmp_path / "stalled.json"
    env = stalling_env(stall)
    search = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not stall.exists():
            assert search.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        search.send_signal(signal.SIGTERM)
        _, stderr = search.communicate(timeout=120)
    finally:
        if search.poll() is None:
            search.kill()
            search.wait()
    assert search.returncode == 143, stderr[-3000:]
    said = [line for line in stderr.splitlines() if line.startswith("kt-pipeline:")]
    assert len(said) == 1 and "stopped by SIGTERM" in said[0] and "resumes it" in said[0]
    assert "Traceback" not in stderr

    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    table = pd.read_csv(experiment / "results.csv", dtype={"trial_id": str})
    assert len(table) == 4 and (table["status"] == "COMPLETED").all()  # none lost, none failed


def test_a_second_signal_exits_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    def exit_now(code: int) -> None:
        raise SystemExit(code)

    monkeypatch.setattr(cli.os, "_exit", exit_now)  # os._exit would end pytest too
    stop = cli._StopOnSignal()
    with pytest.raises(KeyboardInterrupt):
        stop(signal.SIGTERM, None)
    with pytest.raises(SystemExit) as exited:
        stop(signal.SIGINT, None)  # the first is still being handled: no clean-up now
    assert exited.value.code == 128 + signal.SIGINT
