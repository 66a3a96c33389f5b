"""Opaque single-use secrets (email links, codes): generated here, stored only as hashes.

Link tokens carry 256 bits: a plain SHA-256 is enough to store them. Six-digit codes carry
under 20 bits: they are stored as an HMAC-SHA256 under a server-side key (``keyed_hash``), so a
copy of the database alone does not let anyone try the million candidates offline.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
CODE_DIGITS = 6
_CODE = re.compile(rf"[0-9]{{{CODE_DIGITS}}}")


def new_link_token() -> str:
    """A 256-bit token as 64 lowercase hex characters."""
    return secrets.token_hex(32)


def is_link_token(value: str) -> bool:
    """True when ``value`` has the shape of a link token (64 lowercase hex)."""
    return bool(_HEX64.match(value))


def hash_token(token: str) -> str:
    """The stored form of a token: SHA-256 hex (the token has 256 bits of entropy)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_code() -> str:
    """A uniformly random code of ``CODE_DIGITS`` decimal digits (leading zeros kept)."""
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


def is_code(value: str) -> bool:
    """True when ``value`` has the shape of a code (exactly ``CODE_DIGITS`` ASCII digits)."""
    return bool(_CODE.fullmatch(value))


def keyed_hash(key: bytes, context: str, secret: str) -> str:
    """HMAC-SHA256 hex of ``secret`` bound to ``context`` (e.g. the address it was sent to)."""
    message = context.encode("utf-8") + b"\x00" + secret.encode("utf-8")
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def same_secret(a: str, b: str) -> bool:
    """Constant-time comparison of two secrets."""
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def new_id() -> str:
    """A random 128-bit identifier (32 hex) for sessions and JWT ids."""
    return secrets.token_hex(16)
