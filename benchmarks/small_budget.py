"""A small search, whole command against whole script: is ``kt-pipeline search`` at a
small budget faster than the plain KerasTuner script a user would write?

Both run as fresh processes on the same 20,000 x 50 generated table (scikit-learn's
``make_classification``, 3 classes) at equal trials x epochs of RandomSearch, and their
wall time counts everything: Python and TensorFlow start-up, reading the data, the
search, and for kt-pipeline its learning-rate range test, export, verification in a
fresh process and held-out score. The plain script is KerasTuner's getting-started
model and ``tuner.search`` on scikit-learn-standardised arrays with Keras's default
batch size, then ``get_best_models`` and a test score. The two alternate, ``--repeats``
times, and the summary gives each repeat's ratio and the median.

Usage:
    python benchmarks/small_budget.py [--trials 4] [--epochs 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
ROWS, FEATURES = 20_000, 50

PLAIN_SCRIPT = """
import sys
import numpy as np, keras, keras_tuner
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
data, work, trials, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
with np.load(data) as arrays:
    x, y = arrays["x"], arrays["y"]
x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.15, random_state=0)
x_train, x_val, y_train, y_val = train_test_split(x_train, y_train, test_size=0.18, random_state=0)
scaler = StandardScaler().fit(x_train)
x_train, x_val, x_test = (scaler.transform(a) for a in (x_train, x_val, x_test))

def build(hp):
    model = keras.Sequential()
    for i in range(hp.Int("num_layers", 1, 3)):
        model.add(keras.layers.Dense(hp.Int(f"units_{i}", 32, 512, step=32),
                                     activation=hp.Choice("activation", ["relu", "tanh"])))
    if hp.Boolean("dropout"):
        model.add(keras.layers.Dropout(rate=0.25))
    model.add(keras.layers.Dense(3, activation="softmax"))
    model.compile(optimizer=keras.optimizers.Adam(hp.Float("lr", 1e-4, 1e-2, sampling="log")),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model

tuner = keras_tuner.RandomSearch(build, objective="val_accuracy", max_trials=trials,
                                 seed=0, directory=work)
tuner.search(x_train, y_train, epochs=epochs, validation_data=(x_val, y_val), verbose=0)
model = tuner.get_best_models(1)[0]
print("test accuracy", float(np.mean(model.predict(x_test, verbose=0).argmax(1) == y_test)))
"""


def _data(folder: Path) -> Path:
    import numpy as np
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=ROWS, n_features=FEATURES, n_informative=20, n_classes=3, random_state=0
    )
    path = folder / "table.npz"
    np.savez(path, x=x.astype("float32"), y=y.astype("int32"))
    return path


def _timed(command: list[str]) -> tuple[float, str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{command[:3]} failed:\n{done.stderr[-3000:]}")
    return seconds, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    kt_pipeline = str(Path(sys.executable).with_name("kt-pipeline"))
    runs = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        data = _data(folder)
        for repeat in range(args.repeats):
            plain, _ = _timed(
                [sys.executable, "-c", PLAIN_SCRIPT, str(data), str(folder / f"plain{repeat}"),
                 str(args.trials), str(args.epochs)]
            )  # fmt: skip
            ours, _ = _timed(
                [kt_pipeline, "search", "--data", str(data), "--tuner", "random",
                 "--max-trials", str(args.trials), "--max-epochs", str(args.epochs),
                 "--experiment-dir", str(folder / f"ours{repeat}")]
            )  # fmt: skip
            runs.append({"plain": round(plain, 1), "kt_pipeline": round(ours, 1)})
            print(json.dumps(runs[-1]), flush=True)
    ratios = [r["plain"] / r["kt_pipeline"] for r in runs]
    command = " ".join(["python benchmarks/small_budget.py", *sys.argv[1:]])
    lines = [
        "# A small search, whole command against whole script",
        "",
        f"`{command}` ({platform.machine()}, {os.cpu_count()} CPUs; {ROWS:,} x {FEATURES} "
        f"table, RandomSearch {args.trials} trials x {args.epochs} epochs; seconds of the "
        "whole process)",
        "",
        "| repeat | plain KerasTuner script (s) | kt-pipeline search (s) | speed-up |",
        "| --- | --- | --- | --- |",
    ]
    for index, (run, ratio) in enumerate(zip(runs, ratios, strict=True)):
        lines.append(f"| {index} | {run['plain']} | {run['kt_pipeline']} | {ratio:.2f}x |")
    lines += ["", f"Median speed-up: **{statistics.median(ratios):.2f}x**."]
    text = "\n".join(lines) + "\n"
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "small_budget.md").write_text(text, encoding="utf-8")
    summary = {"runs": runs, "median_speedup": statistics.median(ratios), "command": command}
    (args.results / "small_budget.json").write_text(json.dumps(summary, indent=2) + "\n", "utf-8")
    print(text)


if __name__ == "__main__":
    main()
