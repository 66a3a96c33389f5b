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
    """Readiness: 200 ``ready`` when everything answers; 200 ``degraded`` when only the store
    is unreachable (proxied traffic keeps flowing on the last known revocations); 503 when the
    database does not answer (logins and refreshes cannot work)."""
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
    store_status: dict[str, object] = {}
    if services.store is not None:
        checks["store"] = await services.store.ping()
        store_status = services.store.status()
    if not checks["database"]:
        status, code = "unavailable", 503
    elif not checks["store"] or not store_status.get("synced", True):
        status, code = "degraded", 200
    else:
        status, code = "ready", 200
    return json_response({"status": status, "checks": checks, "store": store_status}, status=code)


def setup_health_routes(app: web.Application) -> None:
    """Register the health endpoints."""
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
