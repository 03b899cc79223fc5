"""Deployment splits (`data.split`): time-ordered, grouped and user-marked parts, and the
out-of-fold fits that follow them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from hypermodels.features import NUMERIC, STRING_CATEGORICAL, fit_row_codes, fit_schema
from kt_pipeline.data import Dataset
from kt_pipeline.errors import UserInputError
from kt_pipeline.splits import (
    LeakCheck,
    SplitSpec,
    split_dataset,
    time_like_columns,
    training_folds,
)


def _dataset(frame: pd.DataFrame, y: np.ndarray, *, task: str = "regression") -> Dataset:
    kinds = {
        c: NUMERIC if pd.api.types.is_numeric_dtype(frame[c]) else STRING_CATEGORICAL
        for c in frame.columns
    }
    classes = ("no", "yes") if task == "binary" else ()
    return Dataset("test", frame.reset_index(drop=True), y, kinds, task, classes)


def _cut(dataset: Dataset, split: str, *, seed: int = 0):  # type: ignore[no-untyped-def]
    return split_dataset(
        dataset, split=split, validation_fraction=0.15, test_fraction=0.15, seed=seed
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("random", SplitSpec("random")),
        ("time:day", SplitSpec("time", ("day",))),
        ("group:shop, person", SplitSpec("group", ("shop", "person"))),
        ("column:part", SplitSpec("column", ("part",))),
    ],
)
def test_split_specs_parse_and_print_back(text: str, expected: SplitSpec) -> None:
    assert SplitSpec.parse(text) == expected
    assert SplitSpec.parse(str(expected)) == expected


@pytest.mark.parametrize(
    "text", ["", "shuffle", "time", "time:", "time:a,b", "random:a", "group:a,,b", "group:a,a"]
)
def test_a_bad_split_names_the_field_and_the_value(text: str) -> None:
    with pytest.raises(UserInputError, match=r"`data\.split`.*Received: ") as error:
        SplitSpec.parse(text)
    assert repr(text) in str(error.value)


def test_a_time_split_trains_on_the_past_and_tests_on_the_latest_rows() -> None:
    rng = np.random.default_rng(0)
    day = rng.integers(0, 40, size=400)  # ten rows a day on average: ties everywhere
    frame = pd.DataFrame({"day": day, "x": rng.normal(size=400)})
    splits = _cut(_dataset(frame, rng.normal(size=400)), "time:day")
    train, validation, test = (
        p.frame["day"] for p in (splits.train, splits.validation, splits.test)
    )
    assert train.max() < validation.min() and validation.max() < test.min()
    assert len(splits.train) + len(splits.validation) + len(splits.test) == 400
    assert 0.08 < len(splits.test) / 400 < 0.22 and 0.08 < len(splits.validation) / 400 < 0.22
    assert "day" in splits.train.frame.columns  # a time stays a feature
    assert "by time of 'day'" in splits.description and not splits.dropped


def test_a_time_split_orders_iso_dates_not_their_text() -> None:
    days = pd.date_range("2023-11-20", periods=60, freq="D")
    text = pd.Series(days.strftime("%Y-%m-%d")).sample(frac=1.0, random_state=0)
    frame = pd.DataFrame({"when": text.to_numpy(object), "x": np.arange(60.0)})
    splits = _cut(_dataset(frame, np.arange(60.0)), "time:when")
    assert splits.train.frame["when"].max() < splits.validation.frame["when"].min()
    assert splits.test.frame["when"].min() >= "2024-01-10"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([1.0, np.nan, 3.0, 4.0] * 5, "5 rows without a time"),
        (["2024-01-01", "soon", "2024-01-03", "2024-01-04"] * 5, "Received: 'soon'"),
        ([1.0, 2.0] * 10, "at least 3 distinct times"),
    ],
)
def test_a_time_column_that_cannot_order_the_rows_is_refused(values: list, message: str) -> None:
    frame = pd.DataFrame({"t": values, "x": np.arange(20.0)})
    with pytest.raises(UserInputError, match=message) as error:
        _cut(_dataset(frame, np.arange(20.0)), "time:t")
    assert "'t'" in str(error.value)


def test_a_group_split_keeps_every_group_in_one_part_and_drops_its_id() -> None:
    rng = np.random.default_rng(1)
    person = np.repeat([f"p{i}" for i in range(50)], rng.integers(1, 8, size=50))
    frame = pd.DataFrame({"person": person, "x": rng.normal(size=len(person))})
    dataset = _dataset(frame, rng.normal(size=len(person)))
    splits = _cut(dataset, "group:person", seed=3)
    assert "person" not in splits.train.frame.columns and splits.dropped == ("person",)
    train, validation, test = split_parts = _people(dataset, splits)
    assert not (train & validation or train & test or validation & test)
    assert sum(map(len, split_parts)) == 50
    assert _people(dataset, _cut(dataset, "group:person", seed=3)) == split_parts
    assert _people(dataset, _cut(dataset, "group:person", seed=4)) != split_parts


def _people(dataset: Dataset, splits) -> tuple[set, set, set]:  # type: ignore[no-untyped-def]
    """The persons of each part, found through the feature x (unique per row)."""
    person = dict(zip(dataset.frame["x"], dataset.frame["person"], strict=True))
    return tuple(  # type: ignore[return-value]
        {person[x] for x in part.frame["x"]}
        for part in (splits.train, splits.validation, splits.test)
    )


def test_a_group_column_whose_values_recur_across_parts_stays_a_feature() -> None:
    rng = np.random.default_rng(2)
    rows = 300
    shop = rng.integers(0, 30, size=rows)
    kind = np.where(shop % 2, "small", "large")  # each shop's, shared by shops in every part
    frame = pd.DataFrame({"shop": shop.astype(str).astype(object), "kind": kind.astype(object)})
    frame["x"] = rng.normal(size=rows)
    splits = _cut(_dataset(frame, rng.normal(size=rows)), "group:shop,kind")
    assert splits.dropped == ("shop",)
    assert "kind" in splits.train.frame.columns


def test_a_column_split_takes_the_parts_it_names_and_is_no_feature() -> None:
    part = ["train"] * 14 + [" Validation"] * 3 + ["TEST"] * 3
    frame = pd.DataFrame({"part": part, "x": np.arange(20.0)})
    splits = _cut(_dataset(frame, np.arange(20.0)), "column:part")
    assert splits.test.frame["x"].tolist() == [17.0, 18.0, 19.0]
    assert splits.validation.frame["x"].tolist() == [14.0, 15.0, 16.0]
    assert "part" not in splits.train.frame.columns and splits.dropped == ("part",)


@pytest.mark.parametrize(
    ("part", "message"),
    [
        (["train"] * 17 + ["holdout"] * 3, "Received: 'holdout'"),
        (["train"] * 17 + ["test"] * 3, "marks no row 'validation'"),
    ],
)
def test_a_split_column_with_other_values_is_refused(part: list[str], message: str) -> None:
    frame = pd.DataFrame({"part": part, "x": np.arange(20.0)})
    with pytest.raises(UserInputError, match=message):
        _cut(_dataset(frame, np.arange(20.0)), "column:part")


def test_a_split_column_must_exist() -> None:
    frame = pd.DataFrame({"x": np.arange(20.0)})
    with pytest.raises(UserInputError, match=r"names column 'day'.*columns: x"):
        _cut(_dataset(frame, np.arange(20.0)), "time:day")


def test_a_split_that_leaves_validation_one_class_is_refused() -> None:
    day = np.arange(40)
    frame = pd.DataFrame({"day": day, "x": np.arange(40.0)})
    y = (day >= 28).astype("int32")  # every later row is positive
    y[:5] = 1
    with pytest.raises(UserInputError, match="validation rows of 'test' with one class"):
        _cut(_dataset(frame, y, task="binary"), "time:day")


def test_a_random_split_stratifies_the_classes_it_can_and_places_rare_ones_anyway() -> None:
    y = np.array([0] * 30 + [1] * 30 + [2] * 2 + [3]).astype("int32")
    frame = pd.DataFrame({"x": np.arange(len(y), dtype="float64")})
    dataset = Dataset("test", frame, y, {"x": NUMERIC}, "multiclass", ("a", "b", "c", "d"))
    splits = _cut(dataset, "random")
    for part in (splits.train, splits.validation, splits.test):
        assert {0, 1} <= set(part.y)  # the common classes are in every part
    placed = np.concatenate([splits.train.y, splits.validation.y, splits.test.y])
    assert sorted(placed) == sorted(y)  # the rare ones are somewhere, not refused


def test_training_folds_are_whole_periods_and_whole_groups() -> None:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {"day": rng.integers(0, 30, size=500), "shop": rng.integers(0, 40, size=500)}
    )
    by_time = training_folds(frame, SplitSpec.parse("time:day"), seed=0)
    assert by_time is not None and set(by_time) == set(range(5))
    for fold in range(4):  # folds follow each other in time, a day in one fold
        assert frame["day"][by_time == fold].max() < frame["day"][by_time == fold + 1].min()
    by_group = training_folds(frame, SplitSpec.parse("group:shop"), seed=0)
    assert by_group is not None and set(by_group) == set(range(5))
    assert frame.groupby("shop").apply(lambda g: len(set(by_group[g.index]))).max() == 1
    assert training_folds(frame, SplitSpec.parse("random"), seed=0) is None


def _daily_table(rows: int = 3_000) -> tuple[pd.DataFrame, np.ndarray]:
    """Each day has its own weather: the label's day effect is shared only by rows of
    the same day, as with flights delayed on one stormy day."""
    rng = np.random.default_rng(4)
    day = np.sort(rng.integers(0, 120, size=rows))
    origin = rng.choice(["JFK", "LGA", "EWR"], size=rows).astype(object)
    weather = rng.normal(size=120)
    y = 2.0 * weather[day] + (origin == "JFK") + rng.normal(size=rows)
    return pd.DataFrame({"day": day.astype("float64"), "origin": origin}), y


def test_under_a_time_split_a_key_that_names_the_day_scores_nothing() -> None:
    frame, y = _daily_table()
    kinds = {"day": NUMERIC, "origin": STRING_CATEGORICAL}
    schema = fit_schema(frame, kinds)
    shuffled, _ = fit_row_codes(schema, frame, y, task="regression", seed=0)
    assert shuffled.rows is not None and "day" in shuffled.rows.key  # random folds: a leak
    folds = training_folds(frame, SplitSpec.parse("time:day"), seed=0)
    by_time, codes = fit_row_codes(schema, frame, y, task="regression", seed=0, folds=folds)
    assert by_time.rows is None and codes == {}


def _panel(rows: int = 240) -> pd.DataFrame:
    """People seen on several days; the label depends on x and on the person."""
    rng = np.random.default_rng(5)
    person = rng.integers(0, 40, size=rows)
    effect = rng.normal(size=40)
    frame = pd.DataFrame(
        {
            "day": rng.integers(0, 30, size=rows),
            "person": np.char.add("p", person.astype(str)).astype(object),
            "x": rng.normal(size=rows),
        }
    )
    frame["label"] = np.where(frame["x"] + effect[person] > 0, "yes", "no")
    return frame


def test_a_grouped_search_says_its_split_and_serves_no_group_id(tmp_path: Path) -> None:
    import json

    import tensorflow as tf

    import kt_pipeline as ktp
    from kt_pipeline.model_card import load_card

    result = ktp.search(
        _panel(),
        label="label",
        split="group:person",
        experiment_dir=tmp_path,
        tuner="random",
        max_trials=1,
        max_epochs=1,
        seed=0,
        settings={"search.learning_rate_auto": False, "export.refit": "off"},
        verbose=False,
    )
    assert result.export_dir is not None
    card = load_card(result.export_dir)
    assert card["data"]["split"]["spec"] == "group:person"
    assert card["data"]["split"]["not_features"] == ["person"]
    assert "groups in train / validation / test" in card["data"]["split"]["description"]
    signature = tf.saved_model.load(str(result.export_dir)).signatures["serving_default"]
    assert set(signature.structured_input_signature[1]) == {"day", "x"}
    assert set(pd.read_csv(tmp_path / "results.csv")["split"]) == {"group:person"}
    records = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert records[0]["split"] == "group:person" and "split" not in records[0]["hyperparameters"]
    # Six test groups are too few for an interval drawn by group, and rows are not
    # independent draws here: none is given.
    assert card["test_intervals"] == {} and result.test_intervals == {}


def test_plan_and_the_command_line_take_the_split(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from kt_pipeline.cli import main

    data = tmp_path / "panel.csv"
    _panel().to_csv(data, index=False)
    args = ["plan", "--data", str(data), "--label", "label", "--calibration-epochs", "0"]
    assert main([*args, "--split", "time:day"]) == 0
    out = capsys.readouterr().out
    assert "by time of 'day' (data.split = time:day): train 0 to" in out
    assert main([*args, "--split", "time:when"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "names column 'when'" in err
    assert main([*args, "--split", "shuffled"]) == 2
    assert "Received: 'shuffled'" in capsys.readouterr().err


def _leaks(frame: pd.DataFrame, y: np.ndarray, split: str = "random") -> LeakCheck:
    kinds = {
        c: NUMERIC if pd.api.types.is_numeric_dtype(frame[c]) else STRING_CATEGORICAL
        for c in frame.columns
    }
    schema, _ = fit_row_codes(fit_schema(frame, kinds), frame, y, task="regression", seed=0)
    return LeakCheck(SplitSpec.parse(split), schema, tuple(time_like_columns(frame)))


def test_a_key_that_names_a_day_is_flagged_with_the_time_split_to_use() -> None:
    frame, y = _daily_table()
    (warning,) = _leaks(frame, y).warnings()
    assert "includes 'day', a time period" in warning and "time:day" in warning
    assert _leaks(frame, y).notes() == [
        "time-like column(s) 'day': if the model will predict later rows, --split time:day "
        "(data.split) holds out the latest rows and validates as that deployment will"
    ]


def test_a_key_that_names_an_entity_is_flagged_with_the_group_split_to_use() -> None:
    rng = np.random.default_rng(6)
    person = rng.integers(0, 300, size=1_500)
    frame = pd.DataFrame(
        {"person": np.char.add("p", person.astype(str)).astype(object), "x": rng.normal(size=1_500)}
    )
    y = 2.0 * rng.normal(size=300)[person] + frame["x"].to_numpy() + rng.normal(size=1_500)
    (warning,) = _leaks(frame, y).warnings()
    assert "key (person) looks like an entity" in warning and "--split group:person" in warning
    assert _leaks(frame, y).notes() == []  # no time-like column


def test_a_table_without_periods_or_entities_gets_no_warning() -> None:
    rng = np.random.default_rng(7)
    region, channel = rng.integers(0, 5, size=(2, 2_000))  # 25 segments of 80 rows
    frame = pd.DataFrame({"region": region.astype(str), "channel": channel.astype(str)})
    frame = frame.astype(object).assign(x=rng.normal(size=2_000))
    y = rng.normal(size=(5, 5))[region, channel] + rng.normal(size=2_000)
    leaks = _leaks(frame, y)
    assert leaks.schema.rows is not None  # a key, but of 25 large segments
    assert leaks.warnings() == [] and leaks.notes() == []
    plain = pd.DataFrame({"x": rng.normal(size=500), "z": rng.normal(size=500)})
    assert _leaks(plain, rng.normal(size=500)).warnings() == []


def test_a_deployment_split_gets_no_warning() -> None:
    frame, y = _daily_table()
    assert _leaks(frame, y, split="time:day").warnings() == []
    assert _leaks(frame, y, split="time:day").notes() == []


@pytest.mark.parametrize(
    ("name", "expected"),
    [("dep_time", True), ("depMonth", True), ("YEAR", True), ("days_ago", False), ("x", False)],
)
def test_time_like_names(name: str, expected: bool) -> None:
    frame = pd.DataFrame({name: [1.0, 2.0]})
    assert (time_like_columns(frame) == [name]) is expected


def test_an_entity_column_is_flagged_and_a_noise_identifier_is_not() -> None:
    from hypermodels.features import level_shares

    rng = np.random.default_rng(8)
    rows = 2_000
    person = rng.integers(0, 400, size=rows)
    noise = rng.integers(0, 400, size=rows)
    frame = pd.DataFrame(
        {
            "person": np.char.add("p", person.astype(str)).astype(object),
            "ticket": np.char.add("t", noise.astype(str)).astype(object),
            "x": rng.normal(size=rows),
        }
    )
    y = 2.0 * rng.normal(size=400)[person] + frame["x"].to_numpy() + rng.normal(size=rows)
    kinds = {"person": STRING_CATEGORICAL, "ticket": STRING_CATEGORICAL, "x": NUMERIC}
    schema = fit_schema(frame, kinds)  # no row key: only the columns' own levels
    shares = level_shares(schema, frame, y, task="regression", seed=0)
    assert shares["person"] > 0.3 and shares["ticket"] < 0.02
    (warning,) = LeakCheck(SplitSpec(), schema, (), shares).warnings()
    assert warning.startswith("column 'person' (395 levels) looks like an entity")
    assert "--split group:person" in warning
    assert LeakCheck(SplitSpec.parse("group:person"), schema, (), shares).warnings() == []


def _time_split_search(frame: pd.DataFrame, folder: Path, *, refit: str) -> Any:
    """A one-trial search of `frame` split by day, and its export's model card."""
    import kt_pipeline as ktp
    from kt_pipeline.model_card import load_card

    result = ktp.search(
        frame,
        label="label",
        split="time:day",
        experiment_dir=folder,
        tuner="random",
        max_trials=1,
        max_epochs=5,  # enough for the retrain to fit the rows it saw better
        seed=0,
        settings={"search.learning_rate_auto": False, "export.refit": refit},
        verbose=False,
    )
    assert result.export_dir is not None
    return result, load_card(result.export_dir)


