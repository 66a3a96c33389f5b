"""The listener's protocol factory: proxied requests on the edge, everything else on aiohttp.

``EdgeServer`` is the protocol factory the sites of ``runner.GatewayRunner`` listen with.
Every connection starts as an ``EdgeConnection``; a request the edge takes
(``EdgeServer.plan``) is proxied without aiohttp's server; one it does not take is aiohttp's
(``aiohttp_protocol``), with its own routes, middlewares and the same proxy handler: lent for
that request when the edge can frame it (no body, or a ``Content-Length`` one:
``gateway.edge.handover``), else with the whole connection, to the end. The edge takes exactly
the requests that aiohttp's router would give to the catch-all proxy route and that the proxy
would forward as plain HTTP:

- HTTP/1.1, origin-form target, with a ``Host``, no ``Transfer-Encoding``, no ``Expect``, no
  ``Upgrade``, at most one ``Content-Length`` within ``server.max_body_size``;
- a path already in canonical form (``paths.is_canonical``) that no route of the gateway's own
  (the auth API, ``/healthz``, ``/readyz``) takes, and that a proxy route matches and allows the
  method of;
- not a CORS preflight.

Anything else — a path to normalise or refuse, a 404 or 405, a WebSocket upgrade, a chunked
upload, a preflight, a malformed or oversized head — is answered by aiohttp, as it always was.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from gateway.appkeys import CONFIG, CORS_POLICY, SERVICES
from gateway.edge.connection import EdgeConnection
from gateway.edge.handover import GatewayRequestHandler
from gateway.edge.wire import RequestHead, plain_body_length
from gateway.proxy.handler import ProxyHandler
from gateway.proxy.paths import is_canonical
from gateway.proxy.routes import Route

__all__ = ["ROUTE_CACHE_SIZE", "EdgeServer", "Plan"]

_LOGGER = logging.getLogger(__name__)
_CATCH_ALL = "/{tail}"
_SHUTDOWN_POLL = 0.01
ROUTE_CACHE_SIZE = 4096
"""Paths whose route the edge remembers: most traffic repeats a few paths."""


class Plan:
    """How the edge proxies one request."""

    __slots__ = ("length", "path", "proxy", "query", "route")

    def __init__(self, proxy: ProxyHandler, route: Route, path: str, query: str, length: int):
        self.proxy = proxy
        self.route = route
        self.path = path
        self.query = query
        self.length = length
        """The body's ``Content-Length`` (0: no body)."""


def _own_paths(app: web.Application) -> tuple[frozenset[str], tuple[str, ...]]:
    """Exact paths and prefixes of the routes the gateway answers itself."""
    exact: set[str] = set()
    prefixes: list[str] = []
    for resource in app.router.resources():
        if isinstance(resource, web.PlainResource):
            exact.add(resource.canonical)
        elif isinstance(resource, web.PrefixedSubAppResource):
            prefixes.append(resource.canonical)
        elif not (isinstance(resource, web.DynamicResource) and resource.canonical == _CATCH_ALL):
            raise RuntimeError(f"the edge cannot tell which requests {resource!r} takes")
    return frozenset(exact), tuple(prefixes)


