"""bcrypt password hashing, always off the event loop.

bcrypt reads only the first 72 bytes of its input. To never truncate silently, the password is
first reduced with SHA-256 and base64 (44 bytes), then bcrypt-ed: two passwords that share their
first 72 bytes produce different hashes.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib

import bcrypt


def _prehash(password: str) -> bytes:
    return base64.b64encode(hashlib.sha256(password.encode("utf-8")).digest())


class PasswordHasher:
    """Hash and check passwords with a fixed bcrypt cost; unknown users cost the same time."""

    def __init__(self, cost: int) -> None:
        self.cost = cost
        self._dummy_hash: bytes | None = None

    def hash_sync(self, password: str) -> str:
        """Hash on the calling thread (for the CLI and start-up)."""
        return bcrypt.hashpw(_prehash(password), bcrypt.gensalt(self.cost)).decode("ascii")

    async def hash(self, password: str) -> str:
        """Hash in a worker thread."""
        return await asyncio.to_thread(self.hash_sync, password)

    async def verify(self, password: str, hashed: str | None) -> bool:
        """Check ``password`` against ``hashed``; with no hash, burn the same time and say no."""
        if hashed is None:
            await self.verify_dummy(password)
            return False
        return await asyncio.to_thread(_check, password, hashed.encode("ascii"))

    async def verify_dummy(self, password: str) -> None:
        """Spend one bcrypt check's time for an unknown user (no timing oracle)."""
        if self._dummy_hash is None:
            self._dummy_hash = (await self.hash("dummy password for timing")).encode("ascii")
        await asyncio.to_thread(_check, password, self._dummy_hash)


def _check(password: str, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(_prehash(password), hashed)
    except ValueError:  # corrupt hash in the database: never a match
        return False
