"""aiohttp's ``AppRunner``, listening through the edge (``server.EdgeServer``).

Apart from ``server`` because that module may be compiled (``gateway/native.py``) and mypyc
cannot compile a subclass of aiohttp's runner.
"""

from __future__ import annotations

import logging
from typing import Any, cast

from aiohttp import web

from gateway.edge.handover import unread_heads_as_http11
from gateway.edge.server import EdgeServer

__all__ = ["GatewayRunner"]


class GatewayRunner(web.AppRunner):
    """aiohttp's ``AppRunner`` listening through an ``EdgeServer``."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        access_log = kwargs.get("access_log", logging.getLogger("aiohttp.access"))
        self._edge_access_log: logging.Logger | None = access_log
        self._edge_keepalive = float(kwargs.get("keepalive_timeout", 75.0))

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.request_factory = unread_heads_as_http11(server.request_factory)
        edge = EdgeServer(
            self.app,
            server,
            access_log=self._edge_access_log,
            keepalive_timeout=self._edge_keepalive,
        )
        # The runner and its sites only call the protocol factory and the two shutdown steps.
        return cast(web.Server, edge)
