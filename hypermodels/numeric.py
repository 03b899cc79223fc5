"""Numeric columns inside the model: how they are scaled, and how each is embedded.

Tabular MLPs close much of their gap to gradient-boosted trees through what happens to
numeric columns before the first Dense layer (TabM, Gorishniy et al., ICLR 2025;
RealMLP, Holzmüller et al., NeurIPS 2024):

* scaling: standardisation (mean and variance), a quantile transform to a normal
  distribution (TabM's recipe), or robust scaling followed by smooth clipping
  (RealMLP's), each from statistics of the training split (`features.Column`);
* embeddings: each column mapped to a small vector of its own, periodic (PLR: learned
  frequencies, sine and cosine, a linear layer, ReLU) or piecewise-linear (bins from the
  training quantiles, a linear layer, ReLU), which lets the network bend on one column
  without spending hidden units on it.

All are Keras layers whose constants come from the schema, so the exported SavedModel
still serves raw columns.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

__all__ = [
    "NUMERIC_EMBEDDINGS",
    "NUMERIC_SCALINGS",
    "QUANTILE_LEVELS",
    "PeriodicEmbedding",
    "PiecewiseLinearEmbedding",
    "QuantileNormal",
    "SmoothClip",
    "bin_edges",
    "robust_center_and_scale",
]

#: How numeric columns may be scaled.
NUMERIC_SCALINGS = ("standardize", "quantile", "robust")
#: How each numeric column may be embedded (``none``: the scaled value as it is).
NUMERIC_EMBEDDINGS = ("none", "periodic", "piecewise_linear")

#: Quantile levels fitted per numeric column: 0, 1/128, ..., 1.
QUANTILE_LEVELS = 129

# Where scikit-learn's QuantileTransformer clips a probability before the normal
# quantile function (about +-5.2 standard deviations).
_BOUND = 1e-7


class QuantileNormal(keras.layers.Layer):
    """Maps each column through its training quantiles to a standard normal, as
    scikit-learn's ``QuantileTransformer(output_distribution="normal")`` does: linear
    interpolation between quantiles (averaged from both sides, so a value shared by a
    run of tied quantiles lands in the middle of the run), then the normal quantile
    function, clipped at +-5.2."""

    def __init__(self, quantiles: Sequence[Sequence[float]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # One row of increasing quantile values per column.
        self.quantiles = [[float(v) for v in column] for column in quantiles]

    def call(self, inputs: Any) -> Any:
        quantiles = tf.constant(self.quantiles, dtype=tf.float32)  # columns x levels
        steps = quantiles.shape[1] - 1
        values = tf.transpose(tf.cast(inputs, tf.float32))  # columns x rows

        def position(side: str) -> tf.Tensor:
            index = tf.searchsorted(quantiles, values, side=side)
            lower = tf.clip_by_value(index - 1, 0, steps - 1)
            low = tf.gather(quantiles, lower, batch_dims=1)
            high = tf.gather(quantiles, lower + 1, batch_dims=1)
            width = high - low
            # A zero-width step (tied quantiles at an end) is a jump: below it or past it.
            jump = tf.where(values >= high, 1.0, 0.0)
            fraction = tf.where(width > 0, (values - low) / tf.where(width > 0, width, 1.0), jump)
            return (tf.cast(lower, tf.float32) + tf.clip_by_value(fraction, 0.0, 1.0)) / steps

        probability = 0.5 * (position("left") + position("right"))
        probability = tf.clip_by_value(probability, _BOUND, 1.0 - _BOUND)
        return tf.transpose(tf.math.ndtri(probability))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "quantiles": self.quantiles}


class SmoothClip(keras.layers.Layer):
    """``x / sqrt(1 + (x / limit)^2)``: the identity near 0, bounded by +-limit, so
    outliers cannot dominate a robustly scaled column (RealMLP)."""

    def __init__(self, limit: float = 3.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.limit = float(limit)

    def call(self, inputs: Any) -> Any:
        return inputs / keras.ops.sqrt(1.0 + keras.ops.square(inputs / self.limit))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "limit": self.limit}


def robust_center_and_scale(quantiles: Sequence[float]) -> tuple[float, float]:
    """Median, and the interquartile range (or, where it is 0, half the range; else 1)
    of a column, from its `QUANTILE_LEVELS` training quantiles."""
    values = np.asarray(quantiles, dtype="float64")
    last = len(values) - 1
    median = float(values[last // 2])
    spread = float(values[(3 * last) // 4] - values[last // 4])
    if spread <= 0:
        spread = 0.5 * float(values[-1] - values[0])
    return median, spread if spread > 0 else 1.0


def bin_edges(quantiles: Sequence[Sequence[float]], bins: int) -> list[list[float]]:
    """Per column, `bins` + 1 increasing edges at evenly spaced quantile levels; a
    column with fewer distinct values gets its distinct quantiles, padded at the top
    with edges past its largest value (bins that every training value falls below)."""
    edges = []
    for column in quantiles:
        values = np.asarray(column, dtype="float64")
        picked = np.unique(values[np.linspace(0, len(values) - 1, bins + 1).round().astype(int)])
        if len(picked) < 2:
            picked = np.array([picked[0] - 0.5, picked[0] + 0.5])
        top, step = picked[-1], max(float(picked[-1] - picked[0]), 1.0)
        padding = top + step * np.arange(1, bins + 2 - len(picked))
        edges.append([float(v) for v in np.concatenate([picked, padding])])
    return edges


class PeriodicEmbedding(keras.layers.Layer):
    """PLR (Gorishniy et al., 2022): each column ``x`` becomes ``ReLU(W [sin(2 pi c x),
    cos(2 pi c x)] + b)`` with its own learned frequencies ``c`` (initialised from
    N(0, sigma)) and its own linear layer; output rows x (columns * dim)."""

    def __init__(self, frequencies: int, dim: int, sigma: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.frequencies = int(frequencies)
        self.dim = int(dim)
        self.sigma = float(sigma)

    def build(self, input_shape: Any) -> None:
        columns = int(input_shape[-1])
        self.coefficients = self.add_weight(
            shape=(columns, self.frequencies),
            initializer=keras.initializers.RandomNormal(stddev=self.sigma),
            name="frequencies",
        )
        self.kernel = self.add_weight(
            shape=(columns, 2 * self.frequencies, self.dim),
            initializer="glorot_uniform",
            name="kernel",
        )
        self.bias = self.add_weight(shape=(columns, self.dim), initializer="zeros", name="bias")

    def call(self, inputs: Any) -> Any:
        angles = 2 * math.pi * keras.ops.expand_dims(inputs, -1) * self.coefficients
        periodic = keras.ops.concatenate([keras.ops.sin(angles), keras.ops.cos(angles)], axis=-1)
        embedded = keras.ops.einsum("rcf,cfd->rcd", periodic, self.kernel) + self.bias
        return keras.ops.reshape(keras.ops.relu(embedded), (-1, self.kernel.shape[0] * self.dim))

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "frequencies": self.frequencies,
            "dim": self.dim,
            "sigma": self.sigma,
        }


class PiecewiseLinearEmbedding(keras.layers.Layer):
    """Piecewise-linear encoding (Gorishniy et al., 2022) with a linear layer and ReLU
    per column: component t of a column is 0 below its bin, 1 above it and the
    position within it in between (the first bin is open below, the last above), from
    edges fitted on the training quantiles (`bin_edges`); output rows x (columns * dim).
    The edges are in each column's own units, so it takes the raw (gap-filled) values
    whatever the scaling: bins from quantiles make scaling irrelevant to it.
    """

    takes_raw_values = True

    def __init__(self, edges: Sequence[Sequence[float]], dim: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.edges = [[float(v) for v in column] for column in edges]
        self.dim = int(dim)

    def build(self, input_shape: Any) -> None:
        columns, bins = len(self.edges), len(self.edges[0]) - 1
        self.kernel = self.add_weight(
            shape=(columns, bins, self.dim), initializer="glorot_uniform", name="kernel"
        )
        self.bias = self.add_weight(shape=(columns, self.dim), initializer="zeros", name="bias")

    def call(self, inputs: Any) -> Any:
        edges = keras.ops.convert_to_tensor(self.edges, dtype="float32")
        low, high = edges[:, :-1], edges[:, 1:]
        position = (keras.ops.expand_dims(inputs, -1) - low) / (high - low)
        bins = low.shape[1]
        # The first bin extends below its edge and the last above it.
        lower = keras.ops.convert_to_tensor([-np.inf] + [0.0] * (bins - 1), dtype="float32")
        upper = keras.ops.convert_to_tensor([1.0] * (bins - 1) + [np.inf], dtype="float32")
        encoded = keras.ops.minimum(keras.ops.maximum(position, lower), upper)
        embedded = keras.ops.einsum("rct,ctd->rcd", encoded, self.kernel) + self.bias
        return keras.ops.reshape(keras.ops.relu(embedded), (-1, len(self.edges) * self.dim))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "edges": self.edges, "dim": self.dim}
