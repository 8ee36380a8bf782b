"""Which addresses the operator may call (server-side request forgery): the pure
classification of ``core.addresses``, the URL rule of AgentEndpoints (the CRD's CEL rule
in Python), and the ``coordinator run`` flags that configure them."""

from __future__ import annotations

import argparse
import ipaddress

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from coordinator import run
from coordinator.api.endpoint import ADDRESS_MESSAGE, AgentEndpointSpec, url_problem
from coordinator.core import addresses
from coordinator.core.addresses import LOCAL_TESTING, STRICT, AddressClass, Policy

LINK_LOCAL_V4 = ipaddress.IPv4Network("169.254.0.0/16")
LOOPBACK_V4 = ipaddress.IPv4Network("127.0.0.0/8")
PRIVATE = [ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")]


def in_network(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> st.SearchStrategy[str]:
    first, last = int(network.network_address), int(network.broadcast_address)
    return st.integers(first, last).map(lambda i: str(ipaddress.ip_address(i)))


def mapped(v4: str) -> str:
    return f"::ffff:{v4}"


def nat64(v4: str) -> str:
    return str(ipaddress.IPv6Address(int(ipaddress.IPv6Address("64:ff9b::")) | int(
        ipaddress.IPv4Address(v4))))  # fmt: skip


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("169.254.169.254", AddressClass.LINK_LOCAL),
        ("fe80::1", AddressClass.LINK_LOCAL),
        ("fe80::1%eth0", AddressClass.LINK_LOCAL),
        ("::ffff:169.254.169.254", AddressClass.LINK_LOCAL),
        ("64:ff9b::a9fe:a9fe", AddressClass.LINK_LOCAL),
        ("fd00:ec2::254", AddressClass.METADATA),
        ("100.100.100.200", AddressClass.METADATA),
        ("127.0.0.1", AddressClass.LOOPBACK),
        ("127.255.0.9", AddressClass.LOOPBACK),
        ("::1", AddressClass.LOOPBACK),
        ("::ffff:127.0.0.1", AddressClass.LOOPBACK),
        ("0.0.0.0", AddressClass.UNSPECIFIED),
        ("0.1.2.3", AddressClass.UNSPECIFIED),
        ("::", AddressClass.UNSPECIFIED),
        ("224.0.0.1", AddressClass.MULTICAST),
        ("ff02::1", AddressClass.MULTICAST),
        ("255.255.255.255", AddressClass.RESERVED),
        ("240.0.0.1", AddressClass.RESERVED),
        ("::127.0.0.1", AddressClass.RESERVED),
        ("10.0.0.1", None),
        ("192.168.1.20", None),
        ("8.8.8.8", None),
        ("2001:db8::1", None),
        ("fd12:3456::1", None),
    ],
)
def test_classes(address: str, kind: AddressClass | None) -> None:
    parsed = addresses.parse(address)
    assert parsed is not None
    assert addresses.classify(parsed) == kind


@given(in_network(LINK_LOCAL_V4))
def test_link_local_is_refused_however_it_is_written(v4: str) -> None:
    for written in (v4, mapped(v4), nat64(v4)):
        assert STRICT.refusal(written) == "link-local address"
        assert LOCAL_TESTING.refusal(written) == "link-local address"


@given(st.integers(0, 2**54 - 1), st.sampled_from(["", "%eth0", "%1"]))
def test_ipv6_link_local_is_refused_with_or_without_a_zone(low: int, zone: str) -> None:
    address = str(ipaddress.IPv6Address((0xFE80 << 112) | low)) + zone
    assert LOCAL_TESTING.refusal(address) == "link-local address"


@given(in_network(LOOPBACK_V4))
def test_loopback_only_for_local_testing(v4: str) -> None:
    for written in (v4, mapped(v4)):
        assert STRICT.refusal(written) == "loopback address"
        assert LOCAL_TESTING.refusal(written) is None


@given(st.sampled_from(PRIVATE).flatmap(in_network))
def test_private_addresses_are_allowed_they_are_where_agents_live(v4: str) -> None:
    assert STRICT.refusal(v4) is None
    assert STRICT.refusal(mapped(v4)) is None


