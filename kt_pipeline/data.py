"""Tabular data in: built-in scikit-learn sets, CSV, Parquet and NPZ files.

Everything here runs offline: the built-in sets are the ones scikit-learn ships inside
its wheel. A loaded table becomes a `Dataset`: the feature columns with their kinds
(numeric, integer or string categorical; missing values kept as missing), encoded
labels and the task, which `kt_pipeline.splits` cuts into train, validation and test
parts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hypermodels.dates import iso_strings, looks_like_dates
from hypermodels.features import DATETIME, INTEGER_CATEGORICAL, NUMERIC, STRING_CATEGORICAL
from kt_pipeline.errors import UserInputError

__all__ = [
    "BUILTIN_DATASETS",
    "Dataset",
    "check_columns",
    "feature_rows",
    "fingerprint",
    "infer_column_kinds",
    "infer_task",
    "load_dataset",
    "read_rows",
]

# Integer labels with at most this many distinct values are read as classes.
_MAX_INFERRED_CLASSES = 30

# Integer feature columns with at most this many distinct values are categories.
_MAX_INTEGER_CATEGORIES = 10


def _sklearn_loader(name: str) -> Callable[[], Any]:
    def load() -> Any:
        from sklearn import datasets

        return getattr(datasets, f"load_{name}")()

    return load


#: Built-in data sets: all ship inside scikit-learn, so nothing is downloaded.
BUILTIN_DATASETS: dict[str, Callable[[], Any]] = {
    name: _sklearn_loader(name) for name in ("digits", "breast_cancer", "wine", "iris", "diabetes")
}


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A loaded table.

    Attributes:
        name: Where it came from (``builtin:digits`` or the file path).
        frame: The feature columns with their original values (missing ones as NaN).
        y: Labels: class ids 0..K-1 (int32) for classification, float32 for regression.
        kinds: Kind of each feature column: ``numeric``, ``integer_categorical`` or
            ``string_categorical``.
        task: ``binary``, ``multiclass`` or ``regression``.
        class_names: The original label of each class id (empty for regression).
    """

    name: str
    frame: pd.DataFrame
    y: np.ndarray
    kinds: dict[str, str]
    task: str
    class_names: tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(str(c) for c in self.frame.columns)


def infer_task(labels: pd.Series | np.ndarray) -> str:
    """Infers the task from the label values.

    Non-numeric or boolean labels are classes; so are integer-valued numbers with
    few distinct values. Anything else numeric is a regression target.
    """
    series = pd.Series(np.asarray(labels)).dropna()
    distinct = series.nunique()
    numeric = pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
    if numeric:
        values = series.to_numpy(dtype="float64")
        integral = bool(np.all(np.mod(values, 1) == 0))
        if not integral or distinct > _MAX_INFERRED_CLASSES:
            return "regression"
    return "binary" if distinct <= 2 else "multiclass"


