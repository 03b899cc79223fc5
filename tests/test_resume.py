"""Resuming an interrupted experiment: SIGKILL at random moments, changed settings."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import make_frame, tiny_search_args

from kt_pipeline.cli import main
from kt_pipeline.config import load_config, save_config

TRIALS = 6


def _completed(experiment: Path) -> dict[str, tuple[Any, ...]]:
    """Each completed trial's score, values and stats file, as the trial files say."""
    done = {}
    for trial_file in (experiment / "search").glob("trial_*/trial.json"):
        state = json.loads(trial_file.read_text())
        if state["status"] == "COMPLETED":
            stats = (trial_file.parent / "stats.json").read_bytes()
            done[state["trial_id"]] = (state["score"], state["hyperparameters"]["values"], stats)
    return done


def _run_until(command: list[str], experiment: Path, *, stats_files: int, delay: float) -> bool:
    """Runs the search and SIGKILLs it `delay` s after `stats_files` trials have ended.

    Returns whether it was killed (False: it finished first).
    """
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    try:
        while process.poll() is None and time.monotonic() < deadline:
            if len(list(experiment.glob("search/trial_*/stats.json"))) >= stats_files:
                time.sleep(delay)  # a random moment after that trial, not a wait for a race
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=10)
                return process.returncode == -signal.SIGKILL
            time.sleep(0.02)
        assert process.wait(timeout=1) == 0
        return False
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_and_repeats_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data.csv"
    make_frame(120, task="binary").to_csv(data, index=False)
    experiment = tmp_path / "experiment"
    args = tiny_search_args(experiment, data)
    args[args.index("--max-trials") + 1] = str(TRIALS)
    args[args.index("--max-epochs") + 1] = "1"
    # Each kill lands in a different trial; the crash limit is tested in test_failures.
    args += ["--set", "tuner.max_crashes_per_trial=5"]
    command = [sys.executable, "-m", "kt_pipeline", *args]

    rng = random.Random(6)
    kills = 0
    for stats_files in (1, 3, 5):
        before = _completed(experiment)
        killed = _run_until(
            command, experiment, stats_files=stats_files, delay=rng.uniform(0.0, 0.6)
        )
        kills += killed
        after = _completed(experiment)
        for trial_id, record in before.items():
            assert after[trial_id] == record, f"completed trial {trial_id} was lost or re-run"
    assert kills >= 2

    before = _completed(experiment)
    finished = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr[-2000:]
    after = _completed(experiment)
    assert sorted(after) == [str(i) for i in range(TRIALS)]  # every planned trial, once
    for trial_id, record in before.items():
        assert after[trial_id] == record, f"completed trial {trial_id} was lost or re-run"
    assert not list(experiment.rglob("crashes.json"))
    results = pd.read_csv(experiment / "results.csv", dtype={"trial_id": str})
    assert sorted(results["trial_id"]) == sorted(after)
    assert set(results["status"]) == {"COMPLETED"}

    import tensorflow as tf

    exports = sorted((experiment / "export").iterdir())
    assert exports and all(p.name.isdigit() for p in exports)  # no staging folder left
    loaded = tf.saved_model.load(str(exports[-1]))
    assert "serving_default" in loaded.signatures


def _fake_experiment(tmp_path: Path, overrides: list[str]) -> Path:
    """An experiment folder as a search leaves it, as far as the resume check reads."""
    experiment = tmp_path / "experiment"
    (experiment / "search").mkdir(parents=True)
    config = load_config(None, [f"runtime.experiment_dir={str(experiment)!r}", *overrides])
    save_config(config, experiment / "config.toml")
    return experiment


