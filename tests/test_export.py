from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import keras_tuner
import numpy as np
import pytest

from hypermodels import MLPHyperModel
from kt_pipeline.export import export_model, load_model_info, predict_saved_model, score_predictions


def _trained(task: str) -> tuple[object, np.ndarray, np.ndarray]:
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
    return model, x, y


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_reloaded_export_predicts_like_the_model(tmp_path: Path, task: str) -> None:
    model, x, y = _trained(task)
    classes = {"binary": ("no", "yes"), "multiclass": ("a", "b", "c"), "regression": ()}[task]
    export_dir = export_model(
        model,
        export_root=tmp_path,
        task=task,
        feature_names=("f0", "f1", "f2"),
        class_names=classes,
    )
    assert export_dir == tmp_path / "1"
    outputs = predict_saved_model(export_dir, x)
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
    model, _, _ = _trained("binary")
    kwargs = {"export_root": tmp_path, "task": "binary", "feature_names": ("a", "b", "c")}
    assert export_model(model, **kwargs).name == "1"
    assert export_model(model, **kwargs).name == "2"
    replaced = export_model(model, version=1, info={"note": "again"}, **kwargs)
    assert load_model_info(replaced)["note"] == "again"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "2"]  # no staging left over


@pytest.mark.slow
def test_export_is_servable_without_our_packages(tmp_path: Path) -> None:
    model, x, _ = _trained("multiclass")
    export_dir = export_model(
        model,
        export_root=tmp_path,
        task="multiclass",
        feature_names=("a", "b", "c"),
        class_names=("x", "y", "z"),
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
    assert "features" in shown

    script = (
        "import json, sys, numpy as np, tensorflow as tf\n"
        f"model = tf.saved_model.load({str(export_dir)!r})\n"
        "x = tf.constant(np.array(json.loads(sys.argv[1]), 'float32'))\n"
        "out = model.signatures['serving_default'](features=x)\n"
        "assert not any(m.split('.')[0] in ('kt_pipeline', 'hypermodels') for m in sys.modules)\n"
        "print(json.dumps(out['probabilities'].numpy().tolist()))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, json.dumps(x[:4].tolist())],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=tmp_path,
    )
    served = np.array(json.loads(result.stdout.strip().splitlines()[-1]))
    np.testing.assert_allclose(served, model.predict(x[:4], verbose=0), rtol=1e-5, atol=1e-6)  # type: ignore[attr-defined]
