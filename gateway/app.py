"""``create_app(cfg)``: the only place where the gateway is wired together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from auth.db import create_engine, create_sessionmaker, migrate
from auth.keys import load_signing_keys
from auth.mailer import make_mailer
from auth.passwords import PasswordHasher
from auth.service import AuthService
from auth.store import make_store
from auth.tokens import TokenService
from config import GatewayConfig
from gateway.api.auth_routes import setup_auth_routes
from gateway.api.health import setup_health_routes
from gateway.api.jwks import setup_jwks_route
from gateway.appkeys import CONFIG, CORS_POLICY, SERVICES, Services
from gateway.middlewares.connection import (
    close_refused_upgrade,
    close_unasked_body,
    expect_after_admission,
    http_version_middleware,
)
from gateway.middlewares.cors import CorsPolicy, cors_middleware, cors_prepare_hook
from gateway.middlewares.errors import error_middleware
from gateway.middlewares.request_id import add_request_id, request_id_middleware
from gateway.proxy.forwarded import TrustedProxies
from gateway.proxy.forwarder import create_client_session, create_upstream_pool, keep_untyped
from gateway.proxy.handler import ProxyHandler
from gateway.proxy.routes import RouteTable

_LOGGER = logging.getLogger(__name__)
MAIL_DRAIN_TIMEOUT = 10.0


def create_app(cfg: GatewayConfig, *, migrate_embedded: bool = True) -> web.Application:
    """Build the application for ``cfg``; resources open on start-up and close on clean-up."""
    policy = CorsPolicy(cfg.cors)
    app = web.Application(
        client_max_size=cfg.server.max_body_size,
        # Order matters, outermost first: the request id exists before anything can fail;
        # CORS wraps the error middleware so that error envelopes carry CORS headers too; an
        # unsupported HTTP version is refused inside them (an envelope like any other).
        middlewares=[
            request_id_middleware(),
            cors_middleware(policy),
            error_middleware(),
            http_version_middleware(),
        ],
    )
    app[CONFIG] = cfg
    app[CORS_POLICY] = policy
    app[SERVICES] = Services(trusted=TrustedProxies(cfg.server.trusted_proxies))
    app.on_response_prepare.append(add_request_id)
    app.on_response_prepare.append(cors_prepare_hook(policy))
    app.on_response_prepare.append(keep_untyped)
    app.on_response_prepare.append(close_refused_upgrade)
    app.on_response_prepare.append(close_unasked_body)
    app.cleanup_ctx.append(_auth_context(cfg, migrate_embedded))
    app.cleanup_ctx.append(_proxy_context(cfg))
    setup_health_routes(app)
    setup_auth_routes(app)
    setup_jwks_route(app, cfg)
    # Last: everything the gateway does not answer itself is matched against gateway.yaml.
    # (``[\s\S]``, not ``.``: a path decoded from ``%0a`` holds a newline, and must reach the
    # proxy's path rules, which refuse it with a 400, rather than fall through to a 404.)
    app.router.add_route(
        "*", r"/{tail:[\s\S]*}", _proxy_entry, expect_handler=expect_after_admission
    )
    return app


async def _proxy_entry(request: web.Request) -> web.StreamResponse:
    handler = request.app[SERVICES].proxy
    if handler is None:
        raise RuntimeError("the proxy has not started")
    return await handler(request)


def _proxy_context(cfg: GatewayConfig) -> Callable[[web.Application], AsyncIterator[None]]:
    async def proxy_context(app: web.Application) -> AsyncIterator[None]:
        services = app[SERVICES]
        session = create_client_session()
        pool = create_upstream_pool()
        services.proxy = ProxyHandler(
            RouteTable.from_config(cfg.routes),
            services.trusted,
            services.auth_service(),
            session,
            pool,
            cfg.server.max_body_size,
        )
        try:
            yield
        finally:
            services.proxy = None
            await pool.close()
            await session.close()

    return proxy_context


def _auth_context(
    cfg: GatewayConfig, migrate_embedded: bool
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def auth_context(app: web.Application) -> AsyncIterator[None]:
        if migrate_embedded and cfg.uses_sqlite:
            await migrate(cfg.database.url)
        services = app[SERVICES]
        engine = create_engine(cfg.database)
        store = make_store(cfg.redis)
        mailer = make_mailer(cfg.email)
        tokens = TokenService(cfg.jwt, load_signing_keys(cfg))
        hasher = PasswordHasher(cfg.auth.password.bcrypt_cost)
        service = AuthService(cfg, create_sessionmaker(engine), tokens, hasher, store, mailer)
        services.engine, services.store, services.auth = engine, store, service
        store.on_resync = service.reconcile_quietly
        follower: asyncio.Task[None] | None = None
        try:
            await store.start()
            # The dummy hash unknown emails are checked against exists before the first login,
            # so even the first such login costs one bcrypt check, like a wrong password.
            await hasher.verify_dummy("warm-up")
            try:
                await service.feed.poll()
            except Exception as exc:
                _LOGGER.error("cannot read session changes from the database yet: %s", exc)
            follower = asyncio.create_task(service.feed.run(), name="session-change-feed")
            yield
        finally:
            if follower is not None:
                follower.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await follower
            try:
                async with asyncio.timeout(MAIL_DRAIN_TIMEOUT):
                    await mailer.drain()
            except TimeoutError:
                _LOGGER.warning("gave up waiting for mail still being delivered")
            await store.close()
            await engine.dispose()

    return auth_context