def test_resume_refuses_changed_search_settings_and_lists_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    experiment = _fake_experiment(tmp_path, ["data.source='builtin:iris'", "search.units=[8]"])
    saved = (experiment / "config.toml").read_bytes()
    code = main(
        [
            "search",
            "--experiment-dir",
            str(experiment),
            "--data",
            "builtin:iris",
            "--tuner",
            "random",
            "--set",
            "search.units=[8, 16]",
            "--max-trials",
            "50",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1
    assert "tuner.algorithm 'hyperband' -> 'random'" in err
    assert "search.units [8] -> [8, 16]" in err
    assert "max_trials" not in err  # a budget may change
    assert "--overwrite" in err
    assert (experiment / "config.toml").read_bytes() == saved


def test_budget_and_runtime_settings_may_change_on_resume() -> None:
    from kt_pipeline.config import config_to_dict
    from kt_pipeline.resume import search_differences

    saved = config_to_dict(load_config(None, []))
    current = config_to_dict(
        load_config(
            None,
            [
                "tuner.max_trials=99",
                "runtime.verbose=true",
                "runtime.deterministic=true",
                "tuner.max_consecutive_failed_trials=9",
                "export.enabled=false",
                "export.refit=false",  # what happens after the search
                "runtime.experiment_dir='elsewhere'",
            ],
        )
    )
    assert search_differences(saved, current) == []
    changed = config_to_dict(load_config(None, ["runtime.seed=1", "tuner.max_epochs=3"]))
    assert search_differences(saved, changed) == [
        "tuner.max_epochs 0 -> 3",
        "runtime.seed 42 -> 1",
    ]


@pytest.mark.slow
def test_deterministic_runs_repeat_trials_and_metrics_exactly(tmp_path: Path) -> None:
    data = tmp_path / "data.csv"
    make_frame(120, task="binary").to_csv(data, index=False)
    runs = []
    for name in ("a", "b"):
        args = tiny_search_args(tmp_path / name, data)
        args[args.index("--max-epochs") + 1] = "1"
        args += ["--seed", "0", "--set", "runtime.deterministic=true"]
        args += ["--set", "search.learning_rate=[0.001, 0.1]", "--set", "export.enabled=false"]
        runs.append(args)
    # One process for both runs (op determinism cannot be switched off again); the
    # second run shares the process the first used, so it also shows nothing carries over.
    script = (
        "import json, sys\n"
        "from kt_pipeline.cli import main\n"
        "sys.exit(max(main(args) for args in json.loads(sys.argv[1])))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(runs)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    first, second = (
        pd.read_csv(tmp_path / name / "results.csv", dtype={"trial_id": str}).drop(
            columns=["seconds"]
        )
        for name in ("a", "b")
    )
    assert len(first) == 2 and first["learning_rate"].nunique() == 2
    pd.testing.assert_frame_equal(first, second, check_exact=True)


@pytest.mark.parametrize(
    ("name", "way_out"),
    [
        ("search/oracle.json", "pass --overwrite to start the search afresh"),
        ("search/trial_1/trial.json", "restore it from a backup"),
        ("config.toml", "remove it to resume without this check"),
    ],
)
def test_a_truncated_state_file_is_named_with_the_way_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, way_out: str
) -> None:
    from conftest import make_frame, tiny_search_args

    from kt_pipeline.cli import main

    data = tmp_path / "data.csv"
    make_frame(120).to_csv(data, index=False)
    experiment = tmp_path / "experiment"
    assert main(tiny_search_args(experiment, data)) == 0
    damaged = experiment / name
    text = damaged.read_text()
    # As a full disk leaves it, cut mid-entry (after a key's "=" or ":"): a cut between
    # two TOML lines would leave a valid, shorter config.
    cut = next(i for i in range(len(text) // 2, len(text)) if text[i] in "=:") + 1
    damaged.write_text(text[:cut])
    before = {p: p.read_bytes() for p in experiment.rglob("*") if p.is_file() and p.name != ".lock"}
    capsys.readouterr()
    assert main(tiny_search_args(experiment, data)) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert f"{str(damaged)!r} is corrupted" in error and way_out in error
    after = {p: p.read_bytes() for p in experiment.rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == before


def test_a_setting_added_since_the_experiment_was_saved_counts_as_its_old_value() -> None:
    from kt_pipeline.config import config_to_dict
    from kt_pipeline.resume import search_differences

    saved = config_to_dict(load_config(None, []))
    del saved["search"]["value_embeddings"]  # a config saved before the setting existed
    current = config_to_dict(load_config(None, ["search.value_embeddings=[false, true]"]))
    assert search_differences(saved, current) == [
        "search.value_embeddings [False] -> [False, True]"
    ]
    as_before = config_to_dict(load_config(None, []))  # the default, off, as it ran
    assert search_differences(saved, as_before) == []
