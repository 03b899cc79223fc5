from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from conftest import make_frame, tiny_search_args

from kt_pipeline.cli import main
from kt_pipeline.config import load_config


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One tiny search, shared by the tests that read its results."""
    root = tmp_path_factory.mktemp("cli")
    data = root / "data.csv"
    make_frame(150, task="binary").to_csv(data, index=False)
    experiment = root / "experiment"
    assert main(tiny_search_args(experiment, data)) == 0
    return experiment, data


def test_search_writes_every_artefact(
    finished: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    experiment, data = finished
    config = load_config(experiment / "config.toml")
    assert config.data.source == str(data)
    assert config.tuner.max_trials == 2
    results = pd.read_csv(experiment / "results.csv", dtype={"trial_id": str})
    assert len(results) == 2
    assert set(results["status"]) == {"COMPLETED"}
    assert {"trial_id", "objective", "epochs", "seconds", "optimizer", "learning_rate"} <= set(
        results.columns
    )
    best = json.loads((experiment / "best_hyperparameters.json").read_text())
    assert best["units"] == 8
    summary = json.loads((experiment / "summary.json").read_text())
    assert summary["best_score"] == pytest.approx(results["objective"].max())
    assert 0 <= summary["test_scores"]["accuracy"] <= 1
    assert (experiment / "export" / "1" / "saved_model.pb").is_file()
    trial_logs = sorted(p.name for p in (experiment / "tensorboard").iterdir())
    assert trial_logs == sorted([*results["trial_id"], "search"])


def test_export_command_adds_a_version(
    finished: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    experiment, _ = finished
    assert main(["export", "--experiment-dir", str(experiment)]) == 0
    out = capsys.readouterr().out
    assert f"SavedModel: {experiment / 'export' / '2'}" in out
    assert "accuracy" in out


def test_predict_command_writes_labels(
    finished: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    experiment, data = finished
    output = tmp_path / "predictions.csv"
    code = main(
        [
            "predict",
            "--model",
            str(experiment / "export" / "1"),
            "--input",
            str(data),
            "--output",
            str(output),
        ]
    )
    assert code == 0
    predictions = pd.read_csv(output)
    assert len(predictions) == 150
    assert set(predictions["label"]) <= {"no", "yes"}
    assert list(predictions.columns) == ["label", "class_id", "probability_no", "probability_yes"]
    truth = pd.read_csv(data)["label"]
    assert (predictions["label"] == truth).mean() > 0.6


def _listing(path: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in sorted(path.rglob("*"))}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "missing.csv", "--label", "y"], "data file 'missing.csv' does not exist"),
        (["--data", "builtin:mnist"], "unknown built-in data set 'mnist'"),
        (["--set", "tuner.max_trials=-3"], "`tuner.max_trials` must be >= 0. Received: -3"),
        (["--set", "tuner.max_trail=3"], "did you mean `tuner.max_trials`?"),
        (["--tuner", "anneal"], "`tuner.algorithm` must be one of"),
        (["--config", "nope.toml"], "cannot read config file 'nope.toml'"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_leaves_the_experiment_alone(
    finished: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    experiment, _ = finished
    before = _listing(experiment)
    code = main(["search", "--experiment-dir", str(experiment), *args])
    err = capsys.readouterr().err
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == [f"kt-pipeline: error: {lines[0].removeprefix('kt-pipeline: error: ')}"]
    assert message in lines[0]
    assert "Traceback" not in err
    assert _listing(experiment) == before


def test_missing_label_column_names_the_column(
    csv_file: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "search",
            "--data",
            str(csv_file()),
            "--label",
            "target",
            "--experiment-dir",
            str(tmp_path / "e"),
        ]
    )
    assert code == 2
    assert "label column 'target' is not in" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()


def test_debug_shows_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", "--data", "builtin:nope", "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert err.strip().endswith(
        "kt-pipeline: error: unknown built-in data set 'nope'; choose one "
        "of builtin:digits, builtin:breast_cancer, builtin:wine, "
        "builtin:iris, builtin:diabetes"
    )


def test_unwritable_experiment_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["search", "--experiment-dir", str(blocker / "exp")]) == 2
    assert "experiment directory" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["search", "export", "predict"])
def test_help_explains_each_command(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "--debug" in capsys.readouterr().out


def _plugins(log_dir: Path) -> set[str]:
    import tensorflow as tf

    names = set()
    for event_file in log_dir.rglob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(event_file)):
            for value in event.summary.value:
                names.add(value.metadata.plugin_data.plugin_name or value.tag)
    return names


def test_each_trial_logs_scalars_and_hparams_to_tensorboard(finished: tuple[Path, Path]) -> None:
    experiment, _ = finished
    trial_dirs = sorted(p for p in (experiment / "tensorboard").iterdir() if p.name != "search")
    assert len(trial_dirs) == 2
    for trial_dir in trial_dirs:
        assert "hparams" in _plugins(trial_dir)
        assert (trial_dir / "execution0" / "train").is_dir()
        assert (trial_dir / "execution0" / "validation").is_dir()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--workers", "0"], "`--workers` must be >= 1. Received: 0"),
        (
            ["--workers", "2", "--role", "chief"],
            "`--workers` starts the chief and the workers itself; drop `--role`. "
            "Received: --role chief",
        ),
        (
            ["--role", "worker", "--overwrite"],
            "`--overwrite` is for the chief; a worker never discards",
        ),
        (
            ["--role", "worker", "--worker-id", "chief2"],
            "`--worker-id` must be letters, digits, '.', '_' or '-', without 'chief'. "
            "Received: 'chief2'",
        ),
        (  # it travels in gRPC metadata, which takes no such characters
            ["--role", "worker", "--worker-id", "gpu 0/ü"],
            "`--worker-id` must be letters, digits, '.', '_' or '-', without 'chief'. "
            "Received: 'gpu 0/ü'",
        ),
        (
            ["--role", "worker", "--oracle", "10.0.0.1"],
            "`runtime.oracle_address` must be HOST:PORT with a port in 1..65535. "
            "Received: '10.0.0.1'",
        ),
    ],
)
def test_bad_parallel_options_are_one_line_errors(
    tmp_path: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    experiment = tmp_path / "experiment"
    assert main(["search", "--experiment-dir", str(experiment), *extra]) == 2
    assert capsys.readouterr().err.strip() == f"kt-pipeline: error: {message}"
    assert not experiment.exists()
