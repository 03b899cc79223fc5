"""What the data fingerprint costs: hashing the rows a search trains on
(`kt_pipeline.data.fingerprint`), against loading them, on the 330,000-row generated
table (`real_tables.generated_table`) written as Parquet and as CSV.

Usage:
    python benchmarks/fingerprint.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_tables import GENERATED_ROWS, generated_table

from kt_pipeline.data import fingerprint, load_dataset

RESULTS = Path(__file__).parent / "results"


def _seconds(call: object, repeats: int) -> tuple[float, object]:
    times, value = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        value = call()  # type: ignore[operator]
        times.append(time.perf_counter() - started)
    return statistics.median(times), value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--rows", type=int, default=GENERATED_ROWS)
    args = parser.parse_args()
    frame = generated_table(args.rows)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for suffix in ("parquet", "csv"):
            path = Path(scratch) / f"table.{suffix}"
            frame.to_parquet(path) if suffix == "parquet" else frame.to_csv(path, index=False)
            load, dataset = _seconds(
                lambda path=path: load_dataset(str(path), label="converted"), args.repeats
            )
            hashed, _ = _seconds(lambda dataset=dataset: fingerprint(dataset), args.repeats)
            rows.append(
                {"format": suffix, "load_s": round(load, 3), "fingerprint_s": round(hashed, 3),
                 "share_of_load": round(hashed / load, 3)}
            )  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    command = " ".join(["python benchmarks/fingerprint.py", *sys.argv[1:]])
    lines = [
        "# The data fingerprint's cost",
        "",
        f"`{command}` ({platform.machine()}, {os.cpu_count()} CPUs; {args.rows:,} rows x "
        f"{frame.shape[1] - 1} feature columns; median of {args.repeats})",
        "",
        "| file | load_dataset (s) | fingerprint (s) | fingerprint / load |",
        "| --- | --- | --- | --- |",
        *[
            f"| {r['format']} | {r['load_s']} | {r['fingerprint_s']} | {r['share_of_load']:.2f} |"
            for r in rows
        ],
    ]
    text = "\n".join(lines) + "\n"
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "fingerprint.md").write_text(text, encoding="utf-8")
    (args.results / "fingerprint.json").write_text(
        json.dumps({"runs": rows, "command": command}, indent=2) + "\n", encoding="utf-8"
    )
    print(text)


if __name__ == "__main__":
    main()
