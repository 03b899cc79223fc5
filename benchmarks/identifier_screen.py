"""What the default's identifier screening (`data.screen_identifiers`) leaves out of the
network on each real table, its noise variant and the generated table, seed by seed.

For each table key and seed, the default's own preparation of the benchmark's 80 %
(`kt_pipeline.prepare.prepare_data`, no training): each high-cardinality column's
level share (`hypermodels.features.level_shares`, the share of what the other
columns' main effects leave that its levels explain out of fold) and the columns the
screening leaves out. A noise variant (`<table>_noise`) must lose exactly its
``member_code`` and nothing else, and a real table nothing: then the default's search
on the variant is the very search on the table (`tests/test_rare_levels.py`), and the
column costs nothing.

Usage:
    python benchmarks/identifier_screen.py [--seeds 5] [--tables fair,fair_noise,...]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import real_table_quality as quality
from keras_baselines import cpu_model

RESULTS = Path(__file__).resolve().parent / "results"
NOISE = "member_code"  # the noise variants' identifier (`real_tables._with_noise_id`)


def screened(key: str, seed: int) -> dict[str, Any]:
    """The level shares and the left-out columns of one table key and seed."""
    from kt_pipeline.config import load_config
    from kt_pipeline.prepare import prepare_data

    table, spec = quality.SPLITS[key]
    train, _ = quality.split(table, seed, tiny=False, spec=spec)
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "train.parquet"
        train.to_parquet(path)
        settings = {
            "data.source": str(path),
            "data.label": table.label,
            "data.task": table.task,
            "data.split": spec,
            "runtime.seed": seed,
        }
        prepared = prepare_data(load_config(settings=settings))
    dropped = [c.name for c in prepared.schema.columns if c.treatment == "drop"]
    return {"key": key, "seed": seed, "shares": dict(prepared.level_shares), "dropped": dropped}


def summarise(rows: list[dict[str, Any]], *, command: str, code: dict[str, Any]) -> str:
    """One line per table key: the shares' range over the seeds, what was left out."""
    lines = [
        "# Identifier screening: what the default leaves out, table by table",
        "",
        f"`{command}` (commit {code['commit']}{' +dirty' if code['dirty'] else ''}, "
        f"{cpu_model()}). Level shares in % (min..max over the seeds); a column is left "
        "out below 0.5 %.",
        "",
        "| table key | seeds | noise id's share | other ids' shares | left out |",
        "|---|---|---|---|---|",
    ]
    for key in dict.fromkeys(r["key"] for r in rows):
        mine = [r for r in rows if r["key"] == key]
        noise = [100 * r["shares"][NOISE] for r in mine if NOISE in r["shares"]]
        others: dict[str, list[float]] = {}
        for r in mine:
            for name, share in r["shares"].items():
                if name != NOISE:
                    others.setdefault(name, []).append(100 * share)
        left = sorted({f"{name} ({sum(name in r['dropped'] for r in mine)}/{len(mine)})"
                       for r in mine for name in r["dropped"]})  # fmt: skip
        lines.append(
            f"| {key} | {len(mine)} | "
            + (f"{min(noise):+.2f}..{max(noise):+.2f}" if noise else "-")
            + " | "
            + (", ".join(f"{n} {min(v):.2f}..{max(v):.2f}" for n, v in others.items()) or "-")
            + f" | {', '.join(left) or 'nothing'} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--tables", default=",".join(quality.SPLITS))
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    keys = [k for k in args.tables.split(",") if k]
    unknown = sorted(set(keys) - set(quality.SPLITS))
    if unknown:
        parser.error(f"unknown table: {', '.join(unknown)}")
    code = quality.code_version()
    rows = []
    for key in keys:
        for seed in range(args.seeds):
            rows.append(screened(key, seed))
            print(json.dumps(rows[-1]), flush=True)
    command = " ".join(["python benchmarks/identifier_screen.py", *sys.argv[1:]])
    text = summarise(rows, command=command, code=code)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "identifier_screen.md").write_text(text, encoding="utf-8")
    record = {"command": command, **code, "cpu": cpu_model(), "runs": rows}
    (args.results / "identifier_screen.json").write_text(json.dumps(record, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()
