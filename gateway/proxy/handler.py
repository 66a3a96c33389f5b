"""The catch-all proxy handler: normalise → match → authenticate → authorize → mutate → forward."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import aiohttp
from aiohttp import web

from auth.service import AuthService
from gateway.errors import BadRequest, MethodNotAllowed, NotFoundError
from gateway.middlewares.request_id import REQUEST_ID
from gateway.pipeline.authenticate import PENDING, authenticate_header, authenticate_header_now
from gateway.pipeline.authorize import authorize
from gateway.pipeline.principal import Principal
from gateway.proxy.forwarded import TrustedProxies
from gateway.proxy.forwarder import forward
from gateway.proxy.headers import (
    header_lines_as_multidict,
    is_valid_host,
    request_lines_for_upstream,
)
from gateway.proxy.paths import PathError, normalise_path
from gateway.proxy.routes import Route, RouteTable
from gateway.proxy.upstream_pool import UpstreamPool
from gateway.proxy.websocket import is_websocket_upgrade, relay_websocket

VALID_HOSTS_KEPT = 1024
"""Distinct valid ``Host`` values remembered (emptied when full)."""


class ProxyHandler:
    """Everything that is not the gateway's own API goes through here.

    Plain requests go out over ``pool`` (``upstream_pool.UpstreamPool``); WebSocket upgrades
    over ``session`` (aiohttp's client, which speaks the WebSocket protocol).
    """

    def __init__(
        self,
        table: RouteTable,
        trusted: TrustedProxies,
        service: AuthService,
        session: aiohttp.ClientSession,
        pool: UpstreamPool,
        max_body_size: int,
    ) -> None:
        self.table = table
        self.trusted = trusted
        self.service = service
        self.session = session
        self.pool = pool
        self.max_body_size = max_body_size
        self._valid_hosts: set[str] = set()
        """``Host`` values seen valid (``is_valid_host``), so most requests skip the check."""

    async def admit(
        self,
        route: Route,
        incoming: Mapping[str, str],
        fields: Sequence[tuple[bytes, bytes]],
        *,
        peer: str,
        host: str,
        secure: bool,
        request_id: str,
    ) -> list[bytes]:
        """Authenticate, authorize and rate-limit a request for ``route``; its upstream headers.

        ``fields`` are the client's header fields as they came, ``incoming`` those the proxy
        reads, decoded (read by lower-case name: aiohttp's headers, or the edge's index),
        ``peer`` the socket's address, ``host`` the client-facing host, ``secure`` whether
        the client connection is TLS. Raises the error that answers a request that may not
        pass (401, 403, 429, 400).
        """
        auth = None if route.auth == "none" else incoming.get("authorization")
        principal = None if auth is None else await authenticate_header(auth, self.service)
        authorize(route, principal)
        if route.rate_limit is not None:
            # Per user when there is one (anonymous callers: per IP), or per client IP.
            if route.rate_key == "user" and principal is not None:
                key = f"user:{principal.user_id}"
            else:
                key = f"ip:{self.trusted.client_ip_of(peer, incoming)}"
            await self.service.limiter.charge(route.rate_limit, key)
        return self._upstream_lines(
            route, principal, incoming, fields, peer, host, secure, request_id
        )

    def admit_now(
        self,
        route: Route,
        incoming: Mapping[str, str],
        fields: Sequence[tuple[bytes, bytes]],
        *,
        peer: str,
        host: str,
        secure: bool,
        request_id: str,
    ) -> list[bytes] | None:
        """``admit`` without waiting; ``None`` when it would have to wait (call ``admit``).

        It waits for a rate limit (the counter may live in Redis) and for a revocation check
        the store cannot answer from memory. Raises what ``admit`` raises.
        """
        if route.rate_limit is not None:
            return None
        auth = None if route.auth == "none" else incoming.get("authorization")
        principal = None if auth is None else authenticate_header_now(auth, self.service)
        if principal is PENDING:
            return None
        authorize(route, principal)
        return self._upstream_lines(
            route, principal, incoming, fields, peer, host, secure, request_id
        )

    def _upstream_lines(
        self,
        route: Route,
        principal: Principal | None,
        incoming: Mapping[str, str],
        fields: Sequence[tuple[bytes, bytes]],
        peer: str,
        host: str,
        secure: bool,
        request_id: str,
    ) -> list[bytes]:
        if host not in self._valid_hosts:
            if not is_valid_host(host):
                raise BadRequest("Host: not a valid host[:port]")
            if len(self._valid_hosts) >= VALID_HOSTS_KEPT:
                self._valid_hosts.clear()
            self._valid_hosts.add(host)
        try:
            return request_lines_for_upstream(
                fields,
                client_ip=peer,
                proto=self.trusted.proto_of(peer, incoming, secure=secure),
                host=host,
                request_id=request_id,
                principal_user_id=principal.user_id if principal else None,
                principal_is_admin=principal.is_admin if principal else None,
                preserve_host=route.preserve_host,
                upstream_host=route.authority,
            )
        except ValueError as exc:
            raise BadRequest(str(exc)) from None

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        """Proxy one request or raise the error that answers it."""
        raw_path, _, query = request.raw_path.partition("?")
        try:
            path = normalise_path(raw_path)
        except PathError as exc:
            raise BadRequest(f"path: {exc}") from None
        route = self.table.match(path)
        if route is None:
            raise NotFoundError()
        if not route.allows(request.method):
            allowed = ", ".join(sorted(route.methods or ()))
            raise MethodNotAllowed(
                f"method {request.method} is not allowed here", headers={"Allow": allowed}
            )
        if route.auth != "none" and len(request.headers.getall("Authorization", ())) > 1:
            # A singleton field (RFC 9110 §11.6.2): the gateway would check one token and the
            # upstream might read the other. (The edge sends such a request here.)
            raise BadRequest("more than one Authorization header")
        lines = await self.admit(
            route,
            request.headers,
            request.raw_headers,
            peer=request.remote or "",
            host=request.host,
            secure=request.secure,
            request_id=request[REQUEST_ID],
        )
        if is_websocket_upgrade(request):
            return await relay_websocket(
                self.session,
                request,
                route.upstream_url(path, query),
                header_lines_as_multidict(lines),
                upstream_timeout=route.timeout,
                max_msg_size=self.max_body_size,
            )
        target = route.upstream_path(path)
        if query:
            target = f"{target}?{query}"
        return await forward(
            self.pool,
            request,
            route.origin,
            target,
            lines,
            upstream_timeout=route.timeout,
            max_body_size=self.max_body_size,
        )
