"""High-cardinality categorical columns: rare values share one bucket, and `plan` says
which columns are mostly rare values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from hypermodels import fit_schema
from hypermodels.features import ServingEncoder, model_inputs, raw_rows
from kt_pipeline.cli import main
from kt_pipeline.config import load_config
from kt_pipeline.errors import UserInputError


def test_values_seen_fewer_than_min_frequency_times_share_the_unseen_bucket() -> None:
    train = pd.DataFrame({"shop": ["a"] * 5 + ["b"] * 3 + ["c", "d"], "size": [1] * 6 + [2] * 4})
    kinds = {"shop": "string_categorical", "size": "integer_categorical"}
    schema = fit_schema(train, kinds, min_frequency=3)
    shop, size = schema.columns
    assert shop.vocabulary == ("a", "b") and shop.levels == 4
    assert size.vocabulary == (1, 2)
    rows = pd.DataFrame({"shop": ["a", "b", "c", "d", "zz"], "size": [1, 2, 2, 1, 1]})
    ids = model_inputs(schema, rows)["shop"].numpy()[:, 0].tolist()
    assert ids == [1, 2, 0, 0, 0]  # rare c and d land with the unseen zz
    served = ServingEncoder(schema)({k: tf.constant(v) for k, v in raw_rows(schema, rows).items()})
    assert served["shop"].numpy()[:, 0].tolist() == ids
    assert fit_schema(train, kinds).columns[0].vocabulary == ("a", "b", "c", "d")  # default: all
    everything_rare = fit_schema(train, kinds, min_frequency=100)
    served = ServingEncoder(everything_rare)(
        {k: tf.constant(v) for k, v in raw_rows(everything_rare, rows).items()}
    )
    assert served["shop"].numpy()[:, 0].tolist() == [0] * 5


def test_the_rare_share_counts_rows_in_values_seen_fewer_than_five_times() -> None:
    values = ["common"] * 10 + [f"id{i}" for i in range(10)]  # 10 rows in rare values
    schema = fit_schema(pd.DataFrame({"x": values}), {"x": "string_categorical"})
    assert schema.columns[0].levels == 11
    assert schema.columns[0].rare_share == pytest.approx(0.5)


def _table_with_an_id(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    rows = 600
    frame = pd.DataFrame(
        {
            "x": rng.normal(size=rows),
            "customer": [f"c{i}" for i in rng.integers(0, 400, size=rows)],
            "label": rng.integers(0, 2, size=rows),
        }
    )
    path = folder / "ids.csv"
    frame.to_csv(path, index=False)
    return path


def test_plan_reports_a_mostly_rare_column_and_its_oversized_embedding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _table_with_an_id(tmp_path)
    args = ["plan", "--data", str(data), "--label", "label", "--calibration-epochs", "0"]
    args += ["--experiment-dir", str(tmp_path / "exp")]
    assert main(args) == 0
    out = capsys.readouterr().out
    notes, warnings = out.split("Warnings:")
    assert "column 'customer': " in notes and "levels seen fewer than 5 times" in notes
    assert "(data.min_frequency = 1)" in notes
    assert "column 'customer' (mostly rare levels) gets a 32-wide embedding" in warnings
    assert main([*args, "--set", "data.min_frequency=50"]) == 0
    out = capsys.readouterr().out
    assert "share one bucket" in out and "32-wide embedding" not in out


@pytest.mark.parametrize("value", ["0", "2.5", "true", "'x'"])
def test_min_frequency_is_validated(value: str) -> None:
    with pytest.raises(UserInputError, match=r"data\.min_frequency"):
        load_config(None, [f"data.min_frequency={value}"])


def test_the_search_reports_a_mostly_rare_column(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = _table_with_an_id(tmp_path)
    args = ["search", "--data", str(data), "--label", "label", "--tuner", "random"]
    args += ["--max-trials", "1", "--max-epochs", "1", "--experiment-dir", str(tmp_path / "e")]
    args += ["--set", "export.enabled=false", "--set", "search.learning_rate=[1e-3, 1e-2]"]
    with caplog.at_level("INFO", logger="kt_pipeline"):
        assert main(args) == 0
    assert "data: column 'customer': " in caplog.text
