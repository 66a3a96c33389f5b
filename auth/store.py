"""Shared state: revoked sessions and rate-limit counters.

``MemoryStore`` is the embedded default for one process; ``RedisStore`` (auth/redis_store.py)
is shared by every replica. The database stays the source of truth for revocation: on start-up
(and, with Redis, after every reconnection) the service replays recent revocations into the
store (``AuthService.reconcile`` through ``Store.on_resync``), and every replica polls the
database for changes (``AuthService.follow_changes``) and tells its store with
``remember_revoked``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from config import RedisConfig


class StoreUnavailable(Exception):
    """The shared store did not answer (Redis down); callers decide to fail open or closed."""


class Store(Protocol):
    """What the auth layer needs from shared state."""

    on_resync: Callable[[], Awaitable[None]] | None
    """Called after (re)connecting to shared state, before trusting it: replays the database."""

    @property
    def synced(self) -> bool:
        """True while the store's view of shared state is complete and current."""

    async def start(self) -> None:
        """Begin following shared state (returns once the first sync is done or timed out)."""

    def status(self) -> dict[str, object]:
        """Health of the store for ``/readyz``."""

    async def revoke_sessions(self, sids: Sequence[str], ttl: int) -> None:
        """Mark sessions revoked for every replica, for ``ttl`` seconds."""

    async def remember_revoked(self, sids: Sequence[str], ttl: int) -> None:
        """Note revocations learned elsewhere (the database) in this process only."""

    async def is_session_revoked(self, sid: str) -> bool:
        """True when ``sid`` was revoked."""

    def revoked_now(self, sid: str) -> bool | None:
        """``is_session_revoked`` when it can be answered without a round trip, else ``None``."""

    async def incr(self, key: str, window: float, amount: int = 1) -> tuple[int, float]:
        """Add ``amount`` to ``key``'s fixed-window count; return (count, seconds left)."""

    async def count(self, key: str) -> tuple[int, float]:
        """The current (count, seconds left) of ``key`` without counting."""

    async def reset(self, key: str) -> None:
        """Forget ``key``'s counter."""

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        """Keep ``value`` under ``key`` for ``ttl`` seconds (shared by every replica)."""

    async def get(self, key: str) -> bytes | None:
        """The value under ``key``, if it has not expired."""

    async def ping(self) -> bool:
        """True when the store answers."""

    async def close(self) -> None:
        """Release connections."""


class MemoryStore:
    """In-process store for a single gateway process."""

    def __init__(self) -> None:
        self._revoked: dict[str, float] = {}
        self._windows: dict[str, tuple[float, int]] = {}  # key -> (window end, count)
        self._values: dict[str, tuple[float, bytes]] = {}  # key -> (expiry, value)
        self.on_resync: Callable[[], Awaitable[None]] | None = None

    @property
    def synced(self) -> bool:
        return True

    async def start(self) -> None:
        if self.on_resync is not None:
            await self.on_resync()

    def status(self) -> dict[str, object]:
        return {"backend": "memory", "synced": True}

    async def revoke_sessions(self, sids: Sequence[str], ttl: int) -> None:
        until = time.monotonic() + ttl
        for sid in sids:
            self._revoked[sid] = max(until, self._revoked.get(sid, 0.0))
        if len(self._revoked) > 10_000:
            self._prune()

    async def remember_revoked(self, sids: Sequence[str], ttl: int) -> None:
        await self.revoke_sessions(sids, ttl)

    async def is_session_revoked(self, sid: str) -> bool:
        return self.revoked_now(sid)

    def revoked_now(self, sid: str) -> bool:
        until = self._revoked.get(sid)
        return until is not None and until > time.monotonic()

    async def incr(self, key: str, window: float, amount: int = 1) -> tuple[int, float]:
        now = time.monotonic()
        end, count = self._windows.get(key, (0.0, 0))
        if end <= now:
            end, count = now + window, 0
        count = max(count + amount, 0)
        self._windows[key] = (end, count)
        if len(self._windows) > 100_000:
            self._prune()
        return count, end - now

    async def count(self, key: str) -> tuple[int, float]:
        now = time.monotonic()
        end, count = self._windows.get(key, (0.0, 0))
        return (0, 0.0) if end <= now else (count, end - now)

    async def reset(self, key: str) -> None:
        self._windows.pop(key, None)

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        now = time.monotonic()
        if len(self._values) > 10_000:
            self._values = {k: v for k, v in self._values.items() if v[0] > now}
        self._values[key] = (now + ttl, value)

    async def get(self, key: str) -> bytes | None:
        found = self._values.get(key)
        return found[1] if found is not None and found[0] > time.monotonic() else None

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._revoked.clear()
        self._windows.clear()

    def _prune(self) -> None:
        now = time.monotonic()
        self._revoked = {k: v for k, v in self._revoked.items() if v > now}
        self._windows = {k: v for k, v in self._windows.items() if v[0] > now}


def make_store(cfg: RedisConfig) -> Store:
    """RedisStore when ``redis.url`` is set, else the in-process MemoryStore."""
    if cfg.url:
        from auth.redis_store import RedisStore

        return RedisStore(cfg)
    return MemoryStore()
