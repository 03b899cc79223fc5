"""How rows are cut into train, validation and test: at random, or as users deploy.

A model meant for later rows (next month's flights) or for new entities (patients,
shops, machines the training rows never saw) is only measured honestly on such rows.
A random row split lets the validation and test rows share their day or their entity
with training rows, so the search, the features it chooses, the ensemble and the
reported held-out score all reward memorising them. `data.split` says how to cut:

- ``random``: seeded rows, stratified by class (the default);
- ``time:COLUMN``: the earliest rows train, later ones validate, the latest are the
  test rows; rows with equal times stay in one part;
- ``group:COLUMN[,COLUMN...]``: no group (the rows sharing those columns' values) is
  in two parts;
- ``column:COLUMN``: the column says ``train``, ``validation`` or ``test`` for each
  row, and is no feature.

Steps that fit on the training rows out of fold (the target encodings and the choice
of the rows' key, `hypermodels.features`) take `training_folds`, which cut the
training rows the same way, so that they too score what a later or unseen row gets.

With ``data.folds = k`` the validation rows join the training rows and each trial is
cross-validated on `TrialFolds` of them, cut the same way again: shuffled (stratified)
folds of a random split, whole groups of a group split, and forward-chaining periods of
a time split (each fold's model trains on the periods before the one it is scored on).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hypermodels.features import DATETIME, ROW_MIN_SCORE, TabularSchema
from kt_pipeline.errors import UserInputError

if TYPE_CHECKING:
    from kt_pipeline.data import Dataset

__all__ = [
    "SPLIT_KINDS",
    "LeakCheck",
    "Split",
    "SplitSpec",
    "Splits",
    "TrialFolds",
    "split_dataset",
    "split_indices",
    "time_like_columns",
    "training_folds",
]

RANDOM, TIME, GROUP, COLUMN = "random", "time", "group", "column"
#: The ways `data.split` may cut the rows.
SPLIT_KINDS = (RANDOM, TIME, GROUP, COLUMN)
#: The values a ``column:`` split's column may hold (compared without case or spaces).
PART_NAMES = ("train", "validation", "test")
#: Folds of the out-of-fold fits on the training rows (`training_folds`).
FOLDS = 5


@dataclasses.dataclass(frozen=True)
class SplitSpec:
    """A parsed `data.split`: its kind and the columns it names."""

    kind: str = RANDOM
    columns: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str, *, field: str = "data.split") -> SplitSpec:
        """Reads ``random``, ``time:COLUMN``, ``group:COLUMN[,COLUMN...]`` or
        ``column:COLUMN``.

        Raises:
            UserInputError: another form; the message names `field` and the text.
        """
        kind, _, rest = str(text).strip().partition(":")
        columns = tuple(c.strip() for c in rest.split(",")) if rest.strip() else ()
        allowed = "random, time:COLUMN, group:COLUMN[,COLUMN...] or column:COLUMN"
        if kind not in SPLIT_KINDS or (kind == RANDOM) != (not columns) or "" in columns:
            raise UserInputError(f"`{field}` must be {allowed}. Received: {text!r}")
        if kind in (TIME, COLUMN) and len(columns) != 1:
            raise UserInputError(f"`{field}` {kind}: takes one column. Received: {text!r}")
        if len(set(columns)) != len(columns):
            raise UserInputError(f"`{field}` names a column twice. Received: {text!r}")
        return cls(kind, columns)

    def __str__(self) -> str:
        return self.kind if self.kind == RANDOM else f"{self.kind}:{','.join(self.columns)}"


@dataclasses.dataclass(frozen=True)
class Split:
    """One part of a split: feature rows and labels."""

    frame: pd.DataFrame
    y: np.ndarray
    #: Each row's group under a ``group:`` split (the held-out score's interval draws
    #: whole groups), else None.
    groups: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.y)


@dataclasses.dataclass(frozen=True)
class TrialFolds:
    """The folds of a cross-validated trial (``data.folds``): one model per fold, each
    trained on its own rows of the training part and scored on its fold's rows, so
    every scored row's prediction is out of fold.

    Attributes:
        ids: Each training row's fold; -1 (forward chaining) for the rows every model
            trains on and none is scored on.
        count: The fold models.
        forward: Forward chaining (a time split): model j trains on every row before
            fold j (-1 and folds 0..j-1) and is scored on fold j; else model j trains on
            every fold but j and is scored on fold j.
    """

    ids: np.ndarray
    count: int
    forward: bool = False

    def weights(self) -> tuple[np.ndarray, np.ndarray]:
        """``(train, scored)``, each ``(rows, count)`` float32: the sample weight of each
        row in each model's loss (scaled so each model's loss is the mean over its own
        rows), and a one-hot choice of the model that scores the row (none for the
        rows no model is scored on)."""
        models = np.arange(self.count)
        scored = self.ids[:, None] == models
        trains = self.ids[:, None] < models if self.forward else ~scored
        train = trains / trains.mean(axis=0)
        return train.astype("float32"), scored.astype("float32")

    def scored_rows(self) -> np.ndarray:
        """The positions of the rows some model is scored on."""
        return np.flatnonzero(self.ids >= 0)


@dataclasses.dataclass(frozen=True)
class Splits:
    """Train, validation and test parts (the search never sees `test`), how they were
    cut, and the columns left out of the features because of it.

    Attributes:
        spec: The split.
        dropped: Columns that are no features: a ``column:`` split's column, and group
            columns none of whose validation or test values occur in training (an
            unseen group's value can teach the model nothing it could use).
        folds: `training_folds` of the training rows, or None for shuffled folds.
        description: One line for the log, `plan` and the model card.
        trial_folds: The cross-validated trials' folds of the training rows
            (``data.folds`` > 1; the validation part is then empty), or None.
    """

    train: Split
    validation: Split
    test: Split
    spec: SplitSpec = SplitSpec()
    dropped: tuple[str, ...] = ()
    folds: np.ndarray | None = None
    description: str = "random rows (data.split = random)"
    trial_folds: TrialFolds | None = None

    def to_json(self) -> dict[str, Any]:
        """What the model card records of the split (`data.split` there)."""
        return {
            "spec": str(self.spec),
            "description": self.description,
            "not_features": list(self.dropped),
            "trial_folds": self.trial_folds.count if self.trial_folds else 0,
        }

    def notes(self) -> list[str]:
        """How the rows were cut, how trials are validated, and which columns that took
        out of the features, for the log and `plan`."""
        notes = [self.description]
        if self.trial_folds is not None:
            notes.append(_describe_folds(self.trial_folds, self.spec))
        if self.dropped:
            why = (
                " (no value is shared by training and held-out rows)"
                if self.spec.kind == GROUP
                else ""
            )
            named = ", ".join(map(repr, self.dropped))
            notes.append(f"not a feature under this split: {named}{why}")
        return notes


def split_dataset(
    dataset: Dataset,
    *,
    split: SplitSpec | str = RANDOM,
    validation_fraction: float,
    test_fraction: float,
    seed: int,
    folds: int = 1,
) -> Splits:
    """The train/validation/test parts of `dataset` under `split` (`split_indices`);
    with `folds` > 1 the validation rows join the training rows, which `trial_folds`
    cuts for cross-validated trials.

    Raises:
        UserInputError: too few rows, groups or times for the split or the folds, or a
            split column that is missing or cannot order or group the rows.
    """
    spec = split if isinstance(split, SplitSpec) else SplitSpec.parse(split)
    train, validation, test = split_indices(
        dataset,
        split=spec,
        validation_fraction=validation_fraction,
        test_fraction=test_fraction,
        seed=seed,
    )
    if folds > 1:
        train, validation = np.sort(np.concatenate([train, validation])), validation[:0]
    dropped = _not_features(dataset.frame, spec, train, np.concatenate([validation, test]))
    frame = dataset.frame.drop(columns=list(dropped))
    if frame.shape[1] == 0:
        raise UserInputError(
            f"`data.split` {str(spec)!r} leaves {dataset.name!r} no feature column: "
            f"{', '.join(map(repr, dropped))} cannot be features under it"
        )

    groups = _group_keys(dataset.frame, spec.columns) if spec.kind == GROUP else None

    def part(idx: np.ndarray) -> Split:
        return Split(
            frame=frame.iloc[idx].reset_index(drop=True),
            y=dataset.y[idx],
            groups=None if groups is None else groups[idx],
        )

    trained = dataset.frame.iloc[train]
    return Splits(
        train=part(train),
        validation=part(validation),
        test=part(test),
        spec=spec,
        dropped=dropped,
        folds=training_folds(trained, spec, seed=seed),
        description=_describe(dataset.frame, spec, (train, validation, test)),
        trial_folds=(
            trial_folds(trained, dataset.y[train], spec, folds=folds, seed=seed, task=dataset.task)
            if folds > 1
            else None
        ),
    )


def split_indices(
    dataset: Dataset,
    *,
    split: SplitSpec | str = RANDOM,
    validation_fraction: float,
    test_fraction: float,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The sorted row positions of the train, validation and test parts, for code that
    must train on exactly the rows a search trained on (benchmarks).

    Raises:
        UserInputError: as `split_dataset`.
    """
    spec = split if isinstance(split, SplitSpec) else SplitSpec.parse(split)
    rows = len(dataset.y)
    if rows < 3 or min(rows * test_fraction, rows * validation_fraction) < 1:
        raise UserInputError(
            f"data source {dataset.name!r} has too few rows ({rows}) for a train/validation/"
            f"test split with fractions {validation_fraction} and {test_fraction}"
        )
    for name in spec.columns:
        if name not in dataset.frame.columns:
            raise UserInputError(
                f"`data.split` names column {name!r}, which is not a feature column of "
                f"{dataset.name!r} (columns: {', '.join(map(str, dataset.frame.columns))})"
            )
    if spec.kind == RANDOM:
        parts = _random_parts(dataset, validation_fraction, test_fraction, seed)
    elif spec.kind == COLUMN:
        parts = _column_parts(dataset.frame[spec.columns[0]], spec)
    else:
        if spec.kind == TIME:
            order = _time_order(dataset.frame[spec.columns[0]], spec)
        else:
            order = _group_order(dataset.frame, spec, seed)
        parts = _ordered_parts(order, validation_fraction, test_fraction, spec)
    if dataset.task != "regression":
        _check_classes(dataset, spec, parts)
    return parts


def _random_parts(
    dataset: Dataset, validation_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded rows, stratified by class for classification (`_strata`)."""
    from sklearn.model_selection import train_test_split

    rows = len(dataset.y)
    classify = dataset.task != "regression"
    if classify and rows < max(3, 3 * dataset.num_classes):
        raise UserInputError(
            f"data source {dataset.name!r} has too few rows ({rows}) for a train/validation/"
            f"test split with fractions {validation_fraction} and {test_fraction}"
        )

    def cut(idx: np.ndarray, fraction: float, seed_offset: int) -> tuple[np.ndarray, np.ndarray]:
        stratify = _strata(dataset.y[idx], fraction) if classify else None
        first, second = train_test_split(
            idx, test_size=fraction, random_state=seed + seed_offset, stratify=stratify
        )
        return np.sort(first), np.sort(second)

    rest, test = cut(np.arange(rows), test_fraction, 0)
    train, validation = cut(rest, validation_fraction / (1 - test_fraction), 1)
    return train, validation, test


def _strata(labels: np.ndarray, fraction: float) -> np.ndarray | None:
    """The classes to stratify a cut on. A class with one row cannot be on both sides,
    so such classes share a stratum (joined to the largest class while that stratum
    is still one row); a cut smaller than the strata is not stratified. Rare classes
    then fall where the seed puts them instead of refusing the table."""
    _, codes, counts = np.unique(labels, return_inverse=True, return_counts=True)
    rare = counts[codes] < 2
    strata = np.where(rare, -1, codes)
    if 0 < rare.sum() < 2:
        strata[rare] = int(np.argmax(counts))
    count = len(np.unique(strata))
    smaller_part = min(
        math.ceil(fraction * len(labels)), len(labels) - math.ceil(fraction * len(labels))
    )
    return strata if count > 1 and smaller_part >= count else None


def _column_parts(series: pd.Series, spec: SplitSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    names = series.astype("string").str.strip().str.lower()
    unknown = series[~names.isin(PART_NAMES).fillna(False).astype(bool)]
    if len(unknown):
        raise UserInputError(
            f"column {spec.columns[0]!r} (`data.split` {str(spec)!r}) must say train, "
            f"validation or test for every row. Received: {unknown.iloc[0]!r}"
        )
    parts = tuple(np.flatnonzero((names == name).to_numpy(bool)) for name in PART_NAMES)
    for name, idx in zip(PART_NAMES, parts, strict=True):
        if not len(idx):
            raise UserInputError(
                f"column {spec.columns[0]!r} (`data.split` {str(spec)!r}) marks no row "
                f"{name!r}: every part needs rows"
            )
    return parts  # type: ignore[return-value]


def _time_order(series: pd.Series, spec: SplitSpec) -> np.ndarray:
    """Each row's time as a sortable number: the column's numbers, or its dates."""
    name = spec.columns[0]
    if series.isna().any() or (series.astype("string") == "").any():
        missing = int(series.isna().sum() + (series.astype("string") == "").sum())
        raise UserInputError(
            f"column {name!r} (`data.split` {str(spec)!r}) has {missing} rows without a "
            "time: every row needs one to be placed before or after the others"
        )
    if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        return series.to_numpy("float64")
    if pd.api.types.is_datetime64_any_dtype(series):
        return _elapsed(series)
    times = pd.to_datetime(series.astype("string"), errors="coerce", format="ISO8601")
    if times.isna().any():
        bad = series[times.isna()].iloc[0]
        raise UserInputError(
            f"column {name!r} (`data.split` {str(spec)!r}) must hold numbers or ISO dates "
            f"(2024-01-31, 2024-01-31T08:15). Received: {bad!r}"
        )
    return _elapsed(times)


def _elapsed(times: pd.Series) -> np.ndarray:
    """Seconds since the epoch, the wall-clock time as written (time zones dropped)."""
    if getattr(times.dt, "tz", None) is not None:
        times = times.dt.tz_localize(None)
    stamps = times.astype("datetime64[ns]").to_numpy()
    return (stamps - np.datetime64(0, "ns")).astype("int64").astype("float64") / 1e9


def _group_keys(frame: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """Dense ids of the rows' joint values of `columns` (a gap is a value)."""
    return frame.groupby(list(columns), dropna=False, sort=True).ngroup().to_numpy("int64")


def _group_order(frame: pd.DataFrame, spec: SplitSpec, seed: int) -> np.ndarray:
    """Each row's rank in a seeded shuffle of the groups: rows of one group share it."""
    keys = _group_keys(frame, spec.columns)
    shuffled = np.random.default_rng(seed).permutation(int(keys.max()) + 1)
    return shuffled[keys].astype("float64")


def _ordered_parts(
    order: np.ndarray, validation_fraction: float, test_fraction: float, spec: SplitSpec
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows cut at the boundaries between distinct values of `order`, nearest to
    the fractions: the lowest values train, the highest are the test rows."""
    values, inverse, counts = np.unique(order, return_inverse=True, return_counts=True)
    what = "times" if spec.kind == TIME else "groups"
    if len(values) < 3:
        raise UserInputError(
            f"column {', '.join(map(repr, spec.columns))} (`data.split` {str(spec)!r}) needs "
            f"at least 3 distinct {what} to make train, "
            f"validation and test parts. Received: {len(values)}"
        )
    ends = np.cumsum(counts)
    rows = int(ends[-1])

    def boundary(share: float, low: int) -> int:
        """How many distinct values lie before the cut nearest `share` of the rows,
        leaving at least one value on each side."""
        cut = int(np.argmin(np.abs(ends - share * rows))) + 1
        return min(max(cut, low + 1), len(values) - (2 if low == 0 else 1))

    first = boundary(1.0 - validation_fraction - test_fraction, 0)
    second = boundary(1.0 - test_fraction, first)
    part = np.searchsorted([first, second], inverse, side="right")
    return tuple(np.flatnonzero(part == i) for i in range(3))  # type: ignore[return-value]


def _check_classes(
    dataset: Dataset, spec: SplitSpec, parts: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> None:
    """Training and validation rows need two classes each: the search scores on them."""
    for name, idx in zip(("training", "validation"), parts[:2], strict=True):
        if len(np.unique(dataset.y[idx])) < 2:
            raise UserInputError(
                f"`data.split` {str(spec)!r} leaves the {name} rows of {dataset.name!r} "
                "with one class: the search cannot score them"
            )


def _not_features(
    frame: pd.DataFrame, spec: SplitSpec, train: np.ndarray, others: np.ndarray
) -> tuple[str, ...]:
    """The split's columns that cannot be features (`Splits.dropped`)."""
    if spec.kind == COLUMN:
        return spec.columns
    if spec.kind != GROUP:
        return ()
    return tuple(
        name
        for name in spec.columns
        if not np.isin(
            frame[name].iloc[others].astype("string").fillna("<NA>").to_numpy(str),
            frame[name].iloc[train].astype("string").fillna("<NA>").to_numpy(str),
        ).any()
    )


def training_folds(
    frame: pd.DataFrame, spec: SplitSpec, *, seed: int, folds: int = FOLDS
) -> np.ndarray | None:
    """Fold ids (0..k-1) of the training rows that cut them as `spec` cuts the table:
    contiguous periods for a time split, whole groups for a group split; None (shuffled
    folds) for the others.

    An out-of-fold fit on such folds sees what a later period or an unseen group gets:
    the encoding of a key that names a day or a person falls back to the prior, and the
    key scores nothing.
    """
    if spec.kind == TIME:
        order = _time_order(frame[spec.columns[0]], spec)
    elif spec.kind == GROUP:
        order = _group_order(frame, spec, seed)
    else:
        return None
    values, inverse, counts = np.unique(order, return_inverse=True, return_counts=True)
    if len(values) < 2:
        return None
    folds = min(folds, len(values))
    before = np.cumsum(counts) - counts  # rows before each value
    fold_of_value = np.minimum(before * folds // len(order), folds - 1)
    # Fewer values than the cuts' places can leave a fold empty: number the used ones.
    used = np.unique(fold_of_value, return_inverse=True)[1]
    return used[inverse].astype("int64")


def trial_folds(
    frame: pd.DataFrame, y: np.ndarray, spec: SplitSpec, *, folds: int, seed: int, task: str
) -> TrialFolds:
    """`folds` folds of the training rows for cross-validated trials, cut as `spec`
    cuts the table: under a time split the latest half of the rows in `folds` periods
    chained forward, so every fold model trains on at least the earliest half (fewer
    periods where the times have fewer values); whole groups under a group split; else
    seeded rows, stratified by class where every class has a row in each fold.

    Raises:
        UserInputError: too few rows, groups or times for two folds.
    """
    from sklearn.model_selection import KFold, StratifiedKFold

    if spec.kind in (TIME, GROUP):
        forward = spec.kind == TIME
        # Under a time split, twice the periods: the earlier half trains every model.
        ids = training_folds(frame, spec, seed=seed, folds=2 * folds if forward else folds)
        if ids is None:
            order = (
                _time_order(frame[spec.columns[0]], spec)
                if forward
                else _group_keys(frame, spec.columns)
            )
            raise UserInputError(
                f"`data.folds` = {folds} needs the training rows to hold at least 2 "
                f"{'times' if forward else 'groups'} of `data.split` {str(spec)!r}. "
                f"Received: {len(np.unique(order))}"
            )
        if not forward:
            return TrialFolds(ids, count=int(ids.max()) + 1)
        base = (int(ids.max()) + 1) // 2  # periods before the first scored one
        return TrialFolds(np.maximum(ids - base, -1), count=int(ids.max()) + 1 - base, forward=True)
    if len(y) < 2 * folds:
        raise UserInputError(
            f"`data.folds` = {folds} needs at least {2 * folds} training rows. Received: {len(y)}"
        )
    counts = np.unique(y, return_counts=True)[1] if task != "regression" else np.array([0])
    splitter: Any = (
        StratifiedKFold(folds, shuffle=True, random_state=seed)
        if task != "regression" and counts.min() >= folds
        else KFold(folds, shuffle=True, random_state=seed)
    )
    ids = np.zeros(len(y), dtype="int64")
    for fold, (_, held) in enumerate(splitter.split(np.zeros(len(y)), y)):
        ids[held] = fold
    return TrialFolds(ids, count=folds)


def _describe_folds(folds: TrialFolds, spec: SplitSpec) -> str:
    """One line on how trials are validated (`Splits.notes`)."""
    if folds.forward:
        return (
            f"trials are cross-validated on {folds.count} forward-chained periods of the "
            f"latest half of the training rows (data.folds): each fold's model trains on "
            f"every row before the period it is scored on; not recommended yet under a "
            f"time split (docs: data guide, 'Cross-validated trials')"
        )
    how = "whole groups" if spec.kind == GROUP else "shuffled rows"
    return (
        f"trials are cross-validated on {folds.count} folds of {how} (data.folds): each "
        f"scored on its fold models' out-of-fold predictions"
    )


def _describe(
    frame: pd.DataFrame, spec: SplitSpec, parts: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> str:
    """One line on how the rows were cut, with the time boundaries of a time split."""
    if spec.kind == RANDOM:
        return "random rows (data.split = random)"
    if spec.kind == GROUP:
        keys = _group_keys(frame, spec.columns)
        counts = [len(np.unique(keys[idx])) for idx in parts]
        return (
            f"by group of {', '.join(map(repr, spec.columns))} (data.split = {spec}): "
            f"{counts[0]:,} / {counts[1]:,} / {counts[2]:,} groups in train / validation / test"
        )
    if spec.kind == COLUMN:
        return f"as column {spec.columns[0]!r} says (data.split = {spec})"
    series = frame[spec.columns[0]]
    spans = [
        f"{name} {_shown(series.iloc[idx].min())} to {_shown(series.iloc[idx].max())}"
        for name, idx in zip(PART_NAMES, parts, strict=True)
        if len(idx)  # no validation part under data.folds
    ]
    return f"by time of {spec.columns[0]!r} (data.split = {spec}): {', '.join(spans)}"


def _shown(value: object) -> str:
    """A time as a person writes it: 1987, not 1987.0."""
    return f"{value:.15g}" if isinstance(value, float | np.floating) else str(value)


#: Words of a column name that say it holds a time or a part of one.
_TIME_WORDS = frozenset(
    {"year", "yr", "month", "mon", "day", "date", "week", "hour", "time", "quarter",
     "qtr", "period", "timestamp", "datetime", "weekday", "dow", "doy", "dt", "season"}
)  # fmt: skip


def _words(name: str) -> set[str]:
    """A column name's words: ``dep_time``, ``depTime`` and ``DEP TIME`` give dep, time."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name)
    return {word for word in re.split(r"[^a-z0-9]+", spaced.lower()) if word}


def time_like_columns(frame: pd.DataFrame, kinds: Mapping[str, str] | None = None) -> list[str]:
    """Columns that hold times or parts of one: dates (`kinds`' ``datetime``, or a
    datetime dtype) and columns whose name says so. A key built on them is a period,
    which later rows never share."""
    kinds = kinds or {}
    return [
        str(name)
        for name in frame.columns
        if kinds.get(str(name)) == DATETIME
        or pd.api.types.is_datetime64_any_dtype(frame[name])
        or _words(str(name)) & _TIME_WORDS
    ]


#: A key or a column looks like an entity when it has at least this many groups and its
#: repeated groups' median size is at most `_ENTITY_MAX_MEDIAN` rows: people, shops,
#: classrooms, not a handful of segments of thousands of rows each.
_ENTITY_MIN_GROUPS = 20
_ENTITY_MAX_MEDIAN = 20


def _entity_like(counts: Sequence[int]) -> bool:
    """Many groups seen more than once, most of them small (`_ENTITY_MIN_GROUPS`)."""
    sizes = np.asarray([n for n in counts if n >= 2])
    return len(sizes) >= _ENTITY_MIN_GROUPS and float(np.median(sizes)) <= _ENTITY_MAX_MEDIAN


@dataclasses.dataclass(frozen=True)
class LeakCheck:
    """What a random split may let the search learn that deployment will not give: the
    rows' key (`hypermodels.features.fit_row_codes`) or a high-cardinality column when
    it names a period or an entity, and the table's time-like columns.

    Attributes:
        spec: The split.
        schema: The fitted schema, with the rows' key if one was chosen.
        time_columns: `time_like_columns` of the table.
        level_shares: `hypermodels.features.level_shares` of the high-cardinality
            columns: what recalling each level explains beyond the main effects.
    """

    spec: SplitSpec
    schema: TabularSchema
    time_columns: tuple[str, ...]
    level_shares: Mapping[str, float] = dataclasses.field(default_factory=dict)

    def warnings(self) -> list[str]:
        """One line per leak the search may learn, naming the split that avoids it
        (advice: a user who predicts for the same periods or entities may keep it)."""
        if self.spec.kind != RANDOM:
            return []
        rows = self.schema.rows
        warnings: list[str] = []
        named: set[str] = set()
        if rows is not None:
            key = rows.key or self.schema.names
            warning = self._warning(
                f"the rows' key ({', '.join(key)})", key, rows.counts[1:], rows.key_share
            )
            if warning:
                warnings.append(warning)
                named.update(key)
        for column in self.schema.categorical:
            share = self.level_shares.get(column.name, 0.0)
            if column.name in named or share < ROW_MIN_SCORE:
                continue
            warning = self._warning(
                f"column {column.name!r} ({len(column.vocabulary):,} levels)",
                (column.name,),
                column.counts[1:],
                share,
            )
            warnings += [warning] if warning else []
        return warnings

    def _warning(
        self, what: str, columns: Sequence[str], counts: Sequence[int], share: float
    ) -> str | None:
        timely = [name for name in columns if name in self.time_columns]
        if timely:
            return (
                f"{what} includes {', '.join(map(repr, timely))}, a time period: under a "
                "random split held-out rows share their period, and its labels, with "
                "training rows. If the model will predict later rows, use --split "
                f"time:COLUMN (data.split), e.g. time:{timely[0]}"
            )
        if _entity_like(counts):
            sizes = [n for n in counts if n >= 2]
            return (
                f"{what} looks like an entity seen in several rows ({len(sizes):,} "
                f"repeated, {np.median(sizes):g} rows at the median; it explains "
                f"{share:.0%} of what the columns' main effects leave): under a random split "
                "held-out rows are of the same entities. If the model will predict for new "
                f"ones, use --split group:{','.join(columns)} (data.split)"
            )
        return None

    def notes(self) -> list[str]:
        """The time-like columns, for `plan`, whatever the split."""
        if not self.time_columns or self.spec.kind == TIME:
            return []
        return [
            f"time-like column(s) {', '.join(map(repr, self.time_columns))}: if the model will "
            f"predict later rows, --split time:{self.time_columns[0]} (data.split) holds out "
            "the latest rows and validates as that deployment will"
        ]
