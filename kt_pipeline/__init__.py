"""kt-pipeline: hyperparameter search for Keras models on tabular data.

A KerasTuner search under tf.distribute, logged to TensorBoard, whose best model is
exported as a SavedModel that serves raw features. From Python::

    import kt_pipeline as ktp

    result = ktp.search(frame, label="churned", max_trials=10)
    result.predict(new_rows)

or as a scikit-learn estimator, ``ktp.SearchClassifier(max_trials=10).fit(X, y)``.

The names below TensorFlow (`search`, `load`, `SearchResult`, the estimators,
`PipelineConfig`, `load_config`) are imported on first use, so that ``import kt_pipeline`` and the
command line's ``--help`` stay instant.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

from kt_pipeline.errors import (
    ExportVerificationError,
    KtPipelineError,
    SearchAbortedError,
    UserInputError,
)

# TensorFlow's C++ chatter (oneDNN, CUDA probing) hides our own output; a user who
# wants it can still set the variable (`kt_pipeline.quiet_start`).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

__all__ = [
    "ExportVerificationError",
    "KtPipelineError",
    "PipelineConfig",
    "SearchAbortedError",
    "SearchClassifier",
    "SearchRegressor",
    "SearchResult",
    "UserInputError",
    "__version__",
    "load",
    "load_config",
    "search",
]

_LAZY = {
    "search": "kt_pipeline.api",
    "load": "kt_pipeline.api",
    "SearchResult": "kt_pipeline.api",
    "SearchClassifier": "kt_pipeline.estimators",
    "SearchRegressor": "kt_pipeline.estimators",
    "PipelineConfig": "kt_pipeline.config",
    "load_config": "kt_pipeline.config",
}

_WITHOUT_TENSORFLOW = {"PipelineConfig", "load_config"}

if TYPE_CHECKING:
    from kt_pipeline.api import SearchResult, load, search
    from kt_pipeline.config import PipelineConfig, load_config
    from kt_pipeline.estimators import SearchClassifier, SearchRegressor


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        if name not in _WITHOUT_TENSORFLOW:  # before its first import, without its chatter
            from kt_pipeline.quiet_start import start_tensorflow

            start_tensorflow()
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kt_pipeline' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
