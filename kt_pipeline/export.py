"""SavedModel export of a trained model, and scoring of what was exported.

The export is a Keras `ExportArchive` with one ``serve`` endpoint (also the
``serving_default`` signature) that takes one raw input per column (float32 with NaN
for a missing number, int64, or string) and returns named outputs:
``probabilities``, ``class_id`` and ``label`` for classification, ``value`` for
regression. Each export goes to ``export/<version>/``, the layout TF Serving reads,
and is written beside the old ones and renamed into place, so a crash mid-export
never leaves a half-written version behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from hypermodels.features import TabularSchema, serving_signature, serving_to_model_inputs

__all__ = [
    "MODEL_INFO_FILE",
    "export_model",
    "load_model_info",
    "predict_saved_model",
    "score_predictions",
]

#: Metadata beside the SavedModel (`assets.extra/` is where TF Serving allows extras).
MODEL_INFO_FILE = os.path.join("assets.extra", "model_info.json")


def _next_version(export_root: Path) -> int:
    versions = [int(p.name) for p in export_root.glob("*") if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def _serving_fn(
    model: keras.Model, *, schema: TabularSchema, task: str, class_names: Sequence[str]
) -> Any:
    names = tf.constant(list(class_names) or [""], dtype=tf.string)

    def serve(features: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        output = model(serving_to_model_inputs(schema, features), training=False)
        if task == "regression":
            return {"value": tf.reshape(output, [-1])}
        if task == "binary":
            positive = tf.reshape(output, [-1, 1])
            output = tf.concat([1.0 - positive, positive], axis=1)
        class_id = tf.argmax(output, axis=1, output_type=tf.int32)
        return {"probabilities": output, "class_id": class_id, "label": tf.gather(names, class_id)}

    return serve


def export_model(
    model: keras.Model,
    *,
    export_root: str | Path,
    task: str,
    schema: TabularSchema,
    class_names: Sequence[str] = (),
    version: int = 0,
    info: dict[str, Any] | None = None,
) -> Path:
    """Exports `model` as a SavedModel under ``export_root/<version>``.

    Args:
        model: A trained Keras model built on `schema`'s preprocessing.
        export_root: The ``export`` folder.
        task: ``binary``, ``multiclass`` or ``regression``; decides the named outputs.
        schema: The feature columns; the export takes one input per column.
        class_names: Original label of each class id.
        version: Folder number; 0 picks the next free number.
        info: Extra metadata to store in ``assets.extra/model_info.json``.

    Returns:
        The version folder.
    """
    export_root = Path(export_root)
    export_root.mkdir(parents=True, exist_ok=True)
    version = version or _next_version(export_root)
    target = export_root / str(version)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name="serve",
        fn=_serving_fn(model, schema=schema, task=task, class_names=class_names),
        input_signature=[serving_signature(schema)],
    )
    for stale in export_root.glob(".staging-*"):  # left by a process killed mid-export
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".staging-{version}-", dir=export_root))
    try:
        archive.write_out(str(staging), verbose=False)
        metadata = {
            "task": task,
            "inputs": schema.input_names(),
            "schema": schema.to_json(),
            "class_names": list(class_names),
            "version": version,
            **(info or {}),
        }
        (staging / MODEL_INFO_FILE).parent.mkdir(exist_ok=True)
        (staging / MODEL_INFO_FILE).write_text(json.dumps(metadata, indent=2), encoding="utf-8")
        if target.exists():  # an explicit version that already exists: swap it out
            retired = export_root / f".retired-{version}"
            shutil.rmtree(retired, ignore_errors=True)
            target.rename(retired)
            staging.rename(target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def load_model_info(export_dir: str | Path) -> dict[str, Any]:
    """Reads the metadata stored beside an export."""
    info: dict[str, Any] = json.loads((Path(export_dir) / MODEL_INFO_FILE).read_text("utf-8"))
    return info


def predict_saved_model(
    export_dir: str | Path, rows: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Loads an export with `tf.saved_model.load` and runs its ``serving_default``
    signature on per-column arrays keyed by input name (see `features.raw_rows`)."""
    loaded = tf.saved_model.load(str(export_dir))
    serve = loaded.signatures["serving_default"]
    outputs = serve(**{name: tf.constant(values) for name, values in rows.items()})
    return {name: value.numpy() for name, value in outputs.items()}


def score_predictions(
    outputs: dict[str, np.ndarray], y_true: np.ndarray, *, task: str
) -> dict[str, float]:
    """Test metrics from an export's outputs: accuracy (and AUC) or MSE, MAE, R²."""
    from sklearn import metrics

    if task == "regression":
        predicted = outputs["value"]
        return {
            "mse": float(metrics.mean_squared_error(y_true, predicted)),
            "mae": float(metrics.mean_absolute_error(y_true, predicted)),
            "r2": float(metrics.r2_score(y_true, predicted)),
        }
    scores = {"accuracy": float(np.mean(outputs["class_id"] == y_true))}
    if task == "binary":
        scores["auc"] = float(metrics.roc_auc_score(y_true, outputs["probabilities"][:, 1]))
    return scores
