"""Live progress of a search: one log line per finished trial and a progress bar.

The line reads ``trial 7/30 | val_accuracy 0.9620 | best 0.9710 (trial 0004) | 12.3 s |
eta 4 min`` and goes through Python's `logging` (logger ``kt_pipeline``), so callers
choose where it ends up. The bar is tqdm's (`tqdm.auto`: a widget in Jupyter), drawn
only on a terminal or in a notebook; it steps aside for each line, so the two never
interleave.
"""

from __future__ import annotations

import logging
import math
import sys
from typing import Any, TextIO

import keras_tuner
from tqdm.auto import tqdm

from kt_pipeline import parallel
from kt_pipeline._compat import hyperband_brackets

__all__ = ["SearchProgress", "format_eta", "planned_trials"]

log = logging.getLogger("kt_pipeline")


def planned_trials(oracle: keras_tuner.Oracle) -> int | None:
    """How many trials the search will run: ``max_trials`` when set, else the size of
    Hyperband's schedule (an upper bound: KerasTuner skips repeated values); None when
    unknown."""
    if oracle.max_trials:
        return int(oracle.max_trials)
    if isinstance(oracle, keras_tuner.oracles.HyperbandOracle) and math.isfinite(
        oracle.hyperband_iterations
    ):
        per_iteration = sum(
            size for _, rounds in hyperband_brackets(oracle) for size, _, _ in rounds
        )
        return int(per_iteration * oracle.hyperband_iterations)
    return None


def format_eta(seconds: float) -> str:
    """``45 s``, ``4 min``, ``2.5 h``: coarse on purpose, it is an estimate."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class SearchProgress:
    """Reports each finished trial; draws a bar for the whole search on a terminal."""

    def __init__(
        self, oracle: keras_tuner.Oracle, *, stream: TextIO | None = None, bar: bool = True
    ) -> None:
        """`bar`: draw the bar where it can be seen; off for a tuner that is only read
        back (an export, ``best_models``), which runs no search."""
        self.oracle = oracle
        self.total = planned_trials(oracle)
        self.stream = stream if stream is not None else sys.stderr
        self.bar = bar and self.total is not None and (_isatty(self.stream) or _in_notebook())
        self._bar = tqdm(
            total=self.total,
            initial=len(getattr(oracle, "end_order", None) or ()),
            unit="trial",
            file=self.stream,
            disable=not self.bar,
            dynamic_ncols=True,
        )
        self._seconds: list[float] = []

    def trial_finished(self, trial: Any, seconds: float | None) -> str:
        """Logs the line for a trial the oracle has just ended and returns it."""
        oracle = self.oracle
        # A parallel worker's oracle is KerasTuner's OracleClient, which cannot say
        # how many trials have ended across the workers.
        ended = getattr(oracle, "end_order", None) if not parallel.is_worker() else None
        done = len(ended) if ended is not None else None
        if seconds is not None:
            self._seconds.append(seconds)
        total = f"/{self.total}" if self.total else ""
        if trial.score is not None:
            result = f"{oracle.objective.name} {trial.score:.4f}"
        else:
            result = f"{trial.status} (trial {trial.trial_id})"
        best = [t for t in oracle.get_best_trials(1) if t.score is not None]
        best_text = f"{best[0].score:.4f} (trial {best[0].trial_id})" if best else "n/a"
        parts = [
            f"trial {'?' if done is None else done}{total}",
            result,
            f"best {best_text}",
            "? s" if seconds is None else f"{seconds:.1f} s",
        ]
        if self.total and self._seconds and done is not None:
            remaining = max(self.total - done, 0)
            parts.append(f"eta {format_eta(remaining * sum(self._seconds) / len(self._seconds))}")
        line = " | ".join(parts)
        with tqdm.external_write_mode(file=self.stream):  # the bar steps aside for the line
            log.info("%s", line)
        if done is not None:
            self._bar.update(done - self._bar.n)
        return line

    def close(self) -> None:
        """Ends the bar, so later output starts on a fresh line."""
        self._bar.close()


def _in_notebook() -> bool:
    """Running inside a Jupyter kernel, where `tqdm.auto` draws a widget whatever the
    stream. (Having imported ``ipykernel``, as notebook runners do, is not enough.)"""
    get_ipython = getattr(sys.modules.get("IPython"), "get_ipython", None)
    shell = get_ipython() if get_ipython is not None else None
    return type(shell).__name__ == "ZMQInteractiveShell"


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
