"""The README's commands, run as a user runs them: the front door cannot rot unseen.

Every fenced ```sh block of README.md and docs/**/*.md (the site) is run, section by section,
in order, by bash with the repository as its working directory, starting from a fresh shell (no
KUBECONFIG, neither the pinned kubectl nor .venv/bin on PATH): what the blocks set (the
tour's first line evals `localcluster.py up`) carries over to the next command. Editing the
README changes what is tested; nothing of it is copied here.

- `CMD &` is started in the background; `coordinator run &` is waited for until it is
  healthy and its webhooks are registered (as tests/operator_process.py does), and every
  background process is stopped by its PID at the end of the section.
- A plain block right after a ```sh block is the expected output of its last command: each
  expected row must be in the output, compared column by column (not AGE). A `kubectl get`
  is asked again until it matches (the operator settles within seconds, as a user sees).
- `kubectl ... -w` runs until the last row of its expected output appears (bounded).
- A command refused with NotFound is tried again for a while: the operator creates what
  the tour reads next (a plan after an approval) a moment later, as a user typing would.
- `<!-- not run: REASON -->` right above a block leaves it out, with its reason.

The session's control plane is the tour's (`make cluster` finds it running). The tour
acts in the kubeconfig's namespace, `default`: what an earlier run left there is deleted
before and after. The operator's ports and namespace come from COORDINATOR_* variables of
the shell (the machine is shared; the session's other operators own other namespaces).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import kubernetes
import localcluster
import pytest

from tests.support import Kubectl, wait_for
from tests.support.cluster import REPO, release_plans
from tests.support.processes import OperatorProcess

DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
NOT_RUN = re.compile(r"^<!--\s*not run:\s*(.+?)\s*-->$")
FENCE = re.compile(r"^```(\S*)\s*$")
HEADING = re.compile(r"^#{1,6}\s+(.*)$")
IGNORED_COLUMNS = {"AGE"}
"""Columns whose value depends on when the command ran."""
TOUR_NAMESPACE = "default"
"""The namespace of the tour's kubeconfigs (.cluster/kubeconfig and -approver)."""
LEFTOVERS = "optiinfra,deployments,horizontalpodautoscalers,rolebindings"
"""What the tour creates in its namespace, deleted before and after it."""
COMMAND_TIMEOUT = 300.0
WATCH_TIMEOUT = 150
"""A watch's wait, well inside the test's own timeout (pytest-timeout, 300 s), so that a
watch that never shows its last row fails with what it printed."""
SETTLE_TIMEOUT = 60.0


@dataclass
class Block:
    """A fenced ```sh block: its commands and the output expected of the last one."""

    line: int
    commands: list[str]
    not_run: str | None = None
    expected: str | None = None


@dataclass
class Section:
    document: str
    title: str
    blocks: list[Block] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.document}: {self.title}"


def commands(text: str) -> list[str]:
    """The command lines of a block: continuations joined, comment-only lines dropped."""
    joined = re.sub(r"\\\n\s*", "", text)
    return [line for line in joined.splitlines() if line.strip() and not line.startswith("#")]


def sections(path: Path) -> list[Section]:
    """The sections of a markdown document that hold ```sh blocks, in order."""
    found: list[Section] = []
    document = str(path.relative_to(REPO))
    current = Section(document, "(top)")
    lines = path.read_text().splitlines()
    index = 0
    while index < len(lines):
        fence = FENCE.match(lines[index])
        if fence is None:
            heading = HEADING.match(lines[index])
            if heading:
                current = Section(document, heading.group(1))
            index += 1
            continue
        end = lines.index("```", index + 1)
        if fence.group(1) == "sh":
            marker = NOT_RUN.match(lines[index - 1].strip()) if index else None
            body = "\n".join(lines[index + 1 : end]) + "\n"
            block = Block(index + 1, commands(body), marker.group(1) if marker else None)
            if end + 1 < len(lines) and lines[end + 1] == "```":  # a plain block right after
                close = lines.index("```", end + 2)
                block.expected = "\n".join(lines[end + 2 : close]) + "\n"
                end = close
            if not current.blocks:
                found.append(current)
            current.blocks.append(block)
        index = end + 1
    return found


SECTIONS = [section for path in DOCUMENTS for section in sections(path)]


