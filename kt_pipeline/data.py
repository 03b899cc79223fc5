"""Tabular data in: built-in scikit-learn sets, CSV, Parquet and NPZ files.

Everything here runs offline: the built-in sets are the ones scikit-learn ships inside
its wheel. A loaded table becomes a `Dataset` (float32 features, encoded labels, the
task), which `split_dataset` cuts into seeded train/validation/test splits.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kt_pipeline.errors import UserInputError

__all__ = [
    "BUILTIN_DATASETS",
    "Dataset",
    "Split",
    "Splits",
    "infer_task",
    "load_dataset",
    "read_features",
    "split_dataset",
]

# Integer labels with at most this many distinct values are read as classes.
_MAX_INFERRED_CLASSES = 30


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
    """A loaded table, ready for the model.

    Attributes:
        name: Where it came from (``builtin:digits`` or the file path).
        x: Features, float32, shape ``(rows, features)``.
        y: Labels: class ids 0..K-1 (int32) for classification, float32 for regression.
        feature_names: One name per feature column.
        task: ``binary``, ``multiclass`` or ``regression``.
        class_names: The original label of each class id (empty for regression).
    """

    name: str
    x: np.ndarray
    y: np.ndarray
    feature_names: tuple[str, ...]
    task: str
    class_names: tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclasses.dataclass(frozen=True)
class Split:
    """One part of a split: features and labels."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


@dataclasses.dataclass(frozen=True)
class Splits:
    """Train, validation and test parts. The search never sees `test`."""

    train: Split
    validation: Split
    test: Split


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


def _features_from_frame(frame: pd.DataFrame, source: str) -> np.ndarray:
    for column in frame.columns:
        series = frame[column]
        if not (pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series)):
            numbers = pd.to_numeric(series, errors="coerce")
            offending = series[numbers.isna() & series.notna()]
            example = offending.iloc[0] if len(offending) else None
            raise UserInputError(
                f"column {column!r} of {source!r} must be numeric. Received values such as "
                f"{example!r}"
            )
        if series.isna().all():
            raise UserInputError(f"column {column!r} of {source!r} has no values (all missing)")
        if series.isna().any():
            raise UserInputError(
                f"column {column!r} of {source!r} has {int(series.isna().sum())} missing values"
            )
    x = frame.to_numpy(dtype="float32")
    _check_finite(x, source, names=[str(c) for c in frame.columns])
    return x


def _check_finite(x: np.ndarray, source: str, *, names: list[str]) -> None:
    bad = ~np.isfinite(x)
    if bad.any():
        column = int(np.argwhere(bad.any(axis=0))[0][0])
        raise UserInputError(
            f"column {names[column]!r} of {source!r} has non-finite values "
            f"(Received: {x[bad][0]!r})"
        )


def _load_builtin(name: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], Any]:
    if name not in BUILTIN_DATASETS:
        raise UserInputError(
            f"unknown built-in data set {name!r}; choose one of "
            f"{', '.join('builtin:' + n for n in BUILTIN_DATASETS)}"
        )
    bunch = BUILTIN_DATASETS[name]()
    names = tuple(str(n) for n in getattr(bunch, "feature_names", []))
    names = names or tuple(f"x{i}" for i in range(bunch.data.shape[1]))
    return bunch.data.astype("float32"), bunch.target, names, getattr(bunch, "target_names", None)


