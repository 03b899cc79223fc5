"""``kt-pipeline report``: what a finished (or interrupted) search found, in one page.

It reads only the experiment folder (KerasTuner's trial records, our per-trial
stats), not the data, and writes:

* ``results.csv`` and ``results.json``: every trial, failed ones with their reason;
* ``report/``: ``history.png`` (objective per trial with the best so far, against the
  trial number and against search time), ``importance.png`` (fANOVA-style shares, see
  `kt_pipeline.importance`), ``objective_vs_<name>.png`` for the two most important
  hyperparameters, and ``report.md`` that embeds them;

and returns the leaderboard and importance table for the terminal.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import keras_tuner
import matplotlib
import numpy as np
import pandas as pd

from hypermodels.domains import FIXED, domain
from kt_pipeline.errors import UserInputError
from kt_pipeline.importance import hyperparameter_importance
from kt_pipeline.results import load_trials, search_objective, search_split, write_results

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt

__all__ = ["Report", "write_report"]

_PROJECT = "search"
_REPORT_DIR = "report"
_FIXED = ["trial_id", "status", "objective", "epochs", "seconds", "reason"]
_MIN_TRIALS_FOR_IMPORTANCE = 3


@dataclasses.dataclass(frozen=True)
class Report:
    """What `write_report` produced."""

    objective: str
    direction: str
    trials: int
    completed: int
    leaderboard: pd.DataFrame
    importance: list[tuple[str, float]]
    files: dict[str, Path]

    def to_text(self) -> str:
        """The leaderboard and importance table as the terminal shows them."""
        lines = [
            f"{self.trials} trials ({self.completed} completed), "
            f"objective {self.objective} ({self.direction})",
            "",
            f"Top {len(self.leaderboard)} trials:",
            self.leaderboard.to_string(index=False, float_format=_number)
            if len(self.leaderboard)
            else "  no completed trial",
            "",
            "Hyperparameter importance (share of the objective's variance):",
        ]
        if self.importance:
            width = max(len(name) for name, _ in self.importance)
            lines += [f"  {name:<{width}}  {share:6.3f}" for name, share in self.importance]
        else:
            lines.append(f"  needs {_MIN_TRIALS_FOR_IMPORTANCE} completed trials that differ")
        lines.append("")
        width = max(len(label) for label in self.files) + 2
        lines += [f"{label + ':':<{width}}{path}" for label, path in self.files.items()]
        return "\n".join(lines)


def _number(value: float) -> str:
    return f"{value:.4g}"


def _space(project: Path) -> list[Any]:
    oracle = json.loads((project / "oracle.json").read_text())
    return list(keras_tuner.HyperParameters.from_config(oracle["hyperparameters"]).space)


def _end_order(project: Path, table: pd.DataFrame) -> list[str]:
    try:
        order = [str(t) for t in json.loads((project / "oracle.json").read_text())["end_order"]]
    except (OSError, ValueError, KeyError):
        order = []
    return order + [t for t in table["trial_id"] if t not in order]


def _encode(hp: Any, column: pd.Series) -> np.ndarray | None:
    """A numeric column for the importance forest: category codes, log10 of log-scale
    values, and a sentinel below the range for inactive (conditional) values."""
    values = domain(hp)
    if values.kind == FIXED:
        return None
    if values.discrete:
        codes = {value: float(index) for index, value in enumerate(values.choices)}
        encoded = np.array([codes.get(v, -1.0) if not _missing(v) else -1.0 for v in column])
        active = encoded[encoded >= 0]
    else:
        numbers = pd.to_numeric(column, errors="coerce").to_numpy(dtype=float)
        if values.log and values.low > 0:
            numbers = np.log10(numbers)
        seen = numbers[np.isfinite(numbers)]
        if not len(seen):
            return None
        sentinel = seen.min() - (np.ptp(seen) + 1.0)
        encoded = np.where(np.isfinite(numbers), numbers, sentinel)
        active = seen
    # A value that only one trial had active says nothing its parent does not.
    return encoded if len(np.unique(active)) > 1 else None


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _importance(completed: pd.DataFrame, space: list[Any]) -> list[tuple[str, float]]:
    if len(completed) < _MIN_TRIALS_FOR_IMPORTANCE:
        return []
    names, columns = [], []
    for hp in space:
        if hp.name not in completed:
            continue
        encoded = _encode(hp, completed[hp.name])
        if encoded is not None:
            names.append(hp.name)
            columns.append(encoded)
    if not names:
        return []
    y = completed["objective"].to_numpy(dtype=float)
    return hyperparameter_importance(np.column_stack(columns), y, names)


def _leaderboard(completed: pd.DataFrame, space: list[Any], *, top_k: int) -> pd.DataFrame:
    ranked = completed.head(top_k)
    varying = [
        hp.name
        for hp in space
        if hp.name in completed and completed[hp.name].astype(str).nunique() > 1
    ]
    board = ranked[["trial_id", "objective", "epochs", "seconds", *varying]].copy()
    board.insert(0, "rank", range(1, len(board) + 1))
    return board


def _save(figure: Any, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _plot_history(
    table: pd.DataFrame, order: list[str], objective: str, direction: str, path: Path
) -> Path:
    by_id = table.set_index("trial_id")
    rows = by_id.loc[[t for t in order if t in by_id.index]]
    number = np.arange(1, len(rows) + 1)
    elapsed = rows["seconds"].fillna(0).astype(float).cumsum().to_numpy()
    scores = rows["objective"].astype(float).to_numpy()
    best = pd.Series(scores).cummax() if direction == "max" else pd.Series(scores).cummin()
    best = best.ffill().to_numpy()
    figure, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for axis, x, label in ((axes[0], number, "trial"), (axes[1], elapsed, "search time (s)")):
        done = np.isfinite(scores)
        axis.scatter(x[done], scores[done], s=18, color="tab:blue", label="trial")
        axis.step(x, best, where="post", color="tab:orange", label="best so far")
        failed = ~done
        if failed.any() and done.any():
            axis.scatter(
                x[failed],
                np.full(
                    failed.sum(), np.nanmin(scores) if direction == "max" else np.nanmax(scores)
                ),
                marker="x",
                color="tab:red",
                label="failed",
            )
        axis.set_xlabel(label)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel(objective)
    axes[0].legend(loc="best")
    figure.suptitle("Optimisation history")
    return _save(figure, path)


def _plot_importance(importance: list[tuple[str, float]], path: Path) -> Path:
    names = [name for name, _ in importance][::-1]
    shares = [share for _, share in importance][::-1]
    figure, axis = plt.subplots(figsize=(7, max(2.5, 0.35 * len(names) + 1)))
    axis.barh(names, shares, color="tab:blue")
    axis.set_xlabel("share of the objective's variance (first-order)")
    axis.set_xlim(0, max(1e-3, max(shares) * 1.1))
    axis.set_title("Hyperparameter importance")
    return _save(figure, path)


def _plot_against(completed: pd.DataFrame, hp: Any, objective: str, path: Path) -> Path:
    figure, axis = plt.subplots(figsize=(6, 4))
    column = completed[hp.name]
    active = column.map(lambda v: not _missing(v))
    values = domain(hp)
    numeric = values.numeric
    x = pd.to_numeric(column[active]) if numeric else column[active].astype(str)
    axis.scatter(x, completed.loc[active, "objective"].astype(float), s=22)
    if numeric and values.log and values.low > 0:
        axis.set_xscale("log")
    axis.set_xlabel(hp.name)
    axis.set_ylabel(objective)
    axis.grid(alpha=0.3)
    axis.set_title(f"Objective against {hp.name}")
    return _save(figure, path)


def _markdown(frame: pd.DataFrame) -> str:
    def cell(value: Any) -> str:
        if _missing(value):
            return ""
        if isinstance(value, float):
            return _number(value)
        return str(value).replace("|", "\\|")

    text: str = frame.map(cell).to_markdown(index=False, tablefmt="pipe", disable_numparse=True)
    return text


def write_report(experiment_dir: str | Path, *, top_k: int = 10) -> Report:
    """Writes the results files, plots and ``report.md`` of an experiment.

    Args:
        experiment_dir: A folder written by ``kt-pipeline search``.
        top_k: Trials in the leaderboard.

    Raises:
        UserInputError: the folder holds no search or no trial; nothing is written.
    """
    experiment = Path(experiment_dir)
    project = experiment / _PROJECT
    if not (project / "oracle.json").is_file():
        raise UserInputError(
            f"experiment directory {str(experiment)!r} holds no search (no {_PROJECT}/oracle.json)"
        )
    trials = load_trials(project)
    if not trials:
        raise UserInputError(f"experiment directory {str(experiment)!r} holds no trial")
    if top_k < 1:
        raise UserInputError(f"--top must be >= 1. Received: {top_k}")
    objective, direction = search_objective(experiment, trials)
    space = _space(project)

    files = {"results.csv": experiment / "results.csv", "results.json": experiment / "results.json"}
    table = write_results(
        project,
        files["results.csv"],
        json_path=files["results.json"],
        split=search_split(experiment),
    )
    completed = table[(table["status"] == "COMPLETED") & table["objective"].notna()]
    completed = completed.sort_values("objective", ascending=direction == "min", kind="stable")
    importance = _importance(completed, space)
    leaderboard = _leaderboard(completed, space, top_k=top_k)

    out = experiment / _REPORT_DIR
    out.mkdir(exist_ok=True)
    plots = {
        "history": _plot_history(
            table, _end_order(project, table), objective, direction, out / "history.png"
        )
    }
    by_name = {hp.name: hp for hp in space}
    if importance:
        plots["importance"] = _plot_importance(importance, out / "importance.png")
        for name, _ in importance[:2]:
            plots[f"objective_vs_{name}"] = _plot_against(
                completed, by_name[name], objective, out / f"objective_vs_{name}.png"
            )
    files.update({f"{key}.png": path for key, path in plots.items()})

    report = Report(
        objective=objective,
        direction=direction,
        trials=len(table),
        completed=len(completed),
        leaderboard=leaderboard,
        importance=importance,
        files=files,
    )
    files["report.md"] = out / "report.md"
    files["report.md"].write_text(_page(experiment, report, table, plots), encoding="utf-8")
    return report


def _page(experiment: Path, report: Report, table: pd.DataFrame, plots: dict[str, Path]) -> str:
    failed = table[table["status"] != "COMPLETED"]
    seconds = table["seconds"].fillna(0).astype(float).sum()
    lines = [f"# Search report: {experiment.name}", ""]
    summary = (
        f"Objective `{report.objective}` ({report.direction}); {report.trials} trials, "
        f"{report.completed} completed, {len(failed)} failed or unfinished; "
        f"{seconds:.0f} s of trials."
    )
    if len(report.leaderboard):
        best = report.leaderboard.iloc[0]
        summary += f" Best: **{_number(best['objective'])}** (trial {best['trial_id']})."
    lines += [summary, "", "## Optimisation history", "", "![history](history.png)", ""]
    lines += [f"## Leaderboard (top {len(report.leaderboard)})", ""]
    lines += [
        _markdown(report.leaderboard) if len(report.leaderboard) else "No completed trial.",
        "",
    ]
    lines += ["## Hyperparameter importance", ""]
    if report.importance:
        frame = pd.DataFrame(report.importance, columns=["hyperparameter", "share of variance"])
        lines += [
            "First-order share of the objective's variance, fANOVA-style on a random forest "
            "over the completed trials.",
            "",
            _markdown(frame),
            "",
            "![importance](importance.png)",
            "",
        ]
        images = [
            f"![{key}]({path.name})"
            for key, path in plots.items()
            if key.startswith("objective_vs_")
        ]
        lines += [
            "### Objective against the most important hyperparameters",
            "",
            " ".join(images),
            "",
        ]
    else:
        lines += [f"Needs at least {_MIN_TRIALS_FOR_IMPORTANCE} completed trials that differ.", ""]
    if len(failed):
        lines += ["## Failed trials", "", _markdown(failed[["trial_id", "status", "reason"]]), ""]
    lines += ["Every trial: [results.csv](../results.csv), [results.json](../results.json).", ""]
    return "\n".join(lines)
