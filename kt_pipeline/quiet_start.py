"""TensorFlow started without its start-up chatter, for the command line and for
Python callers alike.

TensorFlow's C++ start-up lines (oneDNN, "Could not find cuda drivers", "failed call to
cuInit" on a host without GPUs) are written before its log level is read, so the level
cannot hide them, and a new user reads the CUDA line as an error; in a notebook,
ipykernel shows them under the cell. Its Python logger then logs each SavedModel's
assets and warns of retracing each time a new trial's model traces its functions,
which every search does by design.
"""

from __future__ import annotations

import logging
import os
import sys

__all__ = ["start_tensorflow"]

_RETRACING = "triggered tf.function retracing"
_started = False


def start_tensorflow(*, show_native: bool | None = None) -> None:
    """Imports TensorFlow with the process's native stderr pointed at /dev/null while
    it probes its devices, and quiets its Python logger; once per process.

    Args:
        show_native: Keep the native lines. None keeps them only where the user set
            ``TF_CPP_MIN_LOG_LEVEL`` below 2 before importing kt_pipeline.
    """
    global _started
    if _started:
        return
    _started = True
    python_logger = logging.getLogger("tensorflow")
    level_set = python_logger.level != logging.NOTSET  # by the user, before TensorFlow
    if show_native is None:
        show_native = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2") in {"0", "1"}
    if "tensorflow" in sys.modules or show_native:
        import tensorflow as tf
    else:
        saved = os.dup(2)
        null = os.open(os.devnull, os.O_WRONLY)
        sys.stderr.flush()
        os.dup2(null, 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(null)
    tf.get_logger()  # where TensorFlow sets its level: INFO in an interactive shell
    if not level_set:
        python_logger.setLevel(logging.WARNING)
    python_logger.addFilter(_drop_retracing)


def _drop_retracing(record: logging.LogRecord) -> bool:
    return _RETRACING not in record.getMessage()
