"""Tabular preprocessing that lives inside the model, built from Keras's own layers.

A `TabularSchema` holds what preprocessing needs to know about each column: its kind,
and statistics fitted once on the training split (mean and variance, the fill value
for missing numbers, the vocabulary of a categorical column). Every trial builds fresh
layers from these values (`Normalization`, `StringLookup`, `IntegerLookup`,
`Embedding`), so nothing is adapted per trial and no layer is shared across models.
A high-cardinality column's target encoding and the target encoding of a row's group
(`fit_row_codes`: the rows that share their values of a few chosen columns, for tables
whose rows repeat) are the inputs that are not functions of the row's values alone:
training rows get out-of-fold encodings, every other row its value's code.

Inside the model, numeric columns travel together as one float matrix (``numeric``)
and each categorical column as its own input of integer ids: a column's value at
vocabulary position ``i`` is id ``i + 1`` and anything unseen is id 0, the convention
of Keras's `StringLookup`. Values become ids once per experiment, outside the training
step (`model_inputs`), where per-row string hashing and copying used to cost a large
table's epoch up to a third of its time (`benchmarks/large_table_throughput.py`). The
exported SavedModel takes one raw input per column and looks values up itself
(`serving_signature`, `ServingEncoder`).
"""

from __future__ import annotations

import dataclasses
import keyword
import re
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from hypermodels.dates import date_parts, has_time_of_day, iso_strings, parts_for
from hypermodels.numeric import (
    QUANTILE_LEVELS,
    QuantileNormal,
    SmoothClip,
    robust_center_and_scale,
)

__all__ = [
    "COLUMN_KINDS",
    "DATETIME",
    "HIGH_CARDINALITY",
    "INTEGER_CATEGORICAL",
    "LEVEL_MIN_SHARE",
    "NUMERIC",
    "NUMERIC_INPUT",
    "RARE_BELOW",
    "ROW_CODES",
    "STRING_CATEGORICAL",
    "TARGET_SUFFIX",
    "VALUE_EMBEDDING_DIM",
    "Column",
    "ServingEncoder",
    "TabularSchema",
    "ValueIds",
    "build_inputs",
    "build_preprocessing",
    "category_ids",
    "embedding_width",
    "fit_row_codes",
    "fit_schema",
    "fit_target_codes",
    "hashing_buckets",
    "high_cardinality_columns",
    "level_shares",
    "model_inputs",
    "numeric_frame",
    "rare_level_columns",
    "raw_rows",
    "row_keys",
    "screen_identifiers",
    "serving_signature",
    "value_columns",
]

NUMERIC = "numeric"
INTEGER_CATEGORICAL = "integer_categorical"
STRING_CATEGORICAL = "string_categorical"
#: Dates and timestamps (ISO strings or datetimes): the network gets their parts
#: (`hypermodels.dates`) as numeric columns, and the export computes them from the text.
DATETIME = "datetime"
COLUMN_KINDS = (NUMERIC, INTEGER_CATEGORICAL, STRING_CATEGORICAL, DATETIME)

#: Name of the model input that carries all numeric columns as one matrix.
NUMERIC_INPUT = "numeric"

# Categorical columns with at most this many values are one-hot encoded; larger ones
# get an embedding.
_MAX_ONE_HOT = 16

#: How a high-cardinality column (one with too many values to one-hot encode) enters
#: the network: a learned ``embedding`` per value, the standardised log ``frequency``
#: of its value in training (a fixed lookup that cannot memorise rows), its ``target``
#: encoding (`fit_target_codes`), ``hashing`` (values hashed into fewer buckets than
#: there are values, each bucket's embedding shared by the values in it), or ``drop``.
HIGH_CARDINALITY = ("embedding", "frequency", "target", "hashing", "drop")

# Hashing gives a column this many times fewer buckets than it has values (at least
# as many as a one-hot column has), so that rare values must share what they learn.
_VALUES_PER_BUCKET = 8

#: Suffix of the model input that carries a column's target encoding.
TARGET_SUFFIX = "__target"

# Folds of the target encoding's cross-fitting (scikit-learn's TargetEncoder default).
_TARGET_FOLDS = 5

#: A categorical value seen fewer times than this in training counts as rare in the
#: data report (`Column.rare_share`).
RARE_BELOW = 5

#: A numeric column whose rows mostly repeat a few hundred exact values (codes, counts,
#: a household's figures copied to each of its members' rows) may also embed each value
#: (`ValueIds`): trees split on exact values, a network fed only smooth functions of the
#: number cannot single one out. A value enters the table when seen this often in
#: training, and the column qualifies with 3 to `VALUE_MAX_LEVELS` such values covering
#: at least `VALUE_MIN_COVERAGE` of its rows.
VALUE_MIN_COUNT = 2
VALUE_MAX_LEVELS = 1024
VALUE_MIN_COVERAGE = 0.5
#: Size of each value's embedding.
VALUE_EMBEDDING_DIM = 8

#: Name under which the target encoding of a row's group travels (the model input is
#: this plus `TARGET_SUFFIX`; `fit_row_codes`).
ROW_CODES = "__rows"
#: Kind of the schema entry that holds it; it is no input column.
_ROW_KIND = "row_key"
#: A key seen this often in training gets its own code, and a key qualifies when such
#: repeated rows make up at least `ROW_MIN_COVERAGE` of the table.
ROW_MIN_COUNT = 2
ROW_MIN_COVERAGE = 0.5
#: The chosen key must explain at least this share of the variance that the columns'
#: main effects leave (`_choose_key`): below it the groups' codes are mostly their own
#: out-of-fold noise, one more input to overfit for little to learn. The threshold and
#: the keys it let through on the design tables are in `benchmarks/README.md`.
ROW_MIN_SCORE = 0.02
# A column joins the key while it adds at least this much to that share.
_KEY_MIN_GAIN = 0.001
# The key is chosen among this many columns, the most telling alone, on at most this
# many training rows, so that choosing stays a few seconds on a large table.
_KEY_CANDIDATES = 16
_KEY_SAMPLE = 50_000


