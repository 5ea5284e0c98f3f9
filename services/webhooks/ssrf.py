"""Which URLs leadflow may post to: public addresses only, unless an operator allows more.

An endpoint URL is chosen by whoever holds an admin key, and the service posts
from inside the network: without this, a URL could reach the cloud metadata
service, a database's HTTP port or anything on loopback. The check runs on the
addresses the name resolves to, at creation and again at every delivery (DNS
can change), and the delivery connects to the very address checked.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

METADATA = (ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254"))
"""Cloud instance metadata (AWS, GCP, Azure; AWS over IPv6): credentials live there."""


class UnsafeUrl(ValueError):
    """Why leadflow will not post to this URL (said to the admin; no internals)."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int


@dataclass(frozen=True)
class Policy:
    allow_http: bool
    allowed: tuple[Network, ...]

    @classmethod
    def of(cls, allow_http: bool, networks: Iterable[str]) -> Policy:
        return cls(allow_http, tuple(ipaddress.ip_network(n, strict=False) for n in networks))


def parse_networks(text: str) -> list[str]:
    """A comma-separated CIDR list, each checked; ValueError names the bad one."""
    networks = [part.strip() for part in text.split(",") if part.strip()]
    for network in networks:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ValueError(f"{network!r} is not a CIDR network") from None
    return networks


def target(url: str, policy: Policy) -> Target:
    """The scheme, host and port of ``url``, or :class:`UnsafeUrl`."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http"):
        raise UnsafeUrl("the URL must be https")
    if parts.scheme == "http" and not policy.allow_http:
        raise UnsafeUrl("the URL must be https (plain http is not allowed here)")
    if parts.username or parts.password:
        raise UnsafeUrl("the URL must not carry a user or password")
    try:
        port = parts.port
    except ValueError:
        raise UnsafeUrl("the URL's port is not a number from 1 to 65535") from None
    host = parts.hostname
    if not host:
        raise UnsafeUrl("the URL has no host")
    return Target(parts.scheme, host, port or (443 if parts.scheme == "https" else 80))


def refusal(address: IPAddress, policy: Policy) -> str | None:
    """Why ``address`` is refused, or None when leadflow may connect to it."""
    if any(address in network for network in policy.allowed):
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return "an IPv4-mapped IPv6 address"
    if address in METADATA:
        return "a cloud metadata address"
    for kind, flag in (
        ("a loopback", address.is_loopback),
        ("an unspecified", address.is_unspecified),
        ("a link-local", address.is_link_local),
        ("a multicast", address.is_multicast),
        ("a private", address.is_private),
        ("a reserved", address.is_reserved),
    ):
        if flag:
            return f"{kind} address"
    if not address.is_global:
        return "not a public address"
    return None


def checked(addresses: Iterable[str], policy: Policy) -> IPAddress:
    """The first address, when every one the name resolves to is allowed; else UnsafeUrl.

    All of them, not just the first: a name that resolves to a public and a private
    address could be connected to either by a client that tries them in turn.
    """
    found = [ipaddress.ip_address(a.split("%", 1)[0]) for a in addresses]
    if not found:
        raise UnsafeUrl("the URL's host does not resolve")
    for address in found:
        reason = refusal(address, policy)
        if reason is not None:
            raise UnsafeUrl(f"the URL's host resolves to {reason}, which is refused")
    return found[0]
