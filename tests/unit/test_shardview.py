"""What ``kubectl optiinfra`` says about shards (coordinator.shardview, through the plugin
against the fake of k8s.caller): which shard decided a recommendation and which drives its
customer now, from the hand-off record and the ring's Leases; and ``shards``, the ring's
Leases with the customers each holds."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from coordinator import plugin, shardview
from coordinator.api.common import RECOMMENDATIONS
from coordinator.api.shardnames import (
    CUSTOMER_ANNOTATION,
    HANDOFF_LABEL,
    RELEASED_AT_ANNOTATION,
    RING_LABEL,
    record_name,
)
from coordinator.core import shards
from coordinator.k8s import caller
from tests.support import builders
from tests.support.callers import NAMESPACE, FakeCaller

NOW = datetime(2026, 1, 2, 12, 0, 0, tzinfo=UTC)
LEASES = "optiinfra-system"
RING = "optiinfra"
CUSTOMER = "customer-1"


def stamp(seconds_ago: float, now: datetime = NOW) -> str:
    return (now - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def shard_lease(identity: str, seconds_ago: float, now: datetime = NOW) -> dict[str, object]:
    """Shard `identity`'s own Lease, renewed `seconds_ago` (15 s long)."""
    return builders.lease(
        f"{RING}-{identity}",
        holder=identity,
        renewed=stamp(seconds_ago, now),
        labels={RING_LABEL: RING},
    )


def record(holder: str, customer: str = CUSTOMER, released: str | None = None) -> dict[str, object]:
    """The hand-off record of `customer` of team-a, held by `holder`."""
    annotations = {CUSTOMER_ANNOTATION: f"{NAMESPACE}/{customer}"}
    if released:
        annotations[RELEASED_AT_ANNOTATION] = released
    return builders.lease(
        record_name(RING, NAMESPACE, customer),
        holder=holder,
        labels={HANDOFF_LABEL: RING},
        annotations=annotations,
    )


def decided(**status: object) -> dict[str, object]:
    return builders.recommendation(
        "rec-1", namespace=NAMESPACE, customerId=CUSTOMER, status={"phase": "Pending", **status}
    )


def lines(
    recommendation: dict[str, object],
    hand_off: dict[str, object] | None,
    *leases: dict[str, object],
) -> list[str]:
    return shardview.owner_lines(recommendation, record=hand_off, leases=list(leases), now=NOW)


def test_nothing_about_shards_without_them() -> None:
    assert lines(decided(), None) == []


def test_the_shard_that_decided_and_nobody_driving_yet() -> None:
    assert lines(decided(shard="s-0"), None) == [
        "Decided by shard s-0.",
        "Customer team-a/customer-1: no shard has claimed it yet.",
    ]


def test_the_shard_that_drives_it_now() -> None:
    assert lines(decided(shard="s-0"), record("s-0"), shard_lease("s-0", 3)) == [
        "Decided by shard s-0.",
        "Customer team-a/customer-1: driven by s-0 now (its Lease renewed 3s ago).",
    ]
    # A record alone (a recommendation decided before --shard) says who drives it too.
    assert lines(decided(), record("s-0"), shard_lease("s-0", 3))[0].startswith(
        "Customer team-a/customer-1: driven by s-0 now"
    )


def test_released_expired_and_gone() -> None:
    released = record("s-1", released="2026-01-02T11:59:50Z")
    assert lines(decided(shard="s-1"), released)[1] == (
        "Customer team-a/customer-1: released by s-1 at 2026-01-02T11:59:50Z; "
        "no shard drives it now."
    )
    assert lines(decided(), record("s-1"), shard_lease("s-1", 40)) == [
        "Customer team-a/customer-1: driven by s-1, whose Lease expired (renewed 40s ago): "
        "another shard may claim it."
    ]
    assert lines(decided(), record("s-1")) == [
        "Customer team-a/customer-1: driven by s-1, whose Lease is gone."
    ]


def test_the_shard_the_ring_gives_it_to_when_another_holds_it() -> None:
    members = ["s-0", "s-1", "s-2"]
    assigned = shards.owner(shards.ring(members), NAMESPACE, CUSTOMER)
    holder = next(m for m in members if m != assigned)
    said = lines(decided(), record(holder), *(shard_lease(m, 1) for m in members))
    assert said == [
        f"Customer team-a/customer-1: driven by {holder} now (its Lease renewed 1s ago).",
        f"  the ring gives it to {assigned}, which claims it once it is free",
    ]
    assert len(lines(decided(), record(assigned), *(shard_lease(m, 1) for m in members))) == 1


