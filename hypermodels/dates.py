"""Date and timestamp columns as the numeric features a user would make by hand.

A column of ISO-8601 dates or timestamps (or a pandas ``datetime64`` column) enters
the network as its parts: the days since 1970, the calendar fields, the hour, and
sine/cosine encodings of the cyclic ones (`DATE_PARTS`). Training computes them in
numpy and the exported SavedModel computes them in its graph from the raw string, so
`date_parts` takes an ``ops`` argument (`numpy` or `tensorflow`) and runs one rule on
either: the values agree as float32.

The rule reads fixed character positions of the stripped string (year ``0:4``, month
``5:7``, day ``8:10``, hour ``11:13``, minute ``14:16``, second ``17:19``, then an
optional fraction) once the whole string matches `ISO_PATTERN`, and keeps the
wall-clock time as written: a timezone suffix is accepted and ignored. The served
string's own clock is what its user sees and what their habits follow (the hour of a
purchase, a Monday), and converting zones would need a zone database inside the
graph. Day numbers come from integer civil-date arithmetic (Howard Hinnant's
``days_from_civil``), so any year from 0000 to 9999 works, in the graph too.
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import tensorflow as tf

__all__ = [
    "DATE_PARTS",
    "ISO_PATTERN",
    "TIME_PARTS",
    "date_parts",
    "has_time_of_day",
    "iso_strings",
    "looks_like_dates",
    "parts_for",
]

#: The numeric features of a date column, in model order: days since 1970-01-01 (the
#: time of day as a fraction), the calendar fields (weekday 0 is Monday), the hour
#: with minutes and seconds as a fraction, and sine and cosine of the cyclic fields.
DATE_PARTS = (
    "elapsed_days",
    "year",
    "month",
    "day",
    "weekday",
    "yearday",
    "hour",
    "month_sin",
    "month_cos",
    "weekday_sin",
    "weekday_cos",
    "yearday_sin",
    "yearday_cos",
    "hour_sin",
    "hour_cos",
)

#: The parts that carry only the time of day: constant where every value is midnight.
TIME_PARTS = ("hour", "hour_sin", "hour_cos")

#: A date, optionally a time (``T`` or a space, ``HH:MM``, optional ``:SS`` and
#: fraction) and then a timezone (``Z``, ``±HH``, ``±HH:MM`` or ``±HHMM``). The same
#: text is a Python and an RE2 pattern, matched against the whole string; ``[0-9]``
#: rather than ``\d``, which in Python also matches other scripts' digits.
ISO_PATTERN = (
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"(?:[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]+)?)?(?:Z|[+-][0-9]{2}(?::?[0-9]{2})?)?)?"
)

# The whitespace that `tf.strings.strip` removes; Python's `str.strip()` also removes
# Unicode spaces, which the graph would keep.
_WHITESPACE = " \t\n\v\f\r"

# A string that fails `ISO_PATTERN` is read as `_FILLER` (and masked afterwards), and
# every string gets `_PADDING` appended, so that a date without a time reads midnight
# at the time's positions and no position lies past the end (`tf.strings.substr`
# fails there).
_FILLER = "1970-01-01"
_PADDING = "T00:00:00.0"
_WIDTH = 20  # positions read: 0 to 19, where a fraction's point is

# The fraction of a second: the digits after the first point, at most 9 (nanoseconds,
# pandas' finest unit); `tf.strings.to_number` fails on strings of 32 characters or
# more. The padding's ".0" is the first point of a string without a fraction.
_FRACTION_PATTERN = r"^[^.]*(\.[0-9]{1,9}).*$"
_FRACTION_REWRITE = r"0\1"

_ISO_RE = re.compile(ISO_PATTERN)
_FRACTION_RE = re.compile(_FRACTION_PATTERN)

# Share of a text column's non-missing values that must be valid ISO dates for
# `looks_like_dates`, the share that data inference asks of numbers in text.
_MIN_DATE_SHARE = 0.9
# `looks_like_dates` reads a column whole only when its first values pass.
_SAMPLE = 1_000

# Periods of the cyclic parts.
_PERIODS = {"month": 12.0, "weekday": 7.0, "yearday": 365.25, "hour": 24.0}


class _Fields(NamedTuple):
    """The integer fields read from each string (int64), its fraction of a second
    (float64), and whether the string matched `ISO_PATTERN`."""

    matched: Any
    year: Any
    month: Any
    day: Any
    hour: Any
    minute: Any
    second: Any
    fraction: Any


def parts_for(has_time: bool) -> tuple[str, ...]:
    """The parts worth computing for a column: all of `DATE_PARTS`, less `TIME_PARTS`
    when no value has a time of day (they would be constant).

    Args:
        has_time: Whether some value has a time other than midnight
            (`has_time_of_day`).

    Returns:
        Part names in `DATE_PARTS` order.
    """
    if has_time:
        return DATE_PARTS
    return tuple(part for part in DATE_PARTS if part not in TIME_PARTS)


def looks_like_dates(series: pd.Series) -> bool:
    """Whether a column holds dates: a ``datetime64`` dtype (naive or tz-aware), or text
    of which at least 90 % of the non-missing values are valid ISO-8601 dates.

    Numbers never count, even ``2013`` or ``20130101``: read as dates they would lose
    what a number column keeps, and a year is better left numeric. The 90 % leaves
    room for a few typos, which `date_parts` reads as missing.

    Args:
        series: The column.

    Returns:
        True when the column should become a date column.
    """
    dtype = series.dtype
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return True
    if not (pd.api.types.is_object_dtype(dtype) or isinstance(dtype, pd.StringDtype)):
        return False
    head = series.dropna().iloc[:_SAMPLE]  # most text columns are ruled out here, fast
    if len(head) < len(series.dropna()) and not looks_like_dates(head):
        return False
    strings = iso_strings(series)
    present = strings != ""
    total = int(present.sum())
    if total == 0:
        return False
    valid = _valid(_parse_numpy(strings[present]), np)
    return bool(valid.sum() >= _MIN_DATE_SHARE * total)


def iso_strings(series: pd.Series) -> np.ndarray:
    """The column's values as the strings the SavedModel is served, for `date_parts`.

    ``datetime64`` values become ``YYYY-MM-DDTHH:MM:SS`` (with the fraction of a second
    where some value has one), tz-aware ones at their wall-clock time in their own
    zone, as `date_parts` reads a served string's time. Text passes through with
    surrounding whitespace stripped, Python dates and datetimes in ISO format.

    Args:
        series: The column.

    Returns:
        A 1-D object array of `str`, ``""`` where a value is missing.
    """
    dtype = series.dtype
    if pd.api.types.is_datetime64_any_dtype(dtype):
        if isinstance(dtype, pd.DatetimeTZDtype):
            series = series.dt.tz_localize(None)  # keeps the wall-clock time
        values = series.to_numpy()
        if values.dtype.kind == "M":
            return _format_datetimes(values)
    if isinstance(dtype, pd.StringDtype):
        stripped = series.str.strip(_WHITESPACE).fillna("")
        return np.asarray(stripped.to_numpy(dtype=object), dtype=object)
    missing = series.isna().to_numpy()
    values = series.to_numpy(dtype=object)
    out = np.empty(len(values), dtype=object)
    for i, (value, gap) in enumerate(zip(values, missing, strict=True)):
        out[i] = "" if gap else _iso_string(value)
    return out


def has_time_of_day(strings: np.ndarray) -> bool:
    """Whether any valid value has a time other than midnight.

    Args:
        strings: 1-D array of str, as `iso_strings` returns.

    Returns:
        False when every valid value is a plain date (or midnight), so the column's
        time parts would be constant (`parts_for`).
    """
    fields = _parse_numpy(strings)
    valid = _valid(fields, np)
    seconds = _seconds_of_day(fields, np)
    return bool(np.any(valid & (seconds != 0)))


def date_parts(strings: Any, ops: Any, *, parts: Sequence[str] = DATE_PARTS) -> Any:
    """The parts of each date, computed by one rule in numpy or in a TensorFlow graph.

    Training calls it with ``ops=np`` and the export with ``ops=tf`` on the raw serving
    string, so the model sees the same values in both (float32-equal; the sines and
    cosines up to rounding of the platform's float64 ``sin``). A value that is missing,
    does not match `ISO_PATTERN` or is no calendar date and time (month 13, February
    30th, hour 24) gives NaN in every part; a timezone suffix is ignored (the module
    docstring says why), and a fraction of a second counts to its 9th digit.

    Example:

    ```python
    >>> date_parts(np.array(["1970-01-02 06:00"]), np, parts=("elapsed_days", "hour"))
    array([[1.25, 6.  ]], dtype=float32)
    ```

    Args:
        strings: With ``ops=np``, a 1-D array (or sequence) of `str`; anything else
            (None, NaN) counts as missing. With ``ops=tf``, a 1-D `tf.string` tensor,
            of any length, also inside a `tf.function`.
        ops: The `numpy` or the `tensorflow` module.
        parts: Names from `DATE_PARTS`, in the order of the output's columns.

    Returns:
        A float32 matrix of one row per string and one column per part: a numpy array
        or a tensor, as `ops`.

    Raises:
        ValueError: If `parts` is empty or names something not in `DATE_PARTS`, or a
            numpy input is not 1-D.
        TypeError: If `ops` is neither `numpy` nor `tensorflow`.
    """
    if ops is not np and ops is not tf:
        raise TypeError(f"Argument `ops` must be `numpy` or `tensorflow`. Received: ops={ops!r}")
    unknown = [part for part in parts if part not in DATE_PARTS]
    if unknown or not parts:
        raise ValueError(
            f"Argument `parts` must name one or more of {DATE_PARTS}. Received: parts={parts!r}"
        )
    fields = _parse_numpy(strings) if ops is np else _parse_tensorflow(strings)
    values = _part_values(fields, ops)
    matrix = ops.stack([values[part] for part in parts], axis=1)
    valid = _valid(fields, ops)[:, None]
    if ops is np:
        return np.where(valid, matrix, np.nan).astype(np.float32)
    return tf.cast(tf.where(valid, matrix, tf.constant(math.nan, tf.float64)), tf.float32)


def _format_datetimes(values: np.ndarray) -> np.ndarray:
    """``datetime64`` values in ISO format: whole seconds unless some value has a
    fraction, which then shows to the array's unit."""
    missing = np.isnat(values)
    seconds = values.astype("datetime64[s]")
    whole = bool(np.all((seconds == values) | missing))
    text = np.datetime_as_string(seconds if whole else values)
    return np.where(missing, "", text).astype(object)


def _iso_string(value: Any) -> str:
    """One non-missing value of an object column as text."""
    if isinstance(value, str):
        return value.strip(_WHITESPACE)
    if isinstance(value, datetime.datetime):  # pd.Timestamp too
        return value.replace(tzinfo=None).isoformat()  # the wall clock, as with datetime64
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, np.datetime64):
        return str(value)
    return str(value).strip(_WHITESPACE)


