"""The documentation: the README is a front door whose links lead somewhere, and the site
builds strict (no broken link, anchor or page outside the nav)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

REPO = Path(__file__).parents[2]
README = REPO / "README.md"
LINK = re.compile(r"\]\(([^)\s]+)\)")
BUILD_TIMEOUT = 180
"""Seconds `mkdocs build` may take (about 3 s on the 2-core development machine)."""


def test_the_site_builds_strict(tmp_path: Path) -> None:
    """`mkdocs build --strict`: a link to a missing page or anchor, or a page left out of
    the nav, is a warning, and strict makes it fail."""
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=REPO,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    assert (tmp_path / "reference" / "recommendation" / "index.html").exists()


def _slug(heading: str) -> str:
    """The anchor of a heading, as mkdocs (Python-Markdown's toc) and GitHub make it."""
    text = unicodedata.normalize("NFKD", heading).encode("ascii", "ignore").decode()
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.MULTILINE | re.DOTALL)
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.*)$", text, re.MULTILINE)}


def test_the_readme_is_a_front_door_whose_links_lead_somewhere() -> None:
    text = README.read_text()
    assert len(text.splitlines()) < 250, "the README is the front door: the rest goes to docs/"
    assert "## A tour" in text
    broken = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z]+:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        path = REPO / file if file else README
        if not path.exists():
            broken.append(target)
            continue
        if anchor and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(target)
    assert broken == []
    assert "docs/index.md" in LINK.findall(text)
