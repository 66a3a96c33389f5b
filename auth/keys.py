"""Where the JWT signing secret comes from.

Configured (``jwt.secret`` / ``GATEWAY_JWT_SECRET``): used as is (config validation has already
required 32 bytes or more). Not configured and the embedded SQLite database in use: a 64-byte
random secret is generated on first start and kept next to the database file
(``<db>.jwt-secret``, mode 0600), so tokens survive restarts. PostgreSQL without a secret never
gets this far: config validation refuses it.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from auth.db import sqlite_path
from config import GatewayConfig

_LOGGER = logging.getLogger(__name__)


class SecretUnavailable(Exception):
    """No usable signing secret (PostgreSQL without ``jwt.secret``, unreadable secret file)."""


def secret_file_for(database_url: str) -> Path | None:
    """The generated-secret file kept beside a SQLite database, or None."""
    path = sqlite_path(database_url)
    return None if path is None else path.with_name(path.name + ".jwt-secret")


def resolve_jwt_secret(cfg: GatewayConfig) -> str:
    """The configured secret, or the embedded database's generated one."""
    if cfg.jwt.secret is not None:
        return cfg.jwt.secret
    if not cfg.uses_sqlite:
        raise SecretUnavailable(
            "jwt.secret is required with PostgreSQL: set GATEWAY_JWT_SECRET (32+ random bytes)"
        )
    path = secret_file_for(cfg.database.url)
    if path is None:
        _LOGGER.warning(
            "no jwt.secret configured and an in-memory database: using a random secret "
            "that lasts until the process exits"
        )
        return secrets.token_urlsafe(64)
    try:
        return _read_or_create(path)
    except OSError as exc:
        raise SecretUnavailable(f"cannot read or create {path}: {exc.strerror or exc}") from None


def _read_or_create(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        return _read(path)
    # Write a complete file under a temporary name, then link it into place: a second process
    # starting at the same moment either wins the link or reads the winner's whole secret.
    secret = secrets.token_urlsafe(64)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(secret + "\n")
        os.link(tmp, path)
    except FileExistsError:
        return _read(path)
    finally:
        tmp.unlink(missing_ok=True)
    _LOGGER.warning(
        "no jwt.secret configured: generated one and stored it in %s (mode 0600); "
        "set GATEWAY_JWT_SECRET to manage it yourself",
        path,
    )
    return secret


def _read(path: Path) -> str:
    secret = path.read_text(encoding="ascii").strip()
    if len(secret) < 32:
        raise SecretUnavailable(f"{path} holds a secret shorter than 32 bytes")
    return secret
