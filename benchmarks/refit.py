"""Does ``export.refit`` pay? The served ensemble trained again on the training and
validation rows, against the search's own models, on the same searches.

Reads the experiments that ``real_table_quality.py --keep-experiments DIR`` kept (one
per table and seed, with the benchmark's held-out 20 %), reloads each search, chooses the
ensemble as the export does (greedy selection on the validation split), and scores on
the held-out split:

* ``searched``: the chosen members as the search trained them (the default export);
* ``refit``: the same members and weights, each trained again from scratch on the
  training and validation rows for the epochs its trial took to its best score
  (`kt_pipeline.finish.refit_members`), with the seconds that took;
* ``blend``: the average of the two ensembles' outputs (the searched members keep the
  draws validation chose, the refit ones add the validation rows).

Usage:
    python benchmarks/refit.py --experiments DIR [--tables fair,benefits]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_table_quality import load_kept

RESULTS = Path(__file__).parent / "results"


def evaluate(work: Path) -> dict[str, Any]:
    """Held-out points of the searched and the refit ensemble, for one kept run."""
    from hypermodels.mlp import EVALUATION_BATCH_SIZE
    from kt_pipeline.finish import refit_members, select_ensemble

    run = load_kept(work)
    chosen = select_ensemble(run.config, run.tuner, run.prepared)
    assert chosen is not None, work

    def output(model: Any) -> np.ndarray:
        return np.asarray(model.predict(run.x_test, batch_size=EVALUATION_BATCH_SIZE, verbose=0))

    started = time.perf_counter()
    refit_model, refit = refit_members(run.config, run.tuner, run.prepared, chosen)
    seconds = time.perf_counter() - started
    searched, refitted = output(chosen.model), output(refit_model)
    return {
        "table": run.key,
        "variant": run.variant,
        "seed": run.seed,
        "searched": run.points(searched),
        "refit": run.points(refitted),
        "blend": run.points((searched + refitted) / 2),
        "refit_seconds": round(seconds, 1),
        "refit_epochs": refit["epochs"],
        "members": len(chosen.members),
    }


def summarise(runs: list[dict[str, Any]], *, command: str) -> str:
    """Per table: mean points of each, the paired difference and the seeds it won."""
    lines = [
        "# Refit on training + validation rows: held-out points on the same searches",
        "",
        f"`{command}`; points are AUC, accuracy or R^2 x 100 on the benchmark's held-out "
        "20 %; mean over seeds, the mean paired differences (refit - searched, blend - "
        "searched) with (better / worse) seeds, and the refit's mean seconds.",
        "",
        "| table | seeds | searched | refit | refit - searched | blend | blend - searched "
        "| refit seconds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for table, variant in dict.fromkeys((r["table"], r["variant"]) for r in runs):
        mine = [r for r in runs if (r["table"], r["variant"]) == (table, variant)]
        label = table if variant == "default" else f"{table} ({variant})"
        cells = []
        for way in ("refit", "blend"):
            if not all(way in r for r in mine):  # runs recorded before the blend
                cells += ["-", "-"]
                continue
            diffs = [r[way] - r["searched"] for r in mine]
            better, worse = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
            cells += [
                f"{statistics.mean(r[way] for r in mine):.2f}",
                f"{statistics.mean(diffs):+.2f} ({better}/{worse})",
            ]
        lines.append(
            f"| {label} | {len(mine)} | {statistics.mean(r['searched'] for r in mine):.2f} | "
            + " | ".join(cells)
            + f" | {statistics.mean(r['refit_seconds'] for r in mine):.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=Path, required=True)
    parser.add_argument("--tables", default="", help="comma-separated; default: every table")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    tables = {t for t in args.tables.split(",") if t}
    runs_dir = args.results / "refit_runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    for work in sorted(p for p in args.experiments.iterdir() if (p / "test.parquet").exists()):
        if not (work / "experiment" / "summary.json").exists():
            continue  # a run still going, or one that failed
        if tables and work.name.rsplit("-", 1)[0] not in tables:
            continue
        out = runs_dir / f"{work.name}.json"
        if not out.exists():
            out.write_text(json.dumps(evaluate(work)) + "\n", encoding="utf-8")
        print(out.read_text(encoding="utf-8"), end="", flush=True)
    runs = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(runs_dir.glob("*.json"))]
    runs = [r for r in runs if not tables or r["table"] in tables]
    command = " ".join(["python benchmarks/refit.py", *sys.argv[1:]])
    text = summarise(runs, command=command)
    (args.results / "refit.md").write_text(text, encoding="utf-8")
    (args.results / "refit.json").write_text(json.dumps(runs, indent=2) + "\n", "utf-8")
    print(text)


if __name__ == "__main__":
    main()
