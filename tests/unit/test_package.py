"""The release artefacts: `python -m build` makes a wheel and an sdist, and the wheel installed
into a fresh virtual environment gives console scripts that run."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest
from hack import chartgen

ROOT = chartgen.ROOT


@pytest.mark.timeout(600)
def test_wheel_and_sdist_build_and_the_installed_scripts_run(tmp_path: Path) -> None:
    version = chartgen.version()
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = dist / f"optiinfra_coordinator-{version}-py3-none-any.whl"
    sdist = dist / f"optiinfra_coordinator-{version}.tar.gz"
    assert wheel.exists(), sorted(p.name for p in dist.iterdir())
    assert sdist.exists(), sorted(p.name for p in dist.iterdir())
    names = zipfile.ZipFile(wheel).namelist()
    assert "coordinator/gateway/dashboard.html" in names
    assert "coordinator/py.typed" in names
    assert not [n for n in names if n.startswith(("tests/", "hack/"))]
    with tarfile.open(sdist) as archive:
        members = archive.getnames()
    assert f"optiinfra_coordinator-{version}/operator/coordinator/cli.py" in members

    # A fresh environment, away from the repository: the wheel with its dependencies (from
    # pip's cache when `make install` filled it, else from PyPI).
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / "bin"
    subprocess.run(
        [str(bin_dir / "python"), "-m", "pip", "install", "--quiet",
         "--disable-pip-version-check", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
        cwd=tmp_path,
    )  # fmt: skip
    for script, expected in (("coordinator", "run"), ("kubectl-optiinfra", "approve")):
        done = subprocess.run(
            [str(bin_dir / script), "--help"],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr
        assert expected in done.stdout, done.stdout
    where = subprocess.run(
        [str(bin_dir / "python"), "-c", "import coordinator; print(coordinator.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert where.stdout.startswith(str(env_dir)), where.stdout  # the wheel's, not the checkout's
