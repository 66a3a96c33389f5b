"""The client's address and scheme, believing ``X-Forwarded-*`` only from trusted proxies.

When the socket peer is in ``server.trusted_proxies``, ``X-Forwarded-For`` is walked from the
right, skipping trusted addresses; the first untrusted one is the client. Otherwise the peer
itself is the client and any ``X-Forwarded-*`` the client sent is not believed (the forwarder
appends the peer to the chain it passes on). A malformed entry ends the walk at the last good one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence

from aiohttp import web
from multidict import MultiMapping

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """The networks whose forwarding headers are believed."""

    def __init__(self, cidrs: Sequence[str]) -> None:
        self.networks: tuple[Network, ...] = tuple(
            ipaddress.ip_network(c, strict=False) for c in cidrs
        )

    def trusts(self, address: str | None) -> bool:
        """True when ``address`` is inside a trusted network."""
        if not self.networks or not address:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.networks)

    def client_ip(self, request: web.Request) -> str:
        """The client address for logs, rate limits and ``X-Forwarded-For``."""
        return self.client_ip_of(request.remote or "", request.headers)

    def client_ip_of(self, peer: str, headers: Mapping[str, str]) -> str:
        """``client_ip`` for a socket ``peer`` and the request ``headers``.

        ``headers`` are aiohttp's (every ``X-Forwarded-For`` field is read) or the edge's index
        of the fields it reads (one at most: a request repeating it is aiohttp's).
        """
        if not self.trusts(peer):
            return peer
        if isinstance(headers, MultiMapping):
            values = headers.getall("x-forwarded-for", ())
        else:
            values = [headers["x-forwarded-for"]] if "x-forwarded-for" in headers else []
        chain = [part.strip() for value in values for part in value.split(",")]
        client = peer
        for candidate in reversed(chain):
            try:
                ipaddress.ip_address(candidate)
            except ValueError:
                break
            client = candidate
            if not self.trusts(candidate):
                break
        return client

    def proto_of(self, peer: str, headers: Mapping[str, str], *, secure: bool) -> str:
        """``http`` or ``https`` as the client used it, for a socket ``peer``, the request
        ``headers`` and whether the socket is TLS."""
        if self.trusts(peer):
            sent = headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
            if sent in ("http", "https"):
                return sent
        return "https" if secure else "http"
