"""The export's model: a weighted average of distinct configurations' models, chosen
on the validation split by greedy forward selection with replacement (Caruana et al.,
2004), as AutoGluon and RealMLP's tuned variant ensemble.

Why: picking the single best of some fifty trials on a small validation set picks
partly on that set's noise, and averaging models spends no extra training, since
their checkpoints are already saved. Averaging a fixed number of best trials, though,
averages a model at 0.92 validation accuracy with ones at 0.72 and 0.61. Greedy
selection starts from the best single model and adds (again, possibly) whichever model
improves the average's validation score most, keeping the best average seen: so the
export is never worse on validation than the best single trial, and weak models only
join when they help. The cost is inference: each distinct member runs on every request.

Hyperband continues a configuration in new trials (the same values with larger
``tuner/epochs``); those are one configuration, represented by its best-scoring trial,
so an ensemble never averages a model with its own earlier checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras
import keras_tuner
import numpy as np
from sklearn import metrics as sk_metrics

from kt_pipeline.tuners import completed_trials

__all__ = [
    "CANDIDATES",
    "MAX_ENSEMBLE",
    "ROUNDS",
    "average_models",
    "configuration_key",
    "distinct_best_trials",
    "greedy_selection",
    "validation_scorer",
    "weighted_mean",
]

#: The most models an export may average (each one is run on every request).
MAX_ENSEMBLE = 10
#: How many of the best distinct configurations the greedy selection chooses from.
CANDIDATES = 10
#: Models added (with replacement) by the greedy selection, the best single one included.
ROUNDS = 20

#: A score of predictions on the validation split; higher is better, compared as a tuple
#: (the objective, then a tie-breaker).
Scorer = Callable[[np.ndarray], tuple[float, ...]]

# Values KerasTuner's Hyperband adds to a trial (bracket, round, epochs, parent id):
# bookkeeping, not part of the configuration.
_TUNER_PREFIX = "tuner/"


def configuration_key(values: Mapping[str, Any]) -> str:
    """The trial's configuration as text, without the tuner's bookkeeping values."""
    return json.dumps(
        {k: v for k, v in values.items() if not k.startswith(_TUNER_PREFIX)},
        sort_keys=True,
        default=str,
    )


def distinct_best_trials(
    oracle: keras_tuner.Oracle, *, count: int
) -> list[keras_tuner.engine.trial.Trial]:
    """Up to `count` completed trials with different configurations, best first.

    Each configuration is represented by its best-scoring completed trial; failed and
    diverged trials never count (see `kt_pipeline.tuners.completed_trials`).
    """
    chosen: dict[str, keras_tuner.engine.trial.Trial] = {}
    for trial in completed_trials(oracle):
        chosen.setdefault(configuration_key(trial.hyperparameters.values), trial)
        if len(chosen) == count:
            break
    return list(chosen.values())


def greedy_selection(
    predictions: Sequence[np.ndarray], score: Scorer, *, max_members: int, rounds: int = ROUNDS
) -> list[int]:
    """How many times each candidate enters the ensemble (Caruana et al., 2004).

    Starts from the best-scoring candidate, then each round adds the candidate whose
    addition scores best (at most `max_members` distinct ones), and returns the counts
    of the best-scoring ensemble seen; ties go to the smaller ensemble and then to the
    earlier candidate. Its score is never below the best single candidate's.

    Args:
        predictions: Each candidate's validation predictions, of one shape.
        score: Scores a prediction array (`validation_scorer`).
        max_members: The most distinct candidates the ensemble may hold.
        rounds: Models added in all, the first included.
    """
    if not predictions:
        raise ValueError("greedy_selection needs at least one candidate")
    singles = [score(p) for p in predictions]
    first = max(range(len(predictions)), key=lambda i: (singles[i], -i))
    counts = [0] * len(predictions)
    counts[first] = 1
    total = np.asarray(predictions[first], dtype="float64")
    best, best_counts = singles[first], list(counts)
    for size in range(2, rounds + 1):
        allowed = [
            i
            for i in range(len(predictions))
            if counts[i] or sum(c > 0 for c in counts) < max_members
        ]
        scored = [(score((total + predictions[i]) / size), -i) for i in allowed]
        chosen_score, negative = max(scored)
        counts[-negative] += 1
        total = total + predictions[-negative]
        if chosen_score > best:
            best, best_counts = chosen_score, list(counts)
    return best_counts


def weighted_mean(predictions: Sequence[np.ndarray], counts: Sequence[int]) -> np.ndarray:
    """The ensemble's predictions: each candidate's weighted by its count."""
    weighted = [c * np.asarray(p, "float64") for c, p in zip(counts, predictions, strict=True)]
    return np.sum(weighted, axis=0) / sum(counts)


_METRICS = {
    "binary": ("auc", "accuracy", "loss"),
    "multiclass": ("accuracy", "loss"),
    "regression": ("mae", "rmse", "loss"),
}


def validation_scorer(
    task: str, objective: keras_tuner.Objective, y: np.ndarray, *, regression_loss: str = "mse"
) -> Scorer:
    """The search objective computed on predictions (a model's output: probabilities,
    or values for regression), higher is better; classification breaks ties (common
    for accuracy) by log-loss. An objective the pipeline does not know is replaced by
    the task's loss."""
    y = np.asarray(y)
    name = objective.name.removeprefix("val_")
    maximise = objective.direction == "max"
    if name not in _METRICS[task] or (name == "auc" and len(np.unique(y)) < 2):
        name, maximise = "loss", False  # (AUC needs both classes in the validation rows)

    def probabilities(p: np.ndarray) -> np.ndarray:
        if task == "binary":
            p = p.reshape(-1, 1).astype("float64")
            return np.concatenate([1 - p, p], axis=1)
        p = p.astype("float64")
        return p / p.sum(axis=1, keepdims=True)  # float32 softmax sums are off by ~1e-7

    def loss(p: np.ndarray) -> float:
        if task != "regression":
            classes = probabilities(p)
            return float(sk_metrics.log_loss(y, classes, labels=range(classes.shape[1])))
        errors = p.reshape(-1).astype("float64") - y.astype("float64")
        if regression_loss == "mae":
            return float(np.mean(np.abs(errors)))
        if regression_loss == "huber":  # Keras's default delta, 1.0
            small = np.abs(errors) <= 1.0
            return float(np.mean(np.where(small, 0.5 * errors**2, np.abs(errors) - 0.5)))
        return float(np.mean(errors**2))

    def metric(p: np.ndarray) -> float:
        if name == "auc":
            return float(sk_metrics.roc_auc_score(y, p.reshape(-1)))
        if name == "accuracy":
            return float(np.mean(probabilities(p).argmax(axis=1) == y))
        if name == "mae":
            return float(np.mean(np.abs(p.reshape(-1) - y)))
        if name == "rmse":
            return float(np.sqrt(np.mean((p.reshape(-1) - y) ** 2)))
        return loss(p)

    def scorer(p: np.ndarray) -> tuple[float, ...]:
        primary = metric(p) if maximise else -metric(p)
        return (primary, -loss(p)) if task != "regression" and name != "loss" else (primary,)

    return scorer


