"""Defaults sized for the table: batch sizes, the epoch budget, the members of a
shared-weight ensemble, and the range test that a small search can pay for."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from kt_pipeline.config import load_config
from kt_pipeline.errors import UserInputError
from kt_pipeline.lr_find import range_test_plan
from kt_pipeline.prepare import sized_for_data
from kt_pipeline.sizing import batch_sizes_for, max_epochs_for, members_for, refit_for


@pytest.mark.parametrize(
    ("rows", "sizes"),
    [
        (84, (32, 64, 128)),
        (1_257, (32, 64, 128)),  # digits: the classic sizes
        (8_191, (32, 64, 128)),
        (8_192, (64, 128, 256)),
        (37_757, (256, 512, 1024)),
        (65_536, (512, 1024, 2048)),
        (10_000_000, (512, 1024, 2048)),  # capped
    ],
)
def test_batch_sizes_keep_an_epoch_at_128_steps_or_more(rows: int, sizes: tuple) -> None:
    assert batch_sizes_for(rows) == sizes
    if sizes[0] > 32:
        assert (rows // sizes[0] >= 128 and rows // (sizes[0] * 2) < 128) or sizes[0] == 512


@pytest.mark.parametrize(
    ("rows", "epochs"), [(1_000, 20), (100_000, 20), (150_000, 13), (231_000, 10), (10**7, 10)]
)
def test_the_epoch_budget_shrinks_above_100k_rows_down_to_ten(rows: int, epochs: int) -> None:
    assert max_epochs_for(rows) == epochs


def test_the_automatic_refit_stops_where_the_full_epoch_budget_does() -> None:
    assert refit_for(1_000) and refit_for(100_000)
    assert not refit_for(100_001) and not refit_for(10**7)


def test_auto_is_the_default_and_a_value_set_by_hand_is_kept() -> None:
    config = load_config()
    assert config.search.batch_sizes_auto and config.tuner.max_epochs == 0
    by_hand = load_config(None, ["search.batch_sizes=[16, 32]", "tuner.max_epochs=7"])
    assert not by_hand.search.batch_sizes_auto
    assert by_hand.search.batch_sizes == (16, 32) and by_hand.tuner.max_epochs == 7
    again = load_config(None, ["search.batch_sizes='auto'"])
    assert again.search.batch_sizes_auto


def test_small_tables_get_members_and_large_ones_a_plain_model() -> None:
    assert members_for(1_000) == members_for(16_384) == (16,)
    assert members_for(16_385) == members_for(10**6) == (1,)
    auto = load_config(None, ["search.members='auto'"])
    assert auto.search.members_auto
    by_hand = load_config(None, ["search.members=[1, 8]"])
    assert not by_hand.search.members_auto and by_hand.search.members == (1, 8)
    with pytest.raises(UserInputError, match=r"search\.members.*'many'"):
        load_config(None, ["search.members='many'"])


def _plan(overrides: list[str], rows: int) -> dict[str, str]:
    return range_test_plan(load_config(None, ["tuner.max_epochs=20", *overrides]), rows)


def test_the_range_test_measures_each_group_of_optimizers_once() -> None:
    plan = _plan([], 1_257)  # the quick start's search affords every test
    assert plan == {
        "adam": "adam",
        "adamw": "adam",
        "nadam": "adam",
        "sgd": "sgd",
        "rmsprop": "rmsprop",
        "adagrad": "adagrad",
    }
    # A space without Adam itself: its variants share the first one's test.
    assert set(_plan(["search.optimizers=['nadam', 'adamw']"], 1_257).values()) == {"nadam"}


def test_a_small_search_tests_only_what_a_fifth_of_its_steps_pay_for() -> None:
    small = ["tuner.algorithm='random'", "tuner.max_trials=4", "tuner.max_epochs=4"]
    sized = [*small, "search.batch_sizes=[64, 128, 256]"]
    # 16 epochs of 14,000 rows: about 2,000 steps, a fifth of them pays for two tests.
    assert set(_plan(sized, 14_000).values()) == {"adam", "sgd"}
    assert _plan([*small, "tuner.max_trials=1"], 100) == {}


def test_the_pipeline_resolves_auto_members_for_its_training_rows() -> None:
    def resolved(overrides: list[str], rows: int) -> tuple[int, ...]:
        prepared = SimpleNamespace(splits=SimpleNamespace(train=range(rows), trial_folds=None))
        config = sized_for_data(load_config(None, overrides), prepared)  # type: ignore[arg-type]
        return config.search.members

    assert resolved(["search.members='auto'"], 5_000) == (16,)
    assert resolved(["search.members='auto'"], 50_000) == (1,)
    assert resolved(["search.members=[1, 4]"], 5_000) == (1, 4)
