"""Every make target works from a fresh clone: what uses .venv/ creates it first."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]
MAKEFILE = REPO / "Makefile"
TARGETS = re.findall(r"^([a-z-]+):.*## ", MAKEFILE.read_text(), re.MULTILINE)
"""The targets `make help` lists (the ones the README and users run)."""


@pytest.mark.parametrize("target", TARGETS)
def test_a_target_creates_the_virtual_environment_before_using_it(
    target: str, tmp_path: Path
) -> None:
    """`make -n TARGET` in a checkout without .venv/ (what make would run, in order): the
    first command that reads .venv/ is the one creating it."""
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(REPO / name, tmp_path / name)
    dry = subprocess.run(
        ["make", "--no-print-directory", "-n", target],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert dry.returncode == 0, dry.stderr
    uses = [line for line in dry.stdout.splitlines() if ".venv" in line]
    if uses:
        assert re.search(r"-m venv \.venv$", uses[0]), (
            f"make {target} uses .venv/ before creating it: {uses[0]!r}"
        )