def test_under_a_time_split_the_export_learns_the_latest_rows_after_scoring_them(
    tmp_path: Path,
) -> None:
    frame = _panel(300)
    result, card = _time_split_search(frame, tmp_path, refit="blend")
    assert card["refit"]["test_rows_included"] and card["refit"]["rows"] == len(frame)
    assert set(card["test_metrics"]) == {"accuracy", "auc"}
    assert card["verification"]["verified"]
    # Scored before the refit: the interval is that of the reported scores.
    intervals = result.test_intervals
    tested = card["verification"]["rows"]
    assert intervals == card["test_intervals"] and intervals["resampled"] == f"{tested} rows"
    for name, (low, high) in intervals["metrics"].items():
        assert low <= card["test_metrics"][name] <= high
    assert intervals["caveat"] == "a later period may fall outside them"


def test_a_retrain_with_the_test_rows_that_fits_them_worse_is_not_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import keras

    from kt_pipeline import finish

    refit_members = finish.refit_members

    def failing(*args: object, with_test: bool = False, **kwargs: object) -> object:
        model, record = refit_members(*args, with_test=with_test, **kwargs)
        if with_test:  # a training that failed: every prediction reversed
            model = keras.Model(model.inputs, 1.0 - model.outputs[0])
        return model, record

    monkeypatch.setattr(finish, "refit_members", failing)
    frame = _panel(300)
    with caplog.at_level("WARNING", logger="kt_pipeline"):
        _, card = _time_split_search(frame, tmp_path, refit="replace")
    assert not card["refit"]["test_rows_included"]
    assert card["refit"]["rows"] == len(frame) - card["verification"]["rows"]
    assert "that training failed, and the measured model is served" in caplog.text
    assert card["verification"]["verified"]  # the served model is the one measured


def test_a_date_column_is_time_like_whatever_its_name() -> None:
    frame = pd.DataFrame({"kick_off": ["2024-01-01"], "x": [1.0]})
    assert time_like_columns(frame, {"kick_off": "datetime", "x": "numeric"}) == ["kick_off"]
    assert time_like_columns(frame) == []
