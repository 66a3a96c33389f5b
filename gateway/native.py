"""The proxy's hot path, compiled to C with mypyc when the package is built with it.

``COMPILED_MODULES`` are the modules every proxied request runs through. They are plain,
fully typed Python: a normal install runs them interpreted. Built with ``GATEWAY_NATIVE=1``
(``setup.py``: ``./dev native`` in a checkout, the Dockerfile's image) they become C extension
modules with the same behaviour and about 40 % fewer instructions per proxied request
(``bench/README.md``). ``compiled()`` tells which of them run compiled in this process.

This module imports nothing of the gateway: ``setup.py`` reads the list from it.
"""

from __future__ import annotations

import importlib
from typing import Final

__all__ = ["COMPILED_MODULES", "compiled", "describe"]

COMPILED_MODULES: Final = (
    "gateway.api.bodies",
    "gateway.edge.connection",
    "gateway.edge.exchange",
    "gateway.edge.server",
    "gateway.edge.wire",
    "gateway.middlewares.request_id",
    "gateway.pipeline.authenticate",
    "gateway.pipeline.authorize",
    "gateway.pipeline.principal",
    "gateway.proxy.forwarder",
    "gateway.proxy.handler",
    "gateway.proxy.headers",
    "gateway.proxy.paths",
    "gateway.proxy.routes",
    "gateway.proxy.upstream_pool",
)
"""The modules ``GATEWAY_NATIVE=1`` compiles (dotted names)."""


def compiled() -> list[str]:
    """Those of ``COMPILED_MODULES`` that were loaded from a compiled extension."""
    names = []
    for name in COMPILED_MODULES:
        origin = getattr(importlib.import_module(name), "__file__", None) or ""
        if not origin.endswith(".py"):
            names.append(name)
    return names


def describe() -> str:
    """One phrase for the start-up log: how the hot path runs."""
    done = compiled()
    if not done:
        return "hot path interpreted"
    if len(done) == len(COMPILED_MODULES):
        return f"hot path compiled (mypyc, {len(done)} modules)"
    return f"hot path partly compiled (mypyc: {', '.join(done)})"
