"""The bench scripts load: a rename elsewhere (bench/e2e.py's or chaos.py's names, the
API's constants) must not leave `make bench`, `make chaos`, `make bench-shards` or
`make fuzz` broken until someone runs them."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.mark.parametrize("script", sorted(p.stem for p in BENCH.glob("*.py")))
def test_a_bench_script_loads_and_every_name_it_takes_from_another_exists(
    script: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    module = importlib.import_module(script)
    source = (BENCH / f"{script}.py").read_text()
    for other in ("e2e", "chaos"):
        if other == script or f"import {other}" not in source:
            continue
        used = {
            word.split(".", 1)[1].split("(")[0].split(")")[0].split(",")[0].split("[")[0]
            for word in source.replace("\n", " ").split()
            if word.startswith(f"{other}.")
        }
        target = sys.modules[other]
        missing = sorted(n for n in used if n.isidentifier() and not hasattr(target, n))
        assert missing == [], f"bench/{script}.py uses {other}.{missing}, which do not exist"
    assert module is not None
