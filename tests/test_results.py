from __future__ import annotations

import json
from pathlib import Path

import keras_tuner

from kt_pipeline.results import write_results


def _save_trial(project: Path, trial_id: str, values: dict[str, object], status: str) -> None:
    hp = keras_tuner.HyperParameters()
    for name, value in values.items():
        if isinstance(value, bool):
            hp.Boolean(name, default=value)
        elif isinstance(value, int):
            hp.Int(name, 1, 512, default=value)
        else:
            hp.Float(name, 0.0, 1.0, default=value)
    trial = keras_tuner.engine.trial.Trial(hp, trial_id=trial_id, status=status)
    (project / f"trial_{trial_id}").mkdir(parents=True)
    trial.save(str(project / f"trial_{trial_id}" / "trial.json"))


def test_integer_hyperparameters_stay_integers_where_some_trials_lack_them(
    tmp_path: Path,
) -> None:
    """A conditional hyperparameter missing from one trial turns its pandas column into
    floats; the written table must still read 64, not 64.0, in CSV and JSON."""
    project = tmp_path / "search"
    _save_trial(project, "0", {"units": 64, "extra_units": 32, "rate": 0.5}, "COMPLETED")
    _save_trial(project, "1", {"units": 128, "rate": 0.25}, "COMPLETED")
    _save_trial(project, "2", {"units": 16, "wide": True, "rate": 1.0}, "FAILED")
    frame = write_results(project, tmp_path / "results.csv", json_path=tmp_path / "results.json")

    assert frame["extra_units"].dtype == "float64"  # the returned table stays numeric
    header, *rows = (tmp_path / "results.csv").read_text().splitlines()
    columns = header.split(",")
    cells = [dict(zip(columns, row.split(","), strict=True)) for row in rows]
    assert [c["units"] for c in cells] == ["64", "128", "16"]
    assert [c["extra_units"] for c in cells] == ["32", "", ""]
    assert [c["rate"] for c in cells] == ["0.5", "0.25", "1.0"]  # floats stay floats
    records = json.loads((tmp_path / "results.json").read_text())
    assert [r["hyperparameters"].get("extra_units") for r in records] == [32, None, None]
    assert all(type(r["hyperparameters"]["units"]) is int for r in records)
    assert type(records[0]["hyperparameters"]["rate"]) is float
