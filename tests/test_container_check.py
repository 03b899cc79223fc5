"""`examples/container/check.sh` builds and runs the image where podman, runc and
debootstrap are installed; elsewhere it says what is missing and exits 77 (skipped)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

CHECK = Path(__file__).parents[1] / "examples" / "container" / "check.sh"


def test_without_podman_the_check_says_so_and_exits_77(tmp_path: Path) -> None:
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("dirname",):  # what the script needs before it looks for podman
        (tools / tool).symlink_to(shutil.which(tool) or f"/usr/bin/{tool}")
    bash = shutil.which("bash") or "/bin/bash"
    done = subprocess.run(
        [bash, str(CHECK)],
        env={"PATH": str(tools)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 77
    assert "podman is missing" in done.stderr and "apt-get install" in done.stderr
