"""What the benchmarks' Keras baselines share: the model KerasTuner's getting-started
guide tunes, the adapters that let Optuna drive it, and the CPU a run was timed on."""

from __future__ import annotations

import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["FixedParams", "OptunaParams", "cpu_model", "docs_hypermodel"]


def docs_hypermodel(classes: int, *, task: str = "multiclass") -> Callable[[Any], Any]:
    """The model KerasTuner's getting-started guide tunes, for tabular inputs: a softmax
    head over `classes` classes, or one linear output for a regression `task`."""
    import keras

    def build(hp: Any) -> Any:
        model = keras.Sequential()
        for i in range(hp.Int("num_layers", 1, 3)):
            model.add(
                keras.layers.Dense(
                    hp.Int(f"units_{i}", min_value=32, max_value=512, step=32),
                    activation=hp.Choice("activation", ["relu", "tanh"]),
                )
            )
        if hp.Boolean("dropout"):
            model.add(keras.layers.Dropout(rate=0.25))
        learning_rate = hp.Float("lr", min_value=1e-4, max_value=1e-2, sampling="log")
        optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
        if task == "regression":
            model.add(keras.layers.Dense(1))
            model.compile(optimizer=optimizer, loss="mse")
        else:
            model.add(keras.layers.Dense(classes, activation="softmax"))
            model.compile(
                optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"]
            )
        return model

    return build


class FixedParams:
    """Replays chosen values through the getting-started hypermodel's ``hp`` calls."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values

    def Int(self, name: str, *_: Any, **__: Any) -> Any:
        return self.values[name]

    Float = Choice = Boolean = Int


class OptunaParams(FixedParams):
    """An Optuna trial behind the ``hp.Int/Float/Choice/Boolean`` calls of the hypermodel."""

    def __init__(self, trial: Any) -> None:
        super().__init__({})
        self.trial = trial

    def Int(self, name: str, min_value: int, max_value: int, step: int = 1) -> Any:
        return self.trial.suggest_int(name, min_value, max_value, step=step)

    def Float(self, name: str, min_value: float, max_value: float, sampling: str = "linear") -> Any:
        return self.trial.suggest_float(name, min_value, max_value, log=sampling == "log")

    def Choice(self, name: str, values: list[Any]) -> Any:
        return self.trial.suggest_categorical(name, values)

    def Boolean(self, name: str) -> Any:
        return self.trial.suggest_categorical(name, [False, True])


def cpu_model() -> str:
    """The CPU's model name, so that seconds from runs made on different hosts (run
    files accumulate over days) are not compared as if on one machine."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
