"""Turns a strategy name into a `tf.distribute.Strategy`.

The tuner builds every trial's model inside the strategy's scope, so one trial can
train on all the devices of a host. Without GPUs, ``mirrored`` mirrors across the
logical CPU devices, which is how the tests run it.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from kt_pipeline.errors import UserInputError

__all__ = ["STRATEGIES", "make_strategy", "set_graph_optimizer"]

STRATEGIES = ("auto", "default", "one_device", "mirrored")


def _device_names(kind: str) -> list[str]:
    return [device.name for device in tf.config.list_logical_devices(kind)]


def make_strategy(name: str, *, devices: Sequence[str] = ()) -> tf.distribute.Strategy:
    """Builds the named strategy.

    Args:
        name: ``auto`` (MirroredStrategy over all GPUs when there are two or more,
            else the default strategy), ``default``, ``one_device`` or ``mirrored``.
        devices: Devices for ``one_device`` or ``mirrored``; empty means all GPUs,
            or all logical CPUs when there is no GPU.

    Raises:
        UserInputError: an unknown name, or a device that does not exist.
    """
    if name not in STRATEGIES:
        raise UserInputError(
            f"`runtime.strategy` must be one of {', '.join(STRATEGIES)}. Received: {name!r}"
        )
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
    chosen = list(devices) or gpus or _device_names("CPU")
    return tf.distribute.MirroredStrategy(chosen)


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
    enabled = bool(_device_names("GPU")) if mode == "auto" else mode == "on"
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": not enabled})
    return enabled