def _parse_numpy(strings: Any) -> _Fields:
    values = np.asarray(strings, dtype=object)
    if values.ndim != 1:
        raise ValueError(
            f"Argument `strings` must be 1-D. Received: strings with shape {values.shape}"
        )
    text = [
        value.strip(_WHITESPACE)
        if isinstance(value, str)
        else value.decode("utf-8", "replace").strip(_WHITESPACE)
        if isinstance(value, bytes)
        else ""
        for value in values
    ]
    matched = np.fromiter(
        (_ISO_RE.fullmatch(t) is not None for t in text), dtype=bool, count=len(text)
    )
    padded = [(t if ok else _FILLER) + _PADDING for t, ok in zip(text, matched, strict=True)]
    # Each string's first `_WIDTH` characters as code points, one row per string.
    chars = np.array(padded, dtype=f"U{_WIDTH}").view(np.uint32).reshape(-1, _WIDTH)
    digits = chars.astype(np.int64) - ord("0")

    def number(start: int, length: int) -> np.ndarray:
        result = np.zeros(len(padded), dtype=np.int64)
        for position in range(start, start + length):
            result = result * 10 + digits[:, position]
        return result

    has_seconds = chars[:, 16] == ord(":")
    fraction = np.zeros(len(padded), dtype=np.float64)
    for i in np.flatnonzero(has_seconds & (chars[:, 19] == ord("."))):
        fraction[i] = float(_FRACTION_RE.sub(_FRACTION_REWRITE, padded[i]))
    return _Fields(
        matched=matched,
        year=number(0, 4),
        month=number(5, 2),
        day=number(8, 2),
        hour=number(11, 2),
        minute=number(14, 2),
        second=np.where(has_seconds, number(17, 2), 0),
        fraction=fraction,
    )


