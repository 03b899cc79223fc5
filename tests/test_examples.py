"""The examples run as they are: the notebooks are executed cell by cell in a fresh
kernel (their budgets are tiny by design)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

EXAMPLES = Path(__file__).parents[1] / "examples"

pytestmark = pytest.mark.slow


def _executed(name: str, folder: Path) -> Any:
    """The notebook `name` of `examples/`, run cell by cell in a fresh kernel in `folder`."""
    notebook = nbformat.read(EXAMPLES / name, as_version=4)
    NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(folder)}},
    ).execute()
    return notebook


def test_the_quickstart_notebook_runs_in_a_fresh_kernel(tmp_path: Path) -> None:
    notebook = _executed("quickstart.ipynb", tmp_path)
    outputs = {
        "".join(cell.source): cell.outputs for cell in notebook.cells if cell.cell_type == "code"
    }
    errors = [o for cell in outputs.values() for o in cell if o.output_type == "error"]
    assert not errors
    scores = next(
        o
        for source, cell in outputs.items()
        if "ktp.search(" in source
        for o in cell
        if o.output_type == "execute_result"
    )
    assert "'auc'" in scores["data"]["text/plain"]
    assert (tmp_path / "experiments" / "notebook" / "export" / "1" / "saved_model.pb").is_file()


def test_the_estimators_notebook_runs_in_a_fresh_kernel(tmp_path: Path) -> None:
    notebook = _executed("estimators.ipynb", tmp_path)
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "searched MLP:" in printed and "HistGB:" in printed and "held-out accuracy:" in printed
    # Nothing from TensorFlow's native or Python logging reaches the notebook.
    assert "cuda" not in printed.lower() and "tensorflow" not in printed.lower()
    assert (tmp_path / "chile.joblib").is_file()
    assert not (tmp_path / "experiments").exists()  # no experiment_dir: nothing written here
