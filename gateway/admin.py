"""Operator actions run outside the server (CLI): they build the same services as ``serve``."""

from __future__ import annotations

from auth.db import create_engine, create_sessionmaker, migrate
from auth.keys import resolve_jwt_secret
from auth.mailer import make_mailer
from auth.passwords import PasswordHasher
from auth.schemas import CreateUserInput
from auth.service import AuthService, UserView
from auth.store import make_store
from auth.tokens import TokenService
from config import GatewayConfig


async def create_user(cfg: GatewayConfig, data: CreateUserInput) -> UserView:
    """Create a user (migrating the embedded database first, as ``serve`` would)."""
    if cfg.uses_sqlite:
        await migrate(cfg.database.url)
    engine = create_engine(cfg.database)
    store = make_store(cfg.redis)
    try:
        service = AuthService(
            cfg,
            create_sessionmaker(engine),
            TokenService(cfg.jwt, resolve_jwt_secret(cfg)),
            PasswordHasher(cfg.auth.password.bcrypt_cost),
            store,
            make_mailer(cfg.email),
        )
        return await service.create_user(data)
    finally:
        await store.close()
        await engine.dispose()