def _parse_tensorflow(strings: Any) -> _Fields:
    text = tf.strings.strip(strings)
    matched = tf.strings.regex_full_match(text, ISO_PATTERN)
    padded = tf.strings.join([tf.where(matched, text, _FILLER), _PADDING])

    def number(start: int, length: int) -> Any:
        return tf.strings.to_number(tf.strings.substr(padded, start, length), tf.int64)

    has_seconds = tf.equal(tf.strings.substr(padded, 16, 1), ":")
    seconds = tf.where(has_seconds, tf.strings.substr(padded, 17, 2), "00")
    fraction = tf.strings.regex_replace(padded, _FRACTION_PATTERN, _FRACTION_REWRITE)
    return _Fields(
        matched=matched,
        year=number(0, 4),
        month=number(5, 2),
        day=number(8, 2),
        hour=number(11, 2),
        minute=number(14, 2),
        second=tf.strings.to_number(seconds, tf.int64),
        fraction=tf.strings.to_number(fraction, tf.float64),
    )


def _days_from_civil(year: Any, month: Any, day: Any, ops: Any) -> Any:
    """Days from 1970-01-01 to a proleptic Gregorian date, in integers.

    Howard Hinnant's ``days_from_civil``: counting years from March, the leap day is
    the last day of a year, so a day's place in its year is a fixed function of the
    month, and 400-year eras repeat exactly. Floor division makes it hold before year 0.
    """
    shifted = ops.where(month <= 2, year - 1, year)
    era = shifted // 400
    year_of_era = shifted - era * 400  # [0, 399]
    day_of_year = (153 * ((month + 9) % 12) + 2) // 5 + day - 1  # [0, 365], from March 1st
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146_097 + day_of_era - 719_468


