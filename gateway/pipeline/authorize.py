"""Route rules over a Principal: ``auth: required|optional|none`` and ``admin: true``."""

from __future__ import annotations

from gateway.errors import Forbidden, Unauthorized
from gateway.pipeline.principal import Principal
from gateway.proxy.routes import Route


def authorize(route: Route, principal: Principal | None) -> None:
    """Pass, or raise 401 (no principal where one is required) / 403 (not an admin)."""
    if route.auth == "required" and principal is None:
        raise Unauthorized("a bearer access token is required")
    if route.admin and (principal is None or not principal.is_admin):
        raise Forbidden("admin access required")