def columns(header: str) -> list[tuple[str, int, int | None]]:
    """(name, start, end) of each column of a kubectl table, from its header line (names
    are separated by two spaces or more; `WHY A PERSON` is one)."""
    names = list(re.finditer(r"\S+(?: \S+)*", header))
    ends: list[int | None] = [m.start() for m in names[1:]]
    return [(m.group(), m.start(), end) for m, end in zip(names, [*ends, None], strict=True)]


def rows(table: str) -> list[dict[str, str]]:
    """Each row of the kubectl tables in `table` (several, blank-line separated), as
    column -> value, without the columns that depend on time."""
    found: list[dict[str, str]] = []
    header: list[tuple[str, int, int | None]] | None = None
    for line in table.splitlines():
        if not line.strip():
            header = None
        elif header is None:
            header = columns(line)
        else:
            found.append(
                {
                    name: line[start:end].strip()
                    for name, start, end in header
                    if name not in IGNORED_COLUMNS
                }
            )
    return found


def missing(expected: str, output: str) -> list[dict[str, str]]:
    """The expected rows that the output does not have."""
    have = rows(output)
    return [row for row in rows(expected) if row not in have]


def fresh_environment(cluster: localcluster.Cluster) -> dict[str, str]:
    """A new user's shell: what the test session added (KUBECONFIG, the pinned kubectl,
    the virtual environment's commands) is not there."""
    venv_bin = str(Path(sys.executable).parent)
    hidden = {str(cluster.bin_dir), venv_bin}
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p not in hidden)
    return env


