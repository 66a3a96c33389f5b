"""Shared state: revoked sessions and rate-limit counters.

``MemoryStore`` is the embedded default for one process; ``RedisStore`` is shared by every
replica. The database stays the source of truth for revocation: on start-up (and, with Redis, after
every reconnection) the service replays recent revocations into the store
(``AuthService.reconcile`` through ``Store.on_resync``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from config import RedisConfig


class Store(Protocol):
    """What the auth layer needs from shared state."""

    on_resync: Callable[[], Awaitable[None]] | None
    """Called after (re)connecting to shared state, before trusting it: replays the database."""

    async def start(self) -> None:
        """Begin following shared state (returns once the first sync is done or timed out)."""

    def status(self) -> dict[str, object]:
        """Health of the store for ``/readyz``."""

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
        self.on_resync: Callable[[], Awaitable[None]] | None = None

    async def start(self) -> None:
        if self.on_resync is not None:
            await self.on_resync()

    def status(self) -> dict[str, object]:
        return {"backend": "memory", "synced": True}

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


def make_store(cfg: RedisConfig) -> Store:
    """RedisStore when ``redis.url`` is set, else the in-process MemoryStore."""
    if cfg.url:
        from auth.redis_store import RedisStore

        return RedisStore(cfg)
    return MemoryStore()


def retry_after_seconds(wait: float) -> int:
    """A ``Retry-After`` value: whole seconds, at least 1."""
    return max(1, math.ceil(wait))
