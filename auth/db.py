"""Engine and session factories (no globals), and Alembic migrations run from code."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.pool import StaticPool

from config import DatabaseConfig

_LOGGER = logging.getLogger(__name__)
MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def create_engine(cfg: DatabaseConfig) -> AsyncEngine:
    """Build the async engine for ``cfg.url``; SQLite gets one serialised connection and pragmas."""
    url = make_url(cfg.url)
    kwargs: dict[str, Any] = {"echo": cfg.echo}
    if url.get_backend_name() == "sqlite":
        if url.database in (None, "", ":memory:"):
            kwargs["poolclass"] = StaticPool
        else:
            # One connection: SQLite has one writer anyway, and a single connection avoids
            # "database is locked" when a read transaction upgrades to a write.
            kwargs.update(pool_size=1, max_overflow=0, pool_timeout=30)
        engine = create_async_engine(url, **kwargs)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    kwargs.update(pool_size=cfg.pool_size, max_overflow=cfg.pool_size, pool_pre_ping=True)
    return create_async_engine(url, **kwargs)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[Any]:
    """Sessions that keep loaded attributes after commit (no lazy loads in async code)."""
    return async_sessionmaker(engine, expire_on_commit=False)


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL, or None for PostgreSQL and in-memory SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def alembic_config(url: str) -> AlembicConfig:
    """An Alembic config aimed at ``url`` (read by ``migrations/env.py``)."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["database_url"] = url
    return cfg


def _upgrade_sync(url: str, revision: str) -> None:
    command.upgrade(alembic_config(url), revision)


async def migrate(url: str, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` (in a thread: Alembic's env runs its own loop)."""
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(_upgrade_sync, url, revision)
    _LOGGER.info("database migrated to %s", revision)