@given(st.integers(0, 2**32 - 1))
def test_an_ipv4_address_written_as_ipv6_is_judged_as_itself(value: int) -> None:
    v4 = str(ipaddress.IPv4Address(value))
    assert STRICT.refusal(mapped(v4)) == STRICT.refusal(v4)
    assert STRICT.refusal(nat64(v4)) == STRICT.refusal(v4)


@given(in_network(ipaddress.IPv4Network("10.96.0.0/12")), in_network(PRIVATE[2]))
def test_denied_ranges(inside: str, outside: str) -> None:
    policy = Policy(deny=(ipaddress.IPv4Network("10.96.0.0/12"),))
    why = "address in a denied range (10.96.0.0/12, --deny-cidr)"
    assert policy.refusal(inside) == why
    assert policy.refusal(mapped(inside)) == why
    assert policy.refusal(outside) is None


def test_a_name_is_not_an_address() -> None:
    assert STRICT.refusal("agent.example.com") == "'agent.example.com' is not an IP address"


# --- the URL rule of AgentEndpoints (admission: the CRD's CEL rule, in Python) -------------


@pytest.mark.parametrize(
    "url",
    [
        "https://169.254.169.254/latest/meta-data/",
        "https://169.254.0.1:8443/",
        "https://[fe80::1]/",
        "https://[fe80::1%25eth0]/",
        "https://[::ffff:169.254.169.254]/",
        "https://[0:0:0:0:0:ffff:a9fe:a9fe]/",
        "https://[FD00:EC2::254]/",
        "https://100.100.100.200/",
        "https://0.0.0.0/",
        "https://[::]/",
        "https://224.0.0.1/",
        "https://[ff02::1]/",
        "https://255.255.255.255/",
    ],
)
def test_literal_addresses_nobody_s_agent_has_are_refused_at_admission(url: str) -> None:
    assert url_problem(url) == ADDRESS_MESSAGE
    with pytest.raises(pydantic.ValidationError, match="link-local"):
        AgentEndpointSpec.model_validate({"url": url, "secretRef": {"name": "s", "key": "k"}})


@pytest.mark.parametrize(
    "url",
    [
        "https://10.0.0.7/",
        "https://[2001:db8::1]:8443/",
        "https://agent.example.com/",
        "https://169.254.169.254.example.com/",  # a name: judged when called
        "http://127.0.0.1:8080/",  # loopback: judged when called (--allow-loopback-endpoints)
        "http://[::1]:8080/",
    ],
)
def test_other_hosts_pass_admission(url: str) -> None:
    assert url_problem(url) is None


@given(in_network(LINK_LOCAL_V4))
def test_every_literal_link_local_url_is_refused(v4: str) -> None:
    assert url_problem(f"https://{v4}/") == ADDRESS_MESSAGE
    assert url_problem(f"https://[::ffff:{v4}]/") == ADDRESS_MESSAGE


# --- coordinator run flags ------------------------------------------------------------------


def parsed(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    run.configure(parser)
    return parser.parse_args(argv)


def test_the_flags_make_the_policy() -> None:
    assert run._address_policy(parsed()) == STRICT
    policy = run._address_policy(
        parsed("--allow-loopback-endpoints", "--deny-cidr=10.96.0.0/12", "--deny-cidr=fd00::/8")
    )
    assert policy == Policy(
        allow_loopback=True,
        deny=(ipaddress.ip_network("10.96.0.0/12"), ipaddress.ip_network("fd00::/8")),
    )


def test_the_environment_sets_them_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COORDINATOR_ALLOW_LOOPBACK_ENDPOINTS", "true")
    monkeypatch.setenv("COORDINATOR_DENY_CIDR", "10.96.0.0/12,10.244.0.0/16")
    policy = run._address_policy(parsed())
    assert policy.allow_loopback
    assert policy.deny == (
        ipaddress.ip_network("10.96.0.0/12"),
        ipaddress.ip_network("10.244.0.0/16"),
    )


def test_a_bad_range_stops_the_start_naming_the_flag() -> None:
    with pytest.raises(run.StartupError, match=r"--deny-cidr=10\.96\.0\.0/40: .*"):
        run._address_policy(parsed("--deny-cidr=10.96.0.0/40"))
