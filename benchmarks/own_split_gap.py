"""How far a held-out score measured on one's own latest rows (or unseen groups) is from
the score the next ones give, for LightGBM: the yardstick for the default's own gap.

The default reports its score on its own test rows, the latest 15 % of what it is given
(or 15 % of its groups) under a deployment split, and the benchmark scores it on the
20 % after that (`real_table_quality.py`, its "reported" table). This does the same for
LightGBM's defaults on the same rows: trained on the 85 % of the 80 % before the
pipeline's own test rows and scored on them ("own"), against trained on the whole 80 %
and scored on the benchmark's 20 % ("held out"). A gap that LightGBM shows too is the
periods' or the groups' difference, not a leak.

Usage:
    python benchmarks/own_split_gap.py --tables penn_savings@time,males_wage@group [--seeds 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import real_table_quality as quality


def gap(key: str, seed: int) -> tuple[float, float]:
    """LightGBM's score on the pipeline's own test rows and on the benchmark's 20 %."""
    table, spec = quality.SPLITS[key]
    train, test = quality.split(table, seed, tiny=False, spec=spec)
    held_out = quality._run_trees("lightgbm", table, train, test, seed=seed, tiny=False)
    with tempfile.TemporaryDirectory() as scratch:
        fit, validation, own = quality.pipeline_parts(table, train, seed, Path(scratch), spec)
    before = train.iloc[np.concatenate([fit, validation])].reset_index(drop=True)
    mine = quality._run_trees(
        "lightgbm", table, before, train.iloc[own].reset_index(drop=True), seed=seed, tiny=False
    )
    return mine["score"], held_out["score"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", required=True, help="comma-separated table keys")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    lines = ["| table | seed | own test rows | held-out 20 % | own - held out |", "|---" * 5 + "|"]
    for key in args.tables.split(","):
        for seed in range(args.seeds):
            own, held_out = gap(key, seed)
            lines.append(f"| {key} | {seed} | {own:.2f} | {held_out:.2f} | {own - held_out:+.2f} |")
            print(lines[-1], flush=True)
    out = quality.RESULTS / "own_split_gap.md"
    out.write_text(
        f"`python benchmarks/own_split_gap.py --tables {args.tables} --seeds {args.seeds}`\n\n"
        + "\n".join(lines)
        + "\n",
        encoding="utf-8",
    )


if __name__ == "__main__":
    main()
