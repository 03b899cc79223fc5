"""What a cross-validated trial's epoch costs: k fold models (``data.folds = k``)
against the one network of a trial without folds, on the same rows.

Each configuration (a small and a large network) trains one warm-up epoch and then
``--epochs`` timed epochs, once per fold count, in fresh processes interleaved
configuration by configuration (A B A B) so both see the same machine load. The fold
models get the sample weights a search gives them (`kt_pipeline.splits.TrialFolds`).
Reported: CPU and wall seconds per epoch, and each fold count's ratio to one network,
the median over repeats. The ratio is the training share of the ``3x`` cost goal of
``data.folds = "auto"`` (`benchmarks/README.md`, "Cross-validated trials").

Usage:
    python benchmarks/fold_cost.py [--folds 1 3 5] [--rows 3700] [--epochs 3]
        [--repeats 3]

Writes ``benchmarks/results/fold_cost.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "benchmarks"))

from real_table_quality import code_version  # noqa: E402

#: (name, hidden layers, units): the smallest and the largest network of the default space.
CONFIGS = (("1 x 64", 1, 64), ("3 x 512", 3, 512))


def _epoch_seconds(
    *, folds: int, rows: int, layers: int, units: int, epochs: int
) -> dict[str, float]:
    """One configuration's CPU and wall seconds per epoch (run in a fresh process)."""
    import keras_tuner
    import numpy as np

    from hypermodels import MLPHyperModel
    from kt_pipeline.splits import TrialFolds

    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 11)).astype("float32")
    y = (x[:, 0] + rng.normal(size=rows) > 0).astype("int64")
    hypermodel = MLPHyperModel.from_arrays(x, y, task="binary", max_epochs=epochs, units=(units,))
    hypermodel.folds = folds
    hypermodel.objective = keras_tuner.Objective("val_loss", "min")
    hp = keras_tuner.HyperParameters()
    hp.Fixed("num_layers", layers)
    hp.Fixed("batch_size", 64)
    model = hypermodel.build(hp)
    weights = {}
    if folds > 1:
        weights = {"sample_weight": TrialFolds(np.arange(rows) % folds, count=folds).weights()[0]}
    hypermodel.fit(hp, model, x, y, epochs=1, verbose=0, **weights)  # traced, warm
    cpu, wall = time.process_time(), time.perf_counter()
    hypermodel.fit(hp, model, x, y, epochs=epochs, verbose=0, **weights)
    return {
        "cpu": (time.process_time() - cpu) / epochs,
        "wall": (time.perf_counter() - wall) / epochs,
    }


def _measure(args: argparse.Namespace, *, folds: int, layers: int, units: int) -> dict[str, float]:
    command = [
        sys.executable, __file__, "--worker", str(folds), "--rows", str(args.rows),
        "--epochs", str(args.epochs), "--layers", str(layers), "--units", str(units),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, nargs="+", default=[1, 3, 5])
    parser.add_argument("--rows", type=int, default=3700)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--layers", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--units", type=int, default=64, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        seconds = _epoch_seconds(
            folds=args.worker, rows=args.rows, layers=args.layers, units=args.units,
            epochs=args.epochs,
        )  # fmt: skip
        print(json.dumps(seconds))
        return
    runs: dict[str, dict[int, list[dict[str, float]]]] = {}
    for _ in range(args.repeats):
        for name, layers, units in CONFIGS:
            for folds in args.folds:
                measured = _measure(args, folds=folds, layers=layers, units=units)
                runs.setdefault(name, {}).setdefault(folds, []).append(measured)
    table: list[dict[str, Any]] = []
    for name, by_folds in runs.items():
        base = {kind: statistics.median(r[kind] for r in by_folds[1]) for kind in ("cpu", "wall")}
        for folds, measured in by_folds.items():
            row = {"network": name, "folds": folds}
            for kind in ("cpu", "wall"):
                row[f"{kind}_seconds"] = statistics.median(r[kind] for r in measured)
                row[f"{kind}_ratio"] = row[f"{kind}_seconds"] / base[kind]
            table.append(row)
    result = {**code_version(), "rows": args.rows, "epochs": args.epochs,
              "repeats": args.repeats, "table": table}  # fmt: skip
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "fold_cost.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# Fold models' epoch cost (commit {result['commit']}, {args.rows} rows, batch 64, "
        f"median of {args.repeats})",
        "",
        "| network | folds | CPU s/epoch | ratio | wall s/epoch | ratio |",
        "| --- | --- | --- | --- | --- | --- |",
        *(
            f"| {r['network']} | {r['folds']} | {r['cpu_seconds']:.3f} | {r['cpu_ratio']:.2f} "
            f"| {r['wall_seconds']:.3f} | {r['wall_ratio']:.2f} |"
            for r in table
        ),
    ]
    (args.results / "fold_cost.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
