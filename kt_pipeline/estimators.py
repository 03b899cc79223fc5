"""The search as scikit-learn estimators: `SearchClassifier` and `SearchRegressor`.

`fit(X, y)` runs `kt_pipeline.search` on the rows and keeps its export, so the search
composes where tabular users already work: `clone`, `Pipeline`, `cross_val_score`,
`GridSearchCV` and `joblib`. ``__init__`` stores its parameters untouched, as
scikit-learn's contract asks; everything else happens in `fit`.

Where a fit writes: with no ``experiment_dir``, into a temporary folder that lives as
long as the estimator; with one, into ``<experiment_dir>/fit-<digest>``, one folder per
distinct rows and parameters, so the folds of a cross-validation never share one and a
fit repeated on the same rows picks up the finished search. A pickled fitted estimator
carries its SavedModel, so it predicts in another process with no folder at all.
"""

from __future__ import annotations

import hashlib
import io
import json
import numbers
import shutil
import tarfile
import tempfile
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    _assert_all_finite,
    check_is_fitted,
    check_random_state,
    column_or_1d,
    validate_data,
)

if TYPE_CHECKING:
    from kt_pipeline.api import SearchResult

__all__ = ["EXPECTED_FAILED_CHECKS", "SearchClassifier", "SearchRegressor"]

#: The pipeline's seed when ``random_state`` is None: a search is reproducible unless
#: the caller asks for a different draw (`kt_pipeline.config.RuntimeConfig.seed`).
DEFAULT_SEED = 42

#: The fewest rows a fit takes: one each for training, validation and test.
MIN_ROWS = 3

_LABEL = "label"  # the label column's name, unless X already has one
_TEMP_PREFIX = "kt-pipeline-fit-"
# Parameters that do not change what a fit learns, left out of its folder's digest.
_NOT_IN_DIGEST = ("callbacks", "experiment_dir", "verbose")


class _SearchEstimator(BaseEstimator):
    """The fit, prediction and shipping shared by the classifier and the regressor."""

    def __init__(
        self,
        *,
        tuner: str | None = None,
        max_trials: int | None = None,
        max_epochs: int | None = None,
        time_budget: str | float | None = None,
        split: str | None = None,
        folds: int | Literal["auto"] | None = None,
        settings: Mapping[str, Any] | None = None,
        hypermodel: type | str | None = None,
        config: str | None = None,
        callbacks: Sequence[Any] | None = None,
        experiment_dir: str | None = None,
        random_state: int | np.random.RandomState | None = None,
        verbose: bool = False,
    ) -> None:
        self.tuner = tuner
        self.max_trials = max_trials
        self.max_epochs = max_epochs
        self.time_budget = time_budget
        self.split = split
        self.folds = folds
        self.settings = settings
        self.hypermodel = hypermodel
        self.config = config
        self.callbacks = callbacks
        self.experiment_dir = experiment_dir
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ fitting

    def fit(self, X: Any, y: Any) -> _SearchEstimator:
        """Searches on the rows of `X` with the labels `y` and keeps the export.

        Args:
            X: A DataFrame (strings, gaps and dates work as in `kt_pipeline.search`)
                or an array-like of shape (rows, columns).
            y: One label per row.

        Returns:
            The estimator, fitted.

        Raises:
            ValueError: bad rows or settings (a `kt_pipeline.UserInputError`).
        """
        from kt_pipeline.api import search

        frame = self._frame(X, reset=True)
        self._columns = list(frame.columns)
        labels = self._labels(y, rows=len(frame))
        label = _free_name(frame.columns, getattr(y, "name", None))
        frame[label] = labels
        folder, temporary = self._folder(frame, label)
        # A temporary folder lives as long as what serves from it (`_Served`).
        keep = _Temporary(folder) if temporary else None
        result = _finished(folder) if not temporary else None
        if result is None:
            result = search(
                frame,
                label=label,
                split=self.split,
                folds=self.folds,
                experiment_dir=folder,
                tuner=self.tuner,
                max_trials=self.max_trials,
                max_epochs=self.max_epochs,
                time_budget=self.time_budget,
                seed=_seed(self.random_state),
                settings={"data.task": self._task(), **dict(self.settings or {})},
                hypermodel=self.hypermodel,
                config=self.config,
                callbacks=self.callbacks,
                verbose=self.verbose,
            )
        if result.export_dir is None:
            raise ValueError(
                f"the search in {str(folder)!r} exported no model (no trial completed, or "
                "`export.enabled` is off): there is nothing to predict with"
            )
        self.search_result_ = result
        self.export_dir_ = result.export_dir
        self.best_hyperparameters_ = result.best_hyperparameters
        self.best_score_ = result.best_score
        self.results_ = result.results
        self._served = _Served(result.export_dir, keep=keep)
        return self

    def _task(self) -> str:
        """``data.task``: set, so that integer labels are never taken for the other task."""
        raise NotImplementedError

    def _labels(self, y: Any, *, rows: int) -> np.ndarray:
        """`y` checked for the task, one label per row of `X`."""
        raise NotImplementedError

    def _frame(self, X: Any, *, reset: bool) -> pd.DataFrame:
        """`X` as a DataFrame of string-named columns, checked as scikit-learn checks
        (`validate_data`: feature names and counts against the fit's)."""
        if isinstance(X, pd.DataFrame):
            validate_data(self, X, reset=reset, skip_check_array=True)
            return X.rename(columns=str).reset_index(drop=True)
        array = validate_data(self, X, reset=reset, dtype=None, ensure_all_finite="allow-nan")
        # Rows given without names take the fit's (the check above matched their count).
        names = [f"x{i}" for i in range(array.shape[1])] if reset else self._columns
        return pd.DataFrame(array, columns=names).infer_objects()

    def _folder(self, frame: pd.DataFrame, label: str) -> tuple[Path, bool]:
        """Where this fit searches, and whether the folder is the estimator's own
        temporary one."""
        if self.experiment_dir is None:
            return Path(tempfile.mkdtemp(prefix=_TEMP_PREFIX)), True
        digest = hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy())
        params = {k: v for k, v in self.get_params().items() if k not in _NOT_IN_DIGEST}
        digest.update(json.dumps([list(frame.columns), label, params], default=repr).encode())
        if self.config is not None:
            digest.update(Path(self.config).read_bytes())
        return Path(self.experiment_dir) / f"fit-{digest.hexdigest()[:16]}", False

    # ------------------------------------------------------------------ prediction

    def _outputs(self, X: Any) -> pd.DataFrame:
        from kt_pipeline.data import feature_rows
        from kt_pipeline.export import prediction_table

        check_is_fitted(self, "export_dir_")
        served = self._served
        frame = feature_rows(self._frame(X, reset=False), kinds=served.kinds, source="X")
        return prediction_table(served.directory, frame, loaded=served.model)

    # ------------------------------------------------------------------ shipping

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        served = state.get("_served")
        if served is not None:  # unpickled: it serves from the files it carried
            self.export_dir_ = served.directory

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.string = True
        tags.input_tags.categorical = True
        tags.non_deterministic = False
        return tags


