"""The held-out score's interval (`kt_pipeline.held_out`): what it draws, and how wide."""

from __future__ import annotations

import numpy as np
import pytest

from kt_pipeline.held_out import MIN_UNITS, format_scores, score_intervals, score_predictions


def _grouped_regression(groups: int, rows_per_group: int, *, seed: int = 0):  # type: ignore[no-untyped-def]
    """Predictions whose errors are shared within each group (a group-level effect the
    model missed), as on a panel of people or shops."""
    rng = np.random.default_rng(seed)
    group = np.repeat(np.arange(groups), rows_per_group)
    y = rng.normal(size=group.size) + rng.normal(size=groups)[group]
    missed = rng.normal(scale=0.8, size=groups)[group]
    predicted = y + missed + rng.normal(scale=0.3, size=group.size)
    return {"value": predicted}, y, group


def _width(intervals: dict, name: str) -> float:  # type: ignore[type-arg]
    low, high = intervals["metrics"][name]
    return float(high - low)


def test_each_interval_holds_its_score_and_says_what_it_drew() -> None:
    outputs, y, _ = _grouped_regression(40, 10)
    scores = score_predictions(outputs, y, task="regression")
    intervals = score_intervals(outputs, y, task="regression", seed=0)
    assert intervals["resampled"] == "400 rows" and intervals["level"] == 0.95
    for name, value in scores.items():
        low, high = intervals["metrics"][name]
        assert low < value < high


def test_errors_shared_within_groups_widen_the_interval_drawn_by_group() -> None:
    """Rows of one group are not independent draws: resampling rows would claim a
    precision that unseen groups do not give."""
    outputs, y, group = _grouped_regression(20, 20)
    by_row = score_intervals(outputs, y, task="regression", seed=0)
    by_group = score_intervals(outputs, y, task="regression", groups=group, seed=0)
    assert by_group["resampled"] == "20 groups"
    assert _width(by_group, "r2") > 2 * _width(by_row, "r2")
    assert _width(by_group, "mse") > 2 * _width(by_row, "mse")


def test_ten_times_the_rows_give_about_a_third_of_the_width() -> None:
    small = score_intervals(*_grouped_regression(400, 1)[:2], task="regression", seed=0)
    large = score_intervals(*_grouped_regression(4000, 1)[:2], task="regression", seed=0)
    assert 0.2 < _width(large, "mae") / _width(small, "mae") < 0.5


def test_a_seed_fixes_the_interval() -> None:
    outputs, y, group = _grouped_regression(30, 5)
    first = score_intervals(outputs, y, task="regression", groups=group, seed=3)
    assert first == score_intervals(outputs, y, task="regression", groups=group, seed=3)
    assert first != score_intervals(outputs, y, task="regression", groups=group, seed=4)


def test_too_few_groups_give_no_interval() -> None:
    outputs, y, group = _grouped_regression(MIN_UNITS - 1, 30)
    assert score_intervals(outputs, y, task="regression", groups=group) == {}
    assert score_intervals(outputs, y, task="regression")["resampled"] == f"{y.size} rows"


def test_a_metric_some_draws_leave_undefined_has_no_interval() -> None:
    """AUC on a draw of only one class is undefined: no interval rather than a wrong
    one, while accuracy keeps its own."""
    y = np.zeros(40, dtype=int)
    y[0] = 1  # a draw misses the one positive row about a third of the time
    outputs = {"class_id": y, "probabilities": np.stack([1.0 - y, y.astype(float)], axis=1)}
    intervals = score_intervals(outputs, y, task="binary", seed=0)
    assert set(intervals["metrics"]) == {"accuracy"}


@pytest.mark.parametrize(
    ("intervals", "expected"),
    [
        (None, "r2 0.5000"),
        (
            {"level": 0.95, "resampled": "13 groups", "metrics": {"r2": [0.25, 0.75]}},
            "r2 0.5000 [0.2500, 0.7500] (95% bootstrap intervals, drawing the 13 groups again)",
        ),
        (
            {
                "level": 0.95,
                "resampled": "40 rows",
                "metrics": {"r2": [0.25, 0.75]},
                "caveat": "a later period may fall outside them",
            },
            "r2 0.5000 [0.2500, 0.7500] (95% bootstrap intervals, drawing the 40 rows again; "
            "a later period may fall outside them)",
        ),
    ],
)
def test_scores_print_with_their_intervals(intervals: dict | None, expected: str) -> None:  # type: ignore[type-arg]
    assert format_scores({"r2": 0.5}, intervals) == expected
