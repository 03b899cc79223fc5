from __future__ import annotations

from pathlib import Path

import pytest

from kt_pipeline.config import PipelineConfig, load_config, save_config
from kt_pipeline.errors import UserInputError


def test_defaults_run_the_main_job_without_arguments() -> None:
    config = load_config()
    assert config == PipelineConfig()
    assert config.data.source == "builtin:digits"
    assert config.tuner.algorithm == "hyperband"


def test_file_then_overrides_in_that_order(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[tuner]\nalgorithm = "random"\nmax_trials = 7\n[data]\nsource = "x.csv"\n')
    config = load_config(path, ["tuner.max_trials=3", "search.units=[16, 32]"])
    assert config.tuner.algorithm == "random"
    assert config.tuner.max_trials == 3
    assert config.data.source == "x.csv"
    assert config.search.units == (16, 32)


def test_single_value_fixes_a_range() -> None:
    config = load_config(None, ["search.learning_rate=0.003", "search.num_layers=2"])
    assert config.search.learning_rate == (0.003, 0.003)
    assert config.search.num_layers == (2, 2)


def test_bare_text_is_a_string_and_int_widens_to_float() -> None:
    config = load_config(
        None, ["data.source=builtin:wine", "data.test_fraction=0.2", "search.dropout=[0, 1e-1]"]
    )
    assert config.data.source == "builtin:wine"
    assert config.search.dropout == (0.0, 0.1)


def test_saved_config_reads_back_unchanged(tmp_path: Path) -> None:
    config = load_config(None, ["search.optimizers=['sgd']", "runtime.seed=0"])
    save_config(config, tmp_path / "config.toml")
    assert load_config(tmp_path / "config.toml") == config


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "tuner.max_trial=5",
            "unknown config key `tuner.max_trial`; did you mean `tuner.max_trials`?",
        ),
        ("tunr.max_trials=5", "unknown config key `tunr`; did you mean `tuner`?"),
        ("tuner.max_trials=abc", "`tuner.max_trials` must be an integer. Received: 'abc'"),
        ("tuner.max_trials=1.5", "`tuner.max_trials` must be an integer. Received: 1.5"),
        ("tuner.max_trials=-1", "`tuner.max_trials` must be >= 0. Received: -1"),
        ("tuner.max_epochs=-1", "`tuner.max_epochs` must be >= 0. Received: -1"),
        ("tuner.time_budget='soon'", "`tuner.time_budget` must be a duration such as 90s"),
        ("search.batch_sizes='big'", '`search.batch_sizes` must be a list of integers >= 1 or "'),
        ("tuner.factor=1", "`tuner.factor` must be >= 2. Received: 1"),
        ("tuner.algorithm='anneal'", "`tuner.algorithm` must be one of hyperband, bayesian,"),
        (
            "tuner.first_trial='defaults'",
            "`tuner.first_trial` must be one of recommended, random. Received: 'defaults'",
        ),
        (
            "tuner.bohb_model='smac'",
            "`tuner.bohb_model` must be one of kde, optuna_tpe. Received: 'smac'",
        ),
        ("search.optimizers=['adma']", "Received: 'adma' (did you mean 'adam'?)"),
        ("search.schedules=['linear']", "`search.schedules` must be one of"),
        (
            "search.schedule_horizon='trial'",
            "`search.schedule_horizon` must be absent (the setting was removed; every search "
            "now does 'max_epochs'). Received: 'trial'",
        ),
        ("search.activations=[]", "`search.activations` must be a non-empty list"),
        ("search.units=[0, 8]", "`search.units` must be a non-empty list of integers >= 1"),
        ("search.dropout=[0.5, 0.1]", "min <= max. Received: [0.5, 0.1]"),
        ("search.learning_rate=[0, 0.1]", "> 0 at both ends (it is searched on a log scale)"),
        ("search.num_layers=[1, 2, 3]", "a list of 2 values [min, max]"),
        ("data.test_fraction=1.5", "`data.test_fraction` must be strictly between 0 and 1"),
        ("data.task='ranking'", "`data.task` must be one of"),
        ("runtime.strategy='tpu'", "`runtime.strategy` must be one of"),
        ("runtime.verbose=1", "`runtime.verbose` must be true or false. Received: 1"),
        (
            "export.refit='blnd'",
            "`export.refit` must be one of auto, blend, replace, off. Received: 'blnd' "
            "(did you mean 'blend'?)",
        ),
        ("runtime.devices=['/gpu:0']", "`runtime.devices` must be empty unless"),
        ("no_equals_sign", "`--set` takes section.key=value"),
    ],
)
def test_invalid_values_name_the_field_and_the_value(override: str, message: str) -> None:
    with pytest.raises(UserInputError) as info:
        load_config(None, [override])
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("value", "mode"),
    [("true", "replace"), ("false", "off"), ("'blend'", "blend"), ("'auto'", "auto")],
)
def test_refit_takes_its_modes_and_the_booleans_of_configs_saved_before_them(
    value: str, mode: str
) -> None:
    assert load_config(None).export.refit == "auto"
    assert load_config(None, [f"export.refit={value}"]).export.refit == mode