class EdgeServer:
    """What ``loop.create_server`` calls for each connection; see the module docstring."""

    def __init__(
        self,
        app: web.Application,
        aiohttp_server: web.Server,
        *,
        access_log: logging.Logger | None,
        keepalive_timeout: float,
    ) -> None:
        cfg = app[CONFIG]
        self._app = app
        self._aiohttp = aiohttp_server
        self.cors = app[CORS_POLICY]
        self.max_body_size = cfg.server.max_body_size
        self.access_log = access_log
        self.keepalive_timeout = keepalive_timeout
        self._own_exact, self._own_prefixes = _own_paths(app)
        self._proxy: ProxyHandler | None = None
        self._connections: set[EdgeConnection] = set()
        self._routes: dict[str, Route | None] = {}
        """``_route_for`` of recent paths (emptied when it reaches ``ROUTE_CACHE_SIZE``)."""
        self._sweeper: asyncio.TimerHandle | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        """The loop the connections run on (known from the first one on)."""
        self.epoch = 0
        """Ticks of ``keepalive_timeout / 2``: idle connections close after two."""
        self.closing = False
        self.requests_served = 0
        """Requests the edge has proxied itself (a count for tests and diagnostics)."""
        self.handovers = 0
        """Connections handed to aiohttp for good."""
        self.lends = 0
        """Requests lent to aiohttp (the connection came back after each)."""
        self.answered_at_once = 0
        """Requests of ``requests_served`` answered without a task (``exchange.Exchange``)."""

    # --- the protocol factory ---------------------------------------------------------------

    def __call__(self) -> EdgeConnection:
        return EdgeConnection(self)

    def aiohttp_protocol(self, lender: EdgeConnection | None = None) -> GatewayRequestHandler:
        """A fresh aiohttp ``RequestHandler`` for a connection the edge hands over for good, or
        lends (``lender``) for one request."""
        if lender is None:
            self.handovers += 1
        else:
            self.lends += 1
        server = self._aiohttp
        # (What ``web.Server.__call__`` does, with the gateway's error answers and limits.)
        return GatewayRequestHandler(
            server, loop=server._loop, lender=lender, edge=self, **server._kwargs
        )

    def track(self, conn: EdgeConnection) -> None:
        """Count ``conn`` among the open connections (for keep-alive and shutdown)."""
        self._connections.add(conn)
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        if self._sweeper is None and self.keepalive_timeout > 0:
            self._sweeper = self.loop.call_later(self.keepalive_timeout / 2, self._sweep)

    def untrack(self, conn: EdgeConnection) -> None:
        """Forget ``conn`` (closed, or handed to aiohttp)."""
        self._connections.discard(conn)

    def _sweep(self) -> None:
        """One tick: close the connections idle (no request served) for two ticks or more — a
        head begun by then gets a 408 first — on the edge and on aiohttp's side alike, where
        a body of the gateway's own routes is held to two ticks too
        (``GatewayRequestHandler.expire``)."""
        self._sweeper = None
        self.epoch += 1
        expired = self.epoch - 2
        for conn in list(self._connections):
            if not conn.busy and conn.idle_epoch <= expired:
                conn.expire()
        handlers = self._aiohttp.connections
        for handler in handlers:
            if isinstance(handler, GatewayRequestHandler):
                handler.expire(expired)
        if (self._connections or handlers) and not self.closing and self.loop is not None:
            self._sweeper = self.loop.call_later(self.keepalive_timeout / 2, self._sweep)

    # --- requests ---------------------------------------------------------------------------

    def plan(self, head: RequestHead) -> Plan | None:
        """How to proxy the request of ``head``; ``None`` when aiohttp is to answer it."""
        proxy = self._proxy
        if proxy is None:
            proxy = self._proxy = self._app[SERVICES].proxy  # set up by the app's startup
            if proxy is None:
                return None
        if self.closing:
            return None
        path, _, query = head.target.partition("?")
        try:
            route = self._routes[path]
        except KeyError:
            route = self._route_for(path, proxy)
            if len(self._routes) >= ROUTE_CACHE_SIZE:
                self._routes.clear()
            self._routes[path] = route
        method = head.method
        if route is None or not route.allows(method):
            return None
        headers = head.headers  # lower-case names, none repeated (``HeadReader``)
        if "host" not in headers:
            return None
        if method == "OPTIONS" and "access-control-request-method" in headers:
            return None  # a preflight (with an Origin): the CORS middleware answers it
        length = plain_body_length(headers, self.max_body_size)
        if length is None:
            return None  # (a body over the limit: aiohttp answers 413)
        return Plan(proxy, route, path, query, length)

    def _route_for(self, path: str, proxy: ProxyHandler) -> Route | None:
        """The proxy route of a request path, if the edge may serve it (see the module doc)."""
        if not is_canonical(path) or self.owns(path):
            return None
        return proxy.table.match(path)

    def owns(self, path: str) -> bool:
        """True for a path of the gateway's own routes (the auth API, health checks, JWKS)."""
        if path in self._own_exact:
            return True
        for prefix in self._own_prefixes:
            if path.startswith(prefix) and (len(path) == len(prefix) or path[len(prefix)] == "/"):
                return True
        return False

    # --- shutdown (what aiohttp's runner calls on its server) -------------------------------

    def pre_shutdown(self) -> None:
        """Stop taking requests; close idle connections at once."""
        self.closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in list(self._connections):
            if not conn.busy:
                conn.close()
        self._aiohttp.pre_shutdown()

    async def shutdown(self, grace: float | None = None) -> None:
        """Let requests in flight finish (for ``grace`` seconds at most), then close all."""
        loop = asyncio.get_running_loop()
        deadline = None if grace is None else loop.time() + grace
        while busy := [conn for conn in self._connections if conn.busy]:
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                break
            tasks = [task for conn in busy if (task := conn.task) is not None]
            if len(tasks) == len(busy):
                await asyncio.wait(tasks, timeout=left)
            else:  # some wait for an upstream without a task: look again shortly
                await asyncio.sleep(_SHUTDOWN_POLL if left is None else min(_SHUTDOWN_POLL, left))
        for conn in list(self._connections):
            conn.abort()
        self._connections.clear()
        await self._aiohttp.shutdown(grace)
