"""What the benchmarks' Keras baselines share: the model KerasTuner's getting-started
guide tunes, the adapters that let Optuna drive it, best-so-far validation curves, and
the CPU a run was timed on."""

from __future__ import annotations

import json
import math
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

__all__ = [
    "FixedParams",
    "OptunaParams",
    "best_at",
    "best_so_far",
    "cpu_model",
    "docs_hypermodel",
    "fit_log",
    "trial_records",
]


def docs_hypermodel(classes: int, *, task: str = "multiclass") -> Callable[[Any], Any]:
    """The model KerasTuner's getting-started guide tunes, for tabular inputs: a softmax
    head over `classes` classes, one linear output for a regression `task`, or for a
    ``binary`` one a sigmoid output with an ``auc`` metric to tune on."""
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
        elif task == "binary":
            model.add(keras.layers.Dense(1, activation="sigmoid"))
            model.compile(
                optimizer=optimizer,
                loss="binary_crossentropy",
                metrics=["accuracy", keras.metrics.AUC(name="auc")],
            )
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


def trial_records(directory: Path, *, sign: float = 1.0) -> list[dict[str, Any]]:
    """Every trial of a pipeline experiment in the order it ended: the epochs it trained
    (its ``stats.json``) and its score times `sign` (-1 for a minimised objective, so
    that higher is better; None unless completed)."""
    records = []
    for stats_file in Path(directory).rglob("stats.json"):
        stats = json.loads(stats_file.read_text(encoding="utf-8"))
        trial = json.loads(stats_file.with_name("trial.json").read_text(encoding="utf-8"))
        completed = trial["status"] == "COMPLETED" and trial["score"] is not None
        records.append(
            {
                "order": (stats["finished_at"], trial["trial_id"]),
                "epochs": stats["epochs"],
                "score": sign * trial["score"] if completed else None,
            }
        )
    records.sort(key=lambda record: record["order"])
    return records


def best_so_far(records: list[dict[str, Any]]) -> list[list[float]]:
    """Best-so-far validation score after each trial: [[epochs spent, best], ...]."""
    spent, best, points = 0, -math.inf, []
    for record in records:
        spent += record["epochs"]
        if record["score"] is not None:
            best = max(best, record["score"])
        if best > -math.inf:
            points.append([spent, round(best, 5)])
    return points


def best_at(curve: list[list[float]], epochs: float) -> float | None:
    """Best validation score reached with at most `epochs` spent."""
    reached = [best for spent, best in curve if spent <= epochs]
    return reached[-1] if reached else None


def fit_log(objective: str, *, sign: float = 1.0) -> Any:
    """A Keras callback class that appends one record per ``fit`` (epochs trained, best
    `objective` times `sign`, so that higher is better) to its class-level ``records``:
    KerasTuner deep-copies the callbacks of every trial, and a class attribute survives
    the copy. (KerasTuner's own trial history holds one entry per trial, not per epoch.)"""
    import keras

    class FitLog(keras.callbacks.Callback):
        records: ClassVar[list[dict[str, Any]]] = []

        def on_train_begin(self, logs: Any = None) -> None:
            FitLog.records.append({"epochs": 0, "score": None})

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            record, score = FitLog.records[-1], sign * float((logs or {})[objective])
            record["epochs"] += 1
            record["score"] = score if record["score"] is None else max(record["score"], score)

    return FitLog
