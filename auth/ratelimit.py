"""Named rate limits over the store's shared counters (every replica counts together).

A limit is counted per key (an account, an address, an IP, a user). ``charge`` counts one
request and refuses past the limit; credential attempts are charged *before* they are checked
(parallel guesses cannot slip past), and a right one is taken back: ``reset`` starts the
account's count over, ``forgive`` refunds one. The refusal names the limit, so the 429
envelope says which one was hit.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from auth.errors import RateLimited, Unavailable
from auth.store import Store, StoreUnavailable
from config import RateLimitConfig

_LOGGER = logging.getLogger(__name__)


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
    """Applies named limits with the store's counters.

    When the shared store does not answer, ``fail_open`` lets requests through unlimited (and
    logs it, at most every 10 s); otherwise they are refused as Unavailable (503).
    """

    def __init__(self, store: Store, *, fail_open: bool = True) -> None:
        self.store = store
        self.fail_open = fail_open
        self._last_warning = 0.0

    async def charge(self, limit: Limit, key: str) -> None:
        """Count one request under ``key``; raise RateLimited once past the limit."""
        try:
            count, left = await self.store.incr(f"{limit.name}:{key}", limit.per)
        except StoreUnavailable as exc:
            self._unavailable(exc)
            return
        if count > limit.requests:
            raise _refusal(limit, left)

    async def forgive(self, limit: Limit, key: str) -> None:
        """Take back one counted request (an attempt that turned out fine)."""
        try:
            await self.store.incr(f"{limit.name}:{key}", limit.per, -1)
        except StoreUnavailable as exc:
            self._unavailable(exc)

    async def reset(self, limit: Limit, key: str) -> None:
        """Forget ``key``'s count (e.g. failed logins after a success)."""
        try:
            await self.store.reset(f"{limit.name}:{key}")
        except StoreUnavailable as exc:
            self._unavailable(exc)

    def _unavailable(self, exc: StoreUnavailable) -> None:
        if not self.fail_open:
            raise Unavailable("rate limits cannot be checked: the shared store is unreachable")
        now = time.monotonic()
        if now - self._last_warning > 10:
            self._last_warning = now
            _LOGGER.warning("rate limits not enforced: %s", exc)


def _refusal(limit: Limit, left: float) -> RateLimited:
    return RateLimited(
        f"rate limit {limit.name} exceeded: at most {limit.requests} per {limit.per:g}s",
        retry_after=retry_after(left),
    )
