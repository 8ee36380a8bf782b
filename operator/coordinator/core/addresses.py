"""Which network addresses the operator may send requests to (server-side request forgery).

An AgentEndpoint's URL (webhook steps, and the ApprovalPolicies' notifications, which
name AgentEndpoints) is written by whoever may create AgentEndpoints, and the operator
POSTs to it from inside the cluster, with the network reach of its pod. So a URL must
not be a way to make the operator reach what only it can reach. The webhook executor
resolves the host, judges every address it got with `Policy.refusal`, and connects only
to the addresses it judged (no second lookup a DNS answer could change in between).
Refused, whatever the URL says:

- link-local (169.254.0.0/16, fe80::/10): the clouds' metadata services (node
  credentials) live at 169.254.169.254;
- the other cloud metadata addresses (fd00:ec2::254, 100.100.100.200);
- unspecified and "this network" (0.0.0.0/8, ::): Linux connects them to the host itself;
- multicast, broadcast and reserved (224.0.0.0/4, 240.0.0.0/4, ff00::/8, ::/96);
- loopback (127.0.0.0/8, ::1), unless the operator was started for local testing
  (``coordinator run --allow-loopback-endpoints``: the tests and the demo, where the
  agent runs next to a local control plane);
- the ranges of ``--deny-cidr`` (the cluster's service and pod ranges; none by default,
  because an in-cluster agent reached through its Service has an address in them).

An IPv4 address written as IPv6 (``::ffff:a.b.c.d``, NAT64 ``64:ff9b::a.b.c.d``) is
judged as the IPv4 address it reaches. Private ranges (10.0.0.0/8, 172.16.0.0/12,
192.168.0.0/16) are allowed: real agents live there.

Pure: the ``ipaddress`` module only; no lookups.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
from typing import Final

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class AddressClass(enum.StrEnum):
    """The kinds of address the operator never calls (loopback: only when allowed)."""

    LINK_LOCAL = "link-local"
    METADATA = "cloud metadata"
    UNSPECIFIED = "unspecified"
    MULTICAST = "multicast"
    RESERVED = "reserved or broadcast"
    LOOPBACK = "loopback"


METADATA_ADDRESSES: Final = frozenset(
    ipaddress.ip_address(a) for a in ("fd00:ec2::254", "100.100.100.200")
)
"""Cloud metadata services outside link-local (AWS over IPv6, Alibaba Cloud)."""
_THIS_NETWORK: Final = ipaddress.IPv4Network("0.0.0.0/8")
_IPV4_COMPATIBLE: Final = ipaddress.IPv6Network("::/96")
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")


def parse(text: str) -> IPAddress | None:
    """`text` as an IP address (an IPv6 zone such as ``%eth0`` kept), or None."""
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def reached(address: IPAddress) -> IPAddress:
    """The address a packet to `address` reaches: the IPv4 address inside an IPv4-mapped
    or NAT64 IPv6 address, else `address` itself (without an IPv6 zone)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        plain = ipaddress.IPv6Address(int(address))  # the zone dropped
        if plain in _NAT64:
            return ipaddress.IPv4Address(int(plain) & 0xFFFFFFFF)
        return plain
    return address


def classify(address: IPAddress) -> AddressClass | None:
    """The special class of `address` (as reached), or None for ordinary unicast, public
    or private."""
    address = reached(address)
    if address in METADATA_ADDRESSES:
        return AddressClass.METADATA
    if address.is_loopback:
        return AddressClass.LOOPBACK
    if address.is_link_local:
        return AddressClass.LINK_LOCAL
    if address.is_multicast:
        return AddressClass.MULTICAST
    if isinstance(address, ipaddress.IPv4Address):
        if address in _THIS_NETWORK:
            return AddressClass.UNSPECIFIED
        if address.is_reserved or address == ipaddress.IPv4Address("255.255.255.255"):
            return AddressClass.RESERVED
        return None
    if address.is_unspecified:
        return AddressClass.UNSPECIFIED
    if address in _IPV4_COMPATIBLE:
        return AddressClass.RESERVED
    return None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Policy:
    """What the operator was told: loopback allowed or not, the ranges it must not call."""

    allow_loopback: bool = False
    deny: tuple[Network, ...] = ()

    def refusal(self, address: str | IPAddress) -> str | None:
        """Why the operator may not connect to `address` ("link-local address", "address
        in a denied range (10.96.0.0/12, --deny-cidr)"), or None when it may."""
        parsed = parse(address) if isinstance(address, str) else address
        if parsed is None:
            return f"{address!r} is not an IP address"
        kind = classify(parsed)
        if kind is AddressClass.LOOPBACK and self.allow_loopback:
            kind = None
        if kind is not None:
            return f"{kind} address"
        target = reached(parsed)
        for network in self.deny:
            if target.version == network.version and target in network:
                return f"address in a denied range ({network}, --deny-cidr)"
        return None


STRICT: Final = Policy()
"""The default: no loopback, no denied ranges beyond the classes above."""
LOCAL_TESTING: Final = Policy(allow_loopback=True)
"""``--allow-loopback-endpoints``: agents on this machine (tests, the demo)."""
