"""The model card an export carries: what the model is, how well it did, what it
expects, and how to make it again.

Stored inside the SavedModel folder as ``assets.extra/model_card.json`` (the folder
TF Serving leaves to extras, copied along with the model), so the card cannot be
separated from the model it describes. Fields:

* ``hyperparameters``: the best trial's values (``tuner/*`` bookkeeping included);
* ``validation_metrics``: the best trial's last logged metrics (``val_*``), and
  ``objective`` / ``validation_score``;
* ``test_metrics``: held-out test metrics of the reloaded export, computed on the
  predictions of the verification (exactly what is served), and ``test_intervals``,
  how far they would move on another draw of such rows (`kt_pipeline.held_out`);
* ``data``: source, task, class names, ``split`` (how rows were cut into train,
  validation and test, so what the scores measure), and ``schema``: each column's
  name, serving input name, kind and dtype, with the categories seen in training;
* ``packages``: Python, TensorFlow, Keras, KerasTuner, NumPy, pandas, scikit-learn
  and kt-pipeline versions; ``seed``; ``command`` (the process's full command line)
  and ``config`` (the resolved experiment config);
* ``verification``: the reload check (`kt_pipeline.export`): ``verified``, rows,
  tolerance, largest difference, and whether a fresh process ran it.
  ``assets.extra/GOOD`` exists only when it passed.

`kt-pipeline export --describe DIR` prints it (`format_card`).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from hypermodels.features import DATETIME, INTEGER_CATEGORICAL, NUMERIC, TabularSchema
from kt_pipeline.held_out import format_scores

__all__ = [
    "GOOD_MARKER",
    "MODEL_CARD_FILE",
    "ModelCard",
    "format_card",
    "load_card",
    "package_versions",
    "write_card",
]

MODEL_CARD_FILE = os.path.join("assets.extra", "model_card.json")

#: Present only in exports whose verification passed.
GOOD_MARKER = os.path.join("assets.extra", "GOOD")

_PACKAGES = ("tensorflow", "keras", "keras-tuner", "numpy", "pandas", "scikit-learn")
_DTYPES = {NUMERIC: "float32", INTEGER_CATEGORICAL: "int64"}


def package_versions() -> dict[str, str]:
    """Versions of Python and the packages the model was trained and exported with."""
    versions = {"python": platform.python_version()}
    for name in (*_PACKAGES, "kt-pipeline"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _schema(schema: TabularSchema) -> list[dict[str, Any]]:
    names = schema.input_names()
    columns = []
    for column in schema.columns:
        entry: dict[str, Any] = {
            "name": column.name,
            "input": names[column.name],
            "kind": column.kind,
            "dtype": _DTYPES.get(column.kind, "string"),
        }
        if column.kind == NUMERIC:
            entry.update(mean=column.mean, variance=column.variance, missing=column.has_missing)
        elif column.kind == DATETIME:
            entry["parts"] = [part.part for part in column.parts]
        else:
            entry["categories"] = [v.item() if hasattr(v, "item") else v for v in column.vocabulary]
        if column.treatment:  # fixed before the search (data.screen_identifiers)
            entry["treatment"] = column.treatment
        columns.append(entry)
    return columns


@dataclasses.dataclass(frozen=True)
class ModelCard:
    """The card's fields known before export; the export adds verification and test
    metrics (`to_json`).

    ``trial_id``, ``validation_score`` and ``hyperparameters`` describe the best trial;
    ``ensemble`` lists every trial whose model the export averages (trial id,
    validation score, weight, hyperparameters), the heaviest first;
    ``ensemble_validation`` holds the objective of the selected ensemble and of the
    best single candidate, both computed on the validation predictions (of the
    search's models); ``refit``, when the members were trained again on the training
    and validation rows (``export.refit``), their rows and epochs; ``split``, how the
    rows were cut (``data.split``: its spec, a description and the columns it kept out
    of the features), which says what the validation and test scores measure.
    """

    hyperparameters: dict[str, Any]
    objective: str
    validation_score: float | None
    validation_metrics: dict[str, float]
    data_source: str
    task: str
    class_names: list[str]
    schema: TabularSchema
    seed: int
    trial_id: str
    ensemble: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    ensemble_validation: dict[str, float] = dataclasses.field(default_factory=dict)
    refit: dict[str, Any] = dataclasses.field(default_factory=dict)
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    split: dict[str, Any] = dataclasses.field(default_factory=lambda: {"spec": "random"})

    def to_json(self) -> dict[str, Any]:
        """The card as written, stamped with the time, packages and command line."""
        return {
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "trial_id": self.trial_id,
            "ensemble": self.ensemble,
            "ensemble_validation": self.ensemble_validation,
            "refit": self.refit,
            "objective": self.objective,
            "validation_score": self.validation_score,
            "validation_metrics": self.validation_metrics,
            "hyperparameters": self.hyperparameters,
            "data": {
                "source": self.data_source,
                "task": self.task,
                "class_names": self.class_names,
                "schema": _schema(self.schema),
                "split": self.split,
            },
            "seed": self.seed,
            "packages": package_versions(),
            "command": shlex.join(sys.orig_argv),
            "config": self.config,
        }


def write_card(export_dir: str | Path, card: dict[str, Any]) -> Path:
    path = Path(export_dir) / MODEL_CARD_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(card, indent=2, default=str), encoding="utf-8")
    return path


def load_card(export_dir: str | Path) -> dict[str, Any]:
    """Reads an export's card.

    Raises:
        OSError: no card (not an export, or one made before cards existed).
        ValueError: the card is not JSON.
    """
    card: dict[str, Any] = json.loads((Path(export_dir) / MODEL_CARD_FILE).read_text("utf-8"))
    return card


def _metrics(metrics: dict[str, Any] | None) -> str:
    if not metrics:
        return "n/a"
    return ", ".join(
        f"{k} {v:.4f}" if isinstance(v, int | float) else f"{k} {v}" for k, v in metrics.items()
    )


def _served(ensemble: list[dict[str, Any]]) -> str:
    if len(ensemble) <= 1:
        return "the best trial's model"
    members = ", ".join(
        f"{m.get('trial_id')} (weight {m.get('weight', 1 / len(ensemble)):.2f}, "
        f"validation {m.get('validation_score')})"
        for m in ensemble
    )
    return f"weighted average of {len(ensemble)} trials' models: {members}"


def format_card(card: dict[str, Any], *, good: bool) -> str:
    """The card as text for a terminal."""
    data = card.get("data", {})
    verification = card.get("verification") or {}
    if good and verification.get("verified"):
        where = " in a fresh process" if verification.get("fresh_process", True) else ""
        status = (
            f"GOOD: verified on reload{where} on {verification.get('rows')} held-out rows, "
            f"max difference {verification.get('max_abs_difference', 0):.2g} "
            f"(tolerance {verification.get('tolerance')})"
        )
    else:
        status = f"NOT VERIFIED: {verification.get('message', 'no verification recorded')}"
    tested = format_scores(card.get("test_metrics") or {}, card.get("test_intervals"))
    lines = [
        f"Model card (export version {card.get('version')}, created {card.get('created')})",
        f"  status:       {status}",
        f"  task:         {data.get('task')} on {data.get('source')}",
        f"  trial:        {card.get('trial_id')}; objective {card.get('objective')} = "
        f"{card.get('validation_score')}",
        f"  validation:   {_metrics(card.get('validation_metrics'))}",
        f"  served model: {_served(card.get('ensemble') or [])}",
        f"  test:         {tested}",
        f"  split:        {(data.get('split') or {}).get('description', 'random rows')}",
        f"  seed:         {card.get('seed')}",
        f"  command:      {card.get('command')}",
        "  packages:     " + ", ".join(f"{k} {v}" for k, v in (card.get("packages") or {}).items()),
    ]
    if data.get("class_names"):
        lines.append(f"  classes:      {data['class_names']}")
    lines.append("Hyperparameters:")
    for name, value in sorted((card.get("hyperparameters") or {}).items()):
        lines.append(f"  {name:<24} {value}")
    lines.append("Inputs (one per column):")
    for column in data.get("schema", []):
        if "categories" in column:
            detail = f"categories {column['categories']}"
        elif "parts" in column:
            detail = f"ISO date or timestamp, as parts {', '.join(column['parts'])}"
        else:
            detail = f"mean {column.get('mean', 0):.4g}" + (
                ", may be missing (NaN)" if column.get("missing") else ""
            )
        if column.get("treatment") == "drop":
            detail += "; left out of the network (its levels explain nothing)"

        lines.append(
            f"  {column['input']:<20} {column['dtype']:<8} {column['kind']:<20} "
            f"from {column['name']!r}; {detail}"
        )
    return "\n".join(lines)
