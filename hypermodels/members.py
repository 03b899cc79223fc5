"""A shared-weight ensemble inside one model, after TabM-mini (Gorishniy et al., ICLR
2025): k members share every hidden layer; each scales the network's input by its own
vector (initialised to random signs, so the members start apart) and has its own head.

Each member is trained on its own loss (the mean of the members' losses, as TabM does:
training the mean prediction instead lets the members lean on each other), and the model
is validated and served as the mean of the members' predictions, so everything
downstream (the objective, the ensemble, the export) sees one ordinary prediction.

The same model holds a cross-validated trial's fold models (``MLPHyperModel(folds=k)``):
k networks that share nothing, each trained on the rows outside its fold (a sample
weight per row and member) and validated on its fold alone (a one-hot weight per row),
so the validation metrics are out of fold; the export serves their mean.
"""

from __future__ import annotations

import random
from typing import Any

import keras
import tensorflow as tf
from keras import ops

__all__ = ["MemberAverage", "RandomSigns", "member_adapter", "member_heads"]


@keras.saving.register_keras_serializable(package="hypermodels")
class RandomSigns(keras.initializers.Initializer):
    """-1 or +1 with equal odds, from a seed (without one, from Python's generator,
    which `keras.utils.set_random_seed` seeds, as Keras's own initializers do)."""

    def __init__(self, seed: int | None = None) -> None:
        self.seed = random.randint(1, 10**9) if seed is None else seed

    def __call__(self, shape: Any, dtype: Any = None) -> Any:
        coins = keras.random.uniform(shape, seed=self.seed)
        return ops.cast(ops.where(coins < 0.5, -1.0, 1.0), dtype or "float32")

    def get_config(self) -> dict[str, Any]:
        return {"seed": self.seed}


def member_adapter(members: int, width: int) -> keras.layers.Layer:
    """(batch, width) -> (batch, members, width): each member's copy of the input,
    scaled by its own learned vector."""
    return keras.layers.EinsumDense(
        "bd,kd->bkd",
        output_shape=(members, width),
        kernel_initializer=RandomSigns(),
        name="member_adapter",
    )


def member_heads(members: int, outputs: int, *, name: str) -> keras.layers.Layer:
    """(batch, members, width) -> (batch, members, outputs): one linear head per member."""
    return keras.layers.EinsumDense(
        "bkd,kdo->bko",
        output_shape=(members, outputs),
        bias_axes="ko",
        dtype="float32",
        name=name,
    )


