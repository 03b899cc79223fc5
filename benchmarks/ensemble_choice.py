"""Which ensemble should the export serve? Compared on the same searches, so the only
difference is how the served model is chosen from the trials.

Reads the experiments that ``real_table_quality.py --keep-experiments DIR`` kept (one
per table and seed, with the benchmark's held-out 20 %), reloads each search, and
scores on that held-out split:

* ``best_single``: the best trial's model alone (``export.ensemble = 1``);
* ``top3_average``: the equal average of the three best distinct configurations (the
  export before greedy selection);
* ``greedy_<k>``: greedy forward selection on the rows the trials were scored on (the
  validation split, or out of fold with ``data.folds``) with at most k
  distinct members (`kt_pipeline.ensemble.greedy_selection`; k = 3 is the default).

Usage:
    python benchmarks/ensemble_choice.py --experiments /tmp/rtq_experiments
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_table_quality import load_kept

RESULTS = Path(__file__).parent / "results"
WAYS = ("best_single", "top3_average", "greedy_3", "greedy_5", "greedy_10")


def evaluate(work: Path) -> dict[str, Any]:
    """Held-out score of each way of choosing the served model, for one kept run."""
    from hypermodels.mlp import EVALUATION_BATCH_SIZE
    from kt_pipeline.ensemble import (
        CANDIDATES,
        distinct_best_trials,
        greedy_selection,
        validation_scorer,
        weighted_mean,
    )
    from kt_pipeline.finish import scored_predictions

    run = load_kept(work)
    candidates = distinct_best_trials(run.tuner.oracle, count=CANDIDATES)
    models = [run.tuner.load_model(trial) for trial in candidates]
    # The rows the trials were scored on: the validation rows, or out of fold.
    on_validation, scored_y = scored_predictions(models, run.prepared)
    on_test = [
        np.asarray(m.predict(run.x_test, batch_size=EVALUATION_BATCH_SIZE, verbose=0))
        for m in models
    ]
    scorer = validation_scorer(
        run.prepared.dataset.task,
        run.tuner.oracle.objective,
        scored_y,
        regression_loss=run.config.search.regression_loss,
    )
    n = len(models)
    ways = {
        "best_single": [1] + [0] * (n - 1),
        "top3_average": [1 if i < 3 else 0 for i in range(n)],
        **{
            f"greedy_{k}": greedy_selection(on_validation, scorer, max_members=k)
            for k in (3, 5, 10)
        },
    }
    scores = {way: run.points(weighted_mean(on_test, counts)) for way, counts in ways.items()}
    members = {way: sum(c > 0 for c in counts) for way, counts in ways.items()}
    return {
        "table": run.key,
        "variant": run.variant,
        "seed": run.seed,
        "scores": scores,
        "members": members,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=Path, required=True)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    runs = []
    for work in sorted(p for p in args.experiments.iterdir() if (p / "test.parquet").exists()):
        if not (work / "experiment" / "summary.json").exists():
            continue  # a run still going, or one that failed
        runs.append(evaluate(work))
        print(json.dumps(runs[-1]), flush=True)
    command = " ".join(["python benchmarks/ensemble_choice.py", *sys.argv[1:]])
    lines = [
        "# Which ensemble to export: held-out points on the same searches",
        "",
        f"`{command}`; points are AUC, accuracy or R^2 x 100 on the benchmark's held-out "
        "20 %; mean over seeds, then the mean paired difference against `best_single` "
        "with (better / worse) seeds.",
        "",
        "| table | seeds | " + " | ".join(WAYS) + " |",
        "| --- | --- | " + " | ".join("---" for _ in WAYS) + " |",
    ]
    for table, variant in dict.fromkeys((r["table"], r["variant"]) for r in runs):
        mine = [r for r in runs if (r["table"], r["variant"]) == (table, variant)]
        label = table if variant == "default" else f"{table} ({variant})"
        cells = []
        for way in WAYS:
            values = [r["scores"][way] for r in mine]
            cell = f"{statistics.mean(values):.2f}"
            if way != "best_single":
                diffs = [r["scores"][way] - r["scores"]["best_single"] for r in mine]
                better = sum(d > 0 for d in diffs)
                worse = sum(d < 0 for d in diffs)
                cell += f" ({statistics.mean(diffs):+.2f}; {better}/{worse})"
            cells.append(cell)
        lines.append(f"| {label} | {len(mine)} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "ensemble_choice.md").write_text(text, encoding="utf-8")
    (args.results / "ensemble_choice.json").write_text(
        json.dumps(runs, indent=2) + "\n", encoding="utf-8"
    )
    print(text)


if __name__ == "__main__":
    main()
