"""Webhook URLs: what punchcard agrees to call (SSRF safety), checked twice.

When an endpoint is saved: an http(s) URL with a host, no credentials, at most
``MAX_URL`` characters, whose host resolves. Then, unless ``PUNCHCARD_WEBHOOK_ALLOW_PRIVATE``
is on, every address the host resolves to must be public: no loopback, private,
link-local (cloud metadata at 169.254.169.254), multicast, reserved or unspecified
address. The sweeper checks again before every attempt, after its own DNS lookup, and
connects to the address it checked (``pinned``), so a name re-pointed at an internal
address after it was saved (DNS rebinding) is refused rather than called.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_URL = 2000

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeUrl(ValueError):
    """A URL punchcard refuses to call; the message says why."""


@dataclass(frozen=True, slots=True)
class Target:
    url: str
    host: str
    port: int
    address: str  # the checked address to connect to


def parse(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an acceptable URL, else ``UnsafeUrl``."""
    if len(url) > MAX_URL:
        raise UnsafeUrl(f"the URL is longer than {MAX_URL} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise UnsafeUrl(f"not a URL ({error})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UnsafeUrl("the URL must start with http:// or https://")
    if not parts.hostname:
        raise UnsafeUrl("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrl("the URL must not carry credentials")
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise UnsafeUrl("the URL holds whitespace or control characters")
    return scheme, parts.hostname, port or (443 if scheme == "https" else 80)


def refused_address(address: Address) -> str | None:
    """Why ``address`` is not public, or None."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for kind, flag in (
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("private", address.is_private),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("unspecified", address.is_unspecified),
    ):
        if flag:
            return kind
    return None


async def resolve(host: str, port: int) -> list[Address]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        raise UnsafeUrl(f"the host {host!r} does not resolve ({error})") from None
    addresses: list[Address] = []
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise UnsafeUrl(f"the host {host!r} does not resolve")
    return addresses


async def check(url: str, *, allow_private: bool) -> Target:
    """The URL and the address to call it at, after the checks above; ``UnsafeUrl`` else."""
    _, host, port = parse(url)
    addresses = await resolve(host, port)
    if not allow_private:
        for address in addresses:
            reason = refused_address(address)
            if reason is not None:
                raise UnsafeUrl(
                    f"{host} resolves to a {reason} address ({address}); webhooks go to "
                    "public addresses only (PUNCHCARD_WEBHOOK_ALLOW_PRIVATE=1 allows others)"
                )
    return Target(url=url, host=host, port=port, address=str(addresses[0]))
