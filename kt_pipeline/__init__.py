"""kt-pipeline: hyperparameter search for Keras models on tabular data.

A KerasTuner search under tf.distribute, logged to TensorBoard, whose best model is
exported as a SavedModel that serves raw features.
"""

import os

# TensorFlow's C++ start-up chatter (oneDNN, CUDA probing) hides our own output;
# a user who wants it can still set the variable.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

__all__ = ["__version__"]
