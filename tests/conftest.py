"""Shared fixtures. TensorFlow sees two logical CPU devices, so MirroredStrategy runs
with two replicas on a machine without GPUs."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

# Must happen before TensorFlow initialises its devices, hence at import time.
_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)


@pytest.fixture(autouse=True)
def seed() -> int:
    """Every test starts from the same global seed."""
    import keras

    keras.utils.set_random_seed(1234)
    return 1234


def make_frame(rows: int = 120, *, task: str = "binary", seed: int = 0) -> pd.DataFrame:
    """A small learnable table: the label depends on the first two features."""
    rng = np.random.default_rng(seed)
    a, b, c = rng.normal(size=(3, rows))
    frame = pd.DataFrame({"a": a, "b": b, "c": c, "n": rng.integers(0, 5, rows)})
    if task == "binary":
        frame["label"] = np.where(a + b > 0, "yes", "no")
    elif task == "multiclass":
        frame["label"] = np.digitize(a + b, [-0.7, 0.7])
    else:
        frame["label"] = 3.0 * a - 2.0 * b + 0.1 * rng.normal(size=rows) + 0.5
    return frame


def make_mixed_frame(rows: int = 200, *, seed: int = 0) -> pd.DataFrame:
    """A table with every column kind and missing values; the binary label depends on
    a numeric column (with gaps), a string category (with gaps) and an integer one."""
    rng = np.random.default_rng(seed)
    size = rng.normal(size=rows)
    colour = rng.choice(["red", "green", "blue"], size=rows).astype(object)
    level = rng.integers(1, 4, size=rows)
    weight = rng.normal(size=rows)
    score = size + (colour == "red") - (level == 3) + 0.2 * weight
    frame = pd.DataFrame(
        {
            "size": np.where(rng.random(rows) < 0.1, np.nan, size),
            "colour": np.where(rng.random(rows) < 0.1, None, colour),
            "level": level,
            "weight kg": weight,
            "label": np.where(score > 0.3, "yes", "no"),
        }
    )
    return frame


@pytest.fixture
def csv_file(tmp_path: Path) -> Callable[..., Path]:
    """Writes a `make_frame` table to CSV and returns its path."""

    def write(rows: int = 120, *, task: str = "binary", name: str = "data.csv") -> Path:
        path = tmp_path / name
        make_frame(rows, task=task).to_csv(path, index=False)
        return path

    return write


def stalling_env(stall_file: Path) -> dict[str, str]:
    """The environment of a ``kt-pipeline`` process whose first trial to start training
    stalls until the process is killed or signalled (`custom_models.StallingHyperModel`
    with ``search.hypermodel='custom_models:StallingHyperModel'``); it writes
    `stall_file` when it stalls."""
    tests = str(Path(__file__).parent)
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")]),
        "KT_TEST_STALL_FILE": str(stall_file),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }


def random_search_args(
    experiment_dir: Path,
    data: Path | str,
    *,
    max_trials: int,
    max_epochs: int,
    overrides: tuple[str, ...] = (),
    flags: tuple[str, ...] = (),
) -> list[str]:
    """CLI arguments for a small random search on a CSV whose label column is ``label``;
    each override becomes a ``--set``."""
    args = [
        "search", "--data", str(data), "--label", "label",
        "--experiment-dir", str(experiment_dir), "--tuner", "random",
        "--max-trials", str(max_trials), "--max-epochs", str(max_epochs), *flags,
    ]  # fmt: skip
    for override in overrides:
        args += ["--set", override]
    return args


def tiny_search_args(experiment_dir: Path, data: Path | str) -> list[str]:
    """CLI arguments for a search that finishes in seconds."""
    return random_search_args(
        experiment_dir,
        data,
        max_trials=2,
        max_epochs=2,
        overrides=(
            "search.units=[8]",
            "search.num_layers=1",
            "search.learning_rate=[0.01, 0.03]",
            "search.optimizers=['adam']",
            "search.batch_sizes=[16]",
        ),
    )


#: Trials of the `flaky_experiment` search.
FLAKY_TRIALS = 5


@pytest.fixture(scope="session")
def flaky_experiment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny search over the full default space (`FLAKY_TRIALS` trials, the
    second of which fails), shared by the TensorBoard and report tests."""
    from kt_pipeline.config import load_config
    from kt_pipeline.pipeline import run_search

    experiment = tmp_path_factory.mktemp("flaky") / "experiment"
    config = load_config(
        None,
        [
            "data.source='builtin:iris'",
            "search.hypermodel='custom_models:FlakyMLPHyperModel'",
            "search.units=[8, 16]",
            "search.batch_sizes=[32]",
            # Each optimizer's own range, as the range test gives them in a larger search.
            "search.optimizer_learning_rates={adam=[1e-3, 1e-2], adamw=[1e-3, 1e-2], "
            "sgd=[1e-2, 1e-1], rmsprop=[1e-4, 1e-3], adagrad=[1e-2, 1e-1], nadam=[1e-3, 1e-2]}",
            f"runtime.experiment_dir={str(experiment)!r}",
            "tuner.algorithm='random'",
            f"tuner.max_trials={FLAKY_TRIALS}",
            "tuner.max_epochs=2",
            "export.enabled=false",
        ],
    )
    run_search(config)
    return experiment