@dataclasses.dataclass(frozen=True)
class Column:
    """One feature column and the statistics its preprocessing needs.

    Attributes:
        name: The column's name in the data.
        kind: ``numeric``, ``integer_categorical`` or ``string_categorical``.
        mean: Numeric: training mean (also the fill value for a missing number).
        variance: Numeric: training variance.
        has_missing: Numeric: the training split had missing values, so the model
            gets a missing-value indicator for this column.
        vocabulary: Categorical: the values seen in training, sorted; anything else
            maps to one out-of-vocabulary slot.
        quantiles: Numeric: the training values at `numeric.QUANTILE_LEVELS` evenly
            spaced levels, for the quantile and robust scalings and piecewise-linear
            bins (`hypermodels.numeric`).
        values: Numeric: the repeated training values a value embedding looks up
            (float32, sorted), or none where the column does not qualify
            (`VALUE_MIN_COUNT`).
        levels: Categorical: distinct values in the training split, rare ones included.
        rare_share: Categorical: share of training rows whose value was seen fewer
            than `RARE_BELOW` times.
        counts: Categorical: training rows of each id (`category_ids`): the values
            outside the vocabulary (rare ones), then each vocabulary value.
        target_codes: High-cardinality categorical, when target encoding is searched:
            each id's target encoding fitted on the whole training split (one value per
            class for multiclass), which validation rows and the export look up.
        key: Row codes (`fit_row_codes`): the columns whose values make a row's key;
            empty means every column (experiments from before keys were chosen).
        key_share: Row codes: the share of what the columns' main effects leave that
            the key's groups explain out of fold (`_choose_key`; 0 where not recorded).
        parts: Datetime: its parts (`hypermodels.dates.DATE_PARTS`, the hour's only
            where some training value has a time of day), each a numeric column named
            ``<column>.<part>`` with its own statistics.
        source: A date part: the datetime column it is computed from.
        treatment: High-cardinality categorical: a treatment fixed before the search
            (``drop``: `screen_identifiers` found its levels explain nothing), which
            overrides the searched one; empty where the search decides.
    """

    name: str
    kind: str
    mean: float = 0.0
    variance: float = 1.0
    has_missing: bool = False
    vocabulary: tuple[Any, ...] = ()
    quantiles: tuple[float, ...] = ()
    values: tuple[float, ...] = ()
    levels: int = 0
    rare_share: float = 0.0
    counts: tuple[int, ...] = ()
    target_codes: tuple[tuple[float, ...], ...] = ()
    key: tuple[str, ...] = ()
    key_share: float = 0.0
    parts: tuple[Column, ...] = ()
    source: str = ""
    treatment: str = ""

    @property
    def part(self) -> str:
        """A date part's name within its column (`hypermodels.dates.DATE_PARTS`)."""
        return self.name.removeprefix(self.source + ".") if self.source else ""

    def to_json(self) -> dict[str, Any]:
        plain = dataclasses.asdict(self)
        plain["vocabulary"] = [v if isinstance(v, str) else int(v) for v in self.vocabulary]
        plain["parts"] = [part.to_json() for part in self.parts]
        return plain

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Column:
        return cls(
            **{
                **data,
                "vocabulary": tuple(data["vocabulary"]),
                "quantiles": tuple(data.get("quantiles", ())),
                "values": tuple(data.get("values", ())),
                "counts": tuple(data.get("counts", ())),
                "target_codes": tuple(tuple(row) for row in data.get("target_codes", ())),
                "key": tuple(data.get("key", ())),
                "parts": tuple(cls.from_json(part) for part in data.get("parts", ())),
            }
        )


# Input names TensorFlow cannot take as keyword arguments when it saves a signature: a
# column named ``self`` (a German health survey's self-employment flag) collided with
# the method's own argument.
_RESERVED_INPUT_NAMES = frozenset({"self", *keyword.kwlist})


@dataclasses.dataclass(frozen=True)
class TabularSchema:
    """The feature columns in model order, and the codes of the rows' groups, if fitted
    (`fit_row_codes`): their vocabulary is the repeated keys (`row_keys`)."""

    columns: tuple[Column, ...]
    rows: Column | None = None

    @property
    def numeric(self) -> tuple[Column, ...]:
        """The columns of the numeric matrix: numbers, and each date's parts."""
        return tuple(p for c in self.columns for p in (c.parts or (c,)) if p.kind == NUMERIC)

    @property
    def categorical(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.kind not in (NUMERIC, DATETIME))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def numeric_only(self) -> bool:
        """With only numeric columns (and no row codes) the model takes one plain float
        matrix."""
        return not self.categorical and self.rows is None

    def input_names(self) -> dict[str, str]:
        """SavedModel input name for each column: the column name made signature-safe
        (letters, digits and ``_``, starting with a letter: TensorFlow renames inputs that
        start with ``_`` or a digit, and refuses to save two of them), unique within
        the schema."""
        names: dict[str, str] = {}
        used: set[str] = set()
        for column in self.columns:
            base = re.sub(r"[^A-Za-z0-9_]", "_", column.name) or "column"
            if not base[0].isalpha():
                base = f"column{base}" if base[0] == "_" else f"column_{base}"
            if base in _RESERVED_INPUT_NAMES:  # TensorFlow passes inputs as keywords
                base = f"{base}_"
            name, suffix = base, 1
            while name in used:
                suffix += 1
                name = f"{base}_{suffix}"
            used.add(name)
            names[column.name] = name
        return names

    def to_json(self) -> list[dict[str, Any]]:
        rows = [self.rows.to_json()] if self.rows is not None else []
        return [c.to_json() for c in self.columns] + rows

    @classmethod
    def from_json(cls, data: Sequence[Mapping[str, Any]]) -> TabularSchema:
        columns = [Column.from_json(c) for c in data]
        rows = [c for c in columns if c.kind == _ROW_KIND]
        return cls(tuple(c for c in columns if c.kind != _ROW_KIND), rows[0] if rows else None)

    @classmethod
    def numeric_matrix(cls, x: np.ndarray, names: Sequence[str] | None = None) -> TabularSchema:
        """A schema of numeric columns fitted on a float matrix."""
        x = np.asarray(x, dtype="float64")
        names = list(names) if names is not None else [f"x{i}" for i in range(x.shape[1])]
        return fit_schema(pd.DataFrame(x, columns=names), {name: NUMERIC for name in names})


def _string_values(series: pd.Series) -> pd.Series:
    """Text form of a categorical column; a missing value becomes the empty string."""
    return series.astype("string").fillna("").astype(object)


def fit_schema(
    frame: pd.DataFrame, kinds: Mapping[str, str], *, min_frequency: int = 1
) -> TabularSchema:
    """Fits per-column statistics on the training split.

    Args:
        frame: The training rows' feature columns.
        kinds: Kind of each column (see `COLUMN_KINDS`).
        min_frequency: A categorical value seen fewer times than this stays out of the
            vocabulary, so it shares the out-of-vocabulary id with unseen values
            (``1`` keeps every value): a rare level's own embedding learns little but
            noise.
    """
    columns = []
    for name in frame.columns:
        series = frame[name]
        kind = kinds[name]
        if kind == NUMERIC:
            values = pd.to_numeric(series, errors="coerce").astype("float64")
            columns.append(_numeric_column(str(name), values))
            continue
        if kind == DATETIME:
            strings = iso_strings(series)
            parts = parts_for(has_time_of_day(strings))
            matrix = date_parts(strings, np, parts=parts).astype("float64")
            fitted = tuple(
                dataclasses.replace(
                    _numeric_column(f"{name}.{part}", pd.Series(matrix[:, i])), source=str(name)
                )
                for i, part in enumerate(parts)
            )
            columns.append(Column(name=str(name), kind=kind, parts=fitted))
            continue
        kept: list[Any]
        if kind == INTEGER_CATEGORICAL:
            counts = series.dropna().astype("int64").value_counts()
            kept = sorted(int(v) for v, n in counts.items() if n >= min_frequency)
        else:
            counts = _string_values(series).value_counts()
            kept = sorted(str(v) for v, n in counts.items() if n >= min_frequency)
        left_out = int(counts[counts < min_frequency].sum())
        columns.append(
            Column(
                name=str(name),
                kind=kind,
                vocabulary=tuple(kept),
                levels=len(counts),
                rare_share=float(counts[counts < RARE_BELOW].sum() / max(1, counts.sum())),
                counts=(left_out, *(int(counts[value]) for value in kept)),
            )
        )
    return TabularSchema(tuple(columns))