class SearchClassifier(ClassifierMixin, _SearchEstimator):
    """A classifier that searches a Keras MLP for its rows (`kt_pipeline.search`).

    Its parameters are `kt_pipeline.search`'s keywords, with ``random_state`` for
    ``seed`` (None: the pipeline's default seed, so a fit is reproducible) and
    ``callbacks``, Keras callbacks for every trial. ``settings`` takes any other
    setting as ``{"section.key": value}``.

    Attributes:
        classes_: The labels, sorted; `predict_proba`'s columns follow them.
        n_features_in_: The columns seen in `fit`.
        feature_names_in_: Their names, when `X` was a DataFrame of string names.
        best_hyperparameters_: The best trial's hyperparameters.
        best_score_: Its validation score (the search's objective).
        results_: One row per trial (`SearchResult.results`).
        search_result_: The `kt_pipeline.SearchResult` of the fit's search.
        export_dir_: The SavedModel the estimator predicts with.
    """

    def _task(self) -> str:
        return "binary" if len(self.classes_) == 2 else "multiclass"

    def _labels(self, y: Any, *, rows: int) -> np.ndarray:
        labels = _one_label_per_row(y, rows=rows)
        if pd.api.types.is_numeric_dtype(labels):
            _assert_all_finite(labels, input_name="y")
        elif pd.isna(labels).any():
            raise ValueError("Input y contains NaN: every row needs a label")
        check_classification_targets(labels)
        self.classes_ = np.unique(labels)
        if len(self.classes_) < 2:
            raise ValueError(
                "y holds one class: a classifier needs at least 2. "
                f"Received only {self.classes_[0]!r}"
            )
        return labels

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each row, from `classes_`."""
        ids = self._outputs(X)["class_id"].to_numpy()
        return self.classes_[ids]

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, one column per class of `classes_`."""
        outputs = self._outputs(X)
        columns = [c for c in outputs.columns if c.startswith("probability_")]
        return outputs[columns].to_numpy(dtype="float64")

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = False
        return tags


