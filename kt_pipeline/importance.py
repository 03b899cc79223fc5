"""Hyperparameter importance: how much of the objective's variation each one explains.

The estimate is fANOVA-style (Hutter, Hoos and Leyton-Brown, 2014): a random forest is
fitted to the trials (hyperparameters in, objective out); for each tree and each
hyperparameter, the tree's marginal prediction as a function of that hyperparameter
alone (the others averaged out) is computed, and the variance of this marginal over
the variance of the tree's predictions is the share of variance the hyperparameter
explains on its own (its first-order effect). The shares are averaged over the trees.
fANOVA integrates over the whole space with uniform weights; here both variances are
taken under the product of the values each hyperparameter took in the trials (sampled
column by column), which is what the trials of a search tell us, and keeps the shares
of one decomposition (they sum to at most 1, up to sampling noise).

It works on plain arrays, so it can be checked on synthetic objectives; encoding the
hyperparameters (categories as codes, log-scale values as logarithms, inactive values
as a sentinel) is the caller's job.
"""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import RandomForestRegressor

__all__ = ["hyperparameter_importance"]

_MAX_GRID = 32
_SAMPLES = 128


def hyperparameter_importance(
    x: np.ndarray,
    y: np.ndarray,
    names: list[str],
    *,
    n_trees: int = 64,
    seed: int = 0,
) -> list[tuple[str, float]]:
    """Each hyperparameter's share of the objective's variance, largest first.

    Args:
        x: One row per trial, one column per hyperparameter, numeric and finite.
        y: The objective of each trial.
        names: The column names of `x`.
        n_trees: Trees in the random forest.
        seed: Seed of the forest.

    Returns:
        ``(name, share)`` pairs sorted by decreasing share; shares lie in [0, 1] and
        sum to at most 1 (the rest is interactions and noise).

    Raises:
        ValueError: `x`, `y` and `names` do not agree in shape, or `x` is not finite.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[1] != len(names):
        raise ValueError(
            "Arguments `x`, `y` and `names` must describe the same trials and columns. "
            f"Received: x.shape={x.shape}, y.shape={y.shape}, len(names)={len(names)}"
        )
    if not np.isfinite(x).all():
        raise ValueError("Argument `x` must be finite; encode inactive values first.")
    if len(y) < 2 or np.ptp(y) == 0:
        return [(name, 0.0) for name in names]
    forest = RandomForestRegressor(n_estimators=n_trees, random_state=seed, min_samples_leaf=1)
    forest.fit(x, y)
    grids = [_grid(x[:, j]) for j in range(x.shape[1])]
    # Points of the product measure: each column drawn independently from its values.
    rng = np.random.default_rng(seed)
    points = np.column_stack([rng.choice(x[:, j], size=_SAMPLES) for j in range(x.shape[1])])
    shares = np.zeros(x.shape[1])
    used = 0
    for tree in forest.estimators_:
        if np.ptp(tree.predict(points)) == 0:
            continue
        used += 1
        for j, (values, weights) in enumerate(grids):
            # Every point with hyperparameter j set to each grid value, predicted at once.
            stacked = np.repeat(points[None, :, :], len(values), axis=0)
            stacked[:, :, j] = values[:, None]
            predictions = tree.predict(stacked.reshape(-1, x.shape[1])).reshape(len(values), -1)
            means = predictions.mean(axis=1)
            centre = float(np.average(means, weights=weights))
            # Law of total variance over the same points: the share is at most 1.
            total = float(np.average(((predictions - centre) ** 2).mean(axis=1), weights=weights))
            if total > 0:
                shares[j] += float(np.average((means - centre) ** 2, weights=weights)) / total
    if used:
        shares /= used
    ranked = sorted(zip(names, np.clip(shares, 0.0, 1.0).tolist(), strict=True), key=_by_share)
    return ranked


def _by_share(item: tuple[str, float]) -> tuple[float, str]:
    return (-item[1], item[0])


def _grid(column: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The values a column takes (quantiles when there are many), with their weights."""
    values, counts = np.unique(column, return_counts=True)
    if len(values) <= _MAX_GRID:
        return values, counts.astype(float)
    quantiles = np.quantile(column, np.linspace(0, 1, _MAX_GRID))
    return quantiles, np.ones(_MAX_GRID)
