"""Operator actions run outside the server (CLI): they build the same services as ``serve``."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from auth.db import create_engine, create_sessionmaker, migrate
from auth.keys import load_signing_keys
from auth.mailer import make_mailer
from auth.passwords import PasswordHasher
from auth.schemas import CreateUserInput
from auth.service import AuthService, UserView
from auth.store import make_store
from auth.tokens import TokenService
from config import GatewayConfig


@contextlib.asynccontextmanager
async def _service(cfg: GatewayConfig) -> AsyncIterator[AuthService]:
    """The same AuthService ``serve`` builds (the embedded database migrated first)."""
    if cfg.uses_sqlite:
        await migrate(cfg.database.url)
    engine = create_engine(cfg.database)
    store = make_store(cfg.redis)
    try:
        yield AuthService(
            cfg,
            create_sessionmaker(engine),
            TokenService(cfg.jwt, load_signing_keys(cfg)),
            PasswordHasher(cfg.auth.password.bcrypt_cost),
            store,
            make_mailer(cfg.email),
        )
    finally:
        await store.close()
        await engine.dispose()


async def create_user(cfg: GatewayConfig, data: CreateUserInput) -> UserView:
    """Create a user."""
    async with _service(cfg) as service:
        return await service.create_user(data)


async def update_user(
    cfg: GatewayConfig, email: str, *, is_admin: bool | None, is_active: bool | None
) -> UserView:
    """Change a user's admin flag or state; running replicas see it within a poll interval
    (deactivation also revokes the user's sessions, pushed at once through Redis)."""
    async with _service(cfg) as service:
        return await service.update_user(email, is_admin=is_admin, is_active=is_active)