def _numeric_column(name: str, values: pd.Series) -> Column:
    """A numeric column's statistics from its training values (NaN where missing)."""
    present = values.dropna()
    levels = np.linspace(0.0, 1.0, QUANTILE_LEVELS)
    quantiles = np.quantile(present, levels) if len(present) else np.zeros(len(levels))
    return Column(
        name=name,
        kind=NUMERIC,
        mean=float(present.mean()) if len(present) else 0.0,
        variance=float(present.var(ddof=0)) if len(present) else 1.0,
        has_missing=bool(values.isna().any()),
        quantiles=tuple(float(v) for v in np.maximum.accumulate(quantiles)),
        values=_repeated_values(present),
    )


def numeric_frame(schema: TabularSchema, frame: pd.DataFrame) -> pd.DataFrame:
    """The numeric matrix's columns for these rows (`TabularSchema.numeric`): each
    number as float64 (NaN where missing), each date's parts computed from its text."""
    columns: dict[str, Any] = {}
    for column in schema.columns:
        if column.kind == NUMERIC:
            columns[column.name] = pd.to_numeric(frame[column.name], errors="coerce")
        elif column.kind == DATETIME:
            parts = [part.part for part in column.parts]
            matrix = date_parts(iso_strings(frame[column.name]), np, parts=parts)
            for i, part in enumerate(column.parts):
                columns[part.name] = matrix[:, i].astype("float64")
    return pd.DataFrame(columns, index=frame.index, dtype="float64")


def _repeated_values(present: pd.Series) -> tuple[float, ...]:
    """The values of a numeric column that a value embedding looks up, or none where
    the column does not qualify (`VALUE_MIN_COUNT`)."""
    counts = present.astype("float32").value_counts()
    kept = counts[counts >= VALUE_MIN_COUNT]
    if not 3 <= len(kept) <= VALUE_MAX_LEVELS or kept.sum() < VALUE_MIN_COVERAGE * len(present):
        return ()
    return tuple(sorted(float(v) for v in kept.index))


def value_columns(schema: TabularSchema) -> list[int]:
    """Positions, among the numeric columns, of those a value embedding covers."""
    return [i for i, c in enumerate(schema.numeric) if c.values]


def rare_level_columns(schema: TabularSchema) -> list[Column]:
    """Categorical columns whose rows are mostly in rare values (`RARE_BELOW`): ids,
    codes and free text, where an embedding per value overfits."""
    return [c for c in schema.categorical if c.rare_share > 0.5]


def high_cardinality_columns(schema: TabularSchema) -> list[Column]:
    """Categorical columns with too many values to one-hot encode (`HIGH_CARDINALITY`
    says how they may enter the network), but for those `screen_identifiers` left out:
    the search then has nothing to choose for them."""
    return [
        c
        for c in schema.categorical
        if len(c.vocabulary) + 1 > _MAX_ONE_HOT and c.treatment != "drop"
    ]


def fit_target_codes(
    schema: TabularSchema,
    frame: pd.DataFrame,
    y: np.ndarray,
    *,
    task: str,
    seed: int,
    folds: np.ndarray | None = None,
) -> tuple[TabularSchema, dict[str, np.ndarray]]:
    """Target encodings of the high-cardinality columns, with scikit-learn's
    `TargetEncoder` (shrunk towards the target's mean for values with few rows).

    The training rows get out-of-fold encodings (cross-fitting over seeded folds), so a
    row never sees its own label; a value seen once would otherwise hand its label to
    the network. The returned schema carries each id's encoding fitted on the whole
    training split, for the validation rows and the export.

    Args:
        schema: The fitted schema.
        frame: The training rows.
        y: Their labels: class ids, or regression targets (standardised here).
        task: ``binary``, ``multiclass`` or ``regression``.
        seed: Seeds the folds.
        folds: Each row's fold (`kt_pipeline.splits.training_folds`: periods or groups,
            as the split cuts the table); None shuffles the rows into folds.

    Returns:
        The schema with `Column.target_codes` set, and the training rows' out-of-fold
        encodings by column name (rows x values per id).
    """
    wide = {c.name for c in high_cardinality_columns(schema)}
    if not wide:
        return schema, {}
    columns, out_of_fold = [], {}
    for column in schema.columns:
        if column.name not in wide:
            columns.append(column)
            continue
        ids = category_ids(column, frame[column.name])
        out_of_fold[column.name], codes = _target_encode(
            ids, len(column.vocabulary) + 1, y, task=task, seed=seed, folds=folds
        )
        columns.append(dataclasses.replace(column, target_codes=codes))
    return dataclasses.replace(schema, columns=tuple(columns)), out_of_fold


def _target_encode(
    ids: np.ndarray,
    size: int,
    y: np.ndarray,
    *,
    task: str,
    seed: int,
    smooth: float | str = "auto",
    folds: np.ndarray | None = None,
) -> tuple[np.ndarray, tuple[tuple[float, ...], ...]]:
    """Cross-fitted target encoding of ids in ``[0, size)``: the rows' out-of-fold
    codes, and each id's code fitted on every row (the target mean for an id with no
    row). A regression target is standardised first; `smooth` is `TargetEncoder`'s."""
    from sklearn.preprocessing import TargetEncoder

    regression = task == "regression"
    target = _target_matrix(y, task)[:, 0] if regression else np.asarray(y)
    # A class with fewer rows than folds cannot be in every fold: shuffle instead.
    stratified = not regression and np.unique(target, return_counts=True)[1].min() >= _TARGET_FOLDS
    cv = _cross_folds(folds, seed=seed, stratified=stratified)
    target_type = "continuous" if regression else task
    encoder = TargetEncoder(target_type=target_type, smooth=smooth, cv=cv)
    out_of_fold = encoder.fit_transform(ids.reshape(-1, 1), target).astype("float32")
    table = np.tile(np.atleast_1d(encoder.target_mean_), (size, 1))
    table[encoder.categories_[0]] = np.column_stack(encoder.encodings_)
    return out_of_fold, tuple(tuple(float(v) for v in row) for row in table)