@keras.saving.register_keras_serializable(package="hypermodels")
class MemberAverage(keras.Model):
    """A functional model whose outputs are the members' predictions, ``(batch,
    members, outputs)``: trained on each member's loss, and called, evaluated and served
    as the members' mean, ``(batch, outputs)``.

    Sample weights of shape ``(batch, members)`` weigh each member's loss on each row
    in training (0: the member never learns from the row), and in evaluation pick, for
    each row, the member whose prediction is scored (one-hot rows: its out-of-fold
    prediction)."""

    #: `train_step` and `test_step` return what Keras's do (`hypermodels.step_functions`
    #: may loop them).
    keras_step_results = True

    def call(self, inputs: Any, training: bool | None = None, mask: Any = None) -> Any:
        scored = getattr(self, "_scored_members", None)
        if scored is not None and not training:  # `test_step` under one-hot weights
            return self._scored_call(inputs, scored)
        trained = getattr(self, "_trained_members", None)
        if trained is not None and training:  # `train_step` of fold models
            return self._trained_call(inputs, trained)
        members = super().call(inputs, training=training, mask=mask)
        return members if training else ops.mean(members, axis=1)

    def _networks(self) -> list[keras.Model]:
        """The members' own models (fold models), or [] where they share layers."""
        return [layer for layer in self.layers if isinstance(layer, keras.Model)]

    def _trained_call(self, inputs: Any, weights: Any) -> Any:
        """The members' predictions, ``(batch, members, outputs)``, each fold model run
        on the rows it trains on alone: the rows of its own fold would cost a 1/k share
        of its arithmetic for a loss of weight 0, and would enter its batch
        normalisation's statistics (but for the one row a batch without any of its rows
        runs). Rows a model skips get a constant, finite in every loss."""
        rows = ops.shape(weights)[0]
        predictions = []
        for index, network in enumerate(self._networks()):
            picked = tf.where(weights[:, index] > 0)  # (n, 1)
            # A batch of none of its rows (a short last batch) runs one row at weight 0:
            # batch normalisation of no rows is NaN.
            picked = tf.cond(
                tf.size(picked) > 0, lambda p=picked: p, lambda: tf.zeros((1, 1), "int64")
            )
            part = keras.tree.map_structure(lambda t, p=picked: tf.gather_nd(t, p), inputs)
            output = network(part, training=True)
            width = output.shape[-1]  # 1/width sums to 1 over softmax classes; 0.5 else
            fill = ops.full((rows, width), 1.0 / max(width, 2), output.dtype)
            predictions.append(tf.tensor_scatter_nd_update(fill, picked, output))
        return ops.stack(predictions, axis=1)

    def train_step(self, data: Any) -> Any:
        _, _, weights = keras.utils.unpack_x_y_sample_weight(data)
        if weights is None or len(weights.shape) != 2 or not self._networks() or self.jit_compile:
            return super().train_step(data)  # (XLA compiles no data-dependent shapes)
        # Read by `call` while this step is traced; the loss still weighs every row.
        self._trained_members = weights
        try:
            return super().train_step(data)
        finally:
            self._trained_members = None

    def _scored_call(self, inputs: Any, scored: Any) -> Any:
        """Each row's prediction by the member its one-hot weight names. Where the
        members are models of their own (fold models), a batch must name one member
        in every row, as `hypermodels.inputs` batches such rows, and only that model
        runs."""
        networks = self._networks()
        if len(networks) != scored.shape[1]:
            members = super().call(inputs, training=False)
            return ops.sum(members * ops.expand_dims(ops.cast(scored, members.dtype), -1), 1)
        check = tf.debugging.assert_equal(
            scored,
            ops.broadcast_to(scored[:1], ops.shape(scored)),
            message="a batch of one-hot member weights must name one member in every row",
        )
        with tf.control_dependencies([check]):
            member = ops.argmax(scored[0])
        branches = [lambda net=net: net(inputs, training=False) for net in networks]
        return ops.switch(member, branches)

    def test_step(self, data: Any) -> Any:
        x, y, weights = keras.utils.unpack_x_y_sample_weight(data)
        if weights is None or len(weights.shape) != 2:
            return super().test_step(data)
        # Read by `call` while this step is traced; the step itself scores unweighted.
        self._scored_members = weights
        try:
            return super().test_step((x, y))
        finally:
            self._scored_members = None

    def compute_output_spec(
        self, inputs: Any, training: bool | None = None, mask: Any = None
    ) -> Any:
        spec = super().compute_output_spec(inputs, training=training, mask=mask)
        if training:
            return spec
        return keras.KerasTensor((spec.shape[0], *spec.shape[2:]), dtype=spec.dtype)

    def compute_loss(
        self,
        x: Any = None,
        y: Any = None,
        y_pred: Any = None,
        sample_weight: Any = None,
        training: bool = True,
    ) -> Any:
        if y_pred is not None and len(y_pred.shape) == 3:  # members: one loss each
            members = y_pred.shape[1]
            y_pred = ops.reshape(y_pred, (-1, y_pred.shape[2]))
            # Each row's label once per member, in the order ``reshape`` lays them out.
            y = ops.repeat(y, members, axis=0)
            if sample_weight is not None and len(sample_weight.shape) == 2:  # per member
                sample_weight = ops.reshape(sample_weight, (-1,))
            elif sample_weight is not None:
                sample_weight = ops.repeat(sample_weight, members, axis=0)
        return super().compute_loss(
            x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training
        )

    def compute_metrics(self, x: Any, y: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        if len(y_pred.shape) == 3 and sample_weight is not None and len(sample_weight.shape) == 2:
            # Fold models in training: each row's mean over the models that train on it;
            # a row none trains on (the latest period of a time split) is left out, as
            # compiled metrics take no sample weight.
            trains = ops.cast(sample_weight > 0, y_pred.dtype)
            count = ops.sum(trains, axis=1, keepdims=True)
            y_pred = ops.sum(y_pred * trains[..., None], axis=1) / ops.maximum(count, 1.0)
            trained = count[:, 0] > 0
            y, y_pred, sample_weight = (
                tf.boolean_mask(y, trained),
                tf.boolean_mask(y_pred, trained),
                None,
            )
        elif len(y_pred.shape) == 3:  # a training step's members: metrics of their mean
            y_pred = ops.mean(y_pred, axis=1)
        if sample_weight is not None and len(sample_weight.shape) == 2:  # members' weights
            sample_weight = None
        return super().compute_metrics(x, y, y_pred, sample_weight=sample_weight)
