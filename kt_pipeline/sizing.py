"""Defaults sized for the table: batch sizes and the epoch budget follow the number of
training rows, so that a large table trains in minutes with the same search a small
one gets.

On CPUs most of a small batch's step is fixed overhead, and an epoch of thousands of
small steps on a large table costs minutes; TabM and RealMLP train large tables at
batch 256 and more. A large table's epoch also carries more updates, so fewer epochs
reach the same fit: the epoch budget shrinks so that the default schedule trains about
as many rows in all as it does at 100,000 rows. `benchmarks/real_table_quality.py`
measures what this buys on real tables.
"""

from __future__ import annotations

import math

from kt_pipeline.splits import GROUP

__all__ = ["batch_sizes_for", "folds_for", "max_epochs_for", "members_for", "refit_for"]

# The smallest batch keeps an epoch at this many steps or more, within these bounds.
_STEPS_PER_EPOCH = 128
_SMALLEST_BATCH = (32, 512)

# Up to this many training rows the longest trial trains the full epoch budget.
_FULL_BUDGET_ROWS = 100_000
_MAX_EPOCHS = 20
# Hyperband with factor 3 runs its full 30 trials from 10 epochs up (9 gives 23).
_MIN_EPOCHS = 10

# A shared-weight ensemble's members (TabM-mini), and the training rows times members
# an epoch may carry: as many as a 262,144-row table's plain epoch.
_MEMBERS = 16
_MEMBER_ROWS = 2**18

# Cross-validated trials under ``data.folds = "auto"``: this many folds under a group
# split whose validation part holds fewer groups than this, on tables of up to this many
# rows (`benchmarks/README.md`, "Cross-validated trials").
_FOLDS = 3
_FOLDS_BELOW_GROUPS = 200
_FOLDS_MAX_ROWS = _FULL_BUDGET_ROWS


def batch_sizes_for(train_rows: int) -> tuple[int, ...]:
    """Three doublings of the largest power of two that gives an epoch at least 128
    steps, from 32 (tables up to 8,191 rows keep the classic 32-128) up to 512
    (512-2,048 from 65,536 rows)."""
    low, high = _SMALLEST_BATCH
    smallest = 2 ** int(math.log2(max(1.0, train_rows / _STEPS_PER_EPOCH)))
    smallest = min(max(smallest, low), high)
    return (smallest, 2 * smallest, 4 * smallest)


def max_epochs_for(train_rows: int) -> int:
    """20 epochs up to 100,000 training rows, then 20 x 100,000 / rows, down to 10 (from
    200,000 rows), where Hyperband still runs all its trials."""
    if train_rows <= _FULL_BUDGET_ROWS:
        return _MAX_EPOCHS
    return max(_MIN_EPOCHS, round(_MAX_EPOCHS * _FULL_BUDGET_ROWS / train_rows))


def members_for(train_rows: int) -> tuple[int, ...]:
    """16 members where the training rows times 16 fit in a 262,144-row epoch (up to
    16,384 rows), one above: the members cost about 16 times a plain step's arithmetic,
    which a small table's short search affords and a large table's does not."""
    return (_MEMBERS,) if train_rows * _MEMBERS <= _MEMBER_ROWS else (1,)


def refit_for(train_rows: int) -> bool:
    """Whether ``export.refit = "auto"`` may train the chosen members again: up to
    100,000 training rows. Above, the search already trains fewer epochs to keep its
    time, and the validation rows a refit adds teach a model of that many rows little
    for the minutes the refit costs (`benchmarks/README.md`, "Time at size")."""
    return train_rows <= _FULL_BUDGET_ROWS


def folds_for(rows: int, *, split_kind: str, validation_groups: int) -> int:
    """``data.folds = "auto"``: 3 folds under a group split whose validation part holds
    fewer than 200 groups, on tables of up to 100,000 rows; one validation part elsewhere.

    A group split's scores vary from group to group, so a few dozen groups score each
    trial by its luck with them, and folds score it on every training group. Where one
    part holds hundreds of groups or rows, its luck is small: three folds did not pay on
    random splits of 650-950 validation rows, nor forward-chained folds under a time
    split, whose later periods favour barely trained models (`benchmarks/README.md`)."""
    if split_kind != GROUP or rows > _FOLDS_MAX_ROWS:
        return 1
    return _FOLDS if validation_groups < _FOLDS_BELOW_GROUPS else 1