class Shell:
    """Commands run one by one as bash runs them in an interactive session: each sees the
    variables the ones before exported or set (`set -a`)."""

    def __init__(self, env: dict[str, str], directory: Path) -> None:
        self.env = env
        self.directory = directory
        self.background: list[OperatorProcess | subprocess.Popen[bytes]] = []
        self._dump = directory / "shell.env"
        self._count = 0

    def run(self, command: str) -> tuple[int, str]:
        script = f'set -a\n{command}\n__rc=$?\nenv -0 > "{self._dump}"\nexit $__rc\n'
        proc = subprocess.run(
            ["bash", "-c", script],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        if self._dump.exists():
            pairs = self._dump.read_bytes().decode().split("\0")
            self.env = dict(p.split("=", 1) for p in pairs if "=" in p)
            self._dump.unlink()
        return proc.returncode, proc.stdout + proc.stderr

    def start(self, command: str) -> None:
        """`command &`: started in the background, waited for if it is the operator."""
        self._count += 1
        log = self.directory / f"background-{self._count}.log"
        argv = ["bash", "-c", f"exec {command}"]
        if shlex.split(command, comments=True)[:2] == ["coordinator", "run"]:
            operator = OperatorProcess(kubeconfig=Path(self.env["KUBECONFIG"]), log=log, args=[])
            env = {**self.env, **operator.environment(), "PYTHONUNBUFFERED": "1"}
            env["COORDINATOR_NAMESPACE"] = TOUR_NAMESPACE
            self.background.append(operator)
            operator.start_command(argv, env=env, cwd=REPO)
        else:
            with log.open("wb") as out:
                self.background.append(
                    subprocess.Popen(argv, cwd=REPO, env=self.env, stdout=out, stderr=out)
                )

    def watch(self, command: str, expected: str | None) -> str:
        """A watch: run until the last expected row appears, then stop it (started again
        when it ends: what it watches is not found yet)."""
        assert expected, f"`{command}` watches: its block needs the expected output after it"
        table = expected.strip().splitlines()
        want = f"{table[0]}\n{table[-1]}\n"
        seen: list[str] = []
        watching: list[subprocess.Popen[str]] = []
        ended: list[str] = []

        def shown() -> bool:
            if not watching or watching[-1].poll() is not None:  # not found yet, or ended
                ended.extend(seen)
                seen.clear()
                watching.append(self._watch(command, seen))
            return bool(seen) and not missing(want, "".join(seen))

        try:
            wait_for(
                shown,
                what=f"`{command}` to show {table[-1]!r}",
                timeout=WATCH_TIMEOUT,
                interval=0.5,
            )
        except AssertionError as exc:  # what it printed by the deadline, not at the start
            _, state = self.run("kubectl get recommendations,executionplans -o wide")
            printed = "".join(ended + seen)
            message = f"{exc} (it printed: {printed!r}; objects now:\n{state})"
            raise AssertionError(message) from None
        finally:
            for proc in watching:
                if proc.poll() is None:
                    proc.terminate()
                proc.wait(timeout=10)
        return "".join(seen)

    def _watch(self, command: str, lines: list[str]) -> subprocess.Popen[str]:
        """Start `command`, its output appended to `lines` as it comes."""
        proc = subprocess.Popen(
            ["bash", "-c", f"exec {command}"],
            cwd=REPO,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

        def read() -> None:
            assert proc.stdout is not None
            lines.extend(iter(proc.stdout.readline, ""))

        threading.Thread(target=read, daemon=True).start()
        return proc

    def stop(self) -> None:
        for process in reversed(self.background):
            if isinstance(process, OperatorProcess):
                process.stop()
            elif process.poll() is None:
                process.terminate()
                process.wait(timeout=30)


def watches(command: str) -> bool:
    words = shlex.split(command, comments=True)
    return bool(words) and words[0] == "kubectl" and ("-w" in words or "--watch" in words)


def background(command: str) -> str | None:
    """The command of `CMD &` (a trailing comment allowed), else None."""
    words = shlex.split(command, comments=True)
    if not words or words[-1] != "&":
        return None
    found = re.match(r"^(.*?)\s*&\s*(?:#.*)?$", command)
    assert found is not None, command
    return found.group(1)


def reads(command: str) -> bool:
    words = shlex.split(command, comments=True)
    return words[:2] == ["kubectl", "get"]


def settle(shell: Shell, command: str, expected: str | None) -> tuple[int, str]:
    """Run `command`; again while it is refused with NotFound (the operator has not created
    it yet), or while a `kubectl get` does not show the expected rows yet; the last try."""
    last: list[tuple[int, str]] = []

    def done() -> bool:
        last.append(shell.run(command))
        rc, output = last[-1]
        if rc != 0:
            return "NotFound" not in output
        return expected is None or not reads(command) or not missing(expected, output)

    with contextlib.suppress(AssertionError):  # timed out: the last try says why
        wait_for(done, what=f"`{command}`", timeout=SETTLE_TIMEOUT, interval=1.0)
    return last[-1]


def run_block(shell: Shell, block: Block, where: str) -> None:
    last = len(block.commands) - 1
    for number, command in enumerate(block.commands):
        expected = block.expected if number == last else None
        started = background(command)
        if started is not None:
            shell.start(started)
            continue
        if watches(command):
            shell.watch(command, expected)
            continue
        rc, output = settle(shell, command, expected)
        assert rc == 0, f"{where}, `{command}` failed ({rc}):\n{output}"
        if expected is not None:
            assert not missing(expected, output), (
                f"{where}, `{command}` printed:\n{output}\nthe README expects:\n{expected}"
            )


def clear_tour_namespace(kubectl: Kubectl, api: kubernetes.client.ApiClient) -> None:
    release_plans(api, TOUR_NAMESPACE)
    kubectl(
        "delete", LEFTOVERS, "--all", "-n", TOUR_NAMESPACE, "--wait=true", "--timeout=60s",
    )  # fmt: skip


@pytest.fixture
def tour_namespace(kubectl: Kubectl, api: kubernetes.client.ApiClient, crds: None) -> Iterator[str]:
    clear_tour_namespace(kubectl, api)
    yield TOUR_NAMESPACE
    clear_tour_namespace(kubectl, api)


@pytest.mark.parametrize("section", SECTIONS, ids=lambda s: s.id)
def test_the_commands_of_the_readme_work_as_written(
    section: Section,
    cluster: localcluster.Cluster,
    tour_namespace: str,
    tmp_path: Path,
) -> None:
    runnable = [block for block in section.blocks if block.not_run is None]
    if not runnable:
        pytest.skip("; ".join(f"not run: {block.not_run}" for block in section.blocks))
    shell = Shell(fresh_environment(cluster), tmp_path)
    try:
        for block in runnable:
            run_block(shell, block, f"{section.id} (line {block.line})")
    finally:
        shell.stop()
