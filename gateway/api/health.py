"""``/healthz`` (the process answers) and ``/readyz`` (database and store answer)."""

from __future__ import annotations

import asyncio

from aiohttp import web
from sqlalchemy import text

from gateway.appkeys import SERVICES
from gateway.envelope import json_response


async def healthz(request: web.Request) -> web.Response:
    """Liveness."""
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: 200 when the database and the store answer, else 503."""
    services = request.app[SERVICES]
    checks = {"database": False, "store": False}
    if services.engine is not None:
        try:
            async with asyncio.timeout(2):
                async with services.engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
            checks["database"] = True
        except Exception:
            checks["database"] = False
    if services.store is not None:
        checks["store"] = await services.store.ping()
    ready = all(checks.values())
    return json_response(
        {"status": "ready" if ready else "degraded", "checks": checks}, status=200 if ready else 503
    )


def setup_health_routes(app: web.Application) -> None:
    """Register the health endpoints."""
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