def _read_table(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return pd.read_csv(path)
        return pd.read_parquet(path)
    except pd.errors.EmptyDataError as error:
        raise UserInputError(f"data file {str(path)!r} is empty") from error
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as error:
        kind = "CSV" if suffix == ".csv" else "Parquet"
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserInputError(f"data file {str(path)!r} is not readable {kind}: {reason}") from error


def _encode_labels(raw: np.ndarray, task: str, source: str) -> tuple[np.ndarray, tuple[str, ...]]:
    if task == "regression":
        try:
            return np.asarray(raw, dtype="float32"), ()
        except (TypeError, ValueError) as error:
            raise UserInputError(
                f"label of {source!r} must be numeric for a regression task. "
                f"Received values such as {raw[0]!r}"
            ) from error
    classes, codes = np.unique(raw, return_inverse=True)
    if len(classes) < 2:
        raise UserInputError(
            f"label of {source!r} must have at least 2 classes for a {task} task. "
            f"Received one class: {classes[0]!r}"
            if len(classes)
            else f"label of {source!r} is empty"
        )
    if task == "binary" and len(classes) != 2:
        raise UserInputError(
            f"label of {source!r} must have exactly 2 classes for a binary task. "
            f"Received {len(classes)} classes"
        )
    return codes.astype("int32"), tuple(str(c) for c in classes)


def _numeric_share(series: pd.Series) -> float:
    present = series.dropna()
    if present.empty:
        return 0.0
    return float(pd.to_numeric(present, errors="coerce").notna().mean())


def infer_column_kinds(
    frame: pd.DataFrame,
    *,
    categorical: Sequence[str] = (),
    numeric: Sequence[str] = (),
    source: str = "data",
) -> dict[str, str]:
    """Decides each column's kind; `categorical` and `numeric` name columns to force.

    Inference: text is a string category, unless nearly all of it (90 %) parses as
    numbers, in which case it is a numeric column with a typo, or of ISO dates and
    timestamps (`hypermodels.dates.looks_like_dates`, datetimes too), which are dates;
    booleans and integer columns with at most 10 distinct values are integer
    categories; other numbers are numeric. A forced categorical column that is not
    integer-typed is read as text.

    Raises:
        UserInputError: a named column does not exist.
    """
    columns = [str(c) for c in frame.columns]
    for field, names in (("data.categorical", categorical), ("data.numeric", numeric)):
        for name in names:
            if name not in columns:
                raise UserInputError(
                    f"`{field}` names column {name!r}, which is not in {source!r} "
                    f"(columns: {', '.join(columns)})"
                )
    kinds = {}
    for name in columns:
        series = frame[name]
        integer_typed = pd.api.types.is_integer_dtype(series) or pd.api.types.is_bool_dtype(series)
        if name in numeric:
            kinds[name] = NUMERIC
        elif name in categorical:
            kinds[name] = INTEGER_CATEGORICAL if integer_typed else STRING_CATEGORICAL
        elif integer_typed:
            few = series.nunique() <= _MAX_INTEGER_CATEGORIES
            kinds[name] = INTEGER_CATEGORICAL if few else NUMERIC
        elif pd.api.types.is_numeric_dtype(series):
            kinds[name] = NUMERIC
        elif looks_like_dates(series):
            kinds[name] = DATETIME
        else:
            kinds[name] = NUMERIC if _numeric_share(series) >= 0.9 else STRING_CATEGORICAL
    return kinds


def check_columns(
    frame: pd.DataFrame, kinds: Mapping[str, str], *, source: str, allow_empty: bool = False
) -> pd.DataFrame:
    """Checks the feature columns against their kinds and returns them in model-ready
    dtypes (numbers as float64 with NaN where missing, integer categories as int64,
    text as str with None where missing).

    Raises:
        UserInputError: text in a numeric column, infinite values, a non-integer value
            in an integer category, or (unless `allow_empty`) an all-missing column.
    """
    checked = {}
    for name, kind in kinds.items():
        series = frame[name]
        if series.isna().all() and not allow_empty:
            raise UserInputError(f"column {name!r} of {source!r} has no values (all missing)")
        if kind == NUMERIC:
            numbers = pd.to_numeric(series, errors="coerce")
            offending = series[numbers.isna() & series.notna()]
            if len(offending):
                raise UserInputError(
                    f"column {name!r} of {source!r} must be numeric. Received values such as "
                    f"{offending.iloc[0]!r}"
                )
            values = numbers.astype("float64")
            if np.isinf(values).any():
                raise UserInputError(
                    f"column {name!r} of {source!r} has non-finite values "
                    f"(Received: {values[np.isinf(values)].iloc[0]!r})"
                )
            checked[name] = values
        elif kind == INTEGER_CATEGORICAL:
            numbers = pd.to_numeric(series, errors="coerce")
            bad = series[numbers.isna() | (numbers % 1 != 0)]
            if len(bad):
                raise UserInputError(
                    f"column {name!r} of {source!r} must hold integer categories. "
                    f"Received values such as {bad.iloc[0]!r}"
                )
            checked[name] = numbers.astype("int64")
        elif kind == DATETIME:  # ISO text, the form the export is served
            text = pd.Series(iso_strings(series), index=series.index, dtype=object)
            checked[name] = text.where(text != "", None)
        else:
            checked[name] = series.astype("string").astype(object).where(series.notna(), None)
    return pd.DataFrame(checked, index=frame.index)


def _load_builtin(name: str) -> tuple[pd.DataFrame, np.ndarray, Any]:
    if name not in BUILTIN_DATASETS:
        raise UserInputError(
            f"unknown built-in data set {name!r}; choose one of "
            f"{', '.join('builtin:' + n for n in BUILTIN_DATASETS)}"
        )
    bunch = BUILTIN_DATASETS[name]()
    names = [str(n) for n in getattr(bunch, "feature_names", [])]
    names = names or [f"x{i}" for i in range(bunch.data.shape[1])]
    frame = pd.DataFrame(bunch.data.astype("float64"), columns=names)
    return frame, bunch.target, getattr(bunch, "target_names", None)


def _load_npz(path: Path) -> tuple[pd.DataFrame, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in ("x", "y") if key not in archive.files]
            if missing:
                raise UserInputError(
                    f"data file {str(path)!r} must hold arrays 'x' and 'y'. "
                    f"Received arrays: {sorted(archive.files)}"
                )
            x, y = archive["x"], archive["y"]
    except (OSError, ValueError) as error:
        raise UserInputError(
            f"data file {str(path)!r} is not a readable .npz archive: {error}"
        ) from error
    if x.ndim != 2:
        raise UserInputError(
            f"array 'x' of {str(path)!r} must be 2-D (rows, features). Received shape {x.shape}"
        )
    if y.ndim != 1 or len(y) != len(x):
        raise UserInputError(
            f"array 'y' of {str(path)!r} must be 1-D with one label per row of 'x' "
            f"({len(x)} rows). Received shape {y.shape}"
        )
    if not np.issubdtype(x.dtype, np.number):
        raise UserInputError(
            f"array 'x' of {str(path)!r} must be numeric. Received dtype {x.dtype}"
        )
    return pd.DataFrame(x.astype("float64"), columns=[f"x{i}" for i in range(x.shape[1])]), y


def _load_table(path: Path, label: str) -> tuple[pd.DataFrame, np.ndarray]:
    source = str(path)
    frame = _read_table(path)
    if frame.empty:
        raise UserInputError(f"data source {source!r} has no rows")
    columns = ", ".join(map(str, frame.columns))
    if not label:
        raise UserInputError(
            f"`data.label` must name the label column of {source!r}. "
            f"Received: '' (columns: {columns})"
        )
    if label not in frame.columns:
        raise UserInputError(f"label column {label!r} is not in {source!r} (columns: {columns})")
    labels = frame[label]
    if labels.isna().any():
        missing = int(labels.isna().sum())
        raise UserInputError(f"label column {label!r} of {source!r} has {missing} missing values")
    features = frame.drop(columns=[label])
    if features.shape[1] == 0:
        raise UserInputError(f"data file {source!r} has no feature columns besides {label!r}")
    features.columns = [str(c) for c in features.columns]
    return features, labels.to_numpy()


def load_dataset(
    source: str,
    *,
    label: str = "",
    task: str = "auto",
    categorical: Sequence[str] = (),
    numeric: Sequence[str] = (),
) -> Dataset:
    """Loads a built-in set or a file into a `Dataset`.

    Args:
        source: ``builtin:<name>`` or a path to a ``.csv``, ``.parquet``/``.pq`` or
            ``.npz`` file.
        label: The label column of a CSV or Parquet file.
        task: ``auto`` to infer from the label, or ``binary``/``multiclass``/``regression``.
        categorical: Columns to treat as categorical whatever their values.
        numeric: Columns to treat as numeric whatever their values.

    Raises:
        UserInputError: the source is missing, unreadable or unusable; the message
            names the file or column and the value received.
    """
    class_names: tuple[str, ...] | None = None
    if source.startswith("builtin:"):
        frame, raw_y, target_names = _load_builtin(source.removeprefix("builtin:"))
        if target_names is not None:
            class_names = tuple(str(n) for n in target_names)
    else:
        path = Path(source)
        if path.is_dir():
            raise UserInputError(f"data file {source!r} is a directory, not a file")
        if not path.is_file():
            raise UserInputError(f"data file {source!r} does not exist")
        if path.stat().st_size == 0:
            raise UserInputError(f"data file {source!r} is empty")
        suffix = path.suffix.lower()
        if suffix == ".npz":
            frame, raw_y = _load_npz(path)
        elif suffix in (".csv", ".parquet", ".pq"):
            frame, raw_y = _load_table(path, label)
        else:
            raise UserInputError(
                f"data file {source!r} must end in .csv, .parquet, .pq or .npz. "
                f"Received: {suffix!r}"
            )
    if len(frame) == 0:
        raise UserInputError(f"data source {source!r} has no rows")
    kinds = infer_column_kinds(frame, categorical=categorical, numeric=numeric, source=source)
    frame = check_columns(frame, kinds, source=source)
    resolved_task = infer_task(raw_y) if task == "auto" else task
    y, encoded_names = _encode_labels(np.asarray(raw_y), resolved_task, source)
    if class_names is None or len(class_names) != len(encoded_names):
        class_names = encoded_names
    return Dataset(
        name=source,
        frame=frame.reset_index(drop=True),
        y=y,
        kinds=kinds,
        task=resolved_task,
        class_names=class_names if resolved_task != "regression" else (),
    )


def fingerprint(dataset: Dataset) -> str:
    """A hash of the rows a search trains on: the feature values, the labels, the
    column names and kinds and the task. A file's size and date would miss changed
    labels; this does not (`benchmarks/fingerprint.py` measures its cost)."""
    digest = hashlib.sha256(
        json.dumps(
            [dataset.task, sorted(dataset.kinds.items()), list(dataset.frame.columns)]
        ).encode()
    )
    digest.update(pd.util.hash_pandas_object(dataset.frame, index=False).to_numpy().tobytes())
    digest.update(np.ascontiguousarray(dataset.y).tobytes())
    return digest.hexdigest()[:16]


def read_rows(path: str | Path, *, kinds: Mapping[str, str]) -> pd.DataFrame:
    """Reads rows to predict on from a CSV, Parquet or ``.npz`` file (its ``x`` array),
    checked by `feature_rows`.

    Raises:
        UserInputError: the file is missing or unreadable, or `feature_rows` refuses it.
    """
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"input file {str(path)!r} does not exist")
    if path.suffix.lower() == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            if "x" not in archive.files:
                raise UserInputError(
                    f"input file {str(path)!r} must hold an array 'x'. "
                    f"Received arrays: {sorted(archive.files)}"
                )
            return feature_rows(archive["x"], kinds=kinds, source=str(path))
    return feature_rows(_read_table(path), kinds=kinds, source=str(path))


