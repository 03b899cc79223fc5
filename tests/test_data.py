from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kt_pipeline.data import (
    BUILTIN_DATASETS,
    infer_column_kinds,
    infer_task,
    load_dataset,
    read_rows,
)
from kt_pipeline.errors import UserInputError
from kt_pipeline.splits import split_dataset

EXPECTED_TASKS = {
    "digits": ("multiclass", 10),
    "breast_cancer": ("binary", 2),
    "wine": ("multiclass", 3),
    "iris": ("multiclass", 3),
    "diabetes": ("regression", 0),
}


@pytest.mark.parametrize("name", sorted(BUILTIN_DATASETS))
def test_builtin_sets_load_offline_with_their_task(name: str) -> None:
    dataset = load_dataset(f"builtin:{name}")
    task, classes = EXPECTED_TASKS[name]
    assert dataset.task == task
    assert dataset.num_classes == classes
    assert set(dataset.kinds.values()) == {"numeric"}
    assert dataset.frame.shape == (len(dataset.y), len(dataset.feature_names))


@pytest.mark.parametrize(
    ("labels", "task"),
    [
        (["a", "b", "a"], "binary"),
        ([True, False, True], "binary"),
        ([0, 1, 2, 1], "multiclass"),
        (["x", "y", "z"], "multiclass"),
        ([0.5, 1.25, 3.0], "regression"),
        (list(range(100)), "regression"),
    ],
)
def test_task_inference(labels: list[object], task: str) -> None:
    assert infer_task(np.asarray(labels)) == task


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_csv_and_parquet_give_the_same_dataset(
    task: str, csv_file: Callable[..., Path], tmp_path: Path
) -> None:
    csv = csv_file(task=task)
    parquet = tmp_path / "data.parquet"
    pd.read_csv(csv).to_parquet(parquet)
    from_csv = load_dataset(str(csv), label="label")
    from_parquet = load_dataset(str(parquet), label="label")
    assert from_csv.task == from_parquet.task == task
    assert from_csv.feature_names == ("a", "b", "c", "n")
    assert from_csv.kinds == {
        "a": "numeric",
        "b": "numeric",
        "c": "numeric",
        "n": "integer_categorical",
    }
    pd.testing.assert_frame_equal(from_csv.frame, from_parquet.frame)
    np.testing.assert_array_equal(from_csv.y, from_parquet.y)


def test_string_labels_are_encoded_with_their_names(csv_file: Callable[..., Path]) -> None:
    dataset = load_dataset(str(csv_file(task="binary")), label="label")
    assert dataset.class_names == ("no", "yes")
    assert set(np.unique(dataset.y)) == {0, 1}


def test_task_can_be_overridden(csv_file: Callable[..., Path]) -> None:
    dataset = load_dataset(str(csv_file(task="multiclass")), label="label", task="regression")
    assert dataset.task == "regression"
    assert dataset.y.dtype == np.float32


def test_npz_source(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, x=np.arange(40.0).reshape(20, 2), y=np.arange(20) % 2)
    dataset = load_dataset(str(path))
    assert dataset.task == "binary"
    assert dataset.feature_names == ("x0", "x1")


