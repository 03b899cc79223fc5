"""Keras optimizers whose update runs as one TensorFlow kernel per variable.

Keras 3 writes each optimizer's update as a dozen backend-neutral ops per variable
(Adam: two moment updates, bias corrections, a square root, a division, ...). Every
trial of a search traces its train step anew, and on a CPU those ops cost twice: once
in tracing, where each `keras.ops` call goes through Keras's dtype and sparse-tensor
dispatch, and again at every step, where each op is a separate kernel launch on a
tiny tensor. TensorFlow ships fused kernels with the same arithmetic
(`ResourceApplyAdam`, `ResourceApplyKerasMomentum`, ...), which the Keras 2
optimizers used. The classes here are Keras's own optimizers (same arguments,
variables, checkpoints, weight decay, clipping, schedules and loss scaling) with only
`update_step` swapped for the fused kernel; `tests/test_fused_optimizers.py` checks
they move the weights as Keras's do. Adagrad (Keras puts epsilon inside the square
root, TensorFlow's kernel outside) and Nadam have no kernel with Keras's arithmetic:
theirs is written here in plain TensorFlow ops. Scalars that depend only on the step
(Adam's bias corrections, Nadam's momentum schedule) are computed once per step instead
of once per weight. For sparse gradients and options the kernels lack, Keras's own
update runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from kt_pipeline._compat import OptimizerHooks

__all__ = [
    "FUSED",
    "FusedAdagrad",
    "FusedAdam",
    "FusedAdamW",
    "FusedNadam",
    "FusedRMSprop",
    "FusedSGD",
]


def _handle(variable: Any) -> Any:
    # A Keras variable wraps a `tf.Variable` (per device under a strategy's update).
    return (variable.value if isinstance(variable, keras.Variable) else variable).handle


def _read(handle: Any, dtype: Any) -> Any:
    # Ordered after earlier writes to the same variable by the function's automatic
    # control dependencies.
    return tf.raw_ops.ReadVariableOp(resource=handle, dtype=dtype)


class _StepScalars:
    """Per-step scalars shared by every weight's update, one set per dtype (a plain
    holder: a dict attribute of an optimizer would be tracked for checkpoints)."""

    def __init__(self) -> None:
        self.by_dtype: dict[Any, tuple[Any, ...]] = {}


class _FusedUpdate(OptimizerHooks):
    """Keras's `update_step`, replaced by `_fused_update` where it applies.

    Sparse gradients (`tf.IndexedSlices`, which the dense kernels reject) and options
    `_fusable` says no to keep Keras's own update; otherwise the gradient and the
    learning rate arrive cast to the weight's dtype. Scalars that depend only on the
    step (bias corrections, momentum schedules) come from `_step_scalars`, computed at
    the first weight and shared by the others.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._scalars = _StepScalars()

    def _fusable(self) -> bool:
        return True

    def _compute_step_scalars(self, dtype: Any) -> tuple[Any, ...]:
        return ()

    def _step_scalars(self, dtype: Any) -> tuple[Any, ...]:
        if dtype not in self._scalars.by_dtype:
            self._scalars.by_dtype[dtype] = self._compute_step_scalars(dtype)
        return self._scalars.by_dtype[dtype]

    def update_all(self, run: Callable[[], None]) -> None:
        # Keras updates every weight from here (Nadam first advances its momentum
        # schedule); the scalars are dropped before and after, so no tensor outlives
        # the function being traced.
        self._scalars.by_dtype.clear()
        try:
            run()
        finally:
            self._scalars.by_dtype.clear()

    def _fused_update(self, grad: Any, variable: Any, lr: Any, dtype: Any) -> None:
        raise NotImplementedError

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        if isinstance(gradient, tf.IndexedSlices) or not self._fusable():
            super().update_step(gradient, variable, learning_rate)  # type: ignore[misc]
            return
        dtype = tf.as_dtype(variable.dtype)
        self._fused_update(tf.cast(gradient, dtype), variable, tf.cast(learning_rate, dtype), dtype)


class _FusedAdamUpdate(_FusedUpdate):
    """The update of Adam and AdamW (whose decay Keras applies before it)."""

    beta_1: float
    beta_2: float
    epsilon: float
    amsgrad: bool
    iterations: Any

    def _fusable(self) -> bool:
        return not self.amsgrad

    def _compute_step_scalars(self, dtype: Any) -> tuple[Any, ...]:
        step = tf.cast(self.iterations + 1, dtype)
        beta_1 = tf.cast(self.beta_1, dtype)
        beta_2 = tf.cast(self.beta_2, dtype)
        return beta_1, beta_2, tf.pow(beta_1, step), tf.pow(beta_2, step)

    def _fused_update(self, grad: Any, variable: Any, lr: Any, dtype: Any) -> None:
        beta_1, beta_2, beta_1_power, beta_2_power = self._step_scalars(dtype)
        tf.raw_ops.ResourceApplyAdam(
            var=_handle(variable),
            m=_handle(self.slot("momentums", variable)),
            v=_handle(self.slot("velocities", variable)),
            beta1_power=beta_1_power,
            beta2_power=beta_2_power,
            lr=lr,
            beta1=beta_1,
            beta2=beta_2,
            epsilon=tf.cast(self.epsilon, dtype),
            grad=grad,
        )


@keras.saving.register_keras_serializable(package="hypermodels")
class FusedAdam(_FusedAdamUpdate, keras.optimizers.Adam):
    """`keras.optimizers.Adam` updating with `ResourceApplyAdam`."""


