"""Does memory grow without bound over many trials in one process?

Runs one search of `--trials` small trials (random search, one epoch each, the full
default search space, TensorBoard logging on, no export) through the real pipeline and
reads the process's resident memory (RSS, from /proc/self/status) each time a trial
ends. KerasTuner clears the Keras session before each build and the data arrays are
shared by every trial, so after a warm-up the RSS should stay flat.

``--baseline`` instead runs the same number of models in a plain Keras loop
(``clear_session()``, build the space's default model, one-epoch fit), without
KerasTuner, TensorBoard or the pipeline, to tell growth in our layer from growth below it.

Usage:
    PYTHONPATH=. python benchmarks/memory.py [--trials 50] [--data builtin:breast_cancer]
    PYTHONPATH=. python benchmarks/memory.py --baseline --trials 16
    PYTHONPATH=. python benchmarks/memory.py --trim --trials 16

Writes benchmarks/results/memory.md and memory.json (memory_baseline.* with --baseline,
memory_trim.* with --trim).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def rss_mib() -> float:
    """Resident set size of this process in MiB."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class _RssAtTrialEnd(logging.Handler):
    """Records the RSS when the pipeline logs the end of a trial (after `gc.collect()`
    and glibc's `malloc_trim(0)` with `trim`, to tell retained memory from freed memory
    the allocator keeps)."""

    def __init__(self, *, trim: bool = False) -> None:
        super().__init__()
        self.samples: list[float] = []
        self._trim = trim

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("trial "):
            if self._trim:
                import ctypes
                import gc

                gc.collect()
                ctypes.CDLL("libc.so.6").malloc_trim(0)
            self.samples.append(rss_mib())


def _baseline(trials: int) -> list[float]:
    """RSS after each model of a plain Keras loop that rebuilds the default model."""
    import gc

    import keras
    import keras_tuner
    from sklearn.datasets import load_breast_cancer

    from hypermodels import MLPHyperModel

    bunch = load_breast_cancer()
    x, y = bunch.data.astype("float32"), bunch.target.astype("int32")
    hypermodel = MLPHyperModel.from_arrays(x, y, task="binary")
    samples = []
    for _ in range(trials):
        keras.backend.clear_session()
        hp = keras_tuner.HyperParameters()  # the default values: the same model each time
        model = hypermodel.build(hp)
        hypermodel.fit(hp, model, x, y, validation_data=(x, y), epochs=1, verbose=0)
        del model
        gc.collect()
        samples.append(rss_mib())
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS, help="output folder")
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--data", default="builtin:breast_cancer")
    parser.add_argument("--baseline", action="store_true", help="plain Keras loop instead")
    parser.add_argument("--trim", action="store_true", help="gc + malloc_trim before each read")
    args = parser.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.baseline:
        samples = _baseline(args.trials)
        growth = (samples[-1] - samples[4]) / (len(samples) - 5)
        text = (
            f"# Plain Keras loop, {args.trials} models (breast_cancer)\n\n"
            f"`PYTHONPATH=. python benchmarks/memory.py --baseline --trials {args.trials}`\n\n"
            f"RSS after model 5 {samples[4]:.1f} MiB, "
            f"after model {args.trials} {samples[-1]:.1f} MiB: {growth:+.3f} MiB per model.\n"
        )
        args.results.mkdir(parents=True, exist_ok=True)
        (args.results / "memory_baseline.md").write_text(text, encoding="utf-8")
        (args.results / "memory_baseline.json").write_text(
            json.dumps({"rss_mib_per_model": [round(v, 1) for v in samples]}) + "\n", "utf-8"
        )
        print(text)
        return
    from kt_pipeline.config import load_config
    from kt_pipeline.pipeline import run_search

    recorder = _RssAtTrialEnd(trim=args.trim)
    name = "memory_trim" if args.trim else "memory"
    logger = logging.getLogger("kt_pipeline")
    logger.setLevel(logging.INFO)
    logger.addHandler(recorder)
    started_rss = rss_mib()
    with tempfile.TemporaryDirectory() as experiment:
        config = load_config(
            None,
            [
                f"data.source={args.data!r}",
                f"runtime.experiment_dir={experiment!r}",
                "tuner.algorithm='random'",
                f"tuner.max_trials={args.trials}",
                "tuner.max_epochs=1",
                "export.enabled=false",
            ],
        )
        started = time.perf_counter()
        summary = run_search(config)
        seconds = time.perf_counter() - started
    samples = recorder.samples
    assert len(samples) == args.trials, (len(samples), args.trials)
    early, late = samples[4], samples[-1]
    growth = (late - early) / (len(samples) - 5)
    result = {
        "trials": args.trials,
        "completed": summary.completed_trials,
        "data": args.data,
        "rss_mib_after_import": round(started_rss, 1),
        "rss_mib_after_trial_5": round(early, 1),
        f"rss_mib_after_trial_{args.trials}": round(late, 1),
        "rss_mib_max": round(max(samples), 1),
        "growth_mib_per_trial_after_5": round(growth, 3),
        "rss_mib_per_trial": [round(s, 1) for s in samples],
        "search_seconds": round(seconds, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
    }
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n", "utf-8")
    table = [
        "# Memory over many trials in one process",
        "",
        f"`PYTHONPATH=. python benchmarks/memory.py --trials {args.trials} --data {args.data}"
        f"{' --trim' if args.trim else ''}`"
        f" ({result['machine']}; {summary.completed_trials}/{args.trials} trials completed in "
        f"{seconds:.0f} s)",
        "",
        "| after | RSS (MiB) |",
        "| --- | --- |",
        f"| imports | {started_rss:.1f} |",
        f"| trial 5 | {early:.1f} |",
        f"| trial {args.trials} | {late:.1f} |",
        f"| max over all trials | {max(samples):.1f} |",
        "",
        f"Growth from trial 5 to trial {args.trials}: {late - early:+.1f} MiB "
        f"({growth:+.3f} MiB per trial).",
        "",
        "RSS after every trial (MiB): " + ", ".join(f"{s:.0f}" for s in samples),
        "",
    ]
    (args.results / f"{name}.md").write_text("\n".join(table), encoding="utf-8")
    print("\n".join(table))


if __name__ == "__main__":
    main()