def _cross_folds(folds: np.ndarray | None, *, seed: int, stratified: bool) -> Any:
    """The cross-fitting's splitter: the given folds, or seeded shuffled ones
    (stratified by class where asked)."""
    from sklearn.model_selection import KFold, PredefinedSplit, StratifiedKFold

    if folds is not None:
        return PredefinedSplit(folds)
    if stratified:
        return StratifiedKFold(_TARGET_FOLDS, shuffle=True, random_state=seed)
    return KFold(_TARGET_FOLDS, shuffle=True, random_state=seed)


# Two polynomial hashes modulo primes below 2**31 make a row's key: every product stays
# below 2**62, so NumPy and TensorFlow compute the same int64 key without overflow.
_KEY_MODULI = (2_147_483_647, 2_147_483_629)
_KEY_MULTIPLIERS = (1_000_003, 998_244_353)
_QUIET_NAN = 0x7FC00000  # one bit pattern for every missing number


def row_keys(schema: TabularSchema, frame: pd.DataFrame, key: Sequence[str] = ()) -> np.ndarray:
    """An int64 key per row from its exact values of the `key` columns (every column
    when empty): the numbers' float32 bits, the categorical ids. Rows with equal values
    get equal keys; `ServingEncoder` computes the same key in the SavedModel."""
    numeric, categorical = _key_positions(schema, key)
    names = [schema.numeric[i].name for i in numeric]
    matrix = numeric_frame(schema, frame)[names].to_numpy(dtype="float32")
    matrix = matrix.reshape(len(frame), len(names))
    ids = [
        category_ids(schema.categorical[i], frame[schema.categorical[i].name]) for i in categorical
    ]
    return _combine(_float_words(matrix, np), ids, np)


def _key_positions(schema: TabularSchema, key: Sequence[str]) -> tuple[list[int], list[int]]:
    """Positions of the key's columns among the numeric and the categorical columns."""
    chosen = set(key) or set(schema.names)
    return (
        [i for i, c in enumerate(schema.numeric) if (c.source or c.name) in chosen],
        [i for i, c in enumerate(schema.categorical) if c.name in chosen],
    )


def _float_words(matrix: Any, ops: Any) -> list[Any]:
    """Each numeric column as unsigned 32-bit words in int64: -0.0 as 0.0, NaN as one
    pattern."""
    if ops is np:
        bits = matrix.astype("float32").view("uint32").astype("int64")
        bits = np.where(np.isnan(matrix), _QUIET_NAN, np.where(matrix == 0, 0, bits))
        return [bits[:, i] for i in range(matrix.shape[1])]
    bits = tf.cast(tf.bitcast(matrix, tf.uint32), tf.int64)
    zero = tf.zeros_like(bits)
    bits = tf.where(tf.math.is_nan(matrix), zero + _QUIET_NAN, tf.where(matrix == 0, zero, bits))
    return tf.unstack(bits, axis=1)


def _combine(words: Sequence[Any], ids: Sequence[Any], ops: Any) -> Any:
    mod = np.mod if ops is np else tf.math.floormod
    first, *rest = [*words, *ids]
    keys = []
    for modulus, multiplier in zip(_KEY_MODULI, _KEY_MULTIPLIERS, strict=True):
        key = mod(first, modulus)
        for word in rest:
            key = mod(key * multiplier + mod(word, modulus), modulus)
        keys.append(key)
    return keys[0] * _KEY_MODULI[1] + keys[1]


def fit_row_codes(
    schema: TabularSchema,
    frame: pd.DataFrame,
    y: np.ndarray,
    *,
    task: str,
    seed: int,
    folds: np.ndarray | None = None,
) -> tuple[TabularSchema, dict[str, np.ndarray]]:
    """The target encoding of each row's group: the rows that share their values of
    the key columns that `_choose_key` finds.

    Where rows repeat (the same person in several years of a panel, the pupils of one
    classroom: same school, teacher's experience and class type), the mean label of a
    row's group tells what no smooth function of its values does, and trees recall it
    by isolating each combination; a network gets it as one more input. The returned
    schema's `rows` holds the key's columns, each repeated key (`row_keys`) and its
    code (`fit_target_codes`' cross-fitted encoder; other rows share id 0), and the
    training rows' out-of-fold codes come back under `ROW_CODES`. Where no key
    qualifies, the schema comes back unchanged. `folds` cut the rows for the
    cross-fitting as `fit_target_codes`' do, so that under a time or group split a key
    that names a period or an entity scores what a later or unseen row gets: nothing.
    """
    if len(frame) == 0:
        return schema, {}
    chosen = _choose_key(schema, frame, y, task=task, seed=seed, folds=folds)
    if chosen is None:
        return schema, {}
    key, share = chosen
    keys = row_keys(schema, frame, key)
    counts = pd.Series(keys).value_counts()
    repeated = counts[counts >= ROW_MIN_COUNT]
    vocabulary = tuple(sorted(int(k) for k in repeated.index))
    ids = _lookup_ids(vocabulary, keys)
    smooth = _shrinkage(ids, _target_matrix(y, task))
    out_of_fold, codes = _target_encode(
        ids, len(vocabulary) + 1, y, task=task, seed=seed, smooth=smooth, folds=folds
    )
    rows = Column(
        name=ROW_CODES,
        kind=_ROW_KIND,
        vocabulary=vocabulary,
        levels=len(counts),
        counts=(int(counts[counts < ROW_MIN_COUNT].sum()), *(int(repeated[k]) for k in vocabulary)),
        target_codes=codes,
        key=key,
        key_share=share,
    )
    return dataclasses.replace(schema, rows=rows), {ROW_CODES: out_of_fold}


