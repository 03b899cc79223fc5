"""SavedModel export of a trained model, verified on reload before it is published.

The export is a Keras `ExportArchive` with one ``serve`` endpoint (also the
``serving_default`` signature) that takes one raw input per column (float32 with NaN
for a missing number, int64, or string) and returns named outputs:
``probabilities``, ``class_id`` and ``label`` for classification, ``value`` for
regression. Each export goes to ``export/<version>/``, the layout TF Serving reads,
and is written beside the old ones and renamed into place, so a crash mid-export
never leaves a half-written version behind.

**Verification.** Given held-out rows, the staged SavedModel is loaded from disk with
`tf.saved_model.load` (the graph TF Serving runs, without the Keras objects that built
it) and its outputs must equal the in-memory model's within 1e-5 (relative and
absolute, on every float output). With ``fresh_process``, a new interpreter that
imports only NumPy and TensorFlow, none of our packages, loads it instead: proof that
nothing of ours is needed to serve it, at the cost of a TensorFlow start-up (seconds,
more than a small search's export itself). Only then is the version published, with
``verified: true`` in its model card and a ``GOOD`` marker in ``assets.extra/``.
Otherwise it is moved to ``export/rejected-<version>/`` (a name TF Serving ignores),
with its card saying why, and `ExportVerificationError` is raised.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from hypermodels.features import ServingEncoder, TabularSchema, raw_rows, serving_signature
from kt_pipeline.errors import ExportVerificationError
from kt_pipeline.model_card import GOOD_MARKER, write_card

__all__ = [
    "MODEL_INFO_FILE",
    "VERIFY_TOLERANCE",
    "Verification",
    "compare_outputs",
    "export_model",
    "load_model_info",
    "model_outputs",
    "predict_saved_model",
    "prediction_table",
]

#: Metadata beside the SavedModel (`assets.extra/` is where TF Serving allows extras).
MODEL_INFO_FILE = os.path.join("assets.extra", "model_info.json")

#: Largest relative and absolute difference allowed between the reloaded export's
#: outputs (in a fresh process) and the in-memory model's.
VERIFY_TOLERANCE = 1e-5

# Run by a fresh interpreter: only NumPy and TensorFlow, no pickles (strings travel as
# fixed-width unicode arrays in the .npz).
_FRESH_CLIENT = """
import sys
import numpy as np, tensorflow as tf
export_dir, rows_file, out_file = sys.argv[1:4]
serve = tf.saved_model.load(export_dir).signatures["serving_default"]
with np.load(rows_file, allow_pickle=False) as rows:
    outputs = serve(**{name: tf.constant(rows[name]) for name in rows.files})
