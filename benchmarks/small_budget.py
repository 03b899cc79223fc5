"""A small search, whole command against whole script: is ``kt-pipeline search`` at a
small budget faster than the plain KerasTuner script a user would write?

Both run as fresh processes on the same 20,000 x 50 generated table (scikit-learn's
``make_classification``, 3 classes) at equal trials x epochs of RandomSearch, and their
wall time counts everything: Python and TensorFlow start-up, reading the data, the
search, and for kt-pipeline its learning-rate range test, export, verification in a
fresh process and held-out score. The plain script is KerasTuner's getting-started
model and ``tuner.search`` on scikit-learn-standardised arrays with Keras's default
batch size, then ``get_best_models`` and a test score. The two alternate, ``--repeats``
times at each budget, and the summary gives each repeat's ratio and the median per
budget: both pay Python's and TensorFlow's start-up, and kt-pipeline alone pays its
range test and export, so the ratio grows with the budget.

``--floors`` adds two kt-pipeline runs per repeat that say where the time goes: the
same search without its fixed costs (no learning-rate range test, no export,
verification or score), and that again in the plain script's numeric space
(standardised inputs, no numeric embeddings).

Usage:
    python benchmarks/small_budget.py [--budgets 4x4,10x10] [--repeats 3] [--floors]
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


# kt-pipeline without its fixed costs, and that again in the plain script's numeric space.
_NO_FIXED_COSTS = ["--set", "search.learning_rate_auto=false", "--set", "export.enabled=false"]
FLOORS = {
    "no_fixed_costs": _NO_FIXED_COSTS,
    "no_fixed_costs_plain_space": [
        *_NO_FIXED_COSTS,
        "--set", 'search.numeric_embeddings=["none"]',
        "--set", 'search.numeric_scalings=["standardize"]',
    ],
}  # fmt: skip


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


def _seconds(command: list[str]) -> float:
    return round(_timed(command)[0], 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--budgets", default="4x4,10x10", help="comma-separated TRIALSxEPOCHS, e.g. 4x4,10x10"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument(
        "--floors", action="store_true", help="also run kt-pipeline without its fixed costs"
    )
    args = parser.parse_args()
    kt_pipeline = str(Path(sys.executable).with_name("kt-pipeline"))
    budgets = [tuple(int(n) for n in b.split("x")) for b in args.budgets.split(",")]
    runs = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        data = _data(folder)
        for trials, epochs in budgets:
            for repeat in range(args.repeats):
                work = folder / f"{trials}x{epochs}-{repeat}"
                plain, _ = _timed(
                    [sys.executable, "-c", PLAIN_SCRIPT, str(data), str(work / "plain"),
                     str(trials), str(epochs)]
                )  # fmt: skip
                search = [kt_pipeline, "search", "--data", str(data), "--tuner", "random",
                          "--max-trials", str(trials), "--max-epochs", str(epochs)]  # fmt: skip
                runs.append(
                    {"trials": trials, "epochs": epochs, "repeat": repeat, "plain": round(plain, 1),
                     "kt_pipeline": _seconds([*search, "--experiment-dir", str(work / "ours")])}
                )  # fmt: skip
                for name, extra in FLOORS.items() if args.floors else ():
                    runs[-1][name] = _seconds(
                        [*search, "--experiment-dir", str(work / name), *extra]
                    )
                print(json.dumps(runs[-1]), flush=True)
    command = " ".join(["python benchmarks/small_budget.py", *sys.argv[1:]])
    lines = [
        "# A small search, whole command against whole script",
        "",
        f"`{command}` ({platform.machine()}, {os.cpu_count()} CPUs; {ROWS:,} x {FEATURES} "
        "table, RandomSearch; seconds of the whole process)",
        "",
        "| trials x epochs | repeat | plain KerasTuner script (s) | kt-pipeline search (s) "
        "| speed-up |",
        "| --- | --- | --- | --- | --- |",
    ]
    medians = {}
    for trials, epochs in budgets:
        mine = [r for r in runs if (r["trials"], r["epochs"]) == (trials, epochs)]
        ratios = [r["plain"] / r["kt_pipeline"] for r in mine]
        medians[f"{trials}x{epochs}"] = round(statistics.median(ratios), 2)
        for run, ratio in zip(mine, ratios, strict=True):
            lines.append(
                f"| {trials} x {epochs} | {run['repeat']} | {run['plain']} | "
                f"{run['kt_pipeline']} | {ratio:.2f}x |"
            )
    lines += [
        "",
        "Median speed-up: " + ", ".join(f"**{v:.2f}x** at {k}" for k, v in medians.items()) + ".",
    ]
    if args.floors:
        lines += [
            "",
            "Where the time goes: kt-pipeline without the range test, export, verification "
            "and score, and that again with standardised inputs and no numeric embeddings "
            "(the plain script's numeric space); speed-up against the plain script of the "
            "same repeat.",
            "",
            "| trials x epochs | repeat | no fixed costs (s) | speed-up | also plain numeric "
            "space (s) | speed-up |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for run in runs:
            a, b = run["no_fixed_costs"], run["no_fixed_costs_plain_space"]
            lines.append(
                f"| {run['trials']} x {run['epochs']} | {run['repeat']} | {a} | "
                f"{run['plain'] / a:.2f}x | {b} | {run['plain'] / b:.2f}x |"
            )
    text = "\n".join(lines) + "\n"
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "small_budget.md").write_text(text, encoding="utf-8")
    summary = {"runs": runs, "median_speedup": medians, "command": command}
    (args.results / "small_budget.json").write_text(json.dumps(summary, indent=2) + "\n", "utf-8")
    print(text)


if __name__ == "__main__":
    main()
