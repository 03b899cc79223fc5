"""The learning-rate range test, its plot, and ``search.learning_rate = "auto"``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import keras
import keras_tuner
import numpy as np
import pytest
from conftest import tiny_search_args

from hypermodels import MLPHyperModel
from kt_pipeline import lr_find
from kt_pipeline.cli import main
from kt_pipeline.config import load_config, save_config
from kt_pipeline.errors import UserInputError
from kt_pipeline.lr_find import Sweep, lr_range_test, plot_lr_find, suggest_range

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _regression() -> tuple[np.ndarray, np.ndarray, MLPHyperModel]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 4)).astype("float32")
    y = (x[:, 0] - 2 * x[:, 1] + 0.5 * x[:, 2] * x[:, 3]).astype("float32")
    hypermodel = MLPHyperModel.from_arrays(
        x,
        y,
        task="regression",
        units=(16,),
        num_layers=(1, 1),
        optimizers=("sgd",),
        batch_sizes=(32,),
        dropout=(0.0, 0.0),
        batch_norm=(False,),
        gradient_clipping=("none",),
        l2=(0.0, 0.0),
    )
    return x, y, hypermodel


def _losses(hypermodel: MLPHyperModel, x: np.ndarray, y: np.ndarray, rate: float) -> list[float]:
    hp = keras_tuner.HyperParameters()
    hp.Fixed("lr_schedule", "constant")
    hp.Fixed("learning_rate", rate)
    keras.utils.set_random_seed(0)
    model = hypermodel.build(hp)
    history = model.fit(x, y, batch_size=32, epochs=8, verbose=0)
    return [float(v) for v in history.history["loss"]]


def test_suggested_range_brackets_a_good_rate_and_excludes_a_diverging_one() -> None:
    x, y, hypermodel = _regression()
    result = lr_range_test(hypermodel, x, y, sweep=Sweep(num_steps=120))
    low, high = result.suggested
    # Ground truth, measured here rather than assumed: 3e-3 trains, 1.0 diverges.
    good = _losses(hypermodel, x, y, 3e-3)
    assert good[-1] < 0.5 * good[0]
    bad = _losses(hypermodel, x, y, 1.0)
    assert not math.isfinite(bad[-1]) or bad[-1] > good[0]
    assert low < 3e-3 < high
    assert high < 1.0
    assert result.optimizer == "sgd"
    assert low <= high / 10  # at least one decade to search
    # The test stopped on divergence, well before the last scheduled rate.
    assert result.learning_rates[-1] < 10.0
    assert result.steepest <= result.minimum


def test_every_step_is_scored_on_the_same_rows() -> None:
    x, y, hypermodel = _regression()
    # Rates too small to move the weights: every step scores the same model on the same
    # probe rows (here all 256), so the curve is flat at the loss on all the data. Each
    # batch's own loss would scatter around it.
    result = lr_range_test(hypermodel, x, y, sweep=Sweep(min_lr=1e-12, max_lr=2e-12, num_steps=8))
    hp = keras_tuner.HyperParameters()
    hp.Fixed("lr_schedule", "constant")
    keras.utils.set_random_seed(0)
    model = hypermodel.build(hp)
    everything = float(model.evaluate(x, y, batch_size=len(y), verbose=0)[0])
    assert len(result.losses) == 8
    assert result.losses == pytest.approx([everything] * 8, rel=1e-4)


def test_a_heavy_tailed_target_does_not_put_the_range_where_nothing_trains() -> None:
    # A count-like target: mostly small, a few rows far out. Which batch drew an
    # outlier moved each batch's loss more than any rate too small to train, and the
    # range was read there (a real table's search got rates near 1e-8).
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4096, 4)).astype("float32")
    y = np.where(rng.random(4096) < 0.01, 60.0, 0.0) + 2.0 * x[:, 0] + rng.normal(size=4096)
    y = y.astype("float32")
    hypermodel = MLPHyperModel.from_arrays(
        x, y, task="regression", units=(32,), num_layers=(1, 1), optimizers=("adam",),
        batch_sizes=(32,), dropout=(0.0, 0.0), batch_norm=(False,), l2=(0.0, 0.0),
        gradient_clipping=("none",),
    )  # fmt: skip
    high = lr_range_test(hypermodel, x, y, seed=3).suggested[1]
    # Ground truth, measured here: the top of the range trains, unlike 1e-6.
    assert _losses(hypermodel, x, y, high)[-1] < 0.9 * _losses(hypermodel, x, y, 1e-6)[-1]
    assert high >= 1e-4


def test_a_gentle_descent_is_read_through_batch_noise_and_the_range_is_capped() -> None:
    # Plain SGD's shape: flat and noisy for decades, then a gentle fall to a minimum at
    # 1.0, then divergence. Neighbouring noisy steps must not read as the steepest.
    rates = np.geomspace(1e-7, 10.0, 200)
    position = np.log10(rates)
    noise = np.random.default_rng(2).normal(0.0, 0.01, size=rates.size)
    loss = 1.1 + noise - 0.15 * np.clip(position + 2, 0, 2) + 5 * np.clip(position, 0, None) ** 2
    steepest, minimum, (low, high) = suggest_range(rates, loss)
    assert 1e-2 <= steepest <= 1.0
    assert minimum == pytest.approx(1.0, rel=0.3)
    assert high / 1000 <= low <= high / 10


def test_suggest_range_reads_a_known_curve() -> None:
    rates = np.geomspace(1e-6, 1.0, 61)
    position = np.log10(rates)
    # Flat, then falling fastest at 1e-3, lowest at 1e-1, then rising.
    loss = 2.0 - np.tanh(position + 3) + np.clip(position + 1, 0, None) ** 2 * 40
    steepest, minimum, (low, high) = suggest_range(rates, loss)
    assert steepest == pytest.approx(1e-3, rel=0.3)
    assert minimum == pytest.approx(1e-1, rel=0.3)
    assert (low, high) == pytest.approx((steepest / 10, minimum / 10))
    with pytest.raises(ValueError, match="at least 3"):
        suggest_range([1e-3, 1e-2], [1.0, 0.5])


def test_the_plot_is_a_valid_png(tmp_path: Path) -> None:
    from matplotlib import image

    x, y, hypermodel = _regression()
    result = lr_range_test(hypermodel, x, y, sweep=Sweep(num_steps=60))
    path = plot_lr_find([result], tmp_path / "plots" / "lr.png")
    assert path.read_bytes()[:8] == _PNG_SIGNATURE
    pixels = image.imread(path)
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert pixels.std() > 0  # not a blank canvas


def test_auto_is_a_flag_and_other_text_is_rejected(tmp_path: Path) -> None:
    config = load_config(overrides=["search.learning_rate=auto"])
    assert config.search.learning_rate_auto
    save_config(config, tmp_path / "config.toml")
    assert load_config(tmp_path / "config.toml") == config
    # The default; a learning rate set by hand turns it off.
    assert load_config().search.learning_rate_auto
    assert not load_config(overrides=["search.learning_rate=[0.01, 0.1]"]).search.learning_rate_auto
    by_hand = load_config(overrides=["search.optimizer_learning_rates={sgd=[0.01, 0.1]}"])
    assert not by_hand.search.learning_rate_auto
    assert not load_config(overrides=["search.learning_rate_auto=false"]).search.learning_rate_auto
    with pytest.raises(UserInputError) as info:
        load_config(overrides=["search.learning_rate=fast"])
    assert "`search.learning_rate`" in str(info.value) and "'fast'" in str(info.value)


@pytest.mark.slow
def test_auto_sets_the_bounds_the_search_uses_and_keeps_them_on_resume(
    tmp_path: Path,
    csv_file: object,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = csv_file(200, task="regression")  # type: ignore[operator]
    # A tiny search pays for no range test (test_sizing.py); here every one runs.
    monkeypatch.setattr(lr_find, "RANGE_TEST_SHARE", 100.0)
    experiment = tmp_path / "exp"
    args = tiny_search_args(experiment, data)
    args += ["--set", "search.learning_rate=auto", "--set", "export.enabled=false"]
    args += ["--set", "search.optimizers=['adam', 'sgd']", "--max-trials", "4"]
    assert main(args) == 0
    found = json.loads((experiment / "lr_find.json").read_text())
    low, high = found["bounds"]
    assert 0 < low < high
    ranges = {name: tuple(bounds) for name, bounds in found["by_optimizer"].items()}
    assert set(ranges) == {"adam", "sgd"}
    assert ranges["adam"] != ranges["sgd"]  # measured per optimizer, not one range for all
    assert min(r[0] for r in ranges.values()) == low and max(r[1] for r in ranges.values()) == high
    assert (experiment / "lr_find.png").read_bytes()[:8] == _PNG_SIGNATURE
    # The oracle's space, which every trial samples from: a learning rate per optimizer,
    # each active only under its optimizer, with that optimizer's bounds.
    oracle = json.loads((experiment / "search" / "oracle.json").read_text())
    declared = {}
    for hp in oracle["hyperparameters"]["space"]:
        if hp["config"]["name"].endswith("learning_rate"):
            ((condition,),) = [hp["config"]["conditions"]]
            (name,) = condition["config"]["values"]
            assert hp["config"]["name"] == f"{name}_learning_rate"
            declared[name] = (hp["config"]["min_value"], hp["config"]["max_value"])
            assert hp["config"]["sampling"] == "log"
    assert declared.keys() == ranges.keys()
    for name, bounds in ranges.items():
        assert declared[name] == pytest.approx(bounds)
    trials = [
        json.loads(f.read_text())["hyperparameters"]["values"]
        for f in (experiment / "search").glob("trial_*/trial.json")
    ]
    assert len(trials) == 4
    for values in trials:
        own_low, own_high = ranges[values["optimizer"]]
        assert own_low <= values[f"{values['optimizer']}_learning_rate"] <= own_high
    saved = load_config(experiment / "config.toml").search
    assert saved.learning_rate == pytest.approx((low, high))
    assert saved.optimizer_learning_rates.keys() == ranges.keys()
    for name, bounds in ranges.items():
        assert saved.optimizer_learning_rates[name] == pytest.approx(bounds)

    # Run again, it resumes with the bounds it found (no new range test, no refusal).
    def no_new_range_test(*args: object, **kwargs: object) -> None:
        raise AssertionError("the range test ran again on resume")

    args[len(args) - 1 - args[::-1].index("--max-trials") + 1] = "5"
    with monkeypatch.context() as patch:
        patch.setattr(lr_find, "find_learning_rates", no_new_range_test)
        assert main(args) == 0
    assert json.loads((experiment / "lr_find.json").read_text()) == found
    assert len(list((experiment / "search").glob("trial_*"))) == 5

    # The command on its own prints the range it suggests and saves the plot.
    plot = tmp_path / "lr.png"
    capsys.readouterr()
    assert main(["lr-find", "--data", str(data), "--label", "label", "--output", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "Suggested search.learning_rate = [" in out
    assert plot.read_bytes()[:8] == _PNG_SIGNATURE
    # Per optimizer, it prints the ranges as a config line that loads as it reads.
    args = ["lr-find", "--data", str(data), "--label", "label", "--output", str(plot)]
    assert main([*args, "--per-optimizer", "--set", "search.optimizers=['adam', 'sgd']"]) == 0
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("Per optimizer")]
    setting = line.split(": ", 1)[1].replace(" = {", "={", 1)
    ranges = load_config(overrides=[setting]).search.optimizer_learning_rates
    assert set(ranges) == {"adam", "sgd"}
    assert all(0 < low < high for low, high in ranges.values())


def test_a_sweep_that_does_not_rise_is_refused() -> None:
    with pytest.raises(ValueError, match=r"min_lr=1\.0, max_lr=0\.1"):
        Sweep(min_lr=1.0, max_lr=0.1)
