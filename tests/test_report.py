from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pandas as pd
import pytest
from conftest import FLAKY_TRIALS

from kt_pipeline.cli import main
from kt_pipeline.results import failure_reason, load_trials

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Every test but the last reads a real finished search (about 30 s, shared).


@pytest.fixture(scope="module")
def reported(flaky_experiment: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the finished experiment, with ``kt-pipeline report`` run on it."""
    experiment = tmp_path_factory.mktemp("report") / "experiment"
    shutil.copytree(flaky_experiment, experiment)
    (experiment / "results.csv").unlink()
    assert main(["report", str(experiment), "--top", "3"]) == 0
    return experiment


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == _PNG_SIGNATURE, path
    assert data[12:16] == b"IHDR", path
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.mark.slow
def test_results_match_the_tuners_trial_records(reported: Path) -> None:
    trials = load_trials(reported / "search")
    assert len(trials) == FLAKY_TRIALS
    table = pd.read_csv(reported / "results.csv", dtype={"trial_id": str})
    records = json.loads((reported / "results.json").read_text())
    assert sorted(table["trial_id"]) == sorted(trials)
    assert sorted(r["trial_id"] for r in records) == sorted(trials)
    by_id = {r["trial_id"]: r for r in records}
    for row in table.itertuples(index=False):
        trial = trials[row.trial_id]
        record = by_id[row.trial_id]
        assert row.status == record["status"] == trial.status
        if trial.status == "COMPLETED":
            assert row.objective == pytest.approx(trial.score)
            assert record["objective"] == pytest.approx(trial.score)
            assert pd.isna(row.reason) and record["reason"] is None
            assert record["epochs"] == 2
        else:
            assert pd.isna(row.objective) and record["objective"] is None
            assert row.reason == record["reason"] == failure_reason(trial.message)
            assert "synthetic failure for the tests" in record["reason"]
        active = {
            name: value
            for name, value in trial.hyperparameters.values.items()
            if trial.hyperparameters.is_active(name)
        }
        assert record["hyperparameters"] == pytest.approx(active)
    assert sorted(r["status"] for r in records).count("FAILED") == 1


@pytest.mark.slow
def test_every_plot_is_a_real_png(reported: Path) -> None:
    pngs = sorted((reported / "report").glob("*.png"))
    names = [p.name for p in pngs]
    assert "history.png" in names and "importance.png" in names
    assert len([n for n in names if n.startswith("objective_vs_")]) == 2
    for path in pngs:
        width, height = _png_size(path)
        assert width >= 400 and height >= 200, (path.name, width, height)
        assert path.stat().st_size > 10_000, path.name


@pytest.mark.slow
def test_report_page_embeds_the_plots_and_lists_the_failure(reported: Path) -> None:
    page = (reported / "report" / "report.md").read_text()
    for path in (reported / "report").glob("*.png"):
        assert f"]({path.name})" in page
    assert "## Failed trials" in page and "synthetic failure for the tests" in page
    assert "## Hyperparameter importance" in page
    assert "[results.csv](../results.csv)" in page


@pytest.mark.slow
def test_terminal_shows_the_leaderboard_and_importance(
    flaky_experiment: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    experiment = tmp_path / "experiment"
    shutil.copytree(flaky_experiment, experiment)
    assert main(["report", str(experiment), "--top", "2"]) == 0
    out = capsys.readouterr().out
    scores = {t.trial_id: t.score for t in load_trials(experiment / "search").values()}
    assert (
        f"{FLAKY_TRIALS} trials ({FLAKY_TRIALS - 1} completed), objective val_accuracy (max)" in out
    )
    board = out.split("Top 2 trials:")[1].split("Hyperparameter importance")[0]
    rows = [line.split() for line in board.strip().splitlines()[1:]]
    best = sorted((s for s in scores.values() if s is not None), reverse=True)[:2]
    assert [scores[row[1]] for row in rows] == best  # ties keep trial order
    assert [float(row[2]) for row in rows] == pytest.approx(best, abs=1e-4)
    assert "share of the objective's variance" in out


def test_an_empty_folder_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        f"kt-pipeline: error: experiment directory {str(tmp_path)!r} holds no search "
        "(no search/oracle.json)"
    ]
    assert list(tmp_path.iterdir()) == []