def test_a_config_saved_with_a_removed_setting_at_its_default_still_loads(
    tmp_path: Path,
) -> None:
    saved = tmp_path / "config.toml"
    saved.write_text('[search]\nschedule_horizon = "max_epochs"\nunits = [8]\n')
    assert load_config(saved).search.units == (8,)


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="cannot read config file"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[tuner\n")
    with pytest.raises(UserInputError, match="is not valid TOML"):
        load_config(bad)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["runtime.strategy='multi_worker_mirrored'", "runtime.devices=['/gpu:0']"],
            "`runtime.devices` must be empty unless runtime.strategy is 'one_device' or "
            "'mirrored'. Received: ['/gpu:0']",
        ),
        (
            ["runtime.strategy='one_device'", "runtime.batch_size_is='per_replica'"],
            "`runtime.batch_size_is` must be 'global' with a single-replica strategy "
            "('default', 'one_device'). Received: 'per_replica'",
        ),
        (
            ["runtime.mixed_precision='float16'"],
            "`runtime.mixed_precision` must be one of none, mixed_float16, mixed_bfloat16. "
            "Received: 'float16' (did you mean 'mixed_float16'?)",
        ),
        (
            ["runtime.batch_size_is='local'"],
            "`runtime.batch_size_is` must be one of global, per_replica. Received: 'local' "
            "(did you mean 'global'?)",
        ),
        (
            ["runtime.oracle_address='localhost'"],
            "`runtime.oracle_address` must be HOST:PORT with a port in 1..65535. "
            "Received: 'localhost'",
        ),
        (
            ["runtime.oracle_bind='0.0.0.0'"],
            "`runtime.oracle_bind` must be HOST:PORT with a port in 1..65535. Received: '0.0.0.0'",
        ),
        (
            ["runtime.worker_lease_seconds=0.5"],
            "`runtime.worker_lease_seconds` must be >= 1. Received: 0.5",
        ),
    ],
)
def test_invalid_runtime_combinations_are_named(overrides: list[str], message: str) -> None:
    with pytest.raises(UserInputError) as error:
        load_config(None, overrides)
    assert str(error.value) == message


def test_runtime_defaults_for_devices_and_parallel_search() -> None:
    runtime = load_config().runtime
    assert runtime.memory_growth is True
    assert runtime.mixed_precision == "none"
    assert runtime.batch_size_is == "global"
    assert runtime.oracle_address.startswith("127.0.0.1:")  # loopback unless configured


def test_python_settings_apply_after_the_file_and_before_set(tmp_path: Path) -> None:
    file = tmp_path / "c.toml"
    file.write_text("[tuner]\nmax_trials = 4\nmax_epochs = 3\n", encoding="utf-8")
    config = load_config(
        file,
        ["tuner.max_epochs=5"],
        settings={"tuner.max_epochs": 2, "tuner.max_trials": 6, "search.units": (32, 64)},
    )
    assert (config.tuner.max_trials, config.tuner.max_epochs) == (6, 5)
    assert config.search.units == (32, 64)
    with pytest.raises(UserInputError, match=r"'section\.key' names"):
        load_config(settings={"units": (32,)})
    with pytest.raises(UserInputError, match="max_trial"):
        load_config(settings={"tuner.max_trial": 3})
