"""The client's address, for rate limits and login lockouts."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from django.conf import settings
from django.http import HttpRequest

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks(entries: Iterable[str]) -> list[Network]:
    return [ipaddress.ip_network(entry.strip(), strict=False) for entry in entries if entry.strip()]


def _trusted(address: str, networks: list[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    return any(ip in net for net in networks)


def client_ip(request: HttpRequest) -> str:
    """The peer address, or behind trusted proxies the address the nearest untrusted hop gave.

    With TRUSTED_PROXIES empty (the default) X-Forwarded-For is ignored: anyone can write it. When the
    peer (REMOTE_ADDR) is a trusted proxy, the X-Forwarded-For chain is read from the right, skipping
    trusted proxies; the first address that is not one is the client. Addresses a client wrote itself
    sit further left and are never reached, so a client cannot choose its own bucket.
    """
    peer = str(request.META.get("REMOTE_ADDR") or "unknown")
    networks = _networks(getattr(settings, "TRUSTED_PROXIES", []) or [])
    if not networks or not _trusted(peer, networks):
        return peer
    chain = [hop.strip() for hop in str(request.META.get("HTTP_X_FORWARDED_FOR") or "").split(",") if hop.strip()]
    for hop in reversed(chain):
        if not _trusted(hop, networks):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer  # a malformed hop: fall back to the proxy itself, never to text the client chose
    return peer


def client_ip_or_none(request: HttpRequest) -> str | None:
    """client_ip for django-axes, which stores it in an IP address column: None when the request has
    no address (a session started by the server itself, such as a test client's force_login)."""
    address = client_ip(request)
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return None