def _choose_key(
    schema: TabularSchema,
    frame: pd.DataFrame,
    y: np.ndarray,
    *,
    task: str,
    seed: int,
    folds: np.ndarray | None = None,
) -> tuple[tuple[str, ...], float] | None:
    """The columns whose shared values best predict what the columns' main effects
    leave unexplained, and the share they explain; None where no key explains
    `ROW_MIN_SCORE` of it.

    A key is scored by the out-of-fold target encoding of its groups on the residual of
    a ridge fit of the main effects (numbers scaled, categories one-hot), so a key
    scores for what its groups share beyond them, not for one strong column. The best
    key of one or two columns grows a column at a time while it gains `_KEY_MIN_GAIN`,
    like CatBoost's greedy feature combinations; a key must repeat on
    `ROW_MIN_COVERAGE` of the rows, so continuous columns rule themselves out.
    """
    frame, y, folds = _sample(frame, y, folds, seed=seed)
    target = _target_matrix(y, task)
    # A screened-out identifier stays out of the key too, or the key would bring it back.
    kept = tuple(c for c in schema.columns if c.treatment != "drop")
    schema = dataclasses.replace(schema, columns=kept)
    residual = target - _main_effects(schema, frame, target)
    codes = {c.name: _value_codes(c, frame[c.name]) for c in schema.columns}

    def score(ids: np.ndarray, outcome: np.ndarray) -> float:
        """`ids` are dense (`_value_codes`, `_joint`)."""
        if (np.bincount(ids)[ids] >= ROW_MIN_COUNT).mean() < ROW_MIN_COVERAGE:
            return -np.inf
        return _encoded_share(ids, outcome, seed=seed, folds=folds)

    alone = {name: score(values, target) for name, values in codes.items()}
    ranked = sorted((n for n in alone if alone[n] > -np.inf), key=alone.__getitem__, reverse=True)
    names = ranked[:_KEY_CANDIDATES]
    pairs = [(a,) for a in names] + [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    scored = [(score(_joint(codes, key), residual), key) for key in pairs]
    best, key = max(scored, default=(-np.inf, ()), key=lambda item: item[0])
    while np.isfinite(best):
        grown = [
            (score(_joint(codes, (*key, name)), residual), (*key, name))
            for name in names
            if name not in key
        ]
        gain, wider = max(grown, default=(-np.inf, key), key=lambda item: item[0])
        if gain < best + _KEY_MIN_GAIN:
            break
        best, key = gain, wider
    if best < ROW_MIN_SCORE:
        return None
    return tuple(name for name in schema.names if name in key), float(best)


def _sample(
    frame: pd.DataFrame, y: np.ndarray, folds: np.ndarray | None, *, seed: int
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray | None]:
    """At most `_KEY_SAMPLE` seeded rows, so that scoring keys stays seconds."""
    if len(frame) <= _KEY_SAMPLE:
        return frame, y, folds
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(len(frame), _KEY_SAMPLE, replace=False))
    return frame.iloc[picked], np.asarray(y)[picked], None if folds is None else folds[picked]


#: A high-cardinality column whose levels explain less than this share of what the
#: other columns' main effects leave (`level_shares`) is left out by
#: `screen_identifiers`: an identifier of pure noise scores within the out-of-fold
#: estimate's own noise of zero, while one whose levels carry an effect scores above it
#: (every benchmark table's figures: `benchmarks/results/identifier_screen.md`).
LEVEL_MIN_SHARE = 0.005


def screen_identifiers(
    schema: TabularSchema, shares: Mapping[str, float], *, min_share: float = LEVEL_MIN_SHARE
) -> TabularSchema:
    """The schema with ``drop`` fixed for each high-cardinality column whose levels
    explain less than `min_share` (`level_shares`), so that the network never embeds an
    identifier that carries nothing; the columns stay inputs, so the export still takes
    them. Nothing is dropped where that would leave the network no feature."""
    idle = {name for name, share in shares.items() if share < min_share}
    kept = [c for c in schema.columns if c.name not in idle]
    if not idle or (not kept and schema.rows is None):
        return schema
    columns = tuple(
        dataclasses.replace(c, treatment="drop") if c.name in idle else c for c in schema.columns
    )
    return dataclasses.replace(schema, columns=columns)


def level_shares(
    schema: TabularSchema,
    frame: pd.DataFrame,
    y: np.ndarray,
    *,
    task: str,
    seed: int,
    folds: np.ndarray | None = None,
) -> dict[str, float]:
    """For each high-cardinality column, the share of what the other columns' main
    effects leave that its levels explain out of fold (as `_choose_key` scores keys): how much
    a model may learn from recalling each level, an entity's or a day's, rather than
    from what the level has in common with others."""
    wide = high_cardinality_columns(schema)
    if not wide or len(frame) == 0:
        return {}
    frame, y, folds = _sample(frame, y, folds, seed=seed)
    target = _target_matrix(y, task)
    shares = {}
    for column in wide:
        others = tuple(c for c in schema.columns if c.name != column.name)
        residual = target - _main_effects(TabularSchema(others), frame, target)
        ids = _value_codes(column, frame[column.name])
        shares[column.name] = _encoded_share(ids, residual, seed=seed, folds=folds)
    return shares


def _target_matrix(y: np.ndarray, task: str) -> np.ndarray:
    """The target as rows x outputs: standardised, a 0/1 column, or one-hot classes."""
    y = np.asarray(y)
    if task == "regression":
        values = y.astype("float64")
        return ((values - values.mean()) / (values.std() or 1.0)).reshape(-1, 1)
    ids = y.astype("int64")
    if task == "binary":
        return ids.reshape(-1, 1).astype("float64")
    return np.eye(int(ids.max()) + 1)[ids]


def _main_effects(schema: TabularSchema, frame: pd.DataFrame, target: np.ndarray) -> np.ndarray:
    """A ridge fit of the target on the scaled numbers and the one-hot categories (up
    to 255 values; wider columns stay out of the design)."""
    from sklearn.linear_model import Ridge

    parts = []
    numbers = numeric_frame(schema, frame)
    for column in schema.numeric:
        values = numbers[column.name].to_numpy("float64")
        scaled = (values - column.mean) / (np.sqrt(column.variance) or 1.0)
        parts.append(np.nan_to_num(scaled).reshape(-1, 1))
    for column in schema.categorical:
        if len(column.vocabulary) < 255:
            ids = category_ids(column, frame[column.name])
            parts.append(np.eye(len(column.vocabulary) + 1, dtype="float32")[ids])
    if not parts:
        return np.broadcast_to(target.mean(axis=0), target.shape)
    design = np.hstack(parts)
    return Ridge(alpha=1.0).fit(design, target).predict(design).reshape(target.shape)


def _value_codes(column: Column, series: pd.Series) -> np.ndarray:
    """Dense codes of a column's exact values (a gap is a value), for scoring keys."""
    if column.kind == NUMERIC:
        values = pd.to_numeric(series, errors="coerce").to_numpy("float32")
        return pd.factorize(values, use_na_sentinel=False)[0].astype("int64")
    if column.kind == DATETIME:
        return pd.factorize(iso_strings(series))[0].astype("int64")
    return pd.factorize(category_ids(column, series))[0].astype("int64")


def _joint(codes: Mapping[str, np.ndarray], key: Sequence[str]) -> np.ndarray:
    """Dense codes of the key's value combinations."""
    first, *rest = (codes[name] for name in key)
    joint = first
    for values in rest:
        joint = pd.factorize(joint * (int(values.max()) + 1) + values)[0].astype("int64")
    return joint


