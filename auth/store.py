"""Shared state: revoked sessions and rate-limit counters.

``MemoryStore`` is the embedded default for one process; ``RedisStore`` is shared by every
replica. The database stays the source of truth for revocation: on start-up the service
replays recent revocations into the store (see ``AuthService.reconcile``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Protocol

import redis.asyncio as aioredis

from config import RedisConfig


class Store(Protocol):
    """What the auth layer needs from shared state."""

    async def revoke_sessions(self, sids: Sequence[str], ttl: int) -> None:
        """Mark sessions revoked for ``ttl`` seconds (the longest life of their access tokens)."""

    async def is_session_revoked(self, sid: str) -> bool:
        """True when ``sid`` was revoked."""

    async def hit(self, key: str, limit: int, window: float) -> float:
        """Count one event; 0.0 while within ``limit`` per ``window``, else seconds to wait."""

    async def ping(self) -> bool:
        """True when the store answers."""

    async def close(self) -> None:
        """Release connections."""


class MemoryStore:
    """In-process store for a single gateway process."""

    def __init__(self) -> None:
        self._revoked: dict[str, float] = {}
        self._windows: dict[str, tuple[float, int]] = {}

    async def revoke_sessions(self, sids: Sequence[str], ttl: int) -> None:
        until = time.monotonic() + ttl
        for sid in sids:
            self._revoked[sid] = until
        self._prune()

    async def is_session_revoked(self, sid: str) -> bool:
        until = self._revoked.get(sid)
        return until is not None and until > time.monotonic()

    async def hit(self, key: str, limit: int, window: float) -> float:
        now = time.monotonic()
        start, count = self._windows.get(key, (now, 0))
        if now - start >= window:
            start, count = now, 0
        count += 1
        self._windows[key] = (start, count)
        if len(self._windows) > 100_000:
            self._prune()
        return 0.0 if count <= limit else max(start + window - now, 0.001)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._revoked.clear()
        self._windows.clear()

    def _prune(self) -> None:
        now = time.monotonic()
        if len(self._revoked) > 10_000:
            self._revoked = {k: v for k, v in self._revoked.items() if v > now}
        self._windows = {k: v for k, v in self._windows.items() if now - v[0] < 86400}


class RedisStore:
    """Redis-backed store shared by every replica."""

    def __init__(self, cfg: RedisConfig) -> None:
        assert cfg.url is not None
        self._redis = aioredis.from_url(
            cfg.url, socket_connect_timeout=2, socket_timeout=2, health_check_interval=30
        )
        self._prefix = cfg.key_prefix

    async def revoke_sessions(self, sids: Sequence[str], ttl: int) -> None:
        if not sids:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for sid in sids:
                pipe.set(f"{self._prefix}revoked:{sid}", b"1", ex=max(ttl, 1))
            await pipe.execute()

    async def is_session_revoked(self, sid: str) -> bool:
        return bool(await self._redis.exists(f"{self._prefix}revoked:{sid}"))

    async def hit(self, key: str, limit: int, window: float) -> float:
        name = f"{self._prefix}rate:{key}"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(name)
            pipe.pexpire(name, max(int(window * 1000), 1), nx=True)
            pipe.pttl(name)
            count, _, ttl_ms = await pipe.execute()
        if int(count) <= limit:
            return 0.0
        return max(int(ttl_ms), 1) / 1000

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except (aioredis.RedisError, OSError):
            return False

    async def close(self) -> None:
        await self._redis.aclose()


def make_store(cfg: RedisConfig) -> Store:
    """RedisStore when ``redis.url`` is set, else the in-process MemoryStore."""
    return RedisStore(cfg) if cfg.url else MemoryStore()


def retry_after_seconds(wait: float) -> int:
    """A ``Retry-After`` value: whole seconds, at least 1."""
    return max(1, math.ceil(wait))
