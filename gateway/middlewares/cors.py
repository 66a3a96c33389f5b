"""The edge CORS policy of SPEC §5, for the auth API and proxied routes alike.

aiohttp-cors is not used: it configures CORS per registered route and answers preflights
through an OPTIONS handler it adds to each resource, which does not fit one catch-all proxy
route that must never forward a preflight; it also sends allow-headers/methods/max-age only on
preflights and no ``Vary: Origin``, while the seed responses carry all of them. This module is a
small middleware plus an ``on_response_prepare`` hook, so headers land on streamed responses too.

Rules:
- no ``Origin`` header: the request is not touched;
- allowed origin: every response gets ``access-control-allow-origin: <origin>``,
  ``-credentials``, ``-headers``, ``-methods``, ``-max-age`` and ``vary: Origin``;
- preflight (``OPTIONS`` + ``Origin`` + ``Access-Control-Request-Method``) is answered here,
  204 for an allowed origin, 403 envelope otherwise, and never reaches a handler or upstream;
- a foreign origin gets no ``access-control-allow-*`` header at all.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware
from multidict import CIMultiDict

from config import CorsConfig
from gateway.envelope import error_response

CORS_ORIGIN = web.RequestKey("cors_origin", str)
PrepareHook = Callable[[web.Request, web.StreamResponse], Awaitable[None]]


class CorsPolicy:
    """Precomputed headers for allowed origins."""

    def __init__(self, cfg: CorsConfig) -> None:
        self.any_origin = "*" in cfg.allow_origins
        self.origins = frozenset(cfg.allow_origins)
        headers = {}
        if cfg.allow_credentials:
            headers["Access-Control-Allow-Credentials"] = "true"
        headers["Access-Control-Allow-Headers"] = ",".join(cfg.allow_headers)
        headers["Access-Control-Allow-Methods"] = ",".join(cfg.allow_methods)
        headers["Access-Control-Max-Age"] = str(cfg.max_age)
        if cfg.expose_headers:
            headers["Access-Control-Expose-Headers"] = ",".join(cfg.expose_headers)
        self.headers = headers

    def allows(self, origin: str) -> bool:
        """True when ``origin`` may read responses."""
        return self.any_origin or origin in self.origins

    def stamp(self, headers: CIMultiDict[str], origin: str) -> None:
        """Set the policy's headers for the allowed ``origin`` on response ``headers``.

        ``headers`` must hold no ``Access-Control-*`` header of its own any more.
        """
        headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin
        headers.update(self.headers)
        vary = headers.get(hdrs.VARY)
        if vary is None:
            headers[hdrs.VARY] = "Origin"
        elif "origin" not in vary.lower():
            headers[hdrs.VARY] = f"{vary}, Origin"


def cors_middleware(policy: CorsPolicy) -> Middleware:
    """Answer preflights at the edge and mark allowed origins for ``add_cors_headers``."""

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is None:
            return await handler(request)
        allowed = policy.allows(origin)
        if allowed:
            request[CORS_ORIGIN] = origin
        if (
            request.method == hdrs.METH_OPTIONS
            and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers
        ):
            if not allowed:
                return error_response(403, ["CORS: origin not allowed"])
            return web.Response(status=204)
        return await handler(request)

    return cors


def cors_prepare_hook(policy: CorsPolicy) -> PrepareHook:
    """An ``on_response_prepare`` hook that writes the policy's headers."""

    async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
        origin = request.get(CORS_ORIGIN)
        if origin is None:
            return
        headers = response.headers
        for name in [n for n in headers if n.lower().startswith("access-control-")]:
            del headers[name]
        policy.stamp(headers, origin)

    return add_cors_headers
