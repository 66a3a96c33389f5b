"""Opaque single-use secrets (email links, codes): generated here, stored only as SHA-256."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def new_link_token() -> str:
    """A 256-bit token as 64 lowercase hex characters."""
    return secrets.token_hex(32)


def is_link_token(value: str) -> bool:
    """True when ``value`` has the shape of a link token (64 lowercase hex)."""
    return bool(_HEX64.match(value))


def hash_token(token: str) -> str:
    """The stored form of a token: SHA-256 hex (the token has 256 bits of entropy)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def same_secret(a: str, b: str) -> bool:
    """Constant-time comparison of two secrets."""
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def new_id() -> str:
    """A random 128-bit identifier (32 hex) for sessions and JWT ids."""
    return secrets.token_hex(16)