@keras.saving.register_keras_serializable(package="hypermodels")
class FusedAdamW(_FusedAdamUpdate, keras.optimizers.AdamW):
    """`keras.optimizers.AdamW` updating with `ResourceApplyAdam` (Keras applies the
    decoupled weight decay before the update, as for `AdamW` itself)."""


@keras.saving.register_keras_serializable(package="hypermodels")
class FusedSGD(_FusedUpdate, keras.optimizers.SGD):
    """`keras.optimizers.SGD` updating with `ResourceApplyGradientDescent`, or with
    `ResourceApplyKerasMomentum` (the kernel written for Keras's momentum and
    Nesterov arithmetic) when momentum is on."""

    def _fused_update(self, grad: Any, variable: Any, lr: Any, dtype: Any) -> None:
        if self.momentum == 0:
            tf.raw_ops.ResourceApplyGradientDescent(var=_handle(variable), alpha=lr, delta=grad)
            return
        tf.raw_ops.ResourceApplyKerasMomentum(
            var=_handle(variable),
            accum=_handle(self.slot("momentums", variable)),
            lr=lr,
            grad=grad,
            momentum=tf.cast(self.momentum, dtype),
            use_nesterov=bool(self.nesterov),
        )


@keras.saving.register_keras_serializable(package="hypermodels")
class FusedRMSprop(_FusedUpdate, keras.optimizers.RMSprop):
    """`keras.optimizers.RMSprop` updating with `ResourceApplyRMSProp` (centered
    RMSprop keeps Keras's update).

    The kernel always keeps a momentum accumulator; with ``momentum=0`` it is
    overwritten every step, so this optimizer has one more variable per weight than
    Keras's RMSprop (``momentum`` slots, as RMSprop with momentum has).
    """

    def build(self, var_list: list[Any]) -> None:
        if self.built:
            return
        super().build(var_list)
        if not self.momentum > 0 and not self.centered:
            self.add_slots("momentums", var_list, "momentum")

    def _fusable(self) -> bool:
        return not self.centered

    def _fused_update(self, grad: Any, variable: Any, lr: Any, dtype: Any) -> None:
        tf.raw_ops.ResourceApplyRMSProp(
            var=_handle(variable),
            ms=_handle(self.slot("velocities", variable)),
            mom=_handle(self.slot("momentums", variable)),
            lr=lr,
            rho=tf.cast(self.rho, dtype),
            momentum=tf.cast(self.momentum, dtype),
            epsilon=tf.cast(self.epsilon, dtype),
            grad=grad,
        )


@keras.saving.register_keras_serializable(package="hypermodels")
class FusedAdagrad(_FusedUpdate, keras.optimizers.Adagrad):
    """`keras.optimizers.Adagrad` with its update in plain TensorFlow ops."""

    def _fused_update(self, grad: Any, variable: Any, lr: Any, dtype: Any) -> None:
        accumulator = _handle(self.slot("accumulators", variable))
        tf.raw_ops.AssignAddVariableOp(resource=accumulator, value=tf.square(grad))
        step = lr * grad / tf.sqrt(_read(accumulator, dtype) + self.epsilon)
        tf.raw_ops.AssignSubVariableOp(resource=_handle(variable), value=step)


@keras.saving.register_keras_serializable(package="hypermodels")
class FusedNadam(_FusedUpdate, keras.optimizers.Nadam):
    """`keras.optimizers.Nadam` with its update in plain TensorFlow ops and the
    momentum schedule and bias corrections computed once per step."""

    def _compute_step_scalars(self, dtype: Any) -> tuple[Any, ...]:
        local_step = tf.cast(self.iterations + 1, dtype)
        beta_1 = tf.cast(self.beta_1, dtype)
        decay = tf.cast(0.96, dtype)
        u_t = beta_1 * (1.0 - 0.5 * tf.pow(decay, local_step))
        u_t_1 = beta_1 * (1.0 - 0.5 * tf.pow(decay, local_step + 1.0))
        u_product_t = tf.cast(self.state("u_product"), dtype)
        return (
            u_t_1 / (1.0 - u_product_t * u_t_1),  # multiplies m in m_hat
            (1.0 - u_t) / (1.0 - u_product_t),  # multiplies the gradient in m_hat
            1.0 - tf.pow(tf.cast(self.beta_2, dtype), local_step),  # divides v
        )

    def _fused_update(self, grad: Any, variable: Any, lr: Any, dtype: Any) -> None:
        momentum_scale, gradient_scale, velocity_correction = self._step_scalars(dtype)
        m = _handle(self.slot("momentums", variable))
        v = _handle(self.slot("velocities", variable))
        tf.raw_ops.AssignAddVariableOp(
            resource=m, value=(grad - _read(m, dtype)) * (1.0 - tf.cast(self.beta_1, dtype))
        )
        tf.raw_ops.AssignAddVariableOp(
            resource=v,
            value=(tf.square(grad) - _read(v, dtype)) * (1.0 - tf.cast(self.beta_2, dtype)),
        )
        m_hat = momentum_scale * _read(m, dtype) + gradient_scale * grad
        v_hat = _read(v, dtype) / velocity_correction
        step = m_hat * lr / (tf.sqrt(v_hat) + self.epsilon)
        tf.raw_ops.AssignSubVariableOp(resource=_handle(variable), value=step)


#: Optimizer name (as in `hypermodels.optimizers.OPTIMIZERS`) to its fused class.
FUSED: dict[str, type[keras.optimizers.Optimizer]] = {
    "adam": FusedAdam,
    "adamw": FusedAdamW,
    "sgd": FusedSGD,
    "rmsprop": FusedRMSprop,
    "adagrad": FusedAdagrad,
    "nadam": FusedNadam,
}