outputs = {k: v.numpy() for k, v in outputs.items()}
outputs = {k: v.astype(str) if v.dtype == object else v for k, v in outputs.items()}
assert not any(m.split(".")[0] in ("kt_pipeline", "hypermodels") for m in sys.modules)
np.savez(out_file, **outputs)
"""


def _next_version(export_root: Path) -> int:
    versions = [int(p.name) for p in export_root.glob("*") if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def _serving_fn(
    model: keras.Model, *, encoder: ServingEncoder, task: str, class_names: Sequence[str]
) -> Any:
    names = tf.constant(list(class_names) or [""], dtype=tf.string)

    def serve(features: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        output = model(encoder(features), training=False)
        if task == "regression":
            return {"value": tf.reshape(output, [-1])}
        if task == "binary":
            positive = tf.reshape(output, [-1, 1])
            output = tf.concat([1.0 - positive, positive], axis=1)
        class_id = tf.argmax(output, axis=1, output_type=tf.int32)
        return {"probabilities": output, "class_id": class_id, "label": tf.gather(names, class_id)}

    return serve


@dataclasses.dataclass(frozen=True)
class Verification:
    """What the staged export must reproduce before it is published, and the model
    card that records the outcome (`kt_pipeline.model_card`).

    Attributes:
        rows: Held-out rows (per-column arrays keyed by input name, see
            `features.raw_rows`) to verify the reloaded export on.
        card: The model card's fields (hyperparameters, metrics, data, seed, ...),
            completed with the verification result.
        score: The card's fields measured on the reloaded export's outputs on `rows`
            (``test_metrics``, ...): the held-out metrics of exactly what is served.
        fresh: Verify in a new interpreter that imports none of our packages.
    """

    rows: dict[str, np.ndarray]
    card: dict[str, Any] | None = None
    score: Callable[[dict[str, np.ndarray]], dict[str, Any]] | None = None
    fresh: bool = False


def export_model(
    model: keras.Model,
    *,
    export_root: str | Path,
    task: str,
    schema: TabularSchema,
    class_names: Sequence[str] = (),
    version: int = 0,
    info: dict[str, Any] | None = None,
    verify: Verification | None = None,
) -> Path:
    """Exports `model` as a SavedModel under ``export_root/<version>``.

    With `verify`, the export is reloaded and verified before it is published (module
    docstring), and its card is written into ``assets.extra/model_card.json``.

    Args:
        model: A trained Keras model built on `schema`'s preprocessing.
        export_root: The ``export`` folder.
        task: ``binary``, ``multiclass`` or ``regression``; decides the named outputs.
        schema: The feature columns; the export takes one input per column.
        class_names: Original label of each class id.
        version: Folder number; 0 picks the next free number.
        info: Extra metadata to store in ``assets.extra/model_info.json``.
        verify: The rows to verify the reloaded export on, and its card.

    Returns:
        The version folder.

    Raises:
        ExportVerificationError: the reloaded export's predictions differ.
    """
    export_root = Path(export_root)
    export_root.mkdir(parents=True, exist_ok=True)
    version = version or _next_version(export_root)
    encoder = ServingEncoder(schema)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.track(encoder)
    archive.add_endpoint(
        name="serve",
        fn=_serving_fn(model, encoder=encoder, task=task, class_names=class_names),
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
        failure = None
        if verify is not None:
            expected = _in_memory_outputs(
                model, verify.rows, encoder=encoder, task=task, class_names=class_names
            )
            verification, served = _verify(staging, expected, verify.rows, fresh=verify.fresh)
            failure = None if verification["verified"] else verification["message"]
            if verify.card is not None:
                card = {**verify.card, "verification": verification, "version": version}
                if verify.score is not None and failure is None:
                    card.update(verify.score(served))
                write_card(staging, card)
        return _publish(staging, export_root, version, failure=failure, verified=verify is not None)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _verify(
    staging: Path,
    expected: dict[str, np.ndarray],
    rows: dict[str, np.ndarray],
    *,
    fresh: bool,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The staged export's outputs on `rows`, reloaded here or in a fresh interpreter,
    compared with the in-memory model's (`compare_outputs`)."""
    served = _fresh_process_outputs(staging, rows) if fresh else _reloaded_outputs(staging, rows)
    verification = compare_outputs(expected, served, rows=len(next(iter(rows.values()))))
    verification["fresh_process"] = fresh
    return verification, served


def _publish(
    staging: Path, export_root: Path, version: int, *, failure: str | None, verified: bool
) -> Path:
    """Renames the staged export into ``export_root/<version>`` (or, when it failed its
    verification, into ``rejected-<version>`` and raises), swapping out an existing
    version only once the new one is whole."""
    target = export_root / str(version)
    if failure is not None:
        rejected = export_root / f"rejected-{version}"
        shutil.rmtree(rejected, ignore_errors=True)
        staging.rename(rejected)
        raise ExportVerificationError(
            f"export {version} rejected: {failure}; kept for inspection in {rejected}"
        )
    if verified:
        (staging / GOOD_MARKER).write_text("verified\n", encoding="utf-8")
    if target.exists():  # an explicit version that already exists: swap it out
        retired = export_root / f".retired-{version}"
        shutil.rmtree(retired, ignore_errors=True)
        target.rename(retired)
        staging.rename(target)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        staging.rename(target)
    return target


def model_outputs(
    model: keras.Model,
    rows: dict[str, np.ndarray],
    *,
    schema: TabularSchema,
    task: str,
    class_names: Sequence[str] = (),
) -> dict[str, np.ndarray]:
    """What an export of `model` would serve for `rows` (raw columns keyed by input
    name, `features.raw_rows`), computed in memory without exporting it."""
    return _in_memory_outputs(
        model, rows, encoder=ServingEncoder(schema), task=task, class_names=class_names
    )


def _in_memory_outputs(
    model: keras.Model,
    rows: dict[str, np.ndarray],
    *,
    encoder: ServingEncoder,
    task: str,
    class_names: Sequence[str],
) -> dict[str, np.ndarray]:
    serve = _serving_fn(model, encoder=encoder, task=task, class_names=class_names)
    outputs = serve({name: tf.constant(values) for name, values in rows.items()})
    return {name: value.numpy() for name, value in outputs.items()}


