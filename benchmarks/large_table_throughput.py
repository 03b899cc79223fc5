"""Large-table throughput: training samples per second of the pipeline's reference MLP
on the 330,000-row generated table, at the batch sizes its default search uses there,
with the model's GFLOP/s and share of the CPU's peak, and the cost of the string
columns (the same model with them dropped).

The reference MLP is the default search's first trial (`hypermodels.mlp.STARTING_POINT`:
two ReLU layers of 256, Adam), built by `MLPHyperModel` with the preprocessing inside
the model, fed by the pipeline's own input pipeline (`hypermodels.inputs`). Each
(variant, batch size) trains one warm-up epoch, then three timed epochs over all
training rows, and reports the median (this shared machine is noisy). FLOPs count
the Dense layers' multiply-adds (forward and backward), so GFLOP/s leave out the
preprocessing and the optimizer.

Usage:
    python benchmarks/large_table_throughput.py [--rows 330000] [--batch-sizes 256,512,1024,2048]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_tables import GENERATED_ROWS, generated_table
from trial_speed import peak_gflops, train_flops_per_example

RESULTS = Path(__file__).parent / "results"


def _dense_flops_per_row(model: Any) -> int:
    """Training FLOPs per row of the model's Dense layers (2 per multiply-add, x3 for the
    backward pass)."""
    import keras

    widths = [layer.units for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    inputs = next(
        layer.kernel.shape[0] for layer in model.layers if isinstance(layer, keras.layers.Dense)
    )
    return train_flops_per_example(inputs, widths[:-1], widths[-1])


def measure(frame: Any, *, batch_size: int, label: str, timed: int = 3) -> dict[str, Any]:
    """One warm-up epoch and `timed` timed epochs of the reference MLP on `frame`; the
    median epoch."""
    import keras
    import keras_tuner

    from hypermodels import MLPHyperModel, SearchSpace, fit_schema
    from hypermodels.features import model_inputs
    from kt_pipeline.data import infer_column_kinds

    features = frame.drop(columns=[label])
    y = (frame[label] == "yes").to_numpy("int32")
    schema = fit_schema(features, infer_column_kinds(features))
    hypermodel = MLPHyperModel(
        schema=schema,
        task="binary",
        train_size=len(y),
        max_epochs=1 + timed,
        space=SearchSpace(batch_sizes=(batch_size,), early_stopping_patience=(0, 0)),
    )
    hp = keras_tuner.HyperParameters()
    keras.utils.set_random_seed(0)
    model = hypermodel.build(hp)
    hp.values.update(hypermodel.starting_values(hp))
    keras.backend.clear_session()
    model = hypermodel.build(hp)
    x = model_inputs(schema, features)
    ends: list[float] = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            ends.append(time.perf_counter())

    hypermodel.fit(hp, model, x, y, epochs=1 + timed, callbacks=[Timer()], verbose=0)
    seconds = statistics.median(b - a for a, b in itertools.pairwise(ends))
    flops = _dense_flops_per_row(model)
    return {
        "batch_size": batch_size,
        "rows": len(y),
        "epoch_seconds": round(seconds, 2),
        "samples_per_second": round(len(y) / seconds),
        "gflops": round(flops * len(y) / seconds / 1e9, 1),
        "units": hp.get("units"),
        "layers": hp.get("num_layers"),
        "optimizer": hp.get("optimizer"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=GENERATED_ROWS)
    parser.add_argument("--batch-sizes", default="256,512,1024,2048")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    frame = generated_table(args.rows)
    train = frame.sample(frac=0.7, random_state=0)  # the search's training share
    strings = [c for c in train.columns if train[c].dtype == object and c != "converted"]
    variants = {"all columns": train, "string columns dropped": train.drop(columns=strings)}
    peak, peak_text = peak_gflops()
    rows = []
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        for name, data in variants.items():
            result = measure(data, batch_size=batch_size, label="converted")
            result["variant"] = name
            result["share_of_peak"] = round(result["gflops"] / peak, 3)
            rows.append(result)
            print(json.dumps(result), flush=True)
    lines = [
        "# Large-table throughput",
        "",
        f"`python benchmarks/large_table_throughput.py {' '.join(sys.argv[1:])}`".replace(
            " `", "`"
        ),
        f"({platform.machine()}, {os.cpu_count()} CPUs, peak {peak:.0f} GFLOP/s = {peak_text}; "
        f"{rows[0]['rows']:,} training rows of the generated table; reference MLP "
        f"{rows[0]['layers']} x {rows[0]['units']} {rows[0]['optimizer']})",
        "",
        "| batch size | columns | epoch (s) | samples/s | Dense GFLOP/s | share of peak |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['batch_size']} | {r['variant']} | {r['epoch_seconds']} | "
            f"{r['samples_per_second']:,} | {r['gflops']} | {100 * r['share_of_peak']:.1f} % |"
        )
    text = "\n".join(lines) + "\n"
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "large_table_throughput.md").write_text(text, encoding="utf-8")
    (args.results / "large_table_throughput.json").write_text(
        json.dumps({"runs": rows, "peak_gflops": peak}, indent=2) + "\n", encoding="utf-8"
    )
    print(text)


if __name__ == "__main__":
    main()
