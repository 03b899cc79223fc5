"""What one KerasTuner hyperparameter can take, read from its type in one place: the
plan, the report, TensorBoard's HParams, BOHB's densities and the first trial all
describe a hyperparameter by its `Domain` instead of asking KerasTuner's types again."""

from __future__ import annotations

import dataclasses
from typing import Any

import keras_tuner

__all__ = ["BOOLEAN", "CHOICE", "FIXED", "FLOAT", "INT", "Domain", "domain"]

FIXED, BOOLEAN, CHOICE, INT, FLOAT = "fixed", "boolean", "choice", "int", "float"


@dataclasses.dataclass(frozen=True)
class Domain:
    """One hyperparameter's values: `choices` for a fixed, boolean or choice one, the
    range (`low`, `high`, `step`, `sampling`) for an int or float one."""

    kind: str
    choices: tuple[Any, ...] = ()
    low: Any = None
    high: Any = None
    step: Any = None
    sampling: str = "linear"

    @property
    def log(self) -> bool:
        return self.sampling == "log"

    @property
    def discrete(self) -> bool:
        """A fixed, boolean or choice hyperparameter: its values are listed."""
        return self.kind in (FIXED, BOOLEAN, CHOICE)

    @property
    def numeric(self) -> bool:
        """A range, or a choice among numbers only (booleans are not numbers here)."""
        if self.kind in (INT, FLOAT):
            return True
        return self.kind == CHOICE and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in self.choices
        )

    def values(self) -> list[Any] | None:
        """Every value it can take (an int range stepped by its step, or 1), or None
        for a float range."""
        if self.discrete:
            return list(self.choices)
        if self.kind == INT:
            return list(range(self.low, self.high + 1, self.step or 1))
        return None


def domain(hp: Any) -> Domain:
    """The `Domain` of a KerasTuner hyperparameter (``Fixed``, ``Boolean``, ``Choice``,
    ``Int`` or ``Float``)."""
    types = keras_tuner.engine.hyperparameters
    if isinstance(hp, types.Fixed):
        return Domain(FIXED, (hp.value,))
    if isinstance(hp, types.Boolean):
        return Domain(BOOLEAN, (False, True))
    if isinstance(hp, types.Choice):
        return Domain(CHOICE, tuple(hp.values))
    kind = INT if isinstance(hp, types.Int) else FLOAT
    if not isinstance(hp, types.Int | types.Float):
        raise TypeError(f"not a KerasTuner hyperparameter: {hp!r}")
    sampling = hp.sampling or "linear"
    return Domain(kind, low=hp.min_value, high=hp.max_value, step=hp.step, sampling=sampling)
