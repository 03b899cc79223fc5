"""Every kind of bad input, through the CLI: one line naming the thing and the value,
exit code 2, no traceback, and an existing experiment directory left byte for byte."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import make_frame, tiny_search_args

from kt_pipeline.cli import main


def _text(name: str, text: str) -> Callable[[Path], list[str]]:
    """A data file with `text`, searched with label column `label`."""

    def make(root: Path) -> list[str]:
        (root / name).write_text(text)
        return ["--data", str(root / name), "--label", "label"]

    return make


def _bytes(name: str, data: bytes) -> Callable[[Path], list[str]]:
    def make(root: Path) -> list[str]:
        (root / name).write_bytes(data)
        return ["--data", str(root / name), "--label", "label"]

    return make


def _npz(**arrays: np.ndarray) -> Callable[[Path], list[str]]:
    def make(root: Path) -> list[str]:
        np.savez(root / "d.npz", **arrays)
        return ["--data", str(root / "d.npz")]

    return make


def _args(*args: str) -> Callable[[Path], list[str]]:
    return lambda root: list(args)


def _directory_as_data(root: Path) -> list[str]:
    (root / "folder.csv").mkdir()
    return ["--data", str(root / "folder.csv"), "--label", "label"]


def _experiment_under_a_file(root: Path) -> list[str]:
    # Tests run as root, where chmod cannot make a folder unwritable; a regular file
    # in the path makes the experiment directory impossible to create instead.
    (root / "blocker").write_text("a file")
    return ["--experiment-dir", str(root / "blocker" / "experiment")]


def _config_file(text: str) -> Callable[[Path], list[str]]:
    def make(root: Path) -> list[str]:
        (root / "config.toml").write_text(text)
        return ["--config", str(root / "config.toml")]

    return make


_GARBAGE = bytes(range(256)) * 8
_ROWS = "a,b,label\n" + "".join(f"{i},{i % 3},{'xy'[i % 2]}\n" for i in range(12))

# (case id, arguments made in a scratch folder, text the one line must contain)
CASES = [
    ("missing-file", _args("--data", "nope.csv", "--label", "y"), "'nope.csv' does not exist"),
    ("empty-file", _text("e.csv", ""), "e.csv' is empty"),
    ("header-only", _text("h.csv", "a,label\n"), "has no rows"),
    ("directory-not-file", _directory_as_data, "folder.csv' is a directory, not a file"),
    ("binary-garbage-csv", _bytes("g.csv", _GARBAGE), "g.csv' is not readable CSV"),
    ("binary-garbage-parquet", _bytes("g.parquet", _GARBAGE), "is not readable Parquet"),
    ("binary-garbage-npz", _bytes("g.npz", _GARBAGE), "g.npz' is not a readable .npz"),
    ("ragged-csv", _text("r.csv", "a,label\n1,x\n2,y,3,4\n"), "r.csv' is not readable CSV"),
    ("unknown-extension", _text("d.txt", _ROWS), "must end in .csv, .parquet, .pq or .npz"),
    ("missing-label", _text("d.csv", "a,b\n1,2\n3,4\n"), "label column 'label' is not in"),
    ("single-class", _text("d.csv", "a,label\n1,x\n2,x\n3,x\n"), "Received one class: 'x'"),
    (
        "text-in-numeric",
        _text("d.csv", "a,label\n" + "1,x\n2,y\n" * 5 + "foo,y\n"),
        "column 'a' of",
    ),
    ("all-missing-column", _text("d.csv", "a,b,label\n,1,x\n,2,y\n"), "column 'a' of"),
    ("infinite-values", _text("d.csv", "a,label\n1,x\ninf,y\n"), "has non-finite values"),
    ("npz-mismatched-lengths", _npz(x=np.ones((4, 2)), y=np.ones(3)), "Received shape (3,)"),
    ("npz-missing-array", _npz(x=np.ones((4, 2))), "Received arrays: ['x']"),
    ("too-few-rows", _npz(x=np.ones((4, 2)), y=np.array([0, 1, 0, 1])), "too few rows (4)"),
    ("unknown-builtin", _args("--data", "builtin:mnist"), "unknown built-in data set 'mnist'"),
    ("wrong-type", _args("--set", "tuner.max_trials='many'"), "Received: 'many'"),
    ("wrong-type-bool", _args("--set", "runtime.verbose=1"), "true or false. Received: 1"),
    ("negative", _args("--set", "tuner.max_trials=-3"), "must be >= 0. Received: -3"),
    ("negative-epochs", _args("--max-epochs", "-1"), "must be >= 0. Received: -1"),
    ("zero-crashes", _args("--set", "tuner.max_crashes_per_trial=0"), "must be > 0. Received: 0"),
    ("min-above-max", _args("--set", "search.dropout=[0.5, 0.1]"), "Received: [0.5, 0.1]"),
    ("unknown-optimizer", _args("--set", "search.optimizers=['adma']"), "Received: 'adma'"),
    ("unknown-schedule", _args("--set", "search.schedules=['linear']"), "Received: 'linear'"),
    ("unknown-tuner", _args("--tuner", "anneal"), "`tuner.algorithm` must be one of"),
    ("unknown-key", _args("--set", "tuner.max_trail=3"), "did you mean `tuner.max_trials`?"),
    ("unknown-section", _args("--set", "tunr.max_trials=3"), "unknown config key `tunr`"),
    ("log-scale-zero", _args("--set", "search.learning_rate=[0, 0.1]"), "log scale"),
    ("log-scale-negative", _args("--set", "search.clip_norm=[-1, 1]"), "Received: [-1.0, 1.0]"),
    ("missing-config", _args("--config", "nope.toml"), "cannot read config file 'nope.toml'"),
    ("malformed-config", _config_file("[tuner\n"), "is not valid TOML"),
    ("config-wrong-table", _config_file("tuner = 3\n"), "`tuner` in"),
    ("unwritable-experiment-dir", _experiment_under_a_file, "blocker/experiment' cannot be"),
]


def _snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every file's content hash and modification time, and every folder."""
    return {
        str(p.relative_to(root)): (
            hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir",
            p.stat().st_mtime_ns,
        )
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny search: the directory every bad command points at."""
    root = tmp_path_factory.mktemp("bad_input")
    make_frame(120, task="binary").to_csv(root / "data.csv", index=False)
    assert main(tiny_search_args(root / "experiment", root / "data.csv")) == 0
    return root / "experiment"


@pytest.mark.parametrize(
    ("make_args", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_is_one_line_exit_2_and_leaves_the_experiment_untouched(
    experiment: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    make_args: Callable[[Path], list[str]],
    message: str,
) -> None:
    before = _snapshot(experiment)
    args = ["search", "--experiment-dir", str(experiment), *make_args(tmp_path)]
    code = main(args)
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("kt-pipeline: error: ")
    assert message in lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert _snapshot(experiment) == before
