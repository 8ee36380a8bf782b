"""The synthetic workload metrics an example asks for, played into a metrics fixture.

An example whose VerificationTemplate reads Prometheus says which gauges the metrics fixture
(``prometheus.MetricsFixture``, scraped by a real Prometheus: ``prometheus.serving``) must
serve, one comment line each::

    # gauge: NAME LABEL=VALUE ... VALUE            a constant
    # gauge: NAME LABEL=VALUE ... VALUE/replicas   VALUE divided by the replicas the
                                                   Deployment named by `deployment=` asks for
    # gauge: NAME LABEL=VALUE ... VALUE*replicas   VALUE times those replicas (a cost)

``feeding`` keeps them set (every half second, with the namespace's label) while the
example runs, so a plan that scales a Deployment changes what Prometheus scrapes next. The
example's Prometheus address (``ADDRESS``) is replaced by the one the fixture is scraped by
(``with_address``). Used by ``make demo`` (hack/demo.py) and the cluster tests of the
examples, so both play the same workload.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import threading
from collections.abc import Callable, Iterator
from typing import Protocol

ADDRESS = "http://127.0.0.1:9090"
"""The Prometheus address the examples are written with (Prometheus's default port)."""
PERIOD = 0.5
_LINE = re.compile(r"^# gauge: (\S+) ((?:\S+=\S+ )+)(\S+)$")


class Fixture(Protocol):
    """What is played into: ``prometheus.MetricsFixture``."""

    def set(self, name: str, value: float, **labels: str) -> None: ...

    def remove(self, name: str, **labels: str) -> None: ...


class Server(Protocol):
    """The Prometheus that scrapes the fixture: ``prometheus.Prometheus``."""

    @property
    def url(self) -> str: ...


@dataclasses.dataclass(frozen=True)
class Gauge:
    """One gauge an example asks for."""

    name: str
    labels: dict[str, str]
    value: float
    by_replicas: str = ""
    """"/" (per replica), "*" (for each replica) or "" (a constant)."""

    def now(self, replicas: Callable[[str], int | None]) -> float | None:
        """Its value now; None when it depends on replicas and the Deployment has none."""
        if not self.by_replicas:
            return self.value
        count = replicas(self.labels.get("deployment", ""))
        if not count:
            return None
        return self.value / count if self.by_replicas == "/" else self.value * count


def gauges(text: str) -> list[Gauge]:
    """The ``# gauge:`` lines of an example's text."""
    found = []
    for line in text.splitlines():
        match = _LINE.match(line.strip())
        if match is None:
            continue
        name, labels, value = match.groups()
        pairs = dict(pair.split("=", 1) for pair in labels.split())
        number, by = value.removesuffix("replicas"), ""
        if number != value:
            number, by = number[:-1], number[-1]
        found.append(Gauge(name, pairs, float(number), by))
    return found


def with_address(text: str, url: str) -> str:
    """The example's text with its Prometheus address replaced by `url`."""
    return text.replace(ADDRESS, url)


@contextlib.contextmanager
def feeding(
    fixture: Fixture,
    wanted: list[Gauge],
    *,
    namespace: str,
    replicas: Callable[[str], int | None],
) -> Iterator[None]:
    """Keep `wanted` set in `fixture` (label ``namespace`` added) until the block ends."""
    stop = threading.Event()

    def play() -> None:
        while True:
            for gauge in wanted:
                value = gauge.now(replicas)
                if value is not None:
                    fixture.set(gauge.name, value, namespace=namespace, **gauge.labels)
            if stop.wait(PERIOD):
                return

    thread = threading.Thread(target=play, name="example-gauges", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        for gauge in wanted:
            fixture.remove(gauge.name, namespace=namespace, **gauge.labels)
