"""The benchmarks run in CI at a tiny size so they cannot rot, and the search-quality
summary's arithmetic is checked on hand-made runs."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
README = BENCHMARKS.parent / "README.md"


def _module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _run(script: str, *args: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(BENCHMARKS.parent), "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def _record(epochs: int, score: float | None) -> dict[str, Any]:
    return {"epochs": epochs, "score": score}


def test_the_curve_is_the_best_score_so_far_against_epochs_spent() -> None:
    quality = _module("search_quality")
    records = [_record(3, None), _record(3, 0.5), _record(4, 0.4), _record(10, 0.9)]
    # A failed first trial spends budget but has no score to plot.
    baselines = _module("keras_baselines")
    assert baselines.best_so_far(records) == [[6, 0.5], [10, 0.5], [20, 0.9]]
    assert quality._epochs_to_reach([[6, 0.5], [10, 0.5], [20, 0.9]], 0.8) == 20
    assert quality._epochs_to_reach([[6, 0.5]], 0.8) is None
    assert baselines.best_at([[6, 0.5], [20, 0.9]], 19) == 0.5


def _run_record(method: str, seed: int, accuracy: float, curve: list[list[float]]) -> dict:
    return {
        "method": method,
        "dataset": "digits",
        "seed": seed,
        "budget": 30,
        "test_accuracy": accuracy,
        "curve": curve,
        "epochs": curve[-1][0],
        "best_validation": curve[-1][1],
        "seconds": 1.0,
    }


def _scored(method: str, accuracies: dict[int, float]) -> list[dict]:
    """Runs of `method` with these test accuracies by seed (all with one flat curve)."""
    return [_run_record(method, seed, score, [[30, 0.9]]) for seed, score in accuracies.items()]


def test_the_summary_names_baselines_that_beat_the_pipeline_and_the_budget_it_needed() -> None:
    quality = _module("search_quality")
    runs = [
        _run_record("pipeline", 0, 0.90, [[5, 0.8], [9, 0.95]]),
        _run_record("pipeline", 1, 0.92, [[5, 0.7], [30, 0.75]]),
        _run_record("kt_random", 0, 0.80, [[20, 0.9], [30, 0.9]]),
        _run_record("kt_random", 1, 0.80, [[20, 0.8], [30, 0.8]]),
        _run_record("untuned", 0, 0.95, [[30, 0.9]]),
        _run_record("untuned", 1, 0.93, [[30, 0.9]]),
    ]
    text, summary = quality.summarise(runs, command="cmd", tiny=False)
    assert summary["cells"]["pipeline"]["digits"]["test_accuracy_mean"] == pytest.approx(0.91)
    assert summary["cells"]["untuned"]["digits"]["seeds"] == 2
    goals = summary["goals"]["digits"]
    assert goals["baselines_with_higher_mean"] == ["untuned"]
    # Seed 0: RandomSearch's final 0.9 reached after 9 of its 30 epochs; seed 1: never.
    assert goals["fraction_of_random_budget_to_reach_its_final_validation"] == [0.3, None]
    assert goals["seeds_within_a_third"] == 1
    # Averaged over seeds: 0.75, 0.825, then 0.85 = RandomSearch's mean final at epoch 30.
    assert goals["mean_curve_fraction_of_random_budget"] == 1.0
    # After 10 of RandomSearch's 30 epochs: 0.95 and 0.7; RandomSearch itself has no
    # finished trial yet, which counts as 0.
    at_a_third = summary["best_validation_at_a_third"]
    assert at_a_third["kt_random (final)"] == {"digits": 0.85}
    assert at_a_third["pipeline"] == {"digits": 0.825}
    assert at_a_third["kt_random"] == {"digits": 0.0}
    assert "| pipeline | 0.8250 |" in text
    assert "| pipeline | 0.9100 +- 0.0141 (n=2) |" in text


def test_the_budget_goal_is_counted_for_every_search_but_the_yardstick() -> None:
    quality = _module("search_quality")
    runs = [
        {**_run_record("pipeline", 0, 0.9, [[5, 0.95]]), "single_model_test_accuracy": 0.9},
        _run_record("pipeline", 1, 0.9, [[20, 0.85]]),
        _run_record("kt_hyperband", 0, 0.9, [[12, 0.9]]),  # 12 of 30 epochs: > a third
        _run_record("kt_hyperband", 1, 0.9, [[9, 0.7], [30, 0.9]]),
        _run_record("kt_random", 0, 0.8, [[20, 0.9], [30, 0.9]]),
        _run_record("kt_random", 1, 0.8, [[20, 0.8], [30, 0.8]]),
        # RandomSearch re-drawn is measured against the first draw like any search.
        _run_record("kt_random_again", 0, 0.8, [[20, 0.85], [30, 0.9]]),
        _run_record("kt_random_again", 1, 0.8, [[10, 0.8], [30, 0.8]]),
    ]
    text, summary = quality.summarise(runs, command="cmd", tiny=False)
    table = summary["budget_goal"]
    # No yardstick, no derived row.
    assert set(table) == {"pipeline", "kt_hyperband", "kt_random_again"}
    assert table["pipeline"]["digits"] == {
        "fractions": [0.167, 0.667],
        "reached": 2,
        "within_a_third": 1,
        "median": 0.417,
    }
    assert table["kt_hyperband"]["digits"]["fractions"] == [0.4, 1.0]
    assert table["kt_hyperband"]["digits"]["within_a_third"] == 0
    assert "| pipeline | 1/2 (reached 2; median 0.42) | 1/2 |" in text
    assert "| kt_hyperband | 0/2 (reached 2; median 0.70) | 0/2 |" in text
    assert table["kt_random_again"]["digits"]["fractions"] == [1.0, 0.333]
    assert "| kt_random_again | 1/2 (reached 2; median 0.67) | 1/2 |" in text


def test_the_median_seed_counts_a_seed_that_never_got_there_as_over_any_budget() -> None:
    quality = _module("search_quality")
    assert quality._median_fraction([0.1, None, 0.3]) == 0.3
    assert quality._median_fraction([0.1, None, None]) is None  # the median seed never did
    assert quality._median_fraction([0.2, None]) is None  # halfway to "never" is never
    assert quality._median_fraction([0.5, 0.1, 0.2, 0.3]) == 0.25


def test_the_pipeline_is_paired_with_every_baseline_on_the_seeds_both_ran() -> None:
    quality = _module("search_quality")
    runs = [
        *_scored("pipeline", {0: 0.90, 1: 0.95}),
        *_scored("optuna_tpe", {0: 0.92, 1: 0.90}),
        *_scored("untuned", {1: 0.95}),
    ]
    text, summary = quality.summarise(runs, command="cmd", tiny=False)
    rows = {row["second"]: row for row in summary["comparisons"]}
    assert set(rows) == {"optuna_tpe", "untuned"}
    assert rows["optuna_tpe"]["mean_difference"] == pytest.approx(0.015)
    assert (rows["optuna_tpe"]["better"], rows["optuna_tpe"]["worse"]) == (1, 1)
    assert (rows["untuned"]["seeds"], rows["untuned"]["equal"]) == (1, 1)
    assert "| pipeline | optuna_tpe | digits | +0.0150 | 1 / 1 / 0 |" in text


def test_variants_are_compared_seed_by_seed_where_both_ran() -> None:
    quality = _module("search_quality")
    runs = [
        *_scored("pipeline_shared_lr", {0: 0.90, 1: 0.92, 2: 0.80}),
        *_scored("pipeline_bohb", {0: 0.95, 1: 0.92, 3: 0.10}),  # no Hyperband run on seed 3
    ]
    text, summary = quality.summarise(runs, command="cmd", tiny=False)
    (row,) = summary["comparisons"]
    pair = ("pipeline_bohb", "pipeline_shared_lr", "digits")
    assert (row["first"], row["second"], row["dataset"]) == pair
    assert row["seeds"] == 2
    assert row["mean_difference"] == pytest.approx(0.025)
    assert (row["better"], row["worse"], row["equal"]) == (1, 0, 1)
    assert "| pipeline_bohb | pipeline_shared_lr | digits | +0.0250 | 1 / 0 / 1 |" in text


def test_the_single_model_row_rescores_the_pipelines_own_searches() -> None:
    quality = _module("search_quality")
    curve = [[30, 0.9]]
    runs = [
        {**_run_record("pipeline", 0, 0.95, curve), "single_model_test_accuracy": 0.93},
        {**_run_record("pipeline", 1, 0.90, curve), "single_model_test_accuracy": 0.90},
        _run_record("pipeline", 2, 0.80, curve),  # from before the ensemble: no such score
    ]
    _, summary = quality.summarise(runs, command="cmd", tiny=False)
    single = summary["cells"]["pipeline_single_model"]["digits"]
    assert (single["seeds"], single["test_accuracy_mean"]) == (2, pytest.approx(0.915))
    assert summary["cells"]["pipeline"]["digits"]["seeds"] == 3
    (row,) = summary["comparisons"]
    assert (row["first"], row["second"], row["seeds"]) == ("pipeline", "pipeline_single_model", 2)
    assert (row["better"], row["worse"], row["equal"]) == (1, 0, 1)


def test_runs_from_other_folders_are_summarised_with_these_and_not_run_again(
    tmp_path: Path,
) -> None:
    """`--also-runs` joins runs made under other --results or --first-seed settings."""
    own, other = tmp_path / "search_quality_runs", tmp_path / "elsewhere"
    for folder, seed in ((own, 0), (other, 1), (other, 7)):  # seed 7 is outside --seeds 2
        folder.mkdir(exist_ok=True)
        for method, accuracy in (("pipeline", 0.9 + seed / 100), ("kt_random", 0.8)):
            run = _run_record(method, seed, accuracy, [[10, 0.85], [30, 0.9]])
            (folder / f"{method}-digits-{seed}.json").write_text(json.dumps(run))
    _run(
        "search_quality.py",
        *("--seeds", "2", "--methods", "pipeline,kt_random", "--datasets", "digits"),
        *("--results", str(tmp_path), "--also-runs", str(other)),
    )
    summary = json.loads((tmp_path / "search_quality.json").read_text())
    cell = summary["cells"]["pipeline"]["digits"]
    assert (cell["seeds"], cell["test_accuracy_mean"]) == (2, pytest.approx(0.905))
    assert sorted(p.name for p in own.iterdir()) == [
        "kt_random-digits-0.json",
        "pipeline-digits-0.json",
    ]


@pytest.mark.slow
def test_tiny_search_quality_benchmark(tmp_path: Path) -> None:
    _run("search_quality.py", "--tiny", "--datasets", "breast_cancer", "--results", str(tmp_path))
    summary = json.loads((tmp_path / "search_quality_tiny.json").read_text())
    quality = _module("search_quality")
    assert set(summary["cells"]) == {*quality.TINY_METHODS, *quality.DERIVED}
    runs = [json.loads(p.read_text()) for p in (tmp_path / "search_quality_tiny_runs").iterdir()]
    for run in runs:
        assert 0.5 <= run["test_accuracy"] <= 1.0, run["method"]
        assert 0 < run["epochs"] <= run["budget"], run["method"]
        spent = [point[0] for point in run["curve"]]
        best = [point[1] for point in run["curve"]]
        assert spent == sorted(spent) and best == sorted(best), run["method"]
    assert (tmp_path / "search_quality_tiny_breast_cancer.png").stat().st_size > 10_000


def test_every_pipeline_variant_of_the_search_benchmark_loads(tmp_path: Path) -> None:
    """The variants the tiny run leaves out: their settings are valid, and each sets
    something the default does not."""
    from kt_pipeline.config import load_config

    quality = _module("search_quality")
    settings = {"max_epochs": 4, "factor": 3}
    common = {"source": "builtin:digits", "seed": 0, "budget": 30, "settings": settings}
    default = load_config(None, quality.pipeline_overrides("pipeline", work=tmp_path, **common))
    for method in quality.VARIANTS:
        if method in quality.RECORDED:  # its setting was removed: nothing runs it again
            assert method not in quality.SEARCHES and method in quality.METHODS
            continue
        overrides = quality.pipeline_overrides(method, work=tmp_path, **common)
        assert load_config(None, overrides) != default, method


@pytest.mark.slow
def test_tiny_trial_speed_memory_and_workers_benchmarks(tmp_path: Path) -> None:
    _run("trial_speed.py", "--epochs", "1", "--configs", "1", "--results", str(tmp_path))
    speed = json.loads((tmp_path / "trial_speed.json").read_text())
    assert speed["epoch_speedup_median"] > 0 and len(speed["rows"]) == 1
    assert 0 < speed["val_accuracy_pipeline_mean"] <= 1
    _run("memory.py", "--trials", "6", "--results", str(tmp_path))
    memory = json.loads((tmp_path / "memory.json").read_text())
    assert memory["completed"] == 6 and len(memory["rss_mib_per_trial"]) == 6
    _run("workers.py", "--trials", "2", "--epochs", "1", "--data", "builtin:iris", "--results",
         str(tmp_path))  # fmt: skip
    workers = json.loads((tmp_path / "workers.json").read_text())
    assert workers["ratio_2_to_1_search"] > 0 and workers["trials"] == 2


@pytest.mark.slow
def test_tiny_oracle_load_loses_no_trial_of_a_killed_worker(tmp_path: Path) -> None:
    """Both engines under a tiny load with one of two worker processes killed: the
    killed workers' trials are taken back and completed by the others, once each, and
    the records agree with what the workers did (Optuna on SQLite here: CI has no
    PostgreSQL)."""
    common = ("--workers", "4", "--processes", "2", "--seconds", "4", "--lease", "1.5")
    common += ("--epochs", "3", "--epoch-seconds", "0.3", "--killed", "0.5")
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    _run("oracle_load.py", *common, "--optuna-storage", storage, "--results", str(tmp_path))
    lines = json.loads((tmp_path / "oracle_load.json").read_text())
    assert [line["engine"] for line in lines] == ["kerastuner", "optuna"]
    for line in lines:
        # A worker killed between two trials holds none, so there are one or two
        # orphans; each is taken back by its lease and completed by another worker.
        orphans = int(line["killed_trials_completed_by_another"].split("/")[1])
        assert line["killed_workers"] == 2 and 1 <= orphans <= line["lease_expiries"], line
        assert line["killed_trials_completed_by_another"] == f"{orphans}/{orphans}", line
        assert line["trials_lost"] == 0 and line["trials_completed_twice"] == 0, line
        assert line["records_agree"] and line["trials_completed"] > 4, line
        assert line["p99_ms"] >= line["p50_ms"] > 0 and not line["call_errors"], line
    assert "| 4 | kerastuner |" in (tmp_path / "oracle_load.md").read_text()


def test_seconds_from_different_cpus_are_flagged_and_one_cpu_is_not() -> None:
    quality = _module("search_quality")
    curve = [[30, 0.9]]
    fast = {**_run_record("pipeline", 0, 0.9, curve), "cpu": "Fast CPU"}
    old = _run_record("kt_random", 0, 0.9, curve)  # a run from before the CPU was recorded
    text, _ = quality.summarise([fast, old], command="cmd", tiny=False)
    assert "Fast CPU: pipeline; not recorded: kt_random." in text
    same = {**old, "cpu": "Fast CPU"}
    text, _ = quality.summarise([fast, same], command="cmd", tiny=False)
    assert "comparable only between rows" not in text


def test_every_real_table_loads_with_the_network_refused() -> None:
    tables = _module("real_tables")
    splits = _module("table_splits")
    real = {n: t for n, t in tables.TABLES.items() if not n.startswith("generated_330k")}
    assert len(real) >= 5
    with tables.no_network():
        frames = {name: table.load() for name, table in real.items()}
    for name, frame in frames.items():
        assert 1_000 <= len(frame) <= 60_000, name
        assert real[name].label in frame.columns, name
        for spec in real[name].deploy:  # its columns exist and cut it
            _, held = splits.holdout(frame, spec, fraction=0.2, seed=0)
            assert 0.1 < len(held) / len(frame) < 0.3, (name, spec)
    # Tables deployed on later rows or new entities, held-out tables among them, and a
    # date-string column beside the same date split by hand into numbers.
    deployed = {n for n, t in real.items() if t.deploy}
    assert len(deployed) >= 5 and len({n for n in deployed if real[n].held_out}) >= 3
    assert {s.partition(":")[0] for t in real.values() for s in t.deploy} == {"time", "group"}
    dated, parts = frames["bundesliga"], frames["bundesliga_date_parts"]
    assert pd.to_datetime(dated["Date"].dropna(), format="ISO8601").dt.year.min() == 1963
    assert dated["home_win"].equals(parts["home_win"]) and "Date" not in parts
    assert {"date_year", "date_month", "date_day"} <= set(parts.columns)
    with_strings = [
        name
        for name, frame in frames.items()
        if any(frame[c].dtype == object for c in frame.columns if c != real[name].label)
    ]
    assert len(with_strings) >= 2
    assert {t.task for t in real.values()} == {"binary", "multiclass", "regression"}


def test_the_generated_table_has_a_high_cardinality_column_of_mostly_rare_levels() -> None:
    frame = _module("real_tables").generated_table(20_000, seed=1)
    counts = frame["merchant"].value_counts()
    assert len(counts) > 2_000 and (counts < 5).mean() > 0.5
    assert 0.15 < (frame["converted"] == "yes").mean() < 0.4
    assert frame["x6"].isna().any() and not frame["x0"].isna().any()


def _real_run(method: str, table: str, seed: int, score: float) -> dict[str, Any]:
    return {"method": method, "table": table, "seed": seed, "score": score, "seconds": 1.0}


def test_the_real_table_summary_gives_means_spreads_and_the_pairs() -> None:
    quality = _module("real_table_quality")
    runs = [
        _real_run("pipeline", "fair", 0, 70.0),
        _real_run("pipeline", "fair", 1, 74.0),
        _real_run("lightgbm", "fair", 0, 71.0),
        _real_run("lightgbm", "fair", 1, 72.0),
        _real_run("lightgbm", "fair", 2, 99.0),  # no pipeline run on seed 2: no pair
        _real_run("hist_gb", "benefits", 0, 60.0),
    ]
    text, summary = quality.summarise(runs, command="cmd")
    assert summary["cells"]["pipeline"]["fair"]["score_mean"] == 72.0
    assert summary["cells"]["pipeline"]["fair"]["score_std"] == pytest.approx(2.83, abs=0.01)
    assert summary["cells"]["lightgbm"]["fair"]["seeds"] == 3
    assert summary["against_lightgbm"] == [
        {"table": "fair", "mean_difference": 0.5, "better": 1, "worse": 1, "seeds": 2}
    ]
    assert "| pipeline | 72.00 +- 2.83 (2) | - |" in text
    assert "| lightgbm | +0.50 (1/1) | - |" in text


def test_the_summary_sets_what_the_pipeline_reported_against_its_held_out_score() -> None:
    quality = _module("real_table_quality")
    penn = {"split": "time:year"}
    runs = [
        # The first seed's interval holds the later rows' score, the second's does not.
        {**_real_run("pipeline", "penn_savings", 0, 70.0), **penn, "reported": 80.0,
         "reported_interval": [68.0, 84.0]},
        {**_real_run("pipeline", "penn_savings", 1, 60.0), **penn, "reported": 79.0,
         "reported_interval": [74.0, 83.0]},
        {**_real_run("pipeline", "penn_savings", 2, 65.0), **penn, "reported": 79.5},
        _real_run("pipeline", "fair", 0, 74.0),  # from before runs recorded it
    ]  # fmt: skip
    text, summary = quality.summarise(runs, command="cmd")
    assert summary["reported"] == {
        "penn_savings@time": {
            "intervals": 2,
            "inside": 1,
            "reported": 79.5,
            "score": 65.0,
            "gap": 14.5,
            "largest_gap": 19.0,
            "seeds": 3,
        }
    }
    assert "| penn_savings@time | 79.50 | 65.00 | +14.50 | +19.00 (3) | 1/2 |" in text


def test_the_anytime_share_is_where_the_mean_curve_reaches_randoms_final_score() -> None:
    quality = _module("real_table_quality")

    def run(method: str, seed: int, curve: list[list[float]]) -> dict[str, Any]:
        return {**_real_run(method, "fair", seed, 70.0), "curve": curve}

    runs = [
        run("kt_random", 0, [[20, 0.6], [100, 0.7]]),
        run("kt_random", 1, [[20, 0.6], [100, 0.8]]),  # target 0.75 at 100 epochs
        run("pipeline", 0, [[10, 0.7], [30, 0.8]]),
        run("pipeline", 1, [[10, 0.7], [30, 0.7], [60, 0.72]]),
        # mean 0.70 at 10, 0.75 at 30 (both seeds have a point): reached at 30/100
        run("optuna_tpe", 0, [[50, 0.6]]),
        run("optuna_tpe", 1, [[50, 0.6]]),
    ]
    anytime = quality._anytime(runs, ["pipeline", "kt_random", "optuna_tpe"], ["fair"])
    assert anytime["pipeline"]["fair"] == {"share": 0.3, "seeds": 2}
    assert anytime["optuna_tpe"]["fair"] == {"share": None, "seeds": 2}
    assert "kt_random" not in anytime


@pytest.mark.slow
def test_tiny_real_table_benchmark(tmp_path: Path) -> None:
    """Every default method, CatBoost and tuned LightGBM among them, on a binary table's
    random split; the methods the split changes on a regression table's deployment split
    (new schools); the searches kept for the ensemble and refit benchmarks."""
    quality = _module("real_table_quality")
    deployed = "star_math@group"
    split_aware = ["pipeline", "lightgbm", "lightgbm_pipeline_rows", "lightgbm_tuned"]
    kept = tmp_path / "experiments"
    common = ["--tiny", "--results", str(tmp_path), "--keep-experiments", str(kept)]
    _run("real_table_quality.py", "--tables", "benefits", *common)
    summary = json.loads((tmp_path / "real_table_quality_tiny.json").read_text())
    assert {"catboost", "lightgbm_tuned"} <= set(quality.DEFAULT_METHODS)
    assert set(summary["cells"]) == set(quality.DEFAULT_METHODS)
    _run("real_table_quality.py", "--tables", deployed, "--methods", ",".join(split_aware), *common)
    summary = json.loads((tmp_path / "real_table_quality_tiny.json").read_text())
    assert set(summary["cells"]) == set(split_aware) and set(summary["tables"]) == {deployed}
    runs = [
        json.loads(p.read_text()) for p in (tmp_path / "real_table_quality_tiny_runs").iterdir()
    ]
    assert len(runs) == len(quality.DEFAULT_METHODS) + len(split_aware)
    for run in runs:
        key = quality.run_key(run)
        assert re.fullmatch(r"[0-9a-f]{7,}", run["commit"]) and run["dirty"] in (True, False)
        assert run["cpu"] and run["split"] == quality.SPLITS[key][1]
        if run["table"] == "benefits":  # AUC points: better than chance
            assert 50 < run["score"] <= 100, run["method"]
            assert run["test_rows"] == 300
        else:  # R^2 points: finite, at most perfect; the held-out schools' rows
            assert run["score"] <= 100, run["method"]
            assert run["train_rows"] + run["test_rows"] == 1500
        assert run["seconds"] > 0
        if run["method"] == "lightgbm_pipeline_rows" and key == "benefits":
            assert run["fit_rows"] == 840 and run["train_rows"] == 1200, run  # 70 % of 1,200
        if run["method"] == "pipeline":  # the resolved config, the split in it
            assert run["config"]["data"]["label"] == quality.SPLITS[key][0].label
            assert run["config"]["data"].get("split", "random") == run["split"]
            from kt_pipeline.model_card import load_card

            experiment = kept / f"{key}-{run['seed']}" / "experiment"
            export = json.loads((experiment / "summary.json").read_text())["export_dir"]
            assert run["refit"] == (load_card(export).get("refit") or {})  # what it served
        if run["method"] == "lightgbm_tuned":
            assert run["trials"] == quality.TINY_TRIALS and run["refit"], run
            assert run["budget_from"] == f"pipeline-{key}-0.json", run
        if quality.METHODS[run["method"]] in ("ours", "keras"):  # searches: a curve
            assert run["curve"] and run["curve"][-1][0] == run["epochs"], run["method"]
            if run["method"] == "kt_random":  # epochs, not one history entry per trial
                assert run["epochs"] > len(run["curve"]), run
    # The kept searches, re-scored with each way of choosing the served model.
    _run("ensemble_choice.py", "--experiments", str(kept), "--results", str(tmp_path))
    choices = json.loads((tmp_path / "ensemble_choice.json").read_text())
    assert sorted(c["table"] for c in choices) == ["benefits", deployed]
    for choice in choices:
        assert set(choice["scores"]) == set(_module("ensemble_choice").WAYS)
        assert choice["members"]["best_single"] == 1 and choice["members"]["greedy_3"] <= 3
    _run("refit.py", "--experiments", str(kept), "--tables", "benefits", "--results", str(tmp_path))
    (refit,) = json.loads((tmp_path / "refit.json").read_text())
    assert refit["table"] == "benefits" and 0 < refit["searched"] <= 100
    assert 0 < refit["refit"] <= 100 and refit["refit_seconds"] > 0
    assert 0 < refit["blend"] <= 100
    assert len(refit["refit_epochs"]) == refit["members"]


@pytest.mark.slow
def test_tiny_throughput_time_budget_and_small_budget_benchmarks(tmp_path: Path) -> None:
    _run("large_table_throughput.py", "--rows", "4000", "--batch-sizes", "512", "--results",
         str(tmp_path))  # fmt: skip
    throughput = json.loads((tmp_path / "large_table_throughput.json").read_text())
    assert [r["variant"] for r in throughput["runs"]] == ["all columns", "string columns dropped"]
    assert all(r["samples_per_second"] > 0 for r in throughput["runs"])
    _run("time_budget.py", "--table", "fair", "--budgets", "20s", "--results", str(tmp_path))
    (budget,) = json.loads((tmp_path / "time_budget.json").read_text())
    assert budget["exported"] and budget["completed_trials"] >= 1
    _run(
        "small_budget.py", "--budgets", "1x1", "--repeats", "1", "--floors",
        "--results", str(tmp_path),
    )  # fmt: skip
    small = json.loads((tmp_path / "small_budget.json").read_text())
    assert small["median_speedup"]["1x1"] > 0 and len(small["runs"]) == 1
    assert (
        small["runs"][0]["no_fixed_costs"] > 0
        and small["runs"][0]["no_fixed_costs_plain_space"] > 0
    )


def test_tiny_fingerprint_benchmark(tmp_path: Path) -> None:
    _run("fingerprint.py", "--rows", "2000", "--repeats", "1", "--results", str(tmp_path))
    runs = json.loads((tmp_path / "fingerprint.json").read_text())["runs"]
    assert [run["format"] for run in runs] == ["parquet", "csv"]
    assert all(run["fingerprint_s"] > 0 for run in runs)


def test_a_time_holdout_keeps_equal_times_together_whatever_the_seed() -> None:
    splits = _module("table_splits")
    frame = pd.DataFrame({"year": [2000] * 30 + [2001] * 30 + [2002] * 25 + [2003] * 15})
    frame = frame.sample(frac=1.0, random_state=0).reset_index(drop=True)
    for seed in (0, 5):
        kept, held = splits.holdout(frame, "time:year", fraction=0.2, seed=seed)
        # 2003 alone holds 15 % of the rows, 2002-2003 40 %: 15 % is nearer 20 %.
        assert set(frame["year"].iloc[held]) == {2003}
        assert sorted(np.concatenate([kept, held])) == list(range(100))
    kept, held = splits.holdout(frame, "time:year", fraction=0.35, seed=0)
    assert set(frame["year"].iloc[held]) == {2002, 2003}


def test_a_time_holdout_orders_iso_date_strings_as_dates() -> None:
    splits = _module("table_splits")
    # As text "2021-01-02 09:00" sorts before "2021-01-02T08:00"; as times it is later.
    frame = pd.DataFrame({"when": ["2021-01-01", "2021-01-02T08:00", "2021-01-02 09:00"] * 3})
    _, held = splits.holdout(frame, "time:when", fraction=0.3, seed=0)
    assert set(frame["when"].iloc[held]) == {"2021-01-02 09:00"}


def test_a_group_holdout_holds_out_a_seeded_fifth_of_the_groups_whole() -> None:
    splits = _module("table_splits")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"school": rng.integers(0, 50, 1_000), "x": rng.normal(size=1_000)})
    held_groups = []
    for seed in (0, 1):
        kept, held = splits.holdout(frame, "group:school", fraction=0.2, seed=seed)
        inside, outside = set(frame["school"].iloc[held]), set(frame["school"].iloc[kept])
        assert not inside & outside and len(inside) == 10
        held_groups.append(inside)
    assert held_groups[0] != held_groups[1]


def test_a_split_spec_names_its_kind_and_columns() -> None:
    splits = _module("table_splits")
    assert splits.parse("group:a,b") == ("group", ("a", "b"))
    assert splits.parse("random") == ("random", ())
    for bad in ("time:", "time:a,b", "column:a", "random:a", "group:a,"):
        with pytest.raises(ValueError, match=re.escape(f"Received: spec={bad!r}")):
            splits.parse(bad)


def test_each_deployment_split_is_a_column_of_its_own_and_old_runs_are_random() -> None:
    quality = _module("real_table_quality")
    assert quality.SPLITS["males_wage@time"][1] == "time:year"
    assert quality.SPLITS["star_math@group"][1] == "group:schidkn"
    assert "randhie@group" not in quality.SPLITS  # no person id to group by
    timed = {"split": "time:year"}
    runs = [
        _real_run("pipeline", "males_wage", 0, 40.0),  # from before splits were recorded
        _real_run("lightgbm", "males_wage", 0, 30.0),
        {**_real_run("pipeline", "males_wage", 0, 20.0), **timed},
        {**_real_run("pipeline", "males_wage", 1, 22.0), **timed},
        {**_real_run("lightgbm", "males_wage", 0, 21.0), **timed},
        {**_real_run("lightgbm", "males_wage", 1, 25.0), **timed},
    ]
    text, summary = quality.summarise(runs, command="cmd")
    assert summary["cells"]["pipeline"]["males_wage"]["score_mean"] == 40.0
    assert summary["cells"]["pipeline"]["males_wage@time"]["score_mean"] == 21.0
    assert summary["tables"]["males_wage@time"] == {
        "table": "males_wage",
        "split": "time:year",
        "role": "design",
    }
    by_key = {row["table"]: row for row in summary["against_lightgbm"]}
    assert by_key["males_wage"]["mean_difference"] == 10.0
    assert (by_key["males_wage@time"]["better"], by_key["males_wage@time"]["worse"]) == (0, 2)
    assert "| method | males_wage | males_wage@time |" in text
    assert "males_wage@time (`time:year`)" in text


def test_the_default_row_from_two_commits_is_refused_unless_allowed() -> None:
    quality = _module("real_table_quality")

    def run(method: str, table: str, commit: str, dirty: bool) -> dict[str, Any]:
        return {**_real_run(method, table, 0, 70.0), "commit": commit, "dirty": dirty}

    runs = [
        run("pipeline", "fair", "abc1234", False),
        run("pipeline", "benefits", "abc1234", True),
        run("lightgbm", "fair", "0ff8155", False),  # other methods may come from others
        run("lightgbm", "benefits", "abc1234", False),
    ]
    with pytest.raises(quality.MixedCommits, match=re.escape("(abc1234, abc1234+dirty)")):
        quality.summarise(runs, command="cmd")
    text, summary = quality.summarise(runs, command="cmd", allow_mixed_commits=True)
    assert summary["code"]["pipeline"] == {"fair": ["abc1234"], "benefits": ["abc1234+dirty"]}
    assert summary["code"]["lightgbm"] == {"fair": ["0ff8155"], "benefits": ["abc1234"]}
    assert "**Warning: the default's runs come from 2 commits**" in text
    assert "- lightgbm: fair 0ff8155; benefits abc1234" in text
    # One commit (or none recorded, as before commits were) is summarised as it is.
    text, summary = quality.summarise(runs[:1] + runs[2:], command="cmd")
    assert "- pipeline: abc1234" in text and "Warning" not in text
    _, summary = quality.summarise([_real_run("pipeline", "fair", 0, 70.0)], command="cmd")
    assert summary["code"]["pipeline"] == {"fair": [quality.NOT_RECORDED]}
    code = quality.code_version()  # what a run records: this checkout's commit
    assert re.fullmatch(r"[0-9a-f]{7,}", code["commit"]) and code["dirty"] in (True, False)


def test_tuned_lightgbm_gets_the_pipelines_seconds_on_its_table_split_and_seed(
    tmp_path: Path,
) -> None:
    quality = _module("real_table_quality")
    for seed, seconds in ((0, 80.0), (1, 120.0)):
        path = tmp_path / f"pipeline-males_wage@time-{seed}.json"
        path.write_text(json.dumps({"seconds": seconds}))
    budget = quality._seconds_budget
    assert budget(tmp_path, "males_wage@time", 0) == (80.0, "pipeline-males_wage@time-0.json")
    assert budget(tmp_path, "males_wage@time", 7) == (100.0, "mean of 2 pipeline seeds")
    assert budget(tmp_path, "males_wage", 0) == (quality.DEFAULT_SECONDS, "default")


def test_catboost_and_tuned_lightgbm_fit_and_score_a_small_split() -> None:
    quality = _module("real_table_quality")
    tables = _module("real_tables")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "year": np.repeat(np.arange(2000, 2010), 40),
            "shop": rng.choice(["a", "b", "c", None], 400),
            "x": rng.normal(size=400),
        }
    )
    frame["y"] = 2 * frame["x"] + (frame["shop"] == "a") + rng.normal(scale=0.1, size=400)
    table = tables.Table("toy", "here", "regression", "y", "r2", lambda: frame.copy())
    train, test = quality.split(table, 0, tiny=False, spec="time:year")
    assert set(test["year"]) == {2008, 2009}
    trees = quality._run_trees("catboost", table, train, test, seed=0, tiny=True)
    assert 50 < trees["score"] <= 100
    tuned = quality._run_lightgbm_tuned(
        table, "time:year", train, test, seed=0, budget=60.0, tiny=True
    )
    assert tuned["trials"] == quality.TINY_TRIALS and tuned["refit"]
    assert tuned["validation_rows"] == 40  # the latest year of the 320 training rows
    assert 50 < tuned["score"] <= 100 and tuned["best_params"]["rounds"] >= 1


#: The README's real-table columns, and the summary's method each shows.
_README_METHODS = {
    "kt-pipeline default (s)": "pipeline",
    "kt-pipeline default": "pipeline",
    "LightGBM": "lightgbm",
    "LightGBM, the pipeline's rows": "lightgbm_pipeline_rows",
    "XGBoost": "xgboost",
    "HistGB": "hist_gb",
    "RealMLP-TD": "realmlp_td",
    "RandomSearch": "kt_random",
    "Hyperband": "kt_hyperband",
    "Optuna TPE": "optuna_tpe",
    "CatBoost": "catboost",
}
_README_PAIRS = {
    "default - LightGBM": "lightgbm",
    "default - RealMLP-TD": "realmlp_td",
    "default - CatBoost": "catboost",
    "default - XGBoost": "xgboost",
}
_SCORE = re.compile(r"^\**(-?\d+\.\d\d)(?: \+- (\d+\.\d\d))?\**(?: \((\d+) s\))?$")
_PAIR = re.compile(r"^([+-]\d+\.\d\d) \((\d+) / (\d+)\)$")


def _readme_real_tables(heading: str) -> list[dict[str, str]]:
    """The rows of the tables under the main README's `heading`, as {column: cell}."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index(heading) :]
    section = section[: section.index("\n## ", 3)]
    rows: list[dict[str, str]] = []
    header: list[str] = []
    for line in section.splitlines():
        if not line.startswith("|"):
            header = []
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not header:
            header = cells
        elif not set(cells[0]) <= {"-", " "}:
            rows.append(dict(zip(header, cells, strict=True)))
    return rows