def average_models(
    models: Sequence[keras.Model], *, inputs: Any, weights: Sequence[float] | None = None
) -> keras.Model:
    """One model whose output is the (weighted) mean of `models`' outputs on the same
    inputs.

    Args:
        models: Trained models that take the same inputs and give outputs of one
            shape (probabilities or values). Renamed ``member_<i>``: a functional
            model needs unique layer names, and every trial's model has the same one.
        inputs: Fresh `keras.Input` tensors (one, or a dict) in the members' layout.
        weights: Each model's weight (normalised to sum to 1); None weighs them equally.

    Returns:
        The single model itself when there is one; otherwise a functional model
        named ``ensemble``.
    """
    if not models:
        raise ValueError("average_models needs at least one model")
    if len(models) == 1:
        return models[0]
    for index, model in enumerate(models):
        model.name = f"member_{index}"
    outputs = [model(inputs) for model in models]
    if weights is None or len(set(weights)) == 1:
        mean = keras.layers.Average(dtype="float32", name="average")(outputs)
    else:
        total = float(sum(weights))
        scaled = [
            keras.layers.Rescaling(float(w) / total, dtype="float32", name=f"weight_{i}")(out)
            for i, (w, out) in enumerate(zip(weights, outputs, strict=True))
        ]
        mean = keras.layers.Add(dtype="float32", name="average")(scaled)
    return keras.Model(inputs, mean, name="ensemble")
