"""The compiled functions `fit` calls for training and validation steps, made cheap to
trace.

Every trial of a search traces its new model's train and test functions, and once the
epochs are fast (`hypermodels.inputs`, `hypermodels.fused_optimizers`) that tracing is
most of a short trial on a CPU (``benchmarks/trial_speed.py``). Two things in Keras 3's
TensorFlow trainer make it cost more than the step itself:

* Without an explicit distribution strategy, Keras creates the compiled metrics' and
  loss's variables inside the first traced step; `tf.function`, having seen variables
  created, then traces the whole step a second time. `prepare_step_functions` builds
  them first, from the batch's shapes.
* Keras's multi-step function nests the step in its own `tf.function`, called inside a
  conditional inside a `tf.while_loop` that carries the step's outputs as an
  `Optional`: the step's graph, the branch around it and the call each take every
  captured variable as an input, and each is built and instantiated separately. The
  functions here run the same steps in a `tf.while_loop` whose body is the step, and
  read the metrics once after the loop. Keras's step returns exactly those metric
  results, so `fit` sees the same logs (``tests/test_step_functions.py``).

In ``benchmarks/trial_speed.py`` the first took the pipeline's whole trials from 1.79x
to 2.11x faster than plain `fit`, and the second to 2.58x (separate runs), with the
same trained models.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from kt_pipeline._compat import symbolic_build

__all__ = ["prepare_step_functions"]


def prepare_step_functions(model: keras.Model, *, element_spec: Any) -> None:
    """Builds the model's training state and, where it applies, sets its train and test
    functions to single-trace step loops.

    The loops apply to a model compiled without XLA, not run eagerly, on one replica,
    with Keras's own `train_step` and `test_step` (or steps that return what
    Keras's do, as a class with ``keras_step_results`` says), whose functions are not
    made yet; otherwise Keras's functions are left to be made as usual.

    Args:
        model: A compiled model about to be fitted.
        element_spec: The training dataset's ``element_spec``: ``(features, labels)``.
    """
    _build_training_state(model, element_spec)
    if (
        model.run_eagerly
        or model.jit_compile
        or model.distribute_strategy.num_replicas_in_sync != 1
        or (
            (
                type(model).train_step is not keras.Model.train_step
                or type(model).test_step is not keras.Model.test_step
            )
            and not getattr(type(model), "keras_step_results", False)
        )
    ):
        return
    if model.train_function is None:
        model.train_function = _step_loop(model, model.train_step)
    if model.test_function is None:
        model.test_function = _step_loop(model, model.test_step)


def _build_training_state(model: keras.Model, element_spec: Any) -> None:
    # Keras's own build, from symbolic tensors of the batch's shapes (it also builds
    # the optimizer, if the tuner has not).
    batch = keras.tree.map_structure(
        lambda spec: keras.KerasTensor(spec.shape, spec.dtype.name), element_spec
    )
    with model.distribute_strategy.scope():
        symbolic_build(model, batch)


def _step_loop(model: keras.Model, step: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Up to ``model.steps_per_execution`` steps per call, as Keras's function runs:
    fewer when the iterator ends, and `StopIteration` when it had nothing left."""
    strategy = model.distribute_strategy

    @tf.function(autograph=False, reduce_retracing=True)
    def run(iterator: Any) -> tuple[tf.Tensor, dict[str, Any]]:
        steps_per_execution = model.steps_per_execution

        def more(done: tf.Tensor, batch: Any) -> tf.Tensor:
            return tf.logical_and(done < steps_per_execution, batch.has_value())

        def one_step(done: tf.Tensor, batch: Any) -> tuple[tf.Tensor, Any]:
            strategy.run(step, args=(batch.get_value(),))
            # No batch is taken past this call's last step (it would be lost).
            following = tf.cond(
                done + 1 < steps_per_execution, iterator.get_next_as_optional, lambda: batch
            )
            return done + 1, following

        done, _ = tf.while_loop(more, one_step, [tf.constant(0), iterator.get_next_as_optional()])
        # Automatic control dependencies order these reads after the loop's updates.
        return done, model.get_metrics_result()

    def function(iterator: Any) -> dict[str, Any]:
        done, logs = run(iterator)
        if not int(done):
            raise StopIteration
        return logs

    return function
