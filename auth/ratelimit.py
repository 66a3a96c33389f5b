"""Named rate limits over the store's shared counters (every replica counts together).

A limit is counted per key (an account, an address, an IP, a user). ``charge`` counts one
request and refuses past the limit; ``check`` refuses without counting (login lockout: failures
are counted with ``charge`` only when the password was wrong, and the account's counter is
reset on success). The refusal names the limit, so the 429 envelope says which one was hit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from auth.errors import RateLimited
from auth.store import Store
from config import RateLimitConfig


@dataclass(frozen=True, slots=True)
class Limit:
    """A named limit: ``requests`` per ``per`` seconds."""

    name: str
    requests: int
    per: float

    @classmethod
    def of(cls, name: str, cfg: RateLimitConfig) -> Limit:
        """The limit configured under ``name``."""
        return cls(name, cfg.requests, cfg.per)


def retry_after(seconds: float) -> int:
    """A ``Retry-After`` value: whole seconds, at least 1."""
    return max(1, math.ceil(seconds))


class RateLimiter:
    """Applies named limits with the store's counters."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def charge(self, limit: Limit, key: str) -> None:
        """Count one request under ``key``; raise RateLimited once past the limit."""
        count, left = await self.store.incr(f"{limit.name}:{key}", limit.per)
        if count > limit.requests:
            raise _refusal(limit, left)

    async def charge_quietly(self, limit: Limit, key: str) -> None:
        """Count one event under ``key`` without refusing (failures feeding a lockout)."""
        await self.store.incr(f"{limit.name}:{key}", limit.per)

    async def check(self, limit: Limit, key: str) -> None:
        """Raise RateLimited if ``key`` is already at the limit (counts nothing)."""
        count, left = await self.store.count(f"{limit.name}:{key}")
        if count >= limit.requests:
            raise _refusal(limit, left)

    async def reset(self, limit: Limit, key: str) -> None:
        """Forget ``key``'s count (e.g. failed logins after a success)."""
        await self.store.reset(f"{limit.name}:{key}")


def _refusal(limit: Limit, left: float) -> RateLimited:
    return RateLimited(
        f"rate limit {limit.name} exceeded: at most {limit.requests} per {limit.per:g}s",
        retry_after=retry_after(left),
    )
