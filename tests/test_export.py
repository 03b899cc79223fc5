from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import keras
import keras_tuner
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from conftest import make_mixed_frame

from hypermodels import MLPHyperModel, SearchSpace, TabularSchema, fit_schema
from hypermodels.features import ServingEncoder, model_inputs, raw_rows
from kt_pipeline.export import Verification, export_model, load_model_info, predict_saved_model
from kt_pipeline.held_out import score_predictions


def _rows(schema: TabularSchema, x: np.ndarray) -> dict[str, np.ndarray]:
    return raw_rows(schema, pd.DataFrame(x, columns=list(schema.names)))


def _trained(task: str) -> tuple[MLPHyperModel, object, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 3)).astype("float32")
    y = {
        "binary": (x[:, 0] > 0).astype("int32"),
        "multiclass": np.digitize(x[:, 0], [-0.5, 0.5]).astype("int32"),
        "regression": (2 * x[:, 0] + 5).astype("float32"),
    }[task]
    hypermodel = MLPHyperModel.from_arrays(x, y, task=task, units=(8,), num_layers=(1, 1))
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)
    hypermodel.fit(hp, model, x, y, epochs=2, verbose=0)
    return hypermodel, model, x, y


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_reloaded_export_predicts_like_the_model(tmp_path: Path, task: str) -> None:
    hypermodel, model, x, y = _trained(task)
    classes = {"binary": ("no", "yes"), "multiclass": ("a", "b", "c"), "regression": ()}[task]
    export_dir = export_model(
        model, export_root=tmp_path, task=task, schema=hypermodel.schema, class_names=classes
    )
    assert export_dir == tmp_path / "1"
    outputs = predict_saved_model(export_dir, _rows(hypermodel.schema, x))
    expected = model.predict(x, verbose=0)  # type: ignore[attr-defined]
    if task == "regression":
        np.testing.assert_allclose(outputs["value"], expected[:, 0], rtol=1e-5, atol=1e-5)
        assert set(score_predictions(outputs, y, task=task)) == {"mse", "mae", "r2"}
        return
    if task == "binary":
        expected = np.concatenate([1 - expected, expected], axis=1)
    np.testing.assert_allclose(outputs["probabilities"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(outputs["class_id"], expected.argmax(axis=1))
    assert [label.decode() for label in outputs["label"][:5]] == [
        classes[i] for i in expected.argmax(axis=1)[:5]
    ]
    scores = score_predictions(outputs, y, task=task)
    assert 0 <= scores["accuracy"] <= 1
    assert load_model_info(export_dir)["class_names"] == list(classes)


def test_versions_increase_and_an_explicit_version_is_replaced(tmp_path: Path) -> None:
    hypermodel, model, _, _ = _trained("binary")
    kwargs: dict[str, Any] = {
        "export_root": tmp_path,
        "task": "binary",
        "schema": hypermodel.schema,
    }
    assert export_model(model, **kwargs).name == "1"
    assert export_model(model, **kwargs).name == "2"
    replaced = export_model(model, version=1, info={"note": "again"}, **kwargs)
    assert load_model_info(replaced)["note"] == "again"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "2"]  # no staging left over


#: Reads a CSV with the csv module and calls the SavedModel, as a client that has
#: neither pandas nor our packages would: empty numeric fields become NaN, empty text
#: stays "", and each column gets the dtype the serving signature declares.
CLIENT = """
import csv, json, math, sys
import numpy as np, tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
serve = model.signatures["serving_default"]
specs = serve.structured_input_signature[1]
columns = json.loads(sys.argv[3])  # input name -> CSV column
with open(sys.argv[2], newline="") as handle:
    rows = list(csv.DictReader(handle))
def parse(text, dtype):
    if dtype == tf.float32:
        return float(text) if text != "" else math.nan
    if dtype == tf.int64:
        return int(text)
    return text
inputs = {name: tf.constant([parse(row[columns[name]], spec.dtype) for row in rows],
                            dtype=spec.dtype) for name, spec in specs.items()}
outputs = serve(**inputs)
assert not any(m.split(".")[0] in ("kt_pipeline", "hypermodels") for m in sys.modules)
print(json.dumps({k: v.numpy().tolist() for k, v in outputs.items() if k != "label"}))
"""


def serve_csv_in_fresh_process(export_dir: Path, csv_path: Path) -> dict[str, np.ndarray]:
    """Runs `CLIENT` in a new Python process and returns the SavedModel's outputs."""
    inputs = load_model_info(export_dir)["inputs"]
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            CLIENT,
            str(export_dir),
            str(csv_path),
            json.dumps({v: k for k, v in inputs.items()}),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
        cwd=csv_path.parent,
    )
    outputs = json.loads(result.stdout.strip().splitlines()[-1])
    return {name: np.array(value) for name, value in outputs.items()}