def _shrinkage(ids: np.ndarray, outcome: np.ndarray) -> float:
    """`TargetEncoder`'s smoothing for these groups, in rows: the within-group variance
    over the variance of the groups' true means (the one-way random-effects model's
    moment estimates, summed over the outcome's columns).

    scikit-learn's ``"auto"`` puts the target's whole variance in the place of the
    latter, so a group of one or two rows keeps its own mean almost unshrunk; a key
    with many small groups then encodes noise, and scores below a coarser one.
    """
    sizes = np.bincount(ids).astype("float64")
    rows, groups = len(ids), int((sizes > 0).sum())
    if groups < 2 or rows <= groups:
        return _NO_SIGNAL
    sums = np.stack([np.bincount(ids, weights=c, minlength=len(sizes)) for c in outcome.T], 1)
    means = sums / np.maximum(sizes, 1.0)[:, None]
    within = float(((outcome - means[ids]) ** 2).sum()) / (rows - groups)
    between = float((sizes[:, None] * (means - outcome.mean(axis=0)) ** 2).sum()) / (groups - 1)
    typical = (rows - float((sizes**2).sum()) / rows) / (groups - 1)
    spread = (between - within) / typical
    return within / spread if spread > 0 else _NO_SIGNAL


# A smoothing so large that every group's code is the target's mean.
_NO_SIGNAL = 1e12


def _encoded_share(
    ids: np.ndarray, outcome: np.ndarray, *, seed: int, folds: np.ndarray | None = None
) -> float:
    """Share of the outcome's variance (summed over its columns) that the groups'
    out-of-fold target encoding explains."""
    from sklearn.preprocessing import TargetEncoder

    cv = _cross_folds(folds, seed=seed, stratified=False)
    smooth = _shrinkage(ids, outcome)
    error = total = 0.0
    for column in outcome.T:
        encoder = TargetEncoder(target_type="continuous", smooth=smooth, cv=cv)
        encoded = encoder.fit_transform(ids.reshape(-1, 1), column)[:, 0]
        error += float(((column - encoded) ** 2).sum())
        total += float(((column - column.mean()) ** 2).sum())
    return 1.0 - error / total if total > 0 else -np.inf


def embedding_width(column: Column) -> int:
    """Features a categorical column gives the first layer (one-hot or embedding)."""
    size = len(column.vocabulary) + 1
    return size if size <= _MAX_ONE_HOT else _embedding_size(size)


