"""The Python front door: `ktp.search`, `ktp.load` and `SearchResult`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import keras_tuner
import numpy as np
import pandas as pd
import pytest
from conftest import make_frame, make_mixed_frame
from custom_models import LinearHyperModel

import kt_pipeline as ktp

# Small and quick: no range test, two short trials.
QUICK = {"search.learning_rate_auto": False}


def _files(folder: Path) -> dict[str, int]:
    """Each file's modification time, the lock file (bookkeeping) left out."""
    return {
        str(p.relative_to(folder)): p.stat().st_mtime_ns
        for p in folder.rglob("*")
        if p.is_file() and p.name != ".lock"
    }


def test_a_dataframe_search_returns_a_result_that_serves_raw_rows(tmp_path: Path) -> None:
    frame = make_mixed_frame(240)
    result = ktp.search(
        frame,
        label="label",
        experiment_dir=tmp_path,
        tuner="random",
        max_trials=2,
        max_epochs=2,
        seed=3,
        settings=QUICK,
    )
    assert result.finished and result.task == "binary"
    assert result.export_dir is not None and (result.export_dir / "saved_model.pb").is_file()
    assert set(result.test_scores) == {"accuracy", "auc"}
    assert result.best_trial_id in set(result.results["trial_id"])
    assert len(result.results) == 2
    assert "optimizer" in result.best_hyperparameters
    assert not any(name.startswith("tuner/") for name in result.best_hyperparameters)

    predictions = result.predict(frame.head(7))  # the label column is ignored
    assert list(predictions.columns) == ["label", "class_id", "probability_no", "probability_yes"]
    assert len(predictions) == 7
    assert set(predictions["label"]) <= {"no", "yes"}
    np.testing.assert_allclose(
        predictions[["probability_no", "probability_yes"]].sum(axis=1), 1.0, rtol=1e-5
    )
    # The stored rows are named by their content, and the saved config points at them.
    stored = list((tmp_path / "inputs").glob("frame-*.parquet"))
    assert len(stored) == 1
    pd.testing.assert_frame_equal(pd.read_parquet(stored[0]), frame, check_dtype=False)
    assert ktp.load(tmp_path) == result
    report = result.report()
    assert report.trials == 2 and (tmp_path / "report" / "report.md").is_file()


def test_best_models_are_the_trials_models_and_give_their_validation_scores(
    tmp_path: Path,
) -> None:
    import keras

    from hypermodels.features import raw_rows
    from kt_pipeline.config import load_config
    from kt_pipeline.prepare import prepare_data

    result = ktp.search(
        make_mixed_frame(300),
        label="label",
        experiment_dir=tmp_path,
        tuner="random",
        max_trials=3,
        max_epochs=3,
        settings=QUICK,
    )
    models = result.best_models(3)
    recorded = result.results.set_index("trial_id")["objective"]
    assert [m.name for m in models] == [
        f"trial_{t}" for t in recorded.sort_values(ascending=False).index
    ]
    prepared = prepare_data(load_config(tmp_path / "config.toml"))  # the search's own split
    validation = prepared.splits.validation
    # The raw columns as Keras takes them: strings as Python objects.
    rows = {
        name: values.astype(object) if values.dtype.kind == "U" else values
        for name, values in raw_rows(prepared.schema, validation.frame).items()
    }
    for model in models:
        assert isinstance(model, keras.Model)
        auc = keras.metrics.AUC()
        auc.update_state(validation.y, model.predict(rows, verbose=0))
        trial = model.name.removeprefix("trial_")
        assert float(auc.result()) == pytest.approx(recorded[trial], abs=1e-6)


