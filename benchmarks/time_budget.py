"""Does ``--time-budget T`` end the whole command within 10 % of T, with an export? And
how long does the default search, with no options, take on a large table?

Runs ``kt-pipeline search --time-budget T`` as a fresh process on a table of
`real_tables` (by default the 330,000-row generated one, whose default search takes
longer than the budgets tried), and records the command's wall time against T, the
trials that completed, whether the budget ended the search, and the held-out score of
the export. The budget ``none`` runs the default search with no options; ``--rows N``
gives it the generated table at N rows (seed 7) instead of a named table.

Usage:
    python benchmarks/time_budget.py [--table generated_330k] [--budgets 2m,5m]
    python benchmarks/time_budget.py --rows 350000 --budgets none
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_tables import TABLES, generated_table

RESULTS = Path(__file__).parent / "results"


def run(table: str, budget: str, folder: Path, *, rows: int = 0) -> dict[str, object]:
    """One search under `budget` (``none``: no option); its wall time, trials and export."""
    data = folder / f"{table}.parquet"
    if not data.exists():
        frame = generated_table(rows, seed=7) if rows else TABLES[table].load()
        frame.to_parquet(data)
    experiment = folder / f"experiment-{budget}"
    command = [
        str(Path(sys.executable).with_name("kt-pipeline")),
        "search",
        "--data", str(data),
        "--label", "converted" if rows else TABLES[table].label,
        "--experiment-dir", str(experiment),
    ]  # fmt: skip
    if budget != "none":
        command += ["--time-budget", budget]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"kt-pipeline failed ({done.returncode}):\n{done.stderr[-3000:]}")
    summary = json.loads((experiment / "summary.json").read_text(encoding="utf-8"))
    from kt_pipeline.config import parse_duration

    target = float(parse_duration("budget", budget)) if budget != "none" else None
    return {
        "table": table,
        "budget_seconds": target,
        "wall_seconds": round(seconds, 1),
        "ratio": round(seconds / target, 3) if target else None,
        "completed_trials": summary["completed_trials"],
        "search_seconds": summary["seconds"],
        "epochs_trained": int(pd.read_csv(experiment / "results.csv")["epochs"].sum()),
        "stopped_by_time_budget": summary["stopped_by_time_budget"],
        "exported": bool(summary["export_dir"]),
        "refit": summary.get("exported_refit", ""),  # export.refit's mode, if it ran
        "test_scores": summary["test_scores"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", default="generated_330k", choices=sorted(TABLES))
    parser.add_argument("--budgets", default="2m,5m", help="durations, or none: no budget")
    parser.add_argument("--rows", type=int, default=0, help="the generated table at N rows")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for budget in args.budgets.split(","):
            table = f"generated_{args.rows}_rows" if args.rows else args.table
            rows.append(run(table, budget, Path(scratch), rows=args.rows))
            print(json.dumps(rows[-1]), flush=True)
    command = " ".join(["python benchmarks/time_budget.py", *sys.argv[1:]])
    lines = [
        "# Time budget: the whole command against --time-budget",
        "",
        f"`{command}` ({platform.machine()}, {os.cpu_count()} CPUs; table {rows[0]['table']})",
        "",
        "| budget (s) | wall (s) | wall / budget | trials completed | ended by the budget "
        "| exported | held-out test |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        scores = ", ".join(f"{k} {v:.4f}" for k, v in r["test_scores"].items())  # type: ignore[attr-defined]
        budget = f"{r['budget_seconds']:.0f}" if r["budget_seconds"] else "none"
        ratio = f"{r['ratio']:.3f}" if r["ratio"] else "-"
        lines.append(
            f"| {budget} | {r['wall_seconds']} | {ratio} | "
            f"{r['completed_trials']} | {r['stopped_by_time_budget']} | {r['exported']} | "
            f"{scores} |"
        )
    text = "\n".join(lines) + "\n"
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "time_budget.md").write_text(text, encoding="utf-8")
    (args.results / "time_budget.json").write_text(json.dumps(rows, indent=2) + "\n", "utf-8")
    print(text)


if __name__ == "__main__":
    main()