def test_split_is_seeded_disjoint_and_stratified() -> None:
    dataset = load_dataset("builtin:iris")
    first = split_dataset(dataset, validation_fraction=0.2, test_fraction=0.2, seed=3)
    again = split_dataset(dataset, validation_fraction=0.2, test_fraction=0.2, seed=3)
    other = split_dataset(dataset, validation_fraction=0.2, test_fraction=0.2, seed=4)
    pd.testing.assert_frame_equal(first.test.frame, again.test.frame)
    assert not first.test.frame.equals(other.test.frame)
    assert len(first.train) + len(first.validation) + len(first.test) == 150
    assert len(first.test) == 30 and len(first.validation) == 30
    parts = (first.train, first.validation, first.test)
    rows = {tuple(r) for part in parts for r in part.frame.to_numpy()}
    assert len(rows) >= 147  # iris has a few duplicate rows; the parts do not overlap
    for part in (first.validation, first.test):
        assert np.bincount(part.y).tolist() == [10, 10, 10]


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("make_source", "label", "message"),
    [
        (lambda p: str(p / "nope.csv"), "label", "data file '{p}/nope.csv' does not exist"),
        (lambda p: _write(p, "empty.csv", ""), "label", "data file '{p}/empty.csv' is empty"),
        (lambda p: _write(p, "h.csv", "a,label\n"), "label", "has no rows"),
        (lambda p: _write(p, "bad.parquet", "not parquet"), "label", "is not readable Parquet"),
        (lambda p: _write(p, "d.txt", "a,b\n1,2\n"), "label", "must end in .csv, .parquet"),
        (
            lambda p: _write(p, "d.csv", "a,b\n1,2\n3,4\n"),
            "label",
            "label column 'label' is not in '{p}/d.csv' (columns: a, b)",
        ),
        (
            lambda p: _write(p, "d.csv", "a,label\n1,x\n2,x\n3,x\n"),
            "label",
            "must have at least 2 classes for a binary task. Received one class: 'x'",
        ),
        (
            lambda p: _write(p, "d.csv", "a,label\n" + "1,x\n2,y\n" * 5 + "foo,y\n"),
            "label",
            "column 'a' of '{p}/d.csv' must be numeric. Received values such as 'foo'",
        ),
        (
            lambda p: _write(p, "d.csv", "a,b,label\n,1,x\n,2,y\n"),
            "label",
            "column 'a' of '{p}/d.csv' has no values (all missing)",
        ),
        (
            lambda p: _write(p, "d.csv", "a,label\n1,x\ninf,y\n"),
            "label",
            "column 'a' of '{p}/d.csv' has non-finite values",
        ),
        (lambda p: _write(p, "d.csv", "a,b\n1,2\n"), "", "`data.label` must name the label column"),
        (lambda p: "builtin:mnist", "", "unknown built-in data set 'mnist'"),
    ],
)
def test_bad_sources_get_one_line_naming_the_problem(
    tmp_path: Path, make_source: Callable[[Path], str], label: str, message: str
) -> None:
    with pytest.raises(UserInputError) as info:
        load_dataset(make_source(tmp_path), label=label)
    assert message.format(p=tmp_path) in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.ones((4, 2))}, "must hold arrays 'x' and 'y'. Received arrays: ['x']"),
        ({"x": np.ones((4, 2)), "y": np.ones(3)}, "one label per row of 'x' (4 rows)"),
        ({"x": np.ones(4), "y": np.ones(4)}, "must be 2-D"),
    ],
)
def test_bad_npz_archives(tmp_path: Path, arrays: dict[str, np.ndarray], message: str) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    with pytest.raises(UserInputError) as info:
        load_dataset(str(path))
    assert message in str(info.value)


def test_too_few_rows_for_the_split(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, x=np.ones((4, 2)), y=np.array([0, 1, 0, 1]))
    dataset = load_dataset(str(path))
    with pytest.raises(UserInputError, match=r"too few rows \(4\)"):
        split_dataset(dataset, validation_fraction=0.15, test_fraction=0.15, seed=0)


def test_read_rows_checks_and_orders_the_feature_columns(csv_file: Callable[..., Path]) -> None:
    path = csv_file()
    frame = read_rows(path, kinds={"n": "integer_categorical", "a": "numeric"})
    assert list(frame.columns) == ["n", "a"]
    np.testing.assert_allclose(frame["a"], pd.read_csv(path)["a"])
    with pytest.raises(UserInputError, match="lacks feature column 'zz'"):
        read_rows(path, kinds={"a": "numeric", "zz": "numeric"})
    with pytest.raises(UserInputError, match=r"column 'label' .* must be numeric"):
        read_rows(path, kinds={"label": "numeric"})


def test_column_kinds_are_inferred_and_overridable() -> None:
    frame = pd.DataFrame(
        {
            "price": [1.5, None, 3.0, 4.0],
            "rooms": [1, 2, 3, 2],
            "zip": [10001, 10002, 10003, 10004],
            "city": ["a", "b", None, "a"],
            "flag": [True, False, True, True],
            "typo": ["1", "2", "3", "4"],
        }
    )
    assert infer_column_kinds(frame) == {
        "price": "numeric",
        "rooms": "integer_categorical",
        "zip": "integer_categorical",
        "city": "string_categorical",
        "flag": "integer_categorical",
        "typo": "numeric",
    }
    forced = infer_column_kinds(frame, categorical=["price"], numeric=["rooms"])
    assert forced["price"] == "string_categorical"
    assert forced["rooms"] == "numeric"
    with pytest.raises(UserInputError, match=r"`data\.numeric` names column 'nope'"):
        infer_column_kinds(frame, numeric=["nope"])


def test_mixed_table_keeps_missing_values(tmp_path: Path) -> None:
    path = tmp_path / "mixed.csv"
    pd.DataFrame(
        {
            "x": [1.0, None, 3.0, 4.0, 5.0, 6.0],
            "colour": ["red", "blue", None, "red", "blue", "red"],
            "level": [1, 2, 3, 1, 2, 3],
            "label": [0, 1, 0, 1, 0, 1],
        }
    ).to_csv(path, index=False)
    dataset = load_dataset(str(path), label="label")
    assert dataset.kinds == {
        "x": "numeric",
        "colour": "string_categorical",
        "level": "integer_categorical",
    }
    assert np.isnan(dataset.frame["x"][1])
    assert dataset.frame["colour"][2] is None
    assert dataset.frame["level"].dtype == np.int64