def test_array_search_resumes_on_the_same_rows_and_refuses_others(tmp_path: Path) -> None:
    frame = make_frame(150, task="multiclass")
    x, y = frame[["a", "b", "c"]].to_numpy(), frame["label"].to_numpy()
    options: dict[str, Any] = dict(
        experiment_dir=tmp_path,
        tuner="random",
        max_epochs=1,
        settings=QUICK,
        hypermodel=LinearHyperModel,
    )
    first = ktp.search((x, y), max_trials=1, **options)
    assert first.task == "multiclass" and set(first.best_hyperparameters) == {
        "linear_learning_rate"
    }
    assert first.predict(x[:4]).shape == (4, 2 + 3)

    again = ktp.search((x, y), max_trials=2, **options)  # same rows: resumed
    assert len(again.results) == 2
    before = _files(tmp_path)
    with pytest.raises(ktp.UserInputError, match=r"data\.source"):
        ktp.search((x + 1.0, y), max_trials=3, **options)
    assert _files(tmp_path) == before  # the other rows were not kept either


class _LocalHyperModel(keras_tuner.HyperModel):
    pass


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"label": ""}, "`label` must name the label column of the DataFrame"),
        ({"label": "nope"}, "label column 'nope' is not in the DataFrame"),
        ({"label": "label", "hypermodel": LinearHyperModel}, None),  # valid: checked below
        (
            {"label": "label", "hypermodel": LinearHyperModel(schema=None, task="binary")},
            "pass the class, not an instance",
        ),
        (
            {"label": "label", "max_trials": 2, "settings": {"tuner.max_trials": 3}},
            r"`max_trials` and settings\['tuner.max_trials'\] both set",
        ),
        ({"label": "label", "settings": {"tuner.max_trial": 3}}, "max_trial"),
        ({"label": "label", "settings": {"max_trials": 3}}, "'section.key' names"),
        ({"label": "label", "seed": -1}, "runtime.seed"),
    ],
)
def test_bad_front_door_input_is_one_clear_error_and_writes_nothing(
    tmp_path: Path, arguments: dict[str, Any], message: str | None
) -> None:
    if message is None:
        from kt_pipeline.api import _hypermodel_path

        assert _hypermodel_path(LinearHyperModel) == "custom_models:LinearHyperModel"
        return
    experiment = tmp_path / "experiment"
    with pytest.raises(ktp.UserInputError, match=message):
        ktp.search(make_frame(40), experiment_dir=experiment, **arguments)
    assert not experiment.exists()


def test_a_hypermodel_class_that_cannot_be_imported_back_is_refused(tmp_path: Path) -> None:
    class Hidden(keras_tuner.HyperModel):
        pass

    with pytest.raises(ktp.UserInputError, match="must be importable"):
        ktp.search("builtin:iris", experiment_dir=tmp_path / "x", hypermodel=Hidden)
    assert not (tmp_path / "x").exists()


def test_load_reads_an_interrupted_search_and_refuses_an_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(ktp.UserInputError, match="holds no search"):
        ktp.load(tmp_path)
    ktp.search(
        "builtin:iris",
        experiment_dir=tmp_path,
        tuner="random",
        max_trials=1,
        max_epochs=1,
        hypermodel="custom_models:LinearHyperModel",
        settings={**QUICK, "export.enabled": False},
        verbose=False,
    )
    (tmp_path / "summary.json").unlink()  # as if the job had been stopped
    result = ktp.load(tmp_path)
    assert not result.finished and result.export_dir is None
    assert result.best_trial_id is not None and result.objective == "val_accuracy (max)"
    with pytest.raises(ktp.UserInputError, match="no verified export"):
        result.predict(np.zeros((1, 4)))


def test_every_error_we_raise_shares_one_base() -> None:
    for error in (ktp.UserInputError, ktp.SearchAbortedError, ktp.ExportVerificationError):
        assert issubclass(error, ktp.KtPipelineError)
    assert issubclass(ktp.UserInputError, ValueError)  # what callers caught before


def test_importing_the_package_leaves_tensorflow_unloaded() -> None:
    code = (
        "import sys, kt_pipeline as ktp; assert 'tensorflow' not in sys.modules; "
        "assert callable(ktp.search) and ktp.PipelineConfig.__name__ == 'PipelineConfig'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_readme_python_example_runs_verbatim(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("### From Python", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), namespace)  # our own README, not user input
    assert namespace["same"] == namespace["result"]
    assert len(namespace["result"].results) == 3