@pytest.mark.parametrize(
    ("heading", "summary_file", "least"),
    [
        ("## Real tables", "real_table_quality.json", 8),
        ("## Split as users deploy", "real_table_deploy.json", 6),
    ],
)
def test_the_readme_real_table_figures_are_the_summarys(
    heading: str, summary_file: str, least: int
) -> None:
    """Every score, spread, seconds and paired difference in the README's real-table
    tables under `heading`, as printed, against the summary file it comes from."""
    summary = json.loads((BENCHMARKS / "results" / summary_file).read_text())
    rows = _readme_real_tables(heading)
    assert len(rows) >= least
    checked, differences = 0, set()
    for row in rows:
        first = next(iter(row))
        table = row[first].split()[0].strip("`")
        for column, cell in row.items():
            if column in _README_METHODS:
                method = _README_METHODS[column]
                stats = summary["cells"].get(method, {}).get(table)
                if cell == "-":
                    assert stats is None, (table, column)
                    continue
                match = _SCORE.match(cell)
                assert match and stats, (table, column, cell)
                mean, std, seconds = match.groups()
                assert mean == f"{stats['score_mean']:.2f}", (table, column)
                assert std is None or std == f"{stats['score_std']:.2f}", (table, column)
                # Whole seconds in the README from the summary's tenths.
                if seconds is not None and abs(int(seconds) - stats["seconds_mean"]) > 0.5:
                    differences.add((table, method, "seconds"))
                checked += 1
            elif column in _README_PAIRS:
                pairs = {r["table"]: r for r in summary["against"].get(_README_PAIRS[column], [])}
                if cell == "-":
                    assert table not in pairs, (table, column)
                    continue
                match = _PAIR.match(cell)
                pair = pairs[table]
                assert match, (table, column, cell)
                assert match.groups() == (
                    f"{pair['mean_difference']:+.2f}",
                    str(pair["better"]),
                    str(pair["worse"]),
                ), (table, column)
                checked += 1
    lightgbm = {r["table"]: r for r in summary["against_lightgbm"]}
    assert lightgbm == {r["table"]: r for r in summary["against"]["lightgbm"]}
    assert checked >= 5 * least
    assert not differences, sorted(differences)


def test_own_split_gap_scores_lightgbm_on_its_own_latest_rows_and_the_next() -> None:
    gap = _module("own_split_gap")
    own, held_out = gap.gap("penn_savings@time", 0)
    assert np.isfinite(own) and np.isfinite(held_out) and own != held_out
    assert gap.gap("penn_savings@time", 1) == (own, held_out)  # a time split has no seed


def test_identifier_screen_leaves_out_the_noise_id_and_nothing_of_the_real_table() -> None:
    screen = _module("identifier_screen")
    rows = [screen.screened("fair_noise", 0), screen.screened("fair", 0)]
    assert rows[0]["dropped"] == [screen.NOISE] and rows[1]["dropped"] == []
    assert abs(rows[0]["shares"][screen.NOISE]) < 0.005 and rows[1]["shares"] == {}
    text = screen.summarise(rows, command="c", code={"commit": "abc1234", "dirty": False})
    assert "| fair_noise | 1 |" in text and f"{screen.NOISE} (1/1)" in text
    assert text.splitlines()[-1].endswith("| - | nothing |")  # fair: no identifier at all