def _reloaded_outputs(export_dir: Path, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The export's outputs on `rows`, from the SavedModel loaded back from disk."""
    outputs = predict_saved_model(export_dir, rows)
    return {k: v.astype(str) if v.dtype == object else v for k, v in outputs.items()}


def _fresh_process_outputs(export_dir: Path, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The export's outputs on `rows`, computed by a new interpreter."""
    with tempfile.TemporaryDirectory(prefix="kt-verify-") as scratch:
        rows_file, out_file = Path(scratch) / "rows.npz", Path(scratch) / "outputs.npz"
        np.savez(rows_file, **rows)  # type: ignore[arg-type]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        # Absolute: the client runs in the scratch folder, where a path relative to our
        # working directory (the default `experiments/default`) does not exist.
        command = [sys.executable, "-c", _FRESH_CLIENT, str(export_dir.resolve())]
        result = subprocess.run(
            [*command, str(rows_file), str(out_file)],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
            cwd=scratch,
        )
        if result.returncode != 0:
            tail = result.stderr.strip().splitlines()[-1:] or ["no output"]
            raise ExportVerificationError(
                f"the export at {export_dir} cannot be served by a fresh process: {tail[0]}"
            )
        with np.load(out_file, allow_pickle=False) as outputs:
            return {name: outputs[name] for name in outputs.files}


def compare_outputs(
    expected: dict[str, np.ndarray], served: dict[str, np.ndarray], *, rows: int
) -> dict[str, Any]:
    """Compares every float output within `VERIFY_TOLERANCE`; the result goes into the
    model card."""
    worst = 0.0
    problems = []
    for name, value in expected.items():
        if name not in served:
            problems.append(f"output {name!r} is missing from the reloaded export")
            continue
        if not np.issubdtype(value.dtype, np.floating):
            continue
        got = served[name].astype("float64")
        want = value.astype("float64")
        if got.shape != want.shape:
            problems.append(f"output {name!r} has shape {got.shape}, expected {want.shape}")
            continue
        difference = np.abs(got - want)
        worst = max(worst, float(np.nanmax(difference, initial=0.0)))
        close = np.isclose(got, want, rtol=VERIFY_TOLERANCE, atol=VERIFY_TOLERANCE, equal_nan=True)
        if not close.all():
            problems.append(
                f"output {name!r} differs on {int((~close).sum())} of {close.size} values "
                f"(max difference {float(np.nanmax(difference)):.3g} > {VERIFY_TOLERANCE})"
            )
    return {
        "verified": not problems,
        "rows": rows,
        "tolerance": VERIFY_TOLERANCE,
        "max_abs_difference": worst,
        "message": "; ".join(problems) or "reloaded predictions match the in-memory model",
    }


def load_model_info(export_dir: str | Path) -> dict[str, Any]:
    """Reads the metadata stored beside an export."""
    info: dict[str, Any] = json.loads((Path(export_dir) / MODEL_INFO_FILE).read_text("utf-8"))
    return info


def predict_saved_model(
    export_dir: str | Path, rows: dict[str, np.ndarray], *, loaded: Any = None
) -> dict[str, np.ndarray]:
    """Runs an export's ``serving_default`` signature on per-column arrays keyed by
    input name (see `features.raw_rows`); `loaded` is the export already loaded with
    `tf.saved_model.load`, which repeated calls reuse."""
    loaded = tf.saved_model.load(str(export_dir)) if loaded is None else loaded
    serve = loaded.signatures["serving_default"]
    outputs = serve(**{name: tf.constant(values) for name, values in rows.items()})
    return {name: value.numpy() for name, value in outputs.items()}


def prediction_table(
    export_dir: str | Path, frame: pd.DataFrame, *, loaded: Any = None
) -> pd.DataFrame:
    """An export's predictions for feature rows checked by `data.feature_rows`, one row
    each: ``value`` for regression; ``label``, ``class_id`` and ``probability_<class>``
    for classification."""
    info = load_model_info(export_dir)
    schema = TabularSchema.from_json(info["schema"])
    outputs = predict_saved_model(export_dir, raw_rows(schema, frame), loaded=loaded)
    if info["task"] == "regression":
        return pd.DataFrame({"value": outputs["value"]})
    columns: dict[str, Any] = {
        "label": [label.decode() for label in outputs["label"]],
        "class_id": outputs["class_id"],
    }
    for index, name in enumerate(info["class_names"]):
        columns[f"probability_{name}"] = outputs["probabilities"][:, index]
    return pd.DataFrame(columns)