def _month_length(year: Any, month: Any, ops: Any) -> Any:
    """Days in the month: the distance to the next month's first day, which keeps the
    leap-year rule in `_days_from_civil` alone."""
    next_year = ops.where(month == 12, year + 1, year)
    next_month = month % 12 + 1
    return _days_from_civil(next_year, next_month, 1, ops) - _days_from_civil(year, month, 1, ops)


def _valid(fields: _Fields, ops: Any) -> Any:
    """Where the string matched `ISO_PATTERN` and names a real date and time."""
    month, day = fields.month, fields.day
    return (
        fields.matched
        & (month >= 1)
        & (month <= 12)
        & (day >= 1)
        & (day <= _month_length(fields.year, month, ops))
        & (fields.hour <= 23)
        & (fields.minute <= 59)
        & (fields.second <= 59)
    )


def _to_float(values: Any, ops: Any) -> Any:
    return values.astype(np.float64) if ops is np else tf.cast(values, tf.float64)


def _seconds_of_day(fields: _Fields, ops: Any) -> Any:
    whole = fields.hour * 3600 + fields.minute * 60 + fields.second
    return _to_float(whole, ops) + fields.fraction


def _part_values(fields: _Fields, ops: Any) -> dict[str, Any]:
    """Every part in float64, garbage where a string is invalid (`_valid` masks it).

    The operations and their order are the same for numpy and TensorFlow, and each is
    correctly rounded in IEEE float64 on both, so the parts other than sines and
    cosines come out bit-identical.
    """
    days = _days_from_civil(fields.year, fields.month, fields.day, ops)
    seconds = _seconds_of_day(fields, ops)
    ints = {
        "year": fields.year,
        "month": fields.month,
        "day": fields.day,
        "weekday": (days + 3) % 7,  # 1970-01-01 was a Thursday
        "yearday": days - _days_from_civil(fields.year, 1, 1, ops) + 1,
    }
    values = {name: _to_float(value, ops) for name, value in ints.items()}
    values["elapsed_days"] = _to_float(days, ops) + seconds / 86_400.0
    values["hour"] = seconds / 3_600.0
    phases = {
        "month": _to_float(fields.month - 1, ops),
        "weekday": values["weekday"],
        "yearday": _to_float(ints["yearday"] - 1, ops),
        "hour": values["hour"],
    }
    for name, phase in phases.items():
        angle = phase * (2.0 * math.pi / _PERIODS[name])
        values[f"{name}_sin"] = ops.sin(angle)
        values[f"{name}_cos"] = ops.cos(angle)
    return values
