"""What each example in examples/ says will happen, read from its comments.

# check: NAME PHASE [by WINNER]   what `coordinator check -f examples/` prints
# then: kubectl ...               a command a person runs after applying
# outcome: NAME PHASE             what the operator reaches on a cluster
# outcome: deployment/NAME replicas N
# outcome: NAME realised-savings USD  the monthly savings its verified change realised
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from pathlib import Path

import yaml

EXAMPLES = Path(__file__).parents[2] / "examples"
_LINE = re.compile(r"^# (check|then|outcome): (.+)$")


@dataclasses.dataclass(frozen=True)
class Example:
    path: Path
    checks: tuple[tuple[str, str, str | None], ...]
    then: tuple[list[str], ...]
    outcomes: tuple[tuple[str, str, str], ...]


def agents() -> tuple[str, ...]:
    """The agentIds of the examples' recommendations: their default plans are carried out
    by these agents, through AgentEndpoints of the same names."""
    docs = [d for p in sorted(EXAMPLES.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text())]
    return tuple(
        sorted({d["spec"]["agentId"] for d in docs if d and d.get("kind") == "Recommendation"})
    )


def load() -> list[Example]:
    examples = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        checks, then, outcomes = [], [], []
        for line in path.read_text().splitlines():
            match = _LINE.match(line)
            if not match:
                continue
            kind, text = match.groups()
            if kind == "check":
                words = text.split()
                checks.append((words[0], words[1], words[3] if len(words) > 3 else None))
            elif kind == "then":
                then.append(shlex.split(text))
            else:
                name, what, value = ([*text.split(), ""])[:3]
                outcomes.append((name, what, value))
        examples.append(Example(path, tuple(checks), tuple(then), tuple(outcomes)))
    return examples