def feature_rows(
    rows: pd.DataFrame | np.ndarray, *, kinds: Mapping[str, str], source: str
) -> pd.DataFrame:
    """The feature columns named in `kinds` from a frame (others, such as a label, are
    ignored) or from a 2-D array whose columns are in `kinds`' order, checked as
    `check_columns` does.

    Raises:
        UserInputError: an array of the wrong shape, a missing feature column, or a
            value its column cannot take; the message names `source`.
    """
    columns = list(kinds)
    if isinstance(rows, np.ndarray):
        if rows.ndim != 2 or rows.shape[1] != len(columns):
            raise UserInputError(
                f"the array of {source!r} must have shape (rows, {len(columns)}). "
                f"Received shape {rows.shape}"
            )
        rows = pd.DataFrame(rows, columns=columns)
    elif not isinstance(rows, pd.DataFrame):
        raise UserInputError(
            f"{source!r} must be a pandas DataFrame or a 2-D numpy array. "
            f"Received: {type(rows).__name__}"
        )
    missing = [name for name in columns if name not in rows.columns]
    if missing:
        raise UserInputError(
            f"{source!r} lacks feature column {missing[0]!r} ({len(missing)} missing)"
        )
    return check_columns(rows[columns], kinds, source=source, allow_empty=True)
