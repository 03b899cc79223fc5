"""The `tf.data` input pipeline `fit` uses, built for speed on small tabular data.

On CPUs, `model.fit` on numpy arrays spends most of a step in framework overhead:
slicing arrays per batch, converting them, and one Python round trip per step. This
module converts the data to tensors once per experiment and feeds batches from an
index pipeline: each epoch shuffles the row indices (tiny int64 scalars, cheap to
shuffle) and gathers whole batches with one vectorised `tf.gather` per column, so
every epoch sees a fresh random order of single examples, as numpy-fed `fit` does,
at the cost of batch-level work. Validation batches are built once per batch size and
cached.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

__all__ = ["InputCache"]


def _as_tensors(x: Any) -> Any:
    if isinstance(x, dict):
        return {name: tf.convert_to_tensor(value) for name, value in x.items()}
    return tf.convert_to_tensor(np.asarray(x) if not tf.is_tensor(x) else x)


def _rows(x: Any) -> int:
    first = next(iter(x.values())) if isinstance(x, dict) else x
    return int(first.shape[0])


class InputCache:
    """Tensors and batched datasets, kept across the trials of one experiment.

    Keyed by the identity of the arrays passed in, so the arrays a tuner hands to
    every trial are converted once; a `HyperModel` holds one cache for its lifetime.
    """

    def __init__(self) -> None:
        # id(x) -> (x, feature tensors, label tensor, y); holding x keeps its id unique.
        self._tensors: dict[int, tuple[Any, Any, Any, Any]] = {}
        self._validation: dict[tuple[int, int, int | None], tf.data.Dataset] = {}

    def _get(self, x: Any, y: Any) -> tuple[Any, Any]:
        key = id(x)
        cached = self._tensors.get(key)
        if cached is None or cached[3] is not y:
            cached = (x, _as_tensors(x), tf.convert_to_tensor(np.asarray(y)), y)
            self._tensors[key] = cached
        return cached[1], cached[2]

    def training(
        self,
        x: Any,
        y: Any,
        *,
        batch_size: int,
        shuffle: bool = True,
        sample_weight: np.ndarray | None = None,
    ) -> tf.data.Dataset:
        """Batches in a new random order each epoch (in row order with ``shuffle=False``).
        The order follows NumPy's global seed at the time of the call, which
        `keras.utils.set_random_seed` sets, so a seeded trial is reproducible."""
        features, labels = self._get(x, y)
        weights = None if sample_weight is None else tf.convert_to_tensor(sample_weight)
        rows = _rows(features)
        seed = int(np.random.randint(2**31 - 1))

        def gather(indices: tf.Tensor) -> tuple[Any, ...]:
            picked = tf.nest.map_structure(lambda t: tf.gather(t, indices), features)
            if weights is None:
                return picked, tf.gather(labels, indices)
            return picked, tf.gather(labels, indices), tf.gather(weights, indices)

        indices = tf.data.Dataset.range(rows)
        if shuffle:
            indices = indices.shuffle(rows, seed=seed, reshuffle_each_iteration=True)
        return (
            indices.batch(batch_size)
            .map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .prefetch(tf.data.AUTOTUNE)
        )

    def evaluation(
        self, x: Any, y: Any, *, batch_size: int, sample_weight: np.ndarray | None = None
    ) -> tf.data.Dataset:
        """Fixed batches in row order, built once per batch size and cached. With
        one-hot `sample_weight` rows (the member that scores each row:
        `hypermodels.members.MemberAverage`), each batch holds one member's rows."""
        key = (id(x), batch_size, None if sample_weight is None else id(sample_weight))
        if key not in self._validation:
            features, labels = self._get(x, y)
            if sample_weight is None:
                batches = tf.data.Dataset.from_tensor_slices((features, labels)).batch(batch_size)
            else:
                weights = tf.convert_to_tensor(sample_weight)
                member = np.argmax(sample_weight, axis=1)
                parts = []
                for index in np.unique(member):
                    rows = np.flatnonzero(member == index)
                    picked = tf.nest.map_structure(
                        lambda t, rows=rows: tf.gather(t, rows), (features, labels, weights)
                    )
                    parts.append(tf.data.Dataset.from_tensor_slices(picked).batch(batch_size))
                batches = parts[0]
                for part in parts[1:]:
                    batches = batches.concatenate(part)
            self._validation[key] = batches.cache().prefetch(tf.data.AUTOTUNE)
        return self._validation[key]
