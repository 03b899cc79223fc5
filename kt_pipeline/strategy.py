"""Turns a strategy name into a `tf.distribute.Strategy`, and sets up the devices.

The tuner builds every trial's model inside the strategy's scope, so one trial can
train on all the devices of a host (``mirrored``) or of several hosts
(``multi_worker_mirrored``, which reads the cluster from ``TF_CONFIG``). Without GPUs,
``mirrored`` mirrors across the logical CPU devices, which is how the tests run it.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence

import keras
import tensorflow as tf

from kt_pipeline._compat import patch_keras_multi_worker
from kt_pipeline.errors import UserInputError

__all__ = [
    "MIXED_PRECISION",
    "STRATEGIES",
    "configure_devices",
    "is_multi_worker",
    "is_multi_worker_chief",
    "make_strategy",
    "set_graph_optimizer",
]

STRATEGIES = ("auto", "default", "one_device", "mirrored", "multi_worker_mirrored")

#: ``none`` or a Keras mixed-precision policy: float16 wants a GPU, bfloat16 runs on CPUs.
MIXED_PRECISION = ("none", "mixed_float16", "mixed_bfloat16")


def _device_names(kind: str) -> list[str]:
    return [device.name for device in tf.config.list_logical_devices(kind)]


def configure_devices(*, memory_growth: bool = True, mixed_precision: str = "none") -> None:
    """Turns on GPU memory growth and sets Keras's global dtype policy.

    Memory growth lets several processes (parallel trials, TensorBoard) share a GPU
    instead of the first one reserving all of its memory. It can only be set before
    TensorFlow initialises its devices, so this runs before any strategy is built; on a
    process whose GPUs are already initialised the setting is left as it is.

    Raises:
        UserInputError: an unknown policy, or ``mixed_float16`` on a host without a GPU
            (float16 on CPUs is slower than float32; use ``mixed_bfloat16`` there).
    """
    if mixed_precision not in MIXED_PRECISION:
        raise UserInputError(
            f"`runtime.mixed_precision` must be one of {', '.join(MIXED_PRECISION)}. "
            f"Received: {mixed_precision!r}"
        )
    gpus = tf.config.list_physical_devices("GPU")
    if memory_growth:
        for gpu in gpus:
            # Devices already initialised keep their setting.
            with contextlib.suppress(RuntimeError):
                tf.config.experimental.set_memory_growth(gpu, True)
    if mixed_precision == "mixed_float16" and not gpus:
        raise UserInputError(
            "`runtime.mixed_precision` 'mixed_float16' needs a GPU and none is visible; "
            "use 'mixed_bfloat16' on CPUs. Received: 'mixed_float16'"
        )
    keras.mixed_precision.set_global_policy(
        "float32" if mixed_precision == "none" else mixed_precision
    )


def make_strategy(name: str, *, devices: Sequence[str] = ()) -> tf.distribute.Strategy:
    """Builds the named strategy.

    Args:
        name: ``auto`` (MirroredStrategy over all GPUs when there are two or more,
            else the default strategy), ``default``, ``one_device``, ``mirrored`` or
            ``multi_worker_mirrored`` (all local GPUs, or the CPU, of every task in
            ``TF_CONFIG``; create it before any other TensorFlow work in the process).
        devices: Devices for ``one_device`` or ``mirrored``; empty means all GPUs,
            or all logical CPUs when there is no GPU.

    Raises:
        UserInputError: an unknown name, a device that does not exist, devices named
            for a strategy that takes none, or ``multi_worker_mirrored`` without a valid
            ``TF_CONFIG``.
    """
    if name not in STRATEGIES:
        raise UserInputError(
            f"`runtime.strategy` must be one of {', '.join(STRATEGIES)}. Received: {name!r}"
        )
    if name == "multi_worker_mirrored":
        if devices:
            raise UserInputError(
                "`runtime.devices` must be empty with strategy 'multi_worker_mirrored' "
                f"(each task uses all its local GPUs). Received: {list(devices)}"
            )
        _check_tf_config()
        patch_keras_multi_worker()
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = _device_names("GPU")
    if name == "auto":
        return (
            tf.distribute.MirroredStrategy(gpus) if len(gpus) > 1 else tf.distribute.get_strategy()
        )
    if name == "default":
        return tf.distribute.get_strategy()

    available = gpus + _device_names("CPU")
    canonical = {_canonical(d): d for d in available}
    for device in devices:
        if _canonical(device) not in canonical:
            raise UserInputError(
                f"`runtime.devices` names a device that does not exist: "
                f"{device!r} (available: {', '.join(available)})"
            )
    if name == "one_device":
        device = devices[0] if devices else (gpus or available)[0]
        return tf.distribute.OneDeviceStrategy(device)
    chosen = tuple(_canonical(d) for d in devices) or tuple(
        _canonical(d) for d in gpus or _device_names("CPU")
    )
    # One MirroredStrategy per device set and process: a second instance over the same
    # devices reuses the first one's collective keys, and TensorFlow then mixes up the
    # two instances' all-reduces ("Shape mismatch in the collective instance").
    if chosen not in _MIRRORED:
        _MIRRORED[chosen] = tf.distribute.MirroredStrategy(list(chosen))
    return _MIRRORED[chosen]


_MIRRORED: dict[tuple[str, ...], tf.distribute.MirroredStrategy] = {}


def _check_tf_config() -> None:
    text = os.environ.get("TF_CONFIG", "")
    try:
        spec = json.loads(text)
        cluster, task = spec["cluster"], spec["task"]
        members = cluster[task["type"]]
        if not 0 <= int(task["index"]) < len(members):
            raise IndexError(task["index"])
    except (ValueError, TypeError, KeyError, IndexError) as error:
        raise UserInputError(
            "strategy 'multi_worker_mirrored' needs a TF_CONFIG with a cluster and this "
            f"process's task (type and index). Received: TF_CONFIG={text!r}"
        ) from error


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    """True for a strategy whose replicas span several processes."""
    return bool(getattr(strategy.extended, "_in_multi_worker_mode", lambda: False)())


def is_multi_worker_chief(strategy: tf.distribute.Strategy) -> bool:
    """False on the non-chief tasks of a multi-worker strategy, which compute like the
    chief but must not write the experiment's shared files."""
    return not is_multi_worker(strategy) or bool(strategy.extended.should_checkpoint)


def _canonical(device: str) -> str:
    """``/gpu:0``, ``GPU:0`` and ``/job:localhost/replica:0/task:0/device:GPU:0`` match."""
    spec = tf.DeviceSpec.from_string(device)
    return f"{(spec.device_type or '').upper()}:{spec.device_index or 0}"


def set_graph_optimizer(mode: str) -> bool:
    """Turns TensorFlow's graph optimizer (Grappler) on or off for functions traced
    from now on; ``auto`` means on with a GPU, off without.

    Every trial traces new training and evaluation functions, and on CPU Grappler's
    passes over each new graph took longer than the few seconds a short trial then
    saved (see ``benchmarks/trial_speed.py``).

    Returns:
        Whether the optimizer is on.
    """
    # Physical, not logical, devices: listing logical ones would initialise the runtime,
    # after which a multi-worker strategy can no longer configure its collectives.
    enabled = bool(tf.config.list_physical_devices("GPU")) if mode == "auto" else mode == "on"
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": not enabled})
    return enabled