def hashing_buckets(size: int) -> int:
    """Buckets of the ``hashing`` treatment for a column of `size` ids."""
    return max(_MAX_ONE_HOT, -(-size // _VALUES_PER_BUCKET))


def category_ids(column: Column, series: pd.Series) -> np.ndarray:
    """Integer ids of a categorical column's values (`StringLookup`'s convention: the
    value at vocabulary position ``i`` is ``i + 1``, an unseen value is 0)."""
    if column.kind == INTEGER_CATEGORICAL:
        values: Any = series.to_numpy(dtype="int64")
    else:
        values = _string_values(series).to_numpy()
    return _lookup_ids(column.vocabulary, values)


def _lookup_ids(vocabulary: Sequence[Any], values: Any) -> np.ndarray:
    """Each value's position in `vocabulary` plus one; 0 where it is not there."""
    return pd.Index(list(vocabulary)).get_indexer(values).astype("int64") + 1


def model_inputs(
    schema: TabularSchema,
    frame: pd.DataFrame,
    *,
    target_codes: Mapping[str, np.ndarray] | None = None,
) -> Any:
    """The model's inputs for these rows.

    Returns a float32 matrix when every column is numeric, else a dict: ``numeric``
    (rows x numeric columns, NaN where missing), one ``(rows, 1)`` int64 tensor of ids
    per categorical column (`category_ids`), and for a column with target codes its
    encoding (``<name>__target``): `target_codes`' rows where given (the training
    rows' out-of-fold encodings), else each id's code from the schema. Row codes
    (`fit_row_codes`) come the same way, under `ROW_CODES`.
    """
    matrix = numeric_frame(schema, frame).to_numpy(dtype="float32")
    matrix = matrix.reshape(len(frame), len(schema.numeric))
    if schema.numeric_only:
        return matrix
    inputs: dict[str, Any] = {}
    if schema.numeric:
        inputs[NUMERIC_INPUT] = tf.constant(matrix)
    given = target_codes or {}

    def codes(column: Column, ids: np.ndarray) -> tf.Tensor:
        found = given.get(column.name)
        if found is None:
            found = np.asarray(column.target_codes, dtype="float32")[ids]
        return tf.constant(found, dtype=tf.float32)

    for column in schema.categorical:
        ids = category_ids(column, frame[column.name])
        inputs[column.name] = tf.constant(ids.reshape(-1, 1))
        if column.target_codes:
            inputs[column.name + TARGET_SUFFIX] = codes(column, ids)
    if schema.rows is not None:
        ids = _lookup_ids(schema.rows.vocabulary, row_keys(schema, frame, schema.rows.key))
        inputs[ROW_CODES + TARGET_SUFFIX] = codes(schema.rows, ids)
    return inputs


class FillMissing(keras.layers.Layer):
    """Replaces NaN in each column with that column's fill value (its training mean)."""

    def __init__(self, fill_values: Sequence[float], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fill_values = [float(v) for v in fill_values]

    def call(self, inputs: Any) -> Any:
        fill = keras.ops.convert_to_tensor(self.fill_values, dtype=inputs.dtype)
        return keras.ops.where(keras.ops.isnan(inputs), fill, inputs)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "fill_values": self.fill_values}


class HashBuckets(keras.layers.Layer):
    """Maps integer ids to `buckets` buckets with a fixed multiplicative hash, in
    integer ops that XLA compiles (`keras.layers.Hashing` turns ids into strings first,
    on the CPU, and turns XLA off for the model)."""

    _MULTIPLIER = 2654435761  # Knuth's; a prime, so no bucket count shares a factor

    def __init__(self, buckets: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.buckets = int(buckets)

    def call(self, ids: Any) -> Any:
        ids = keras.ops.cast(ids, "int64")
        return keras.ops.mod(ids * self._MULTIPLIER, self.buckets)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "buckets": self.buckets}


class ValueIds(keras.layers.Layer):
    """Ids of chosen numeric columns' values in one shared table: a value equal to the
    column's ``i``-th repeated training value gets ``offset + i + 1``, any other (unseen,
    rare, or a filled gap) the column's ``offset``, so each column has its own slots."""

    def __init__(
        self, columns: Sequence[int], values: Sequence[Sequence[float]], **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.columns = [int(c) for c in columns]
        self.values = [[float(v) for v in column] for column in values]
        sizes = [len(column) + 1 for column in self.values]
        self.size = sum(sizes)
        self._offsets = np.cumsum([0, *sizes[:-1]]).astype("int32")

    def call(self, inputs: Any) -> Any:
        width = max(len(column) for column in self.values)
        table = tf.constant(
            [column + [np.inf] * (width - len(column)) for column in self.values], tf.float32
        )
        lengths = tf.constant([[len(column)] for column in self.values], tf.int32)
        picked = tf.transpose(tf.gather(tf.cast(inputs, tf.float32), self.columns, axis=1))
        position = tf.searchsorted(table, picked, side="left", out_type=tf.int32)
        found = tf.gather(table, tf.minimum(position, width - 1), batch_dims=1)
        matched = tf.logical_and(tf.equal(found, picked), position < lengths)
        ids = tf.where(matched, position + 1, 0) + tf.constant(self._offsets)[:, None]
        return tf.transpose(ids)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "columns": self.columns, "values": self.values}


class MissingIndicator(keras.layers.Layer):
    """1.0 where the chosen columns are missing (NaN), else 0.0."""

    def __init__(self, columns: Sequence[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.columns = [int(c) for c in columns]

    def call(self, inputs: Any) -> Any:
        picked = keras.ops.take(inputs, self.columns, axis=1)
        return keras.ops.cast(keras.ops.isnan(picked), "float32")

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "columns": self.columns}


def _embedding_size(cardinality: int) -> int:
    # The rule of thumb fastai uses for tabular embeddings, capped for small data.
    return int(min(32, round(1.6 * cardinality**0.56)))


def build_preprocessing(
    schema: TabularSchema,
    *,
    scaling: str = "standardize",
    embedding: Any = None,
    high_cardinality: str = "embedding",
    value_embedding: bool = False,
    row_codes: bool = False,
) -> tuple[Any, Any]:
    """Builds the model's inputs and their encoded, concatenated features.

    Args:
        schema: The columns and their training statistics.
        scaling: How numeric columns are scaled (`numeric.NUMERIC_SCALINGS`), after
            missing values are filled with the training mean; unused by an embedding
            that takes raw values.
        embedding: A layer applied to the scaled numeric matrix (one of
            `hypermodels.numeric`'s embeddings; one with ``takes_raw_values`` gets the
            gap-filled raw values), or None for the scaled values as they are.
        high_cardinality: How columns with too many values to one-hot encode enter
            (`HIGH_CARDINALITY`). Their ids stay model inputs whatever the choice, so
            every trial takes the same inputs and the export serves raw values. Where
            they are every column, ``drop`` means ``frequency``.
        value_embedding: Also embed each repeated value of the numeric columns that
            have them (`value_columns`, `ValueIds`).
        row_codes: Also take the target encoding of the row's group, where the
            schema has one (`fit_row_codes`).

    Returns:
        ``(inputs, encoded)``: a single `keras.Input` or a dict of them, and the float
        tensor that the rest of the network consumes.
    """
    raw_inputs = _raw_inputs(schema)
    parts = []
    if schema.numeric:
        parts += _numeric_parts(
            schema,
            raw_inputs[NUMERIC_INPUT],
            scaling=scaling,
            embedding=embedding,
            value_embedding=value_embedding,
        )
    if high_cardinality == "drop" and len(high_cardinality_columns(schema)) == len(schema.columns):
        high_cardinality = "frequency"  # dropping every column would leave no features
    for column in schema.categorical:
        encoded = _categorical_part(column, raw_inputs, column.treatment or high_cardinality)
        if encoded is not None:
            parts.append(encoded)
    if row_codes and schema.rows is not None:
        parts.append(raw_inputs[ROW_CODES + TARGET_SUFFIX])
    features = (
        parts[0]
        if len(parts) == 1
        else keras.layers.Concatenate(dtype="float32", name="features")(parts)
    )
    return _input_layout(schema, raw_inputs), features


def _numeric_parts(
    schema: TabularSchema, raw: Any, *, scaling: str, embedding: Any, value_embedding: bool
) -> list[Any]:
    """The numeric matrix's features: scaled (or embedded), the repeated values'
    embeddings, and the gaps' indicators."""
    numeric = schema.numeric
    parts = []
    # Preprocessing computes in float32 whatever the global mixed-precision policy:
    # raw values such as 1000.3 do not survive a bfloat16/float16 normalisation.
    filled = FillMissing([c.mean for c in numeric], dtype="float32", name="fill_missing")(raw)
    if embedding is not None and getattr(embedding, "takes_raw_values", False):
        parts.append(embedding(filled))
    else:
        scaled = _scaled(numeric, filled, scaling)
        parts.append(scaled if embedding is None else embedding(scaled))
    chosen = value_columns(schema) if value_embedding else []
    if chosen:
        # Raw values in float32: a gap (NaN) matches nothing, and the input is not
        # rounded to a mixed-precision policy's 16 bits before the exact match.
        ids = ValueIds(
            chosen, [numeric[i].values for i in chosen], dtype="float32", name="value_ids"
        )
        embedded = keras.layers.Embedding(ids.size, VALUE_EMBEDDING_DIM, name="value_embed")(
            ids(raw)
        )
        parts.append(keras.layers.Flatten(name="flatten_values")(embedded))
    missing = [i for i, c in enumerate(numeric) if c.has_missing]
    if missing:
        parts.append(MissingIndicator(missing, dtype="float32", name="missing_indicator")(raw))
    return parts


def _categorical_part(column: Column, raw_inputs: Mapping[str, Any], treatment: str) -> Any:
    """One categorical column's features: one-hot where it has few values, else as
    `treatment` says (`HIGH_CARDINALITY`); None for ``drop``."""
    ids = raw_inputs[column.name]
    size = len(column.vocabulary) + 1  # one out-of-vocabulary slot
    safe = re.sub(r"[^A-Za-z0-9_]", "_", column.name)
    if size <= _MAX_ONE_HOT:
        return keras.layers.CategoryEncoding(
            num_tokens=size, output_mode="one_hot", name=f"one_hot_{safe}"
        )(ids)
    if treatment == "drop":
        return None
    if treatment == "target":
        if not column.target_codes:
            raise ValueError(
                f"column {column.name!r} has no target codes: fit them with "
                "`fit_target_codes` before building a model that target-encodes"
            )
        return raw_inputs[column.name + TARGET_SUFFIX]
    if treatment == "frequency":
        return keras.layers.Flatten(name=f"flatten_{safe}")(
            keras.layers.Embedding(
                size,
                1,
                embeddings_initializer=keras.initializers.Constant(_log_frequency(column)),
                trainable=False,
                name=f"frequency_{safe}",
            )(ids)
        )
    if treatment == "hashing":
        buckets = hashing_buckets(size)
        hashed = HashBuckets(buckets, name=f"hash_{safe}")(ids)
        embedded = keras.layers.Embedding(
            buckets, _embedding_size(buckets), name=f"hashed_embed_{safe}"
        )(hashed)
        return keras.layers.Flatten(name=f"flatten_{safe}")(embedded)
    if treatment == "embedding":
        embedded = keras.layers.Embedding(size, _embedding_size(size), name=f"embed_{safe}")(ids)
        return keras.layers.Flatten(name=f"flatten_{safe}")(embedded)
    raise ValueError(f"unknown high-cardinality treatment {treatment!r}")


def _log_frequency(column: Column) -> np.ndarray:
    """Each id's standardised log training count, as a (ids, 1) embedding table."""
    counts = np.asarray(column.counts or [0] * (len(column.vocabulary) + 1), dtype="float64")
    logs = np.log1p(counts)
    spread = logs.std() or 1.0
    return ((logs - logs.mean()) / spread).reshape(-1, 1).astype("float32")


def _scaled(numeric: Sequence[Column], filled: Any, scaling: str) -> Any:
    if scaling == "quantile":
        return QuantileNormal([c.quantiles for c in numeric], dtype="float32", name="quantile")(
            filled
        )
    if scaling == "robust":
        centers, scales = zip(*(robust_center_and_scale(c.quantiles) for c in numeric), strict=True)
        robust = keras.layers.Normalization(
            mean=list(centers),
            variance=[s**2 for s in scales],
            dtype="float32",
            name="robust_scale",
        )(filled)
        return SmoothClip(dtype="float32", name="smooth_clip")(robust)
    if scaling != "standardize":
        raise ValueError(f"unknown numeric scaling {scaling!r}")
    return keras.layers.Normalization(
        mean=[c.mean for c in numeric],
        variance=[c.variance for c in numeric],
        dtype="float32",
        name="normalize",
    )(filled)


def _raw_inputs(schema: TabularSchema) -> dict[str, Any]:
    inputs: dict[str, Any] = {}
    if schema.numeric:
        inputs[NUMERIC_INPUT] = keras.Input(
            shape=(len(schema.numeric),), dtype="float32", name=NUMERIC_INPUT
        )
    for column in schema.categorical:
        inputs[column.name] = keras.Input(shape=(1,), dtype="int64", name=column.name)
        if column.target_codes:
            name = column.name + TARGET_SUFFIX
            width = len(column.target_codes[0])
            inputs[name] = keras.Input(shape=(width,), dtype="float32", name=name)
    if schema.rows is not None:
        name = ROW_CODES + TARGET_SUFFIX
        width = len(schema.rows.target_codes[0])
        inputs[name] = keras.Input(shape=(width,), dtype="float32", name=name)
    return inputs


def _input_layout(schema: TabularSchema, inputs: dict[str, Any]) -> Any:
    """The numeric input alone when every column is numeric, else the dict."""
    return inputs[NUMERIC_INPUT] if schema.numeric_only else inputs


def build_inputs(schema: TabularSchema) -> Any:
    """Fresh `keras.Input` tensors in the layout `build_preprocessing` gives a model
    (one, or a dict), for a model that wraps trained ones (an ensemble)."""
    return _input_layout(schema, _raw_inputs(schema))


_SERVING_DTYPES = {
    NUMERIC: tf.float32,
    INTEGER_CATEGORICAL: tf.int64,
    STRING_CATEGORICAL: tf.string,
    DATETIME: tf.string,
}


def serving_signature(schema: TabularSchema) -> dict[str, tf.TensorSpec]:
    """One 1-D input per column, in its raw dtype: float32 (NaN for a missing
    number), int64, or string (``""`` for a missing value)."""
    names = schema.input_names()
    return {
        names[c.name]: tf.TensorSpec(
            shape=(None,), dtype=_SERVING_DTYPES[c.kind], name=names[c.name]
        )
        for c in schema.columns
    }


class ServingEncoder(keras.layers.Layer):
    """Turns the export's per-column serving tensors into the model's inputs: stacks
    the numeric columns and looks categorical values up into ids (`category_ids`'s
    convention), with lookup tables that the SavedModel carries."""

    def __init__(self, schema: TabularSchema, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.schema = schema
        self.lookups = {
            column.name: (
                keras.layers.IntegerLookup(vocabulary=list(column.vocabulary))
                if column.kind == INTEGER_CATEGORICAL
                else keras.layers.StringLookup(vocabulary=list(column.vocabulary))
            )
            for column in schema.categorical
            if column.vocabulary  # an empty one (every value rare): all ids are 0
        }
        self.target_tables = {
            column.name: tf.constant(column.target_codes, dtype=tf.float32)
            for column in schema.categorical
            if column.target_codes
        }
        if schema.rows is not None:
            self.row_lookup = keras.layers.IntegerLookup(vocabulary=list(schema.rows.vocabulary))
            self.row_table = tf.constant(schema.rows.target_codes, dtype=tf.float32)
        self.built = True  # no weights; the lookup layers hold their tables

    def call(self, features: Mapping[str, Any]) -> Any:
        names = self.schema.input_names()
        numeric = []
        for column in self.schema.columns:
            values = features[names[column.name]]
            if column.kind == NUMERIC:
                numeric.append(tf.cast(values, tf.float32))
            elif column.kind == DATETIME:  # the parts, from the raw text
                parts = date_parts(values, tf, parts=[part.part for part in column.parts])
                numeric.extend(tf.unstack(parts, num=len(column.parts), axis=1))
        matrix = tf.stack(numeric, axis=1) if numeric else None
        if self.schema.numeric_only:
            return matrix
        inputs: dict[str, tf.Tensor] = {}
        if matrix is not None:
            inputs[NUMERIC_INPUT] = matrix
        all_ids = []
        for column in self.schema.categorical:
            values = features[names[column.name]]
            lookup = self.lookups.get(column.name)
            ids = lookup(values) if lookup is not None else tf.zeros_like(values, tf.int64)
            ids = tf.cast(ids, tf.int64)
            all_ids.append(ids)
            inputs[column.name] = tf.expand_dims(ids, axis=1)
            if column.name in self.target_tables:
                codes = tf.gather(self.target_tables[column.name], ids)
                inputs[column.name + TARGET_SUFFIX] = codes
        if self.schema.rows is not None:
            numeric, categorical = _key_positions(self.schema, self.schema.rows.key)
            words = _float_words(tf.gather(matrix, numeric, axis=1), tf) if numeric else []
            key_ids = [all_ids[i] for i in categorical]
            ids = tf.cast(self.row_lookup(_combine(words, key_ids, tf)), tf.int64)
            inputs[ROW_CODES + TARGET_SUFFIX] = tf.gather(self.row_table, ids)
        return inputs


def raw_rows(schema: TabularSchema, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per-column numpy arrays in the serving dtypes, keyed by SavedModel input name."""
    names = schema.input_names()
    rows: dict[str, np.ndarray] = {}
    for column in schema.columns:
        series = frame[column.name]
        if column.kind == NUMERIC:
            rows[names[column.name]] = pd.to_numeric(series, errors="coerce").to_numpy("float32")
        elif column.kind == INTEGER_CATEGORICAL:
            rows[names[column.name]] = series.to_numpy(dtype="int64")
        elif column.kind == DATETIME:
            rows[names[column.name]] = iso_strings(series).astype(str)
        else:
            rows[names[column.name]] = _string_values(series).to_numpy().astype(str)
    return rows
