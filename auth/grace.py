"""The refresh grace window: a second refresh racing the first gets the same new pair.

The pair issued by the winning refresh is kept in the store for ``sessions.refresh_grace``
seconds under ``grace:<old jti>``, sealed with AES-GCM under a key derived from the *old refresh
token itself*: only someone who presents that token can open it, and a copy of the store
(Redis) reveals nothing usable. The racing request must also come from the same client (IP
and User-Agent) as the rotation: the same token replayed from anywhere else is theft at once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def _key(old_token: str) -> bytes:
    return hashlib.sha256(b"gateway refresh grace\x00" + old_token.encode("utf-8")).digest()


def fingerprint(client_ip: str | None, user_agent: str | None) -> str:
    """Who rotated: a racing second request must come from the same client."""
    return hashlib.sha256(f"{client_ip or ''}\n{user_agent or ''}".encode()).hexdigest()


def seal(old_token: str, client: str, access: str, refresh: str) -> bytes:
    """Encrypt the new pair (and the rotating client's fingerprint) for ``old_token``."""
    nonce = os.urandom(12)
    plain = json.dumps([client, access, refresh]).encode("utf-8")
    return nonce + AESGCM(_key(old_token)).encrypt(nonce, plain, None)


def unseal(old_token: str, client: str, sealed: bytes) -> tuple[str, str] | None:
    """The pair sealed for ``old_token`` by the same client, or None."""
    try:
        plain = AESGCM(_key(old_token)).decrypt(sealed[:12], sealed[12:], None)
        sealed_client, access, refresh = json.loads(plain)
    except (InvalidTag, ValueError, TypeError):
        return None
    if not hmac.compare_digest(str(sealed_client), client):
        return None
    return str(access), str(refresh)