def test_the_rings_shards_and_their_customers() -> None:
    leases = [shard_lease("s-0", 2), shard_lease("s-1", 30)]
    records = [
        *(record("s-0", f"c-{i}") for i in range(3)),
        record("s-1", "c-3"),
        record("s-2", "c-4", released="2026-01-02T11:59:00Z"),
        record("s-3", "c-5"),
    ]
    assert shardview.ring_shards(leases, records, NOW) == [
        shardview.Shard("s-0", "optiinfra-s-0", "live", "2s ago", 3),
        shardview.Shard("s-1", "optiinfra-s-1", "expired", "30s ago", 1),
        shardview.Shard("s-3", "", "gone", "-", 1),
    ]
    assert shardview.waiting(records) == ["team-a/c-4"]


# Through the plugin, as `kubectl optiinfra why` and `shards` print it.


def _session() -> plugin.Session:
    session = object.__new__(plugin.Session)
    session.api, session.namespace, session.all_namespaces = object(), NAMESPACE, False
    return session


def _why() -> list[str]:
    said = plugin._why(_session(), "rec-1", ring=RING, lease_namespace=LEASES)
    return said.splitlines()


def test_why_says_nothing_of_shards_without_them(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeCaller().install(monkeypatch)
    fake.add(RECOMMENDATIONS, decided())
    said = _why()
    assert said[0].startswith("rec-1 is Pending")
    assert not [line for line in said if "shard" in line.lower() or "Lease" in line]
    fake.lease_error = caller.CallerError(403, 'leases is forbidden: User "bob" cannot list')
    assert _why() == said  # Leases a user may not read say nothing either


def test_why_names_the_deciding_and_the_driving_shard(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeCaller().install(monkeypatch)
    fake.add(RECOMMENDATIONS, decided(shard="s-0"))
    assert _why()[-1] == "Customer team-a/customer-1: no shard has claimed it yet."
    now = datetime.now(UTC)
    fake.add_lease(shard_lease("s-0", 1, now))
    fake.add_lease(record("s-0"))
    said, driven = _why()[-2:]
    assert said == "Decided by shard s-0."
    assert re.fullmatch(
        r"Customer team-a/customer-1: driven by s-0 now \(its Lease renewed [12]s ago\)\.", driven
    )
    fake.lease_error = caller.CallerError(403, "leases is forbidden")
    assert _why()[-2:] == [
        "Decided by shard s-0.",
        "  (Leases in optiinfra-system: leases is forbidden)",
    ]


def test_shards_lists_the_ring(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeCaller().install(monkeypatch)
    assert plugin._shards(_session(), RING, LEASES) == (
        "no shards in ring optiinfra (Leases in namespace optiinfra-system)"
    )
    now = datetime.now(UTC)
    fake.add_lease(shard_lease("s-0", 0, now))
    fake.add_lease(shard_lease("s-1", 60, now))
    fake.add_lease(
        builders.lease(
            "other-s-9", holder="s-9", renewed=stamp(0, now), labels={RING_LABEL: "other"}
        )
    )
    for i in range(2):
        fake.add_lease(record("s-0", f"c-{i}"))
    fake.add_lease(record("s-1", "c-2", released=stamp(5, now)))
    said = plugin._shards(_session(), RING, LEASES).splitlines()
    assert said[0].split() == ["SHARD", "STATE", "RENEWED", "CUSTOMERS", "LEASE"]
    assert [line.split()[:2] + line.split()[4:] for line in said[1:3]] == [
        ["s-0", "live", "2", "optiinfra-s-0"],
        ["s-1", "expired", "0", "optiinfra-s-1"],
    ]
    assert said[3:] == ["1 customers released, not claimed yet: team-a/c-2"]


def test_the_flags_and_the_completion() -> None:
    options = plugin._parse(["shards", "--ring", "r2", "--lease-namespace", "ops", "-n", "x"])
    assert (options.command, options.ring, options.lease_namespace) == ("shards", "r2", "ops")
    options = plugin._parse(["why", "rec-1"])
    assert (options.ring, options.lease_namespace) == ("optiinfra", "optiinfra-system")
    assert plugin.completions(["sh"]) == ["shards"]
    assert plugin.completions(["shards", ""]) == []
