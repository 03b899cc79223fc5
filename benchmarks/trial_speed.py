"""Trial speed: plain KerasTuner-style training against the pipeline's fast path.

The same list of hyperparameter configurations is trained two ways, interleaved
configuration by configuration so both see the same machine load:

(a) **plain**: what a KerasTuner script written as its docs show does in each trial:
    build and compile the model with Keras's defaults, then
    ``model.fit(x_train, y_train, batch_size=..., validation_data=(x_val, y_val))``
    on numpy arrays (``steps_per_execution=1``);
(b) **pipeline**: `MLPHyperModel` as the pipeline runs it: tensors converted once,
    index-shuffled batches from `tf.data`, cached validation batches, automatic
    ``steps_per_execution``, the optimizer built before the first step (as the
    pipeline's tuners do) and updating with fused kernels
    (`hypermodels.fused_optimizers`; ``--fused-optimizers off`` for Keras's own).

Both build the identical network (same initial weights per configuration), so the
final validation accuracy must agree within noise. Reported: seconds per epoch and per
trial (build + compile + fit; the second trial of each process, as every trial of a
search after its first, and the first trial of a fresh process separately), their
ratios, the final validation accuracies, and the
achieved training GFLOP/s of a reference MLP (2 x 256, ReLU) against the machine's
peak.

Peak FLOP/s = cores x clock x FLOPs per cycle per core, with the clock from
/proc/cpuinfo and 64 FP32 FLOPs/cycle for AVX-512 with two FMA units (32 for AVX2+FMA,
16 otherwise); training FLOPs per example = 3 x 2 x (multiply-adds of the dense
layers), the usual forward + backward estimate.

Usage:
    python benchmarks/trial_speed.py [--epochs 10] [--configs 6] [--repeats 1]
        [--fused-optimizers on|off]

Writes ``benchmarks/results/trial_speed.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import itertools

import keras
import keras_tuner
import numpy as np

from hypermodels import Execution, MLPHyperModel, SearchSpace, Target
from hypermodels.features import TabularSchema, model_inputs
from kt_pipeline.data import load_dataset
from kt_pipeline.splits import split_dataset
from kt_pipeline.strategy import set_graph_optimizer

RESULTS = Path(__file__).parent / "results"

# Configurations every run trains: (num_layers, units, batch_size, optimizer).
CONFIGS = [
    (2, 256, 32, "adam"),
    (1, 128, 64, "sgd"),
    (3, 512, 128, "rmsprop"),
    (2, 64, 32, "adamw"),
    (2, 256, 128, "nadam"),
    (3, 128, 64, "adam"),
]


def peak_gflops() -> tuple[float, str]:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    mhz = [float(line.split(":")[1]) for line in info.splitlines() if line.startswith("cpu MHz")]
    flags = next((line for line in info.splitlines() if line.startswith("flags")), "")
    per_cycle = 64 if "avx512f" in flags else 32 if ("avx2" in flags and "fma" in flags) else 16
    cores = os.cpu_count() or 1
    clock = (max(mhz) if mhz else 2000.0) / 1000
    return cores * clock * per_cycle, f"{cores} cores x {clock:.2f} GHz x {per_cycle} FLOP/cycle"


def train_flops_per_example(num_features: int, widths: list[int], classes: int) -> int:
    sizes = [num_features, *widths, classes]
    multiply_adds = sum(a * b for a, b in itertools.pairwise(sizes))
    return 3 * 2 * multiply_adds


def _hypermodel(
    schema: TabularSchema, y: np.ndarray, *, plain: bool, epochs: int, classes: int, fused: bool
) -> MLPHyperModel:
    space = SearchSpace(
        dropout=(0.1, 0.1),
        batch_norm=(False,),
        l2=(0.0, 0.0),
        schedules=("constant",),
        learning_rate=(1e-3, 1e-3),
        gradient_clipping=("none",),
        early_stopping_patience=(0, 0),
        activations=("relu",),
        kernel_initializers=("glorot_uniform",),
    )
    return MLPHyperModel(
        schema=schema,
        task="multiclass",
        target=Target(num_classes=classes),
        train_size=len(y),
        max_epochs=epochs,
        space=space,
        execution=Execution(
            steps_per_execution=1 if plain else 0,
            input_pipeline="numpy" if plain else "tf_data",
            fused_optimizers=fused and not plain,
        ),
    )


def run_one(
    hypermodel: MLPHyperModel,
    config: tuple[int, int, int, str],
    data: dict[str, Any],
    *,
    epochs: int,
    seed: int,
) -> dict[str, float]:
    layers, units, batch, optimizer = config
    hp = keras_tuner.HyperParameters()
    for name, value in (
        ("num_layers", layers),
        ("units", units),
        ("batch_size", batch),
        ("optimizer", optimizer),
    ):
        hp.Fixed(name, value)
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    started = time.perf_counter()
    model = hypermodel.build(hp)
    if hypermodel.execution.input_pipeline == "tf_data":
        # The pipeline's tuners build the optimizer before training (`kt_pipeline.tuners`),
        # so its cost falls here as in a search; a plain script leaves it to the first step.
        model.optimizer.build(model.trainable_variables)
    built = time.perf_counter()
    timer = _EpochTimer()
    history = hypermodel.fit(
        hp,
        model,
        data["x"],
        data["y"],
        epochs=epochs,
        validation_data=(data["xv"], data["yv"]),
        verbose=0,
        callbacks=[timer],
    )
    done = time.perf_counter()
    return {
        "trial_seconds": done - started,
        "build_seconds": built - started,
        # The first epoch carries tracing; the median of the others is the steady state.
        "epoch_seconds": statistics.median(timer.seconds[1:] or timer.seconds),
        "first_epoch_seconds": timer.seconds[0],
        "val_accuracy": float(history.history["val_accuracy"][-1]),
    }


class _EpochTimer(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        self.seconds.append(time.perf_counter() - self._start)


def _prepare(data_name: str) -> tuple[TabularSchema, dict[str, Any], int]:
    from hypermodels import fit_schema

    dataset = load_dataset(data_name)
    splits = split_dataset(dataset, validation_fraction=0.15, test_fraction=0.15, seed=0)
    schema = fit_schema(splits.train.frame, dataset.kinds)
    data = {
        "x": model_inputs(schema, splits.train.frame),
        "y": splits.train.y,
        "xv": model_inputs(schema, splits.validation.frame),
        "yv": splits.validation.y,
    }
    return schema, data, dataset.num_classes


def worker(args: argparse.Namespace) -> None:
    """Trains one configuration one way in this fresh process and prints JSON.

    A process per run keeps TensorFlow's process-wide settings (the graph optimizer is
    fixed once the first function runs) and caches from leaking between the two ways.
    """
    plain = args.worker == "plain"
    set_graph_optimizer("on" if plain else args.graph_optimizer)
    schema, data, classes = _prepare(args.data)
    hypermodel = _hypermodel(
        schema,
        data["y"],
        plain=plain,
        epochs=args.epochs,
        classes=classes,
        fused=args.fused_optimizers == "on",
    )
    config = CONFIGS[args.config]
    # The first trial in a process also pays for starting TensorFlow's runtime (and, on
    # the pipeline path, for the per-experiment input tensors); a search pays that once.
    # The second trial, with another seed, is what every later trial of a search costs.
    cold = run_one(hypermodel, config, data, epochs=args.epochs, seed=args.seed + 500)
    result = run_one(hypermodel, config, data, epochs=args.epochs, seed=args.seed)
    result["first_trial_seconds"] = cold["trial_seconds"]
    result["train_rows"] = len(data["y"])
    result["features"] = len(schema.columns)
    result["classes"] = classes
    print("RESULT " + json.dumps(result), flush=True)


def _spawn(way: str, index: int, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--worker",
        way,
        "--config",
        str(index),
        "--seed",
        str(seed),
        "--epochs",
        str(args.epochs),
        "--data",
        args.data,
        "--graph-optimizer",
        args.graph_optimizer,
        "--fused-optimizers",
        args.fused_optimizers,
    ]
    output = subprocess.run(command, capture_output=True, text=True, check=True, timeout=900)
    line = next(x for x in output.stdout.splitlines() if x.startswith("RESULT "))
    result: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS, help="output folder")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--configs", type=int, default=len(CONFIGS))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--data", default="builtin:digits")
    parser.add_argument("--graph-optimizer", default="auto", choices=["auto", "on", "off"])
    parser.add_argument("--fused-optimizers", default="on", choices=["on", "off"])
    parser.add_argument("--worker", choices=["plain", "pipeline"], help=argparse.SUPPRESS)
    parser.add_argument("--config", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    rows: list[dict[str, Any]] = []
    for repeat in range(args.repeats):
        for index, config in enumerate(CONFIGS[: args.configs]):
            seed = 1000 * repeat + index
            ways = ["plain", "pipeline"]
            if (index + repeat) % 2:
                ways.reverse()  # alternate who goes first
            result: dict[str, Any] = {"config": list(config), "repeat": repeat}
            for way in ways:
                result[way] = _spawn(way, index, args, seed)
            rows.append(result)
            print(json.dumps(result), flush=True)

    def ratio(key: str) -> float:
        return statistics.median(r["plain"][key] / r["pipeline"][key] for r in rows)

    # Reference MLP throughput: 2 x 256 at batch 32.
    reference = next(r for r in rows if r["config"][:3] == [2, 256, 32])
    first = reference["pipeline"]
    flops = train_flops_per_example(first["features"], [256, 256], first["classes"])
    examples_per_second = {
        name: first["train_rows"] / reference[name]["epoch_seconds"]
        for name in ("plain", "pipeline")
    }
    peak, peak_text = peak_gflops()
    summary = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "data": args.data,
        "epochs": args.epochs,
        "graph_optimizer": args.graph_optimizer,
        "fused_optimizers": args.fused_optimizers,
        "configs": len(rows),
        "epoch_speedup_median": ratio("epoch_seconds"),
        "trial_speedup_median": ratio("trial_seconds"),
        "first_trial_speedup_median": ratio("first_trial_seconds"),
        "val_accuracy_plain_mean": statistics.mean(r["plain"]["val_accuracy"] for r in rows),
        "val_accuracy_pipeline_mean": statistics.mean(r["pipeline"]["val_accuracy"] for r in rows),
        "reference_gflops": {name: eps * flops / 1e9 for name, eps in examples_per_second.items()},
        "peak_gflops": peak,
        "peak_formula": peak_text,
        "rows": rows,
    }
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "trial_speed.json").write_text(json.dumps(summary, indent=2))
    lines = [
        f"# Trial speed ({args.data}, {args.epochs} epochs, {len(rows)} runs per way, "
        f"graph optimizer {args.graph_optimizer}, fused optimizers {args.fused_optimizers} "
        "on the pipeline path)",
        "",
        "| config (layers, units, batch, optimizer) | plain s/epoch | pipeline s/epoch | "
        "epoch ratio | plain s/trial | pipeline s/trial | trial ratio | plain val acc | "
        "pipeline val acc |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        p, f = r["plain"], r["pipeline"]
        lines.append(
            f"| {tuple(r['config'])} | {p['epoch_seconds']:.3f} | {f['epoch_seconds']:.3f} | "
            f"{p['epoch_seconds'] / f['epoch_seconds']:.2f}x | {p['trial_seconds']:.2f} | "
            f"{f['trial_seconds']:.2f} | {p['trial_seconds'] / f['trial_seconds']:.2f}x | "
            f"{p['val_accuracy']:.4f} | {f['val_accuracy']:.4f} |"
        )
    gf = summary["reference_gflops"]
    lines += [
        "",
        f"Median speed-up: epochs {summary['epoch_speedup_median']:.2f}x, whole trials "
        f"{summary['trial_speedup_median']:.2f}x (the second trial in a process, as every "
        f"trial of a search after the first; the first trial in a fresh process: "
        f"{summary['first_trial_speedup_median']:.2f}x). Mean final validation accuracy: plain "
        f"{summary['val_accuracy_plain_mean']:.4f}, pipeline "
        f"{summary['val_accuracy_pipeline_mean']:.4f}.",
        "",
        f"Reference MLP (2 x 256, batch 32) training throughput: plain {gf['plain']:.2f} "
        f"GFLOP/s, pipeline {gf['pipeline']:.2f} GFLOP/s; machine peak {peak:.0f} GFLOP/s "
        f"({peak_text}): {100 * gf['plain'] / peak:.1f} % and "
        f"{100 * gf['pipeline'] / peak:.1f} % of peak.",
    ]
    (args.results / "trial_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