class SearchRegressor(RegressorMixin, _SearchEstimator):
    """A regressor that searches a Keras MLP for its rows (`kt_pipeline.search`).

    Its parameters and attributes are `SearchClassifier`'s, without ``classes_``.
    """

    def _task(self) -> str:
        return "regression"

    def _labels(self, y: Any, *, rows: int) -> np.ndarray:
        labels = _one_label_per_row(y, rows=rows)
        try:
            labels = labels.astype("float64")
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"y must be numeric for a regressor. Received values such as {labels[0]!r}"
            ) from error
        _assert_all_finite(labels, input_name="y")
        return labels

    def predict(self, X: Any) -> np.ndarray:
        """The predicted value of each row."""
        return self._outputs(X)["value"].to_numpy(dtype="float64")


#: scikit-learn's estimator checks that cannot hold for a searched network, with why
#: (`sklearn.utils.estimator_checks.parametrize_with_checks`'s ``expected_failed_checks``;
#: scikit-learn 1.6 replaced the tags that listed them).
_BATCH_DIGITS = (
    "a float32 network: a row's output can move in the seventh digit with the batch it "
    "is computed in (oneDNN picks its kernels by batch size)"
)
EXPECTED_FAILED_CHECKS: dict[str, dict[str, str]] = {
    "SearchClassifier": {
        "check_fit2d_1feature": (
            "ten rows of three classes leave two validation rows, too few to score two "
            "classes on, so the search refuses them"
        ),
        "check_methods_subset_invariance": _BATCH_DIGITS,
    },
    "SearchRegressor": {
        "check_methods_subset_invariance": _BATCH_DIGITS,
    },
}


# --------------------------------------------------------------------------- helpers


class _Served:
    """The export an estimator predicts with. Pickled, it carries the SavedModel's
    files; unpickled, it writes them to a temporary folder that lives as long as it."""

    def __init__(self, directory: Path, *, keep: _Temporary | None = None) -> None:
        from hypermodels.features import TabularSchema
        from kt_pipeline.export import load_model_info

        schema = TabularSchema.from_json(load_model_info(directory)["schema"])
        self.directory = Path(directory)
        self.kinds = {c.name: c.kind for c in schema.columns}
        self._keep = keep
        self._model: Any = None

    @property
    def model(self) -> Any:
        if self._model is None:
            import tensorflow as tf

            self._model = tf.saved_model.load(str(self.directory))
        return self._model

    def __getstate__(self) -> dict[str, Any]:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
            archive.add(self.directory, arcname="export")
        return {"kinds": self.kinds, "archive": buffer.getvalue()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.kinds = state["kinds"]
        self._keep = _Temporary(Path(tempfile.mkdtemp(prefix=_TEMP_PREFIX)))
        with tarfile.open(fileobj=io.BytesIO(state["archive"]), mode="r:gz") as archive:
            archive.extractall(self._keep.folder, filter="data")
        self.directory = self._keep.folder / "export"
        self._model = None

    def __deepcopy__(self, memo: dict[int, Any]) -> _Served:
        return self  # read-only files and model: copies of a fitted estimator share them


class _Temporary:
    """A temporary folder, removed when the last object holding this one is gone."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        weakref.finalize(self, shutil.rmtree, folder, ignore_errors=True)


def _one_label_per_row(y: Any, *, rows: int) -> np.ndarray:
    labels = column_or_1d(y, warn=True)
    if rows < MIN_ROWS:
        raise ValueError(
            f"X has {rows} sample(s): a search needs at least {MIN_ROWS}, for its "
            "training, validation and test rows"
        )
    if len(labels) != rows:
        raise ValueError(
            f"X and y have different numbers of rows. Received {rows} and {len(labels)}"
        )
    return labels


def _finished(folder: Path) -> SearchResult | None:
    """The finished, exported search a fit of the same rows and parameters left."""
    from kt_pipeline.api import load

    try:
        result = load(folder)
    except ValueError:  # no search there yet
        return None
    return result if result.finished and result.export_dir is not None else None


def _seed(random_state: Any) -> int:
    if random_state is None:
        return DEFAULT_SEED
    if isinstance(random_state, numbers.Integral):
        return int(random_state)
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


def _free_name(columns: Any, preferred: Any) -> str:
    taken = {str(c) for c in columns}
    name = str(preferred) if isinstance(preferred, str) and preferred else _LABEL
    while name in taken:
        name = f"_{name}"
    return name
