"""Date columns' parts (`hypermodels.dates`): one rule in numpy and in the graph."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from hypermodels.dates import (
    DATE_PARTS,
    TIME_PARTS,
    date_parts,
    has_time_of_day,
    iso_strings,
    looks_like_dates,
    parts_for,
)

# Valid dates and timestamps in every accepted shape, gaps and near misses.
MIXED = np.array(
    [
        "1970-01-01",
        "2013-01-01 05:40",
        "2013-01-01T05:40:12",
        "2013-01-01T05:40:12.5Z",
        "2013-01-01T05:40:12.123456789123+02:00",  # fraction past nanoseconds
        "2013-06-30T23:59:59-0530",
        "2013-06-30T23:59+05",
        " 1900-03-01\t",  # surrounding whitespace
        "2099-12-31T12:00:00",
        "0001-01-01",
        "",
        "2013-13-01",
        "2013-02-30",
        "2013-00-10",
        "2013-01-01T24:00",
        "2013-01-01T05:60",
        "2013-01-01T05:40:60",
        "2013/01/01",
        "2013-1-1",
        "2013-01-01T",
        "2013-01-01t05:40",
        "2013-01-01T05:40:12.",
        "2013-01-01Z",
        "20130101",
        "\uff11\uff19\uff17\uff10-01-01",  # fullwidth digits, which Python's \d takes
        "1970-01-01\xa0",  # a Unicode space that the graph does not strip
        "not a date",
    ],
    dtype=object,
)
VALID = 10  # the first rows of MIXED are valid, the rest are not

# Parts that are arithmetic alone; the sines and cosines depend on the platform's sin.
EXACT = [i for i, part in enumerate(DATE_PARTS) if not part.endswith(("_sin", "_cos"))]


def _graph_parts(strings: np.ndarray) -> np.ndarray:
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def parts(batch: tf.Tensor) -> tf.Tensor:
        return date_parts(batch, tf)

    return np.asarray(parts(tf.constant(strings.astype(str))))


def _assert_same(graph: np.ndarray, numpy: np.ndarray) -> None:
    assert graph.dtype == numpy.dtype == np.float32
    np.testing.assert_array_equal(graph[:, EXACT], numpy[:, EXACT])
    np.testing.assert_allclose(graph, numpy, rtol=1e-6, atol=1e-6)


def _parts(strings: list[str], *names: str) -> np.ndarray:
    return date_parts(np.array(strings, dtype=object), np, parts=names)


def test_numpy_and_the_graph_agree_and_mark_the_same_values_missing() -> None:
    numpy = date_parts(MIXED, np)
    assert numpy.shape == (len(MIXED), len(DATE_PARTS))
    assert not np.isnan(numpy[:VALID]).any()
    assert np.isnan(numpy[VALID:]).all()
    _assert_same(np.asarray(date_parts(tf.constant(MIXED.astype(str)), tf)), numpy)
    _assert_same(_graph_parts(MIXED), numpy)


def test_numpy_treats_non_strings_as_missing() -> None:
    parts = date_parts(np.array([None, np.nan, b"2013-01-01", 20130101], dtype=object), np)
    assert np.isnan(parts[[0, 1, 3]]).all()
    np.testing.assert_array_equal(parts[2], date_parts(np.array(["2013-01-01"]), np)[0])


def test_known_answers() -> None:
    epoch = _parts(["1970-01-01"], "elapsed_days", "weekday", "yearday", "hour")
    np.testing.assert_array_equal(epoch, [[0.0, 3.0, 1.0, 0.0]])  # a Thursday
    leap = _parts(["2000-02-29", "1900-02-29", "2024-12-31", "2023-12-31"], "yearday")
    np.testing.assert_array_equal(leap, [[60.0], [np.nan], [366.0], [365.0]])
    np.testing.assert_array_equal(_parts(["2013-01-01 05:30"], "hour"), [[5.5]])
    # A timezone suffix leaves the wall-clock time as written.
    zoned = _parts(["2013-01-01T05:30Z", "2013-01-01T05:30:00-11:00"], "hour", "day")
    np.testing.assert_array_equal(zoned, [[5.5, 1.0], [5.5, 1.0]])
    cyclic = _parts(["2013-01-01", "2013-04-01T06:00"], "month_sin", "month_cos", "hour_sin")
    np.testing.assert_allclose(cyclic, [[0.0, 1.0, 0.0], [1.0, 0.0, 1.0]], atol=1e-6)


def test_calendar_fields_match_pandas_far_from_1970() -> None:
    strings = ["1900-03-01", "1899-12-31", "2000-02-29", "2099-12-31", "2100-03-01"]
    stamps = pd.to_datetime(pd.Series(strings))
    expected = np.column_stack(
        [
            (stamps - pd.Timestamp("1970-01-01")) / pd.Timedelta(days=1),
            stamps.dt.year,
            stamps.dt.month,
            stamps.dt.day,
            stamps.dt.day_of_week,
            stamps.dt.day_of_year,
        ]
    )
    names = ("elapsed_days", "year", "month", "day", "weekday", "yearday")
    np.testing.assert_array_equal(_parts(strings, *names), expected)


def test_elapsed_days_match_pandas_on_random_timestamps() -> None:
    rng = np.random.default_rng(0)
    seconds = rng.integers(-3 * 10**9, 4 * 10**9, size=200)
    stamps = pd.Series(pd.to_datetime(seconds, unit="s"))
    strings = stamps.dt.strftime("%Y-%m-%dT%H:%M:%S").to_numpy(dtype=object)
    expected = (stamps - pd.Timestamp("1970-01-01")) / pd.Timedelta(days=1)
    np.testing.assert_array_equal(
        _parts(list(strings), "elapsed_days")[:, 0], expected.to_numpy(dtype=np.float32)
    )
    _assert_same(_graph_parts(strings), date_parts(strings, np))


def test_the_graph_takes_an_empty_batch_and_survives_a_saved_model(tmp_path: Path) -> None:
    assert _graph_parts(np.array([], dtype=object)).shape == (0, len(DATE_PARTS))
    assert date_parts(np.array([], dtype=object), np).shape == (0, len(DATE_PARTS))

    module = tf.Module()
    module.parts = tf.function(
        lambda batch: date_parts(batch, tf, parts=parts_for(False)),
        input_signature=[tf.TensorSpec([None], tf.string)],
        autograph=False,
    )
    tf.saved_model.save(module, str(tmp_path / "dates"))
    loaded: Any = tf.saved_model.load(str(tmp_path / "dates"))
    served = np.asarray(loaded.parts(tf.constant(MIXED.astype(str))))
    numpy = date_parts(MIXED, np, parts=parts_for(False))
    np.testing.assert_array_equal(served[:, :6], numpy[:, :6])
    np.testing.assert_allclose(served, numpy, rtol=1e-6, atol=1e-6)


def test_looks_like_dates_accepts_iso_text_with_a_little_junk_and_datetimes() -> None:
    dates = pd.date_range("2013-01-01", periods=100, freq="13h")
    text = pd.Series(dates.strftime("%Y-%m-%d %H:%M"), dtype=object)
    text[:5] = ["n/a", "2013-02-30", "tomorrow", "2013-1-1", "?"]
    text[5:10] = None
    assert looks_like_dates(text)
    assert looks_like_dates(text.astype("str"))
    assert looks_like_dates(pd.Series(dates))
    assert looks_like_dates(pd.Series(dates.tz_localize("Europe/Berlin")))
    assert looks_like_dates(pd.Series(dates.date))  # Python dates, as Parquet gives them


@pytest.mark.parametrize(
    "values",
    [
        [2013, 2014, 2015],
        [20130101, 20130102, 20130103],
        [2013.0, 2014.5, np.nan],
        [True, False, True],
        ["2013", "2014", "2015"],
        ["a date", "2013-01-01 is one", "free text"],
        ["01/02/2013", "02/02/2013", "03/02/2013"],
        ["2013-01-01", "2013-02-30", "x"],  # 1 in 3 valid
        [None, None, None],
        [np.nan, np.nan, np.nan],
        ["", " ", ""],
    ],
)
def test_looks_like_dates_rejects_other_columns(values: list[Any]) -> None:
    assert not looks_like_dates(pd.Series(values))


def test_iso_strings_format_datetimes_as_served() -> None:
    naive = pd.Series(pd.to_datetime(["2013-01-01 05:40:12", None, "1900-03-01"], format="ISO8601"))
    assert list(iso_strings(naive)) == ["2013-01-01T05:40:12", "", "1900-03-01T00:00:00"]
    zoned = naive.dt.tz_localize("Asia/Kolkata")
    assert list(iso_strings(zoned)) == list(iso_strings(naive))  # the wall clock
    text = pd.Series([" 2013-01-01 ", None, "x"], dtype=object)
    assert list(iso_strings(text)) == ["2013-01-01", "", "x"]
    assert list(iso_strings(text.astype("str"))) == ["2013-01-01", "", "x"]


@pytest.mark.parametrize("zone", [None, "Europe/Berlin"])
def test_iso_strings_round_trip_to_the_timestamps_own_fields(zone: str | None) -> None:
    rng = np.random.default_rng(1)
    stamps = pd.Series(
        pd.to_datetime(rng.integers(-(10**12), 4 * 10**12, size=300), unit="ms", utc=bool(zone))
    )
    if zone is not None:
        stamps = stamps.dt.tz_convert(zone)
    stamps[::25] = pd.NaT
    parts = date_parts(iso_strings(stamps), np)
    clock = stamps.dt
    hour = clock.hour + clock.minute / 60 + (clock.second + clock.microsecond / 1e6) / 3600
    expected = np.column_stack(
        [clock.year, clock.month, clock.day, clock.day_of_week, clock.day_of_year, hour]
    )
    names = ["year", "month", "day", "weekday", "yearday", "hour"]
    columns = [DATE_PARTS.index(name) for name in names]
    np.testing.assert_allclose(parts[:, columns], expected, rtol=1e-6, equal_nan=True)
    assert np.isnan(parts[::25]).all()


def test_has_time_of_day() -> None:
    assert not has_time_of_day(np.array(["2013-01-01", "2013-01-02T00:00:00", "", "x"]))
    assert has_time_of_day(np.array(["2013-01-01", "2013-01-02T00:00:00.5"]))
    assert not has_time_of_day(np.array(["2013-01-01", "2013-01-02T25:00"]))  # invalid


def test_parts_for() -> None:
    assert parts_for(True) == DATE_PARTS
    assert parts_for(False) == tuple(p for p in DATE_PARTS if p not in TIME_PARTS)
    assert "elapsed_days" in parts_for(False)


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match=r"`parts`.*Received: parts=\('minute',\)"):
        date_parts(np.array(["2013-01-01"]), np, parts=("minute",))
    with pytest.raises(ValueError, match="`parts`"):
        date_parts(np.array(["2013-01-01"]), np, parts=())
    with pytest.raises(TypeError, match="`ops`"):
        date_parts(np.array(["2013-01-01"]), pd)
    with pytest.raises(ValueError, match="1-D"):
        date_parts(np.array([["2013-01-01"]]), np)


# --------------------------------------------------------------------------- as a column


def _dated(rows: int = 300) -> pd.DataFrame:
    """Weekend rows are positive more often; the date carries the signal."""
    rng = np.random.default_rng(0)
    days = pd.Timestamp("2022-01-01") + pd.to_timedelta(rng.integers(0, 700, rows), unit="D")
    x = rng.normal(size=rows)
    frame = pd.DataFrame({"when": days.strftime("%Y-%m-%d").to_numpy(object), "x": x})
    frame["label"] = np.where(x + 2.0 * (days.day_of_week >= 5) > 0.5, "yes", "no")
    frame.loc[::30, "when"] = None  # gaps
    return frame


def test_a_date_column_is_its_own_kind_and_reaches_the_model_as_its_parts() -> None:
    from hypermodels.features import DATETIME, fit_schema, model_inputs
    from kt_pipeline.data import check_columns, infer_column_kinds

    frame = _dated().drop(columns=["label"])
    stamps = pd.to_datetime(frame["when"])
    kinds = infer_column_kinds(frame.assign(stamp=stamps))
    assert kinds == {"when": DATETIME, "x": "numeric", "stamp": DATETIME}
    checked = check_columns(frame, {"when": DATETIME, "x": "numeric"}, source="t")
    schema = fit_schema(checked, {"when": DATETIME, "x": "numeric"})
    names = [c.name for c in schema.numeric]
    assert names == [f"when.{p}" for p in parts_for(False)] + ["x"]
    assert schema.numeric[0].has_missing and not schema.categorical
    matrix = np.asarray(model_inputs(schema, checked))
    weekday = names.index("when.weekday")
    expected = stamps.dt.day_of_week.to_numpy("float64")
    np.testing.assert_array_equal(matrix[:, weekday], expected.astype("float32"))


def test_the_export_serves_the_raw_date_text(tmp_path: Path) -> None:
    import kt_pipeline as ktp

    result = ktp.search(
        _dated(),
        label="label",
        experiment_dir=tmp_path,
        tuner="random",
        max_trials=1,
        max_epochs=2,
        seed=0,
        settings={"search.learning_rate_auto": False, "export.refit": "off"},
        verbose=False,
    )
    assert result.export_dir is not None and (result.export_dir / "assets.extra/GOOD").is_file()
    serve = tf.saved_model.load(str(result.export_dir)).signatures["serving_default"]
    assert serve.structured_input_signature[1]["when"].dtype == tf.string
    rows = _dated().head(6)
    served = serve(
        when=tf.constant(rows["when"].fillna("").to_numpy(str)),
        x=tf.constant(rows["x"].to_numpy("float32")),
    )["probabilities"].numpy()
    predicted = result.predict(rows)[["probability_no", "probability_yes"]].to_numpy()
    np.testing.assert_allclose(served, predicted, rtol=1e-5, atol=1e-6)
