"""Trials per hour with 1 and 2 local workers (`kt-pipeline search --workers N`).

Both runs do the same search (random search, a fixed number of trials, the same seed and
data) one after the other in this one invocation, so the ratio compares like with like on
this machine. Each worker gets its own share of the CPU cores (see `kt_pipeline.launcher`).

Two figures per run:

* **search**: trials / (last trial's end - first trial's start), from each trial's
  ``stats.json`` (the workers' wall clocks: one host);
* **command**: trials / wall time of the whole command (process start-up, the chief's
  oracle, the export and the held-out scoring included).

Usage::

    PYTHONPATH=$PWD .venv/bin/python benchmarks/workers.py [--trials 8] [--epochs 3]

Writes ``benchmarks/results/workers.md`` and ``workers.json``.
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

RESULTS = Path(__file__).parent / "results"


def _run(workers: int, *, trials: int, epochs: int, data: str, root: Path) -> dict[str, float]:
    experiment = root / f"workers_{workers}"
    command = [
        sys.executable,
        "-m",
        "kt_pipeline",
        "search",
        "--data",
        data,
        "--experiment-dir",
        str(experiment),
        "--tuner",
        "random",
        "--max-trials",
        str(trials),
        "--max-epochs",
        str(epochs),
        "--workers",
        str(workers),
        "--set",
        "search.units=[32, 64]",
        "--set",
        "search.num_layers=[1, 2]",
        "--set",
        "search.batch_sizes=[64]",
        "--set",
        "search.early_stopping_patience=0",
    ]
    started = time.perf_counter()
    subprocess.run(
        command,
        check=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=1800,
    )
    wall = time.perf_counter() - started
    stats = [
        json.loads(path.read_text())
        for path in sorted((experiment / "search").glob("trial_*/stats.json"))
    ]
    first = min(s["finished_at"] - s["seconds"] for s in stats)
    last = max(s["finished_at"] for s in stats)
    span = last - first
    return {
        "workers": workers,
        "trials": len(stats),
        "search_seconds": round(span, 1),
        "command_seconds": round(wall, 1),
        "trials_per_hour_search": round(3600 * len(stats) / span, 1),
        "trials_per_hour_command": round(3600 * len(stats) / wall, 1),
        "trials_by_worker": {
            w: sum(s["worker"] == w for s in stats) for w in sorted({s["worker"] for s in stats})
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS, help="output folder")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--data", default="builtin:digits", help="the table searched")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = [
            _run(n, trials=args.trials, epochs=args.epochs, data=args.data, root=Path(tmp))
            for n in (1, 2)
        ]
    one, two = runs
    ratio_search = two["trials_per_hour_search"] / one["trials_per_hour_search"]
    ratio_command = two["trials_per_hour_command"] / one["trials_per_hour_command"]
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, no GPU"
    report = {
        "machine": machine,
        "load_average_at_end": os.getloadavg(),
        "trials": args.trials,
        "epochs": args.epochs,
        "data": args.data,
        "runs": runs,
        "ratio_2_to_1_search": round(ratio_search, 2),
        "ratio_2_to_1_command": round(ratio_command, 2),
    }
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "workers.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# Trials per hour with 1 and 2 local workers",
        "",
        f"`benchmarks/workers.py --trials {args.trials} --epochs {args.epochs} --data "
        f"{args.data}` on {machine} (load average at the end: "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}). Random search, each worker on "
        "its own share of the CPU cores.",
        "",
        "| workers | trials | search s | trials/h (search) | command s | trials/h (command) "
        "| trials per worker |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run in runs:
        lines.append(
            f"| {run['workers']} | {run['trials']} | {run['search_seconds']} "
            f"| {run['trials_per_hour_search']} | {run['command_seconds']} "
            f"| {run['trials_per_hour_command']} | {run['trials_by_worker']} |"
        )
    lines += [
        "",
        f"Ratio 2 workers / 1 worker: **{ratio_search:.2f}x** trials per hour over the "
        f"search, {ratio_command:.2f}x over the whole command.",
        "",
    ]
    (args.results / "workers.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
