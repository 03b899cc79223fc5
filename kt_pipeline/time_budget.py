"""A wall-clock budget for a search (``tuner.time_budget``).

The budget counts from the start of the job and keeps a reserve for the export. Two
checks keep the command inside it:

* before a trial starts, its cost is predicted from the trials already run (a fixed
  cost per trial plus a cost per epoch, fitted by least squares on their seconds and
  epochs) and the trial does not start when the time left cannot fit it;
* during a trial, training stops at the end of the epoch that used the time up, so a
  trial larger than predicted (or the first one, with nothing to predict from) overruns
  by one epoch at most.

A trial that is not started stays queued in the oracle, as if the process had stopped
there: resuming the experiment with more time runs it.
"""

from __future__ import annotations

import time
from typing import Any

import keras
import keras_tuner
import numpy as np

__all__ = ["StopAtDeadline", "TimeBudget", "TimeBudgetSpent", "export_reserve"]

# Kept back for the export and its verification: a share of the budget, within bounds.
_RESERVE_SHARE = 0.05
_RESERVE_SECONDS = (10.0, 60.0)


def export_reserve(seconds: float) -> float:
    """Seconds of a budget kept for exporting and scoring the best model."""
    low, high = _RESERVE_SECONDS
    return min(max(low, _RESERVE_SHARE * seconds), high, seconds / 4)


class TimeBudgetSpent(keras_tuner.errors.FatalError):
    """The time left cannot fit the next trial. A `FatalError`, so KerasTuner's trial
    loop lets it through instead of recording the trial as failed."""


class StopAtDeadline(keras.callbacks.Callback):
    """Stops training at the end of the first epoch that ends past `deadline`
    (a `time.monotonic` value)."""

    def __init__(self, deadline: float) -> None:
        super().__init__()
        self.deadline = deadline

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if time.monotonic() >= self.deadline:
            self.model.stop_training = True


class TimeBudget:
    """The deadline of one job and the cost model of its trials.

    Args:
        seconds: The whole budget.
        started: When the job started (`time.monotonic`).
    """

    def __init__(self, seconds: float, *, started: float) -> None:
        self.seconds = float(seconds)
        self.deadline = started + self.seconds - export_reserve(self.seconds)
        self.spent = False  # set once the budget has stopped the search
        self._trials: list[tuple[int, float]] = []  # (epochs, seconds) of each trial run

    def left(self) -> float:
        """Seconds left for trials."""
        return self.deadline - time.monotonic()

    def record(self, *, epochs: int, seconds: float) -> None:
        """Adds a finished trial to the cost model."""
        if epochs > 0 and seconds > 0:
            self._trials.append((int(epochs), float(seconds)))

    def predict(self, epochs: int) -> float:
        """Predicted seconds of a trial of `epochs` epochs; 0 before any trial ran."""
        if not self._trials:
            return 0.0
        counts = np.array([e for e, _ in self._trials], dtype="float64")
        seconds = np.array([s for _, s in self._trials], dtype="float64")
        if len(set(counts)) < 2:  # one epoch count: no way to split the fixed cost off
            return float(np.median(seconds / counts)) * epochs
        per_epoch, fixed = np.polyfit(counts, seconds, 1)
        if per_epoch <= 0 or fixed < 0:  # noisy fit: fall back to the plain ratio
            return float(np.median(seconds / counts)) * epochs
        return float(fixed + per_epoch * epochs)

    def check(self, epochs: int) -> None:
        """Raises `TimeBudgetSpent` (and marks the budget spent) when a trial of
        `epochs` epochs cannot finish in the time left."""
        left = self.left()
        if left <= 0 or self.predict(epochs) > left:
            self.spent = True
            raise TimeBudgetSpent(
                f"time budget: {max(0.0, left):.0f} s left, a trial of {epochs} epochs "
                f"needs about {self.predict(epochs):.0f} s"
            )

    def callback(self) -> StopAtDeadline:
        return StopAtDeadline(self.deadline)
