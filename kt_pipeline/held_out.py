"""The held-out score, and how far it would move on other rows like the test rows.

A score on a few hundred test rows, or on a dozen unseen groups, is one draw. Its
interval says how wide that draw is, so that a lucky draw is not read as a better
model. The interval is a percentile bootstrap (`scipy.stats.bootstrap`) over the test
rows, or over whole groups under a ``group:`` split, where a new group brings all its
rows at once. It measures which rows were drawn, not how a later period differs:
under a ``time:`` split the next period may lie outside it.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

__all__ = [
    "INTERVAL_LEVEL",
    "MIN_UNITS",
    "RESAMPLES",
    "format_scores",
    "score_intervals",
    "score_predictions",
]

#: The intervals' confidence level.
INTERVAL_LEVEL = 0.95
#: Bootstrap resamples: the 2.5th and 97.5th percentiles of 500 draws move by a small
#: part of the interval's width from one seed to another.
RESAMPLES = 500
#: Fewer resamples on large test sets, to bound the rows scored in all (AUC's sort
#: dominates): their intervals are narrow, so a coarser percentile costs little.
ROWS_SCORED = 10_000_000
MIN_RESAMPLES = 200
#: Fewer test rows or groups than this give no interval: a bootstrap of a handful of
#: units says little about the units it never drew.
MIN_UNITS = 10


def score_predictions(
    outputs: dict[str, np.ndarray], y_true: np.ndarray, *, task: str
) -> dict[str, float]:
    """Test metrics from an export's outputs: accuracy (and AUC) or MSE, MAE, R²."""
    from sklearn import metrics

    if task == "regression":
        predicted = outputs["value"]
        return {
            "mse": float(metrics.mean_squared_error(y_true, predicted)),
            "mae": float(metrics.mean_absolute_error(y_true, predicted)),
            "r2": float(metrics.r2_score(y_true, predicted)),
        }
    scores = {"accuracy": float(np.mean(outputs["class_id"] == y_true))}
    if task == "binary":
        scores["auc"] = float(metrics.roc_auc_score(y_true, outputs["probabilities"][:, 1]))
    return scores


def score_intervals(
    outputs: dict[str, np.ndarray],
    y_true: np.ndarray,
    *,
    task: str,
    groups: np.ndarray | None = None,
    seed: int = 0,
    level: float = INTERVAL_LEVEL,
    resamples: int = RESAMPLES,
) -> dict[str, Any]:
    """Bootstrap intervals of `score_predictions`' metrics, resampling the test rows,
    or the groups of `groups` (one id per row) when given.

    Returns:
        ``{"level", "resampled" (what was drawn: "412 rows", "13 groups"), "metrics"
        ({name: [low, high]})}``, or {} for fewer than `MIN_UNITS` rows or groups. A
        metric left undefined by some draws (AUC on a draw of one class) has none.
    """
    import sklearn
    from scipy import stats

    keys = [k for k in ("value", "class_id", "probabilities") if k in outputs]
    members = None if groups is None else _rows_of_each_group(groups)
    units = len(y_true) if members is None else len(members)
    if units < MIN_UNITS:
        return {}
    names = list(score_predictions(outputs, y_true, task=task))

    def statistic(drawn: np.ndarray) -> np.ndarray:
        rows = drawn if members is None else np.concatenate([members[u] for u in drawn])
        try:
            scores = score_predictions({k: outputs[k][rows] for k in keys}, y_true[rows], task=task)
        except ValueError:  # a draw of one class: AUC is undefined
            return np.full(len(names), np.nan)
        return np.array([scores[n] for n in names])

    resamples = max(MIN_RESAMPLES, min(resamples, ROWS_SCORED // len(y_true)))
    # The arrays were checked once above: skip sklearn's checks on every draw. A draw of
    # one class leaves AUC undefined (NaN, with a warning), and a draw that cannot vary
    # (every row right) a degenerate interval: neither is worth a warning here.
    with (
        sklearn.config_context(skip_parameter_validation=True, assume_finite=True),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        result = stats.bootstrap(
            (np.arange(units),),
            statistic,
            n_resamples=resamples,
            vectorized=False,
            confidence_level=level,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
    low, high = map(np.atleast_1d, result.confidence_interval)
    return {
        "level": level,
        "resampled": f"{units} {'rows' if members is None else 'groups'}",
        "metrics": {
            name: [float(lo), float(hi)]
            for name, lo, hi in zip(names, low, high, strict=True)
            if np.isfinite(lo) and np.isfinite(hi)
        },
    }


def _rows_of_each_group(groups: np.ndarray) -> list[np.ndarray]:
    """The row indices of each group, one array per group."""
    _, group_of_row = np.unique(groups, return_inverse=True)
    order = np.argsort(group_of_row, kind="stable")
    return np.split(order, np.cumsum(np.bincount(group_of_row))[:-1])


def format_scores(scores: dict[str, float], intervals: dict[str, Any] | None = None) -> str:
    """One line of held-out scores, each with its interval where there is one."""
    bounds = (intervals or {}).get("metrics") or {}
    text = ", ".join(
        f"{name} {value:.4f}"
        + (f" [{bounds[name][0]:.4f}, {bounds[name][1]:.4f}]" if name in bounds else "")
        for name, value in scores.items()
    )
    if not text:
        return "n/a"
    if bounds and intervals:
        caveat = f"; {intervals['caveat']}" if intervals.get("caveat") else ""
        text += (
            f" ({intervals['level']:.0%} bootstrap intervals, drawing the "
            f"{intervals['resampled']} again{caveat})"
        )
    return text
