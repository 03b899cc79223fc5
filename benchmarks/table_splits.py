"""The benchmark's own cut of a table into the rows methods fit on and the rows held
out: random rows, or a deployment split written as ``kt-pipeline search --split`` writes
it.

- ``random``: seeded rows, stratified by class where a label is given;
- ``time:COLUMN``: the latest rows by the column are held out, the cut placed between
  two distinct times nearest the fraction, so rows with equal times (a year of a panel)
  stay together. The seed plays no part: every seed holds out the same rows;
- ``group:COLUMN[,COLUMN...]``: a seeded share of the groups (the rows sharing those
  columns' values) is held out whole.

The benchmark cuts its held-out 20 % this way, and `lightgbm_tuned` its validation 15 %
of the remaining rows, so that both follow the split the table is deployed under.
kt-pipeline's own cut of what it is given (`kt_pipeline.splits`) follows the same rules;
this module does not import it, so that the benchmark's held-out rows never depend on
the code under test.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["RANDOM", "holdout", "parse"]

RANDOM = "random"
_KINDS = ("time", "group")


def parse(spec: str) -> tuple[str, tuple[str, ...]]:
    """The kind (``random``, ``time`` or ``group``) and columns of a split spec.

    Raises:
        ValueError: another form; the message shows the spec.
    """
    kind, _, rest = spec.partition(":")
    columns = tuple(c.strip() for c in rest.split(",")) if rest else ()
    valid = (
        (kind == RANDOM and not columns)
        or (kind == "time" and len(columns) == 1 and columns[0] != "")
        or (kind == "group" and columns and "" not in columns)
    )
    if not valid:
        raise ValueError(
            "Argument `spec` must be random, time:COLUMN or group:COLUMN[,COLUMN...]. "
            f"Received: spec={spec!r}"
        )
    return kind, columns


def holdout(
    frame: pd.DataFrame,
    spec: str,
    *,
    fraction: float,
    seed: int,
    stratify: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The sorted positions of the rows kept and of the rows held out (about `fraction`
    of them) under `spec`. `stratify` (class labels) applies to ``random`` only.

    Raises:
        ValueError: a bad spec, a time column with gaps or values that are neither
            numbers nor ISO dates, or fewer than two distinct times or groups.
    """
    from sklearn.model_selection import GroupShuffleSplit, train_test_split

    kind, columns = parse(spec)
    positions = np.arange(len(frame))
    if kind == RANDOM:
        kept, held = train_test_split(
            positions, test_size=fraction, random_state=seed, stratify=stratify
        )
    elif kind == "time":
        held_mask = _latest(_times(frame[columns[0]], spec), fraction, spec)
        kept, held = positions[~held_mask], positions[held_mask]
    else:
        groups = frame.groupby(list(columns), dropna=False, sort=True).ngroup().to_numpy()
        if len(np.unique(groups)) < 2:
            raise ValueError(f"split {spec!r} needs at least two groups. Received: one")
        cut = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
        kept, held = next(cut.split(positions, groups=groups))
    return np.sort(kept), np.sort(held)


def _times(series: pd.Series, spec: str) -> np.ndarray:
    """The column as sortable numbers: its numbers, or its ISO dates' nanoseconds."""
    if series.isna().any():
        raise ValueError(
            f"time column of split {spec!r} has {int(series.isna().sum())} rows without a time"
        )
    if pd.api.types.is_numeric_dtype(series):
        return series.to_numpy("float64")
    times = pd.to_datetime(series.astype("string"), format="ISO8601")
    return times.to_numpy("datetime64[ns]").astype("int64").astype("float64")


def _latest(times: np.ndarray, fraction: float, spec: str) -> np.ndarray:
    """Rows at or after the distinct time whose share of later rows is nearest
    `fraction` (the earlier time where two are as near), at least one time each side."""
    values, counts = np.unique(times, return_counts=True)
    if len(values) < 2:
        raise ValueError(f"split {spec!r} needs at least two distinct times. Received: one")
    # Share of rows at or after each distinct time but the first.
    later = np.cumsum(counts[::-1])[::-1][1:] / len(times)
    first_held = 1 + int(np.argmin(np.abs(later - fraction)))
    return times >= values[first_held]