def _load_npz(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
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
    try:
        x = x.astype("float32")
    except (TypeError, ValueError) as error:
        raise UserInputError(
            f"array 'x' of {str(path)!r} must be numeric. Received dtype {x.dtype}"
        ) from error
    names = tuple(f"x{i}" for i in range(x.shape[1]))
    _check_finite(x, str(path), names=list(names))
    return x, y, names


def _load_table(path: Path, label: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
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
    x = _features_from_frame(features, source)
    return x, labels.to_numpy(), tuple(str(c) for c in features.columns)


def load_dataset(source: str, *, label: str = "", task: str = "auto") -> Dataset:
    """Loads a built-in set or a file into a `Dataset`.

    Args:
        source: ``builtin:<name>`` or a path to a ``.csv``, ``.parquet``/``.pq`` or
            ``.npz`` file.
        label: The label column of a CSV or Parquet file.
        task: ``auto`` to infer from the label, or ``binary``/``multiclass``/``regression``.

    Raises:
        UserInputError: the source is missing, unreadable or unusable; the message
            names the file or column and the value received.
    """
    class_names: tuple[str, ...] | None = None
    if source.startswith("builtin:"):
        x, raw_y, names, target_names = _load_builtin(source.removeprefix("builtin:"))
        if target_names is not None:
            class_names = tuple(str(n) for n in target_names)
    else:
        path = Path(source)
        if not path.is_file():
            raise UserInputError(f"data file {source!r} does not exist")
        if path.stat().st_size == 0:
            raise UserInputError(f"data file {source!r} is empty")
        suffix = path.suffix.lower()
        if suffix == ".npz":
            x, raw_y, names = _load_npz(path)
        elif suffix in (".csv", ".parquet", ".pq"):
            x, raw_y, names = _load_table(path, label)
        else:
            raise UserInputError(
                f"data file {source!r} must end in .csv, .parquet, .pq or .npz. "
                f"Received: {suffix!r}"
            )
    if len(x) == 0:
        raise UserInputError(f"data source {source!r} has no rows")
    resolved_task = infer_task(raw_y) if task == "auto" else task
    y, encoded_names = _encode_labels(np.asarray(raw_y), resolved_task, source)
    if class_names is None or len(class_names) != len(encoded_names):
        class_names = encoded_names
    return Dataset(
        name=source,
        x=x,
        y=y,
        feature_names=names,
        task=resolved_task,
        class_names=class_names if resolved_task != "regression" else (),
    )


def split_dataset(
    dataset: Dataset, *, validation_fraction: float, test_fraction: float, seed: int
) -> Splits:
    """Seeded train/validation/test split, stratified by class for classification.

    Raises:
        UserInputError: too few rows (or too few of some class) for the split.
    """
    from sklearn.model_selection import train_test_split

    rows = len(dataset.y)
    classify = dataset.task != "regression"
    needed = max(3, 3 * dataset.num_classes) if classify else 3
    if rows < needed or min(rows * test_fraction, rows * validation_fraction) < 1:
        raise UserInputError(
            f"data source {dataset.name!r} has too few rows ({rows}) for a train/validation/"
            f"test split with fractions {validation_fraction} and {test_fraction}"
        )
    indices = np.arange(rows)

    def cut(idx: np.ndarray, fraction: float, seed_offset: int) -> tuple[np.ndarray, np.ndarray]:
        stratify = dataset.y[idx] if classify else None
        try:
            first, second = train_test_split(
                idx, test_size=fraction, random_state=seed + seed_offset, stratify=stratify
            )
        except ValueError as error:
            raise UserInputError(
                f"data source {dataset.name!r} cannot be split with every class in every part: "
                f"{error}"
            ) from error
        return np.sort(first), np.sort(second)

    rest, test = cut(indices, test_fraction, 0)
    train, validation = cut(rest, validation_fraction / (1 - test_fraction), 1)

    def part(idx: np.ndarray) -> Split:
        return Split(x=dataset.x[idx], y=dataset.y[idx])

    return Splits(train=part(train), validation=part(validation), test=part(test))


def read_features(path: str | Path, *, feature_names: tuple[str, ...] | list[str]) -> np.ndarray:
    """Reads rows to predict on: the named feature columns of a CSV/Parquet file, in
    the order the model expects (other columns, such as a label, are ignored), or the
    ``x`` array of an ``.npz`` file.

    Raises:
        UserInputError: the file is missing or unreadable, or lacks a feature column.
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
            x = archive["x"].astype("float32")
        if x.ndim != 2 or x.shape[1] != len(feature_names):
            raise UserInputError(
                f"array 'x' of {str(path)!r} must have shape (rows, "
                f"{len(feature_names)}). Received shape {x.shape}"
            )
        _check_finite(x, str(path), names=list(feature_names))
        return x
    frame = _read_table(path)
    missing = [name for name in feature_names if name not in frame.columns]
    if missing:
        raise UserInputError(
            f"input file {str(path)!r} lacks feature column {missing[0]!r} ({len(missing)} missing)"
        )
    return _features_from_frame(frame[list(feature_names)], str(path))