@pytest.mark.slow
def test_mixed_columns_are_served_raw_without_our_packages(tmp_path: Path) -> None:
    frame = make_mixed_frame(80)
    csv_path = tmp_path / "rows.csv"
    frame.to_csv(csv_path, index=False)
    kinds = {
        "size": "numeric",
        "colour": "string_categorical",
        "level": "integer_categorical",
        "weight kg": "numeric",
    }
    features = frame.drop(columns=["label"])
    schema = fit_schema(features, kinds)
    hypermodel = MLPHyperModel(
        schema=schema,
        task="binary",
        train_size=len(frame),
        space=SearchSpace(units=(8,), num_layers=(1, 1)),
    )
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)
    y = (frame["label"] == "yes").to_numpy("int32")
    hypermodel.fit(hp, model, model_inputs(schema, features), y, epochs=2, verbose=0)
    export_dir = export_model(
        model,
        export_root=tmp_path / "export",
        task="binary",
        schema=schema,
        class_names=("no", "yes"),
    )

    cli = Path(sys.executable).with_name("saved_model_cli")
    shown = subprocess.run(
        [str(cli), "show", "--dir", str(export_dir), "--all"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "signature_def['serving_default']" in shown
    for name in ("size", "colour", "level", "weight_kg"):
        assert f"inputs['{name}']" in shown

    served = serve_csv_in_fresh_process(export_dir, csv_path)
    in_memory = model.predict(model_inputs(schema, features), verbose=0)  # type: ignore[attr-defined]
    assert np.isnan(frame["size"]).any() and frame["colour"].isna().any()
    np.testing.assert_allclose(served["probabilities"][:, 1], in_memory[:, 0], atol=1e-5)


@pytest.mark.parametrize("version", [0, 1], ids=["next-version", "replace-version-1"])
def test_a_crash_during_export_leaves_the_previous_export_loadable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: int
) -> None:
    import keras
    import tensorflow as tf

    hypermodel, model, x, _ = _trained("binary")
    options: dict[str, Any] = {"task": "binary", "schema": hypermodel.schema}
    options["class_names"] = ("no", "yes")
    first = export_model(model, export_root=tmp_path, **options)
    expected = predict_saved_model(first, _rows(hypermodel.schema, x))["probabilities"]
    (tmp_path / ".staging-9-killed").mkdir()  # what a SIGKILL mid-export leaves

    def write_out_then_fail(self: Any, path: str, **kwargs: Any) -> None:
        Path(path, "saved_model.pb").write_bytes(b"half")
        raise OSError(28, "No space left on device")

    # `ExportArchive()` returns a backend subclass; patch the class actually used.
    archive_class = type(keras.export.ExportArchive())
    monkeypatch.setattr(archive_class, "write_out", write_out_then_fail)
    with pytest.raises(OSError, match="No space left"):
        export_model(model, export_root=tmp_path, version=version, **options)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1"]  # no staging folder left
    assert "serving_default" in tf.saved_model.load(str(first)).signatures
    again = predict_saved_model(first, _rows(hypermodel.schema, x))["probabilities"]
    np.testing.assert_array_equal(again, expected)


def _card_fields(hypermodel: MLPHyperModel) -> dict[str, Any]:
    from kt_pipeline.model_card import ModelCard

    return ModelCard(
        hyperparameters={"units": 8},
        objective="val_accuracy",
        validation_score=0.9,
        validation_metrics={"val_accuracy": 0.9, "val_loss": 0.3},
        data_source="unit-test",
        task="multiclass",
        class_names=["a", "b", "c"],
        schema=hypermodel.schema,
        seed=5,
        trial_id="0001",
    ).to_json()


def test_an_export_under_a_relative_folder_is_verified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default experiment folder is relative (`experiments/default`), while a
    fresh verifying process runs elsewhere: the export must still be found and verified."""
    from kt_pipeline.model_card import GOOD_MARKER

    hypermodel, model, x, _ = _trained("binary")
    monkeypatch.chdir(tmp_path)
    export_dir = export_model(
        model,
        export_root=Path("experiments") / "default" / "export",
        task="binary",
        schema=hypermodel.schema,
        class_names=("no", "yes"),
        verify=Verification(_rows(hypermodel.schema, x), _card_fields(hypermodel), fresh=True),
    )
    assert not export_dir.is_absolute()
    assert (tmp_path / export_dir / GOOD_MARKER).is_file()


def test_verified_export_carries_its_card_and_is_marked_good(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from kt_pipeline.cli import main
    from kt_pipeline.model_card import GOOD_MARKER, load_card

    hypermodel, model, x, y = _trained("multiclass")
    export_dir = export_model(
        model,
        export_root=tmp_path,
        task="multiclass",
        schema=hypermodel.schema,
        class_names=("a", "b", "c"),
        verify=Verification(
            _rows(hypermodel.schema, x),
            _card_fields(hypermodel),
            score=lambda served: {"test_metrics": score_predictions(served, y, task="multiclass")},
        ),
    )
    assert (export_dir / GOOD_MARKER).is_file()
    card = load_card(export_dir)
    assert card["verification"]["verified"] is True
    assert card["verification"]["rows"] == len(x)
    assert card["verification"]["max_abs_difference"] <= 1e-5
    # The card's test metrics are those of the served model on the verified rows.
    served = predict_saved_model(export_dir, _rows(hypermodel.schema, x))
    assert card["test_metrics"] == score_predictions(served, y, task="multiclass")
    assert card["seed"] == 5 and card["version"] == 1
    assert {"tensorflow", "keras", "keras-tuner", "python"} <= set(card["packages"])
    assert card["command"]
    assert [c["name"] for c in card["data"]["schema"]] == ["x0", "x1", "x2"]
    assert card["data"]["schema"][0]["dtype"] == "float32"

    assert main(["export", "--describe", str(export_dir)]) == 0
    out = capsys.readouterr().out
    assert "status:       GOOD: verified on reload on 80 held-out rows" in out
    assert "val_accuracy 0.9000" in out and "accuracy" in out.split("test:")[1]
    assert "x0" in out and "float32" in out
    assert main(["export", "--describe", str(tmp_path / "missing")]) == 2


class _Noise(keras.layers.Layer):
    """Adds fresh noise on every call, training or not: no export can reproduce it."""

    def call(self, inputs: Any) -> Any:
        import tensorflow as tf

        return inputs + tf.random.uniform(tf.shape(inputs), maxval=0.01)


@pytest.mark.parametrize("fresh_process", [False, True])
def test_an_export_that_predicts_differently_is_rejected(
    tmp_path: Path, fresh_process: bool
) -> None:
    from kt_pipeline.errors import ExportVerificationError
    from kt_pipeline.model_card import GOOD_MARKER, load_card

    hypermodel, trained, x, _ = _trained("multiclass")
    noisy = keras.Sequential([keras.Input((3,)), trained, _Noise()])
    with pytest.raises(ExportVerificationError, match="output 'probabilities' differs"):
        export_model(
            noisy,
            export_root=tmp_path,
            task="multiclass",
            schema=hypermodel.schema,
            class_names=("a", "b", "c"),
            verify=Verification(
                _rows(hypermodel.schema, x), _card_fields(hypermodel), fresh=fresh_process
            ),
        )
    assert not (tmp_path / "1").exists()  # nothing published as a version
    rejected = tmp_path / "rejected-1"
    assert not (rejected / GOOD_MARKER).exists()
    card = load_card(rejected)
    assert card["verification"]["verified"] is False
    assert card["verification"]["fresh_process"] is fresh_process
    assert "test_metrics" not in card


def test_compare_outputs_tolerance() -> None:
    from kt_pipeline.export import compare_outputs

    base = {"value": np.array([1.0, 2.0], "float32"), "class_id": np.array([0, 1])}
    close = {"value": np.array([1.0 + 5e-6, 2.0], "float32"), "class_id": np.array([0, 1])}
    far = {"value": np.array([1.0 + 1e-3, 2.0], "float32"), "class_id": np.array([0, 1])}
    assert compare_outputs(base, close, rows=2)["verified"]
    result = compare_outputs(base, far, rows=2)
    assert not result["verified"] and "differs on 1 of 2 values" in result["message"]
    assert not compare_outputs(base, {"class_id": base["class_id"]}, rows=2)["verified"]


def test_the_export_looks_values_up_to_the_ids_the_model_trained_on() -> None:
    # Training feeds ids computed once by pandas; serving looks raw values up in tables
    # inside the SavedModel. Unseen and missing values must land on the same ids.
    train = pd.DataFrame({"city": ["b", "a", None, "c"], "code": [30, 10, 20, 10], "x": 1.0})
    kinds = {"city": "string_categorical", "code": "integer_categorical", "x": "numeric"}
    schema = fit_schema(train, kinds)
    rows = pd.DataFrame({"city": ["c", "zz", None, "a"], "code": [20, 99, 10, -1], "x": 2.0})
    trained = model_inputs(schema, rows)
    served = ServingEncoder(schema)({k: tf.constant(v) for k, v in raw_rows(schema, rows).items()})
    for column in ("city", "code"):
        np.testing.assert_array_equal(served[column].numpy(), trained[column].numpy())
    # "" (missing) is in the vocabulary at position 0; unseen values are id 0.
    assert trained["city"].numpy()[:, 0].tolist() == [4, 0, 1, 2]
    assert trained["code"].numpy()[:, 0].tolist() == [2, 0, 1, 0]


def test_columns_named_like_python_words_or_numbers_are_exported_and_served(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5)).astype("float32")
    # TensorFlow takes inputs as keywords when it saves, and renames (then refuses)
    # inputs that start with "_" or a digit: a DataFrame's default column names.
    names = ["self", "class", "x", "0", "_1"]
    hypermodel = MLPHyperModel(schema=TabularSchema.numeric_matrix(x, names), task="binary")
    assert hypermodel.schema.input_names() == {
        "self": "self_",
        "class": "class_",
        "x": "x",
        "0": "column_0",
        "_1": "column_1",
    }
    model = hypermodel.build(keras_tuner.HyperParameters())
    export_dir = export_model(
        model, export_root=tmp_path, task="binary", schema=hypermodel.schema, class_names="ny"
    )
    served = predict_saved_model(export_dir, _rows(hypermodel.schema, x))["probabilities"]
    expected = model.predict(x, verbose=0)[:, 0]  # type: ignore[attr-defined]
    np.testing.assert_allclose(served[:, 1], expected, rtol=1e-5, atol=1e-6)
