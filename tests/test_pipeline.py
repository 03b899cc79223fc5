from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from kt_pipeline.config import load_config
from kt_pipeline.errors import UserInputError
from kt_pipeline.pipeline import run_search


@pytest.mark.slow
def test_full_default_space_on_digits_keeps_only_active_values(tmp_path: Path) -> None:
    config = load_config(
        None,
        [
            f"runtime.experiment_dir={str(tmp_path)!r}",
            "tuner.algorithm='random'",
            "tuner.max_trials=8",
            "tuner.max_epochs=1",
            "runtime.seed=7",
        ],
    )
    summary = run_search(config)
    assert summary.completed_trials == 8
    table = pd.read_csv(summary.results_file)
    conditional = {
        "sgd_momentum": ("optimizer", "sgd"),
        "sgd_nesterov": ("optimizer", "sgd"),
        "adamw_weight_decay": ("optimizer", "adamw"),
        "rmsprop_rho": ("optimizer", "rmsprop"),
        "warmup_fraction": ("lr_schedule", "cosine_warmup"),
        "clip_norm": ("gradient_clipping", "global_norm"),
        "l2": ("use_l2", True),
    }
    for name, (parent, value) in conditional.items():
        if name not in table:
            continue
        active = table[parent] == value
        assert table.loc[~active, name].isna().all(), name
        assert table.loc[active, name].notna().all(), name
    assert len(set(table["optimizer"])) > 1


def test_a_users_hypermodel_runs_by_import_path(tmp_path: Path) -> None:
    config = load_config(
        None,
        [
            "search.hypermodel='custom_models:LinearHyperModel'",
            "data.source='builtin:iris'",
            f"runtime.experiment_dir={str(tmp_path)!r}",
            "tuner.algorithm='random'",
            "tuner.max_trials=2",
            "tuner.max_epochs=2",
        ],
    )
    summary = run_search(config)
    assert summary.completed_trials == 2
    assert set(summary.best_hyperparameters) == {"linear_learning_rate"}
    assert summary.export_dir is not None and (summary.export_dir / "saved_model.pb").is_file()


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (
            "custom_models:Missing",
            "`search.hypermodel` cannot be imported: 'custom_models:Missing'",
        ),
        ("no_such_module:Thing", "`search.hypermodel` cannot be imported"),
        ("pathlib:Path", "must name a keras_tuner.HyperModel subclass"),
    ],
)
def test_bad_hypermodel_paths(tmp_path: Path, path: str, message: str) -> None:
    config = load_config(
        None, [f"search.hypermodel={path!r}", f"runtime.experiment_dir={str(tmp_path / 'e')!r}"]
    )
    with pytest.raises(UserInputError, match=message.replace("(", r"\(")):
        run_search(config)
    assert not (tmp_path / "e").exists()
