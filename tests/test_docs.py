"""The docs say where each concept lives, and that stays true as modules come and go."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.mark.parametrize("package", ["kt_pipeline", "hypermodels"])
def test_the_layout_page_names_every_module_and_no_other(package: str) -> None:
    layout = (ROOT / "docs" / "pages" / "layout.md").read_text(encoding="utf-8")
    section = layout.split(f"## `{package}/`", 1)[1].split("\n## ", 1)[0]
    named = {line.split("`")[1] for line in section.splitlines() if line.startswith("| `")}
    modules = {path.name for path in (ROOT / package).glob("*.py")}
    assert named == modules


def test_the_readme_stays_short() -> None:
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 250
