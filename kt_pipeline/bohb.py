"""BOHB: Hyperband's brackets with model-based proposals (Falkner et al., 2018).

Hyperband decides *how long* each configuration trains; BOHB changes only *which*
configurations enter the first round of a bracket. Instead of sampling them uniformly,
it fits a tree-structured Parzen estimator (TPE) on the completed trials of the largest
budget (``tuner/epochs``) that has enough of them: one kernel density estimate over the
best ``gamma`` share of those trials, l(x), one over the rest, g(x). New configurations
are drawn from a widened l(x) and the one with the largest l(x) / g(x) is proposed.
Until a budget has ``min_points_in_model`` completed trials, and for a
``random_fraction`` of proposals always, it samples at random as Hyperband does, which
keeps the search from collapsing onto a wrong model.

It is built as a `keras_tuner.oracles.HyperbandOracle` subclass that replaces only the
sampling of new values (`propose`, the hook `_compat.OracleHooks` gives it there),
so brackets, promotions, checkpoint reuse, resume (`get_state`/`set_state`, and the
model is refitted from the saved trials), chief/worker search and TensorBoard logging
all stay KerasTuner's.

Each hyperparameter is one dimension of the unit cube (KerasTuner's
`value_to_prob`/`prob_to_value`, as its Bayesian oracle does). The densities are
products of one-dimensional Gaussian kernels with Scott's bandwidth, fitted per
dimension on the trials where that hyperparameter was active, so conditional
hyperparameters (an optimizer's own settings) need no imputation. Choices and
integers are modelled on their bin centres; rounding back through `prob_to_value`
makes the kernel a smoothed categorical one.

The densities come from one of two models (``model``): ``"kde"``, the one-dimensional
kernels below (BOHB's own), or ``"optuna_tpe"``, Optuna's maintained `TPESampler`
(multivariate, grouped for conditional hyperparameters), refitted from the same budget's
trials at each proposal, so only the choice of budget and the random share stay ours.

Where it is expected to help, and where not: with many cheap low-budget trials whose
ranking carries over to the full budget (learning rate, width, depth on tabular data),
the later brackets start from good regions and it finds a good model sooner than
Hyperband at the same budget. When low-budget rankings mislead (strong regularisation
that pays off only late) or the space has few dimensions that a random sample covers
anyway, it behaves like Hyperband; with a tiny budget (fewer completed trials than
``min_points_in_model`` on any budget) it *is* Hyperband.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import keras_tuner
import numpy as np

from hypermodels.domains import FIXED, INT, domain
from kt_pipeline._compat import OracleHooks

__all__ = ["BOHB", "MODELS", "BOHBOracle"]

_MIN_BANDWIDTH = 1e-3
#: The density models a `BOHBOracle` can propose from.
MODELS = ("kde", "optuna_tpe")


class BOHBOracle(OracleHooks, keras_tuner.oracles.HyperbandOracle):
    """A `HyperbandOracle` whose first-round configurations come from a TPE model.

    Args:
        objective: As for `HyperbandOracle`.
        max_epochs: Epochs of the longest round.
        factor: Hyperband's reduction factor.
        hyperband_iterations: Times the whole schedule runs.
        random_fraction: Share of proposals sampled at random even once a model exists
            (BOHB's default 1/3).
        gamma: Share of a budget's trials that form the "good" density (0.15 in BOHB).
        min_points_in_model: Completed trials a budget needs before it is modelled;
            0 means the number of hyperparameters + 1, as in BOHB.
        num_samples: Candidates drawn from the good density per proposal.
        bandwidth_factor: Widening of the good density when drawing candidates.
        model: ``"kde"`` (BOHB's per-dimension kernels) or ``"optuna_tpe"`` (Optuna's
            multivariate `TPESampler` on the same trials).
        **kwargs: The other `HyperbandOracle` arguments (seed, hyperparameters, ...).
    """

    def __init__(
        self,
        objective: Any = None,
        max_epochs: int = 100,
        factor: int = 3,
        hyperband_iterations: int = 1,
        *,
        random_fraction: float = 1 / 3,
        gamma: float = 0.15,
        min_points_in_model: int = 0,
        num_samples: int = 64,
        bandwidth_factor: float = 3.0,
        model: str = "kde",
        **kwargs: Any,
    ) -> None:
        if model not in MODELS:
            raise ValueError(f"Argument `model` must be one of {MODELS}. Received: {model!r}")
        if not 0 <= random_fraction <= 1:
            raise ValueError(
                f"Argument `random_fraction` must be in [0, 1]. Received: {random_fraction}"
            )
        if not 0 < gamma < 1:
            raise ValueError(f"Argument `gamma` must be in (0, 1). Received: gamma={gamma}")
        self.random_fraction = float(random_fraction)
        self.gamma = float(gamma)
        self.min_points_in_model = int(min_points_in_model)
        self.num_samples = int(num_samples)
        self.bandwidth_factor = float(bandwidth_factor)
        self.model = model
        #: How each proposal was made ("model" or "random"), for tests and logs.
        self.proposals: list[str] = []
        super().__init__(
            objective,
            max_epochs=max_epochs,
            factor=factor,
            hyperband_iterations=hyperband_iterations,
            **kwargs,
        )

    # Sampling ---------------------------------------------------------------------

    def _rng(self) -> np.random.Generator:
        # Derived from the seed and the oracle's saved counter: a resumed search draws
        # what an uninterrupted one would have drawn.
        return np.random.default_rng([int(self.seed or 0), self.next_seed()])

    def propose(self, random: Callable[[], dict[str, Any] | None]) -> dict[str, Any] | None:
        rng = self._rng()
        trials = self._modelled_trials()
        if trials is None or rng.random() < self.random_fraction:
            self.proposals.append("random")
            return random()
        if self.model == "optuna_tpe":
            best = self._tpe_proposal(trials, seed=int(rng.integers(2**31)))
        else:
            best = self._kde_proposal(trials, rng)
        if best is None:  # every candidate was tried already
            self.proposals.append("random")
            return random()
        self.proposals.append("model")
        return best

    def _modelled_trials(self) -> list[keras_tuner.engine.trial.Trial] | None:
        """The completed trials of the largest budget with enough of them, best first,
        or None while no budget has enough."""
        by_budget: dict[int, list[keras_tuner.engine.trial.Trial]] = {}
        for trial in self.trials.values():
            if trial.status == "COMPLETED" and trial.score is not None:
                budget = int(trial.hyperparameters.values.get("tuner/epochs", 0))
                by_budget.setdefault(budget, []).append(trial)
        needed = self.min_points_in_model or len(self._tunable()) + 1
        usable = [b for b, trials in by_budget.items() if len(trials) >= max(needed, 3)]
        if not usable:
            return None
        return sorted(
            by_budget[max(usable)],
            key=lambda t: t.score,
            reverse=self.objective.direction == "max",
        )

    def _kde_proposal(
        self, trials: list[keras_tuner.engine.trial.Trial], rng: np.random.Generator
    ) -> dict[str, Any] | None:
        """The best of `num_samples` draws from the widened good density, by l/g."""
        n_good = max(1, math.ceil(self.gamma * len(trials)))
        # BOHB keeps at least a few points in each density.
        n_good = min(max(n_good, 2), len(trials) - 1)
        points = [self._to_unit(t.hyperparameters.values) for t in trials]
        good, bad = points[:n_good], points[n_good:]
        best: dict[str, Any] | None = None
        best_score = -math.inf
        for _ in range(self.num_samples):
            values, score = self._sample_candidate(rng, good, bad)
            if score > best_score and not self.tried(values):
                best, best_score = values, score
        return best

    def _tpe_proposal(
        self, trials: list[keras_tuner.engine.trial.Trial], *, seed: int
    ) -> dict[str, Any] | None:
        """Optuna's multivariate TPE, told the budget's trials, asked for one more."""
        import optuna  # only this model needs it

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        distributions = {hp.name: _distribution(hp) for hp in self._tunable()}
        with warnings.catch_warnings():  # `group` is marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.TPESampler(
                seed=seed, n_startup_trials=0, multivariate=True, group=True
            )
        study = optuna.create_study(
            direction="maximize" if self.objective.direction == "max" else "minimize",
            sampler=sampler,
        )
        for trial in trials:
            values = trial.hyperparameters.values
            params = {name: values[name] for name in distributions if name in values}
            study.add_trial(
                optuna.trial.create_trial(
                    params=params,
                    distributions={name: distributions[name] for name in params},
                    value=float(trial.score),
                )
            )
        asked = study.ask(distributions).params
        hps = keras_tuner.HyperParameters()
        for hp in self.hyperparameters.space:
            hps.merge([hp])
            if not hps.is_active(hp):
                continue
            if hp.name in asked:  # snapped to KerasTuner's grid (steps, choices)
                hps.values[hp.name] = hp.prob_to_value(hp.value_to_prob(asked[hp.name]))
            else:
                hps.values[hp.name] = hp.random_sample(self.seed_counter())
        return None if self.tried(hps.values) else hps.values

    def _tunable(self) -> list[Any]:
        return [
            hp
            for hp in self.hyperparameters.space
            if domain(hp).kind != FIXED and not hp.name.startswith("tuner/")
        ]

    def _to_unit(self, values: dict[str, Any]) -> dict[str, float]:
        return {
            hp.name: float(hp.value_to_prob(values[hp.name]))
            for hp in self._tunable()
            if hp.name in values
        }

    def _sample_candidate(
        self,
        rng: np.random.Generator,
        good: list[dict[str, float]],
        bad: list[dict[str, float]],
    ) -> tuple[dict[str, Any], float]:
        """One configuration drawn from the widened good density, and its log l/g."""
        hps = keras_tuner.HyperParameters()
        score = 0.0
        for hp in self.hyperparameters.space:
            hps.merge([hp])
            if not hps.is_active(hp):
                continue
            if domain(hp).kind == FIXED or hp.name.startswith("tuner/"):
                hps.values[hp.name] = hp.value
                continue
            good_x = np.array([p[hp.name] for p in good if hp.name in p])
            bad_x = np.array([p[hp.name] for p in bad if hp.name in p])
            if len(good_x) == 0:
                prob = float(rng.random())
            else:
                width = self.bandwidth_factor * _bandwidth(good_x)
                centre = good_x[rng.integers(len(good_x))]
                prob = float(np.clip(rng.normal(centre, width), 0.0, 1.0))
                score += math.log(_density(prob, good_x) + 1e-12)
                if len(bad_x):
                    score -= math.log(_density(prob, bad_x) + 1e-12)
            # Round through the value so l/g scores what will actually be tried.
            value = hp.prob_to_value(min(max(prob, 1e-9), 1 - 1e-9))
            hps.values[hp.name] = value
        return hps.values, score

    # State ------------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        state: dict[str, Any] = super().get_state()
        state["bohb"] = {
            "random_fraction": self.random_fraction,
            "gamma": self.gamma,
            "min_points_in_model": self.min_points_in_model,
            "num_samples": self.num_samples,
            "bandwidth_factor": self.bandwidth_factor,
            "model": self.model,
            "proposals": self.proposals,
        }
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        bohb = state.get("bohb", {})
        self.random_fraction = bohb.get("random_fraction", self.random_fraction)
        self.gamma = bohb.get("gamma", self.gamma)
        self.min_points_in_model = bohb.get("min_points_in_model", self.min_points_in_model)
        self.num_samples = bohb.get("num_samples", self.num_samples)
        self.bandwidth_factor = bohb.get("bandwidth_factor", self.bandwidth_factor)
        self.model = bohb.get("model", self.model)
        self.proposals = list(bohb.get("proposals", []))


def _distribution(hp: Any) -> Any:
    """The Optuna distribution of one KerasTuner hyperparameter."""
    import optuna

    values = domain(hp)
    if values.discrete:
        return optuna.distributions.CategoricalDistribution(list(values.choices))
    log = values.log
    if values.kind == INT:
        int_step = 1 if log or not values.step else int(values.step)
        return optuna.distributions.IntDistribution(values.low, values.high, log=log, step=int_step)
    float_step = None if log or not values.step else float(values.step)
    return optuna.distributions.FloatDistribution(
        float(values.low), float(values.high), log=log, step=float_step
    )


def _bandwidth(x: np.ndarray) -> float:
    """Scott's rule for a one-dimensional Gaussian kernel, floored."""
    std = float(np.std(x)) if len(x) > 1 else 0.0
    return max(1.06 * std * len(x) ** (-1 / 5), _MIN_BANDWIDTH, 0.05 if std == 0 else 0.0)


def _density(x: float, points: np.ndarray) -> float:
    width = _bandwidth(points)
    z = (x - points) / width
    return float(np.mean(np.exp(-0.5 * z * z)) / (width * math.sqrt(2 * math.pi)))


class BOHB(keras_tuner.Hyperband):
    """KerasTuner's `Hyperband` tuner driven by a `BOHBOracle`.

    Takes `Hyperband`'s arguments; the BOHB settings (`random_fraction`, `gamma`,
    `min_points_in_model`, `num_samples`, `model`) are optional keywords.
    """

    def __init__(
        self,
        hypermodel: Any = None,
        objective: Any = None,
        max_epochs: int = 100,
        factor: int = 3,
        hyperband_iterations: int = 1,
        seed: int | None = None,
        hyperparameters: Any = None,
        tune_new_entries: bool = True,
        allow_new_entries: bool = True,
        max_retries_per_trial: int = 0,
        max_consecutive_failed_trials: int = 3,
        random_fraction: float = 1 / 3,
        gamma: float = 0.15,
        min_points_in_model: int = 0,
        num_samples: int = 64,
        model: str = "kde",
        **kwargs: Any,
    ) -> None:
        oracle = BOHBOracle(
            objective,
            max_epochs=max_epochs,
            factor=factor,
            hyperband_iterations=hyperband_iterations,
            random_fraction=random_fraction,
            gamma=gamma,
            min_points_in_model=min_points_in_model,
            num_samples=num_samples,
            model=model,
            seed=seed,
            hyperparameters=hyperparameters,
            tune_new_entries=tune_new_entries,
            allow_new_entries=allow_new_entries,
            max_retries_per_trial=max_retries_per_trial,
            max_consecutive_failed_trials=max_consecutive_failed_trials,
        )
        # Skip Hyperband's __init__ (it would build a plain HyperbandOracle); keep its
        # run_trial and checkpoint-loading _build_hypermodel.
        keras_tuner.Tuner.__init__(self, oracle=oracle, hypermodel=hypermodel, **kwargs)
