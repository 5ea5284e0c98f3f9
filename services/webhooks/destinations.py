"""Where a delivery connects: the name resolved now, checked, and pinned for the request.

Resolving, checking, then letting the HTTP client resolve again would leave a
window in which DNS answers differently (DNS rebinding). The request goes to
the checked address itself; the ``Host`` header and TLS's server name stay the
URL's, so virtual hosting and certificate checks see the name, not the address.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
from dataclasses import dataclass

import httpx

from services.webhooks.ssrf import IPAddress, Policy, UnsafeUrl, checked, target

RESOLVE_TIMEOUT_SECONDS = 5.0
"""A resolver that hangs must not hold a delivery slot (nor an admin's request) for long."""


@dataclass(frozen=True)
class Destination:
    url: httpx.URL
    """The URL with the checked address in place of the host."""
    host_header: str
    server_name: str


async def resolve(url: str, policy: Policy) -> Destination:
    """The checked destination of ``url``, or :class:`UnsafeUrl` (also for a name that
    does not resolve)."""
    literal = _literal_destination(url, policy)
    if literal is not None:
        return literal
    found = target(url, policy)
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_SECONDS):
            infos = await asyncio.get_running_loop().getaddrinfo(
                found.host, found.port, type=socket.SOCK_STREAM
            )
    except (socket.gaierror, UnicodeError, TimeoutError):
        raise UnsafeUrl("the URL's host does not resolve") from None
    return _pinned(url, checked([str(info[4][0]) for info in infos], policy))


@functools.lru_cache(maxsize=4096)
def _literal_destination(url: str, policy: Policy) -> Destination | None:
    """None for a host name (looked up at every attempt: DNS can change). A host that is
    an address looks the same at every attempt, so it is parsed and checked once."""
    literal = _literal(target(url, policy).host)
    return None if literal is None else _pinned(url, checked([literal], policy))


def _pinned(url: str, address: IPAddress) -> Destination:
    parsed = httpx.URL(url)
    pinned = parsed.copy_with(host=str(address))
    host_header = parsed.netloc.decode("ascii")  # the URL's host[:port], IPv6 bracketed
    return Destination(pinned, host_header, parsed.host)


def _literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


async def check_url(url: str, policy: Policy) -> None:
    """At creation and update: the same check a delivery makes."""
    await resolve(url, policy)
