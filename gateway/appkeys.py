"""Every typed key of the application, in one place."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from auth.service import AuthService
from auth.store import Store
from config import GatewayConfig
from gateway.middlewares.cors import CorsPolicy
from gateway.proxy.forwarded import TrustedProxies

if TYPE_CHECKING:
    from gateway.proxy.handler import ProxyHandler


@dataclass
class Services:
    """What start-up builds (filled in ``app.cleanup_ctx``, read by handlers)."""

    engine: AsyncEngine | None = None
    store: Store | None = None
    auth: AuthService | None = None
    proxy: ProxyHandler | None = None
    trusted: TrustedProxies = field(default_factory=lambda: TrustedProxies([]))

    def auth_service(self) -> AuthService:
        """The AuthService; only valid after start-up."""
        if self.auth is None:
            raise RuntimeError("the gateway has not started")
        return self.auth


CONFIG = web.AppKey("config", GatewayConfig)
SERVICES = web.AppKey("services", Services)
CORS_POLICY = web.AppKey("cors_policy", CorsPolicy)
"""The one edge CORS policy: the middleware, the prepare hook and the edge listener share it."""
