"""The Redis-backed store shared by every replica, with a local mirror of revocations.

Revoked sessions live in Redis as ``<prefix>revoked:<sid>`` keys (TTL = the longest life of an
access token) and every revocation is also published on ``<prefix>revocations``. Each replica
subscribes, then loads every revoked key (subscribe first, so nothing published in between is
missed), and from then on answers ``is_session_revoked`` from memory: no Redis round trip per
proxied request. When the subscription breaks (Redis restarted, network), the replica marks
itself unsynced, keeps answering from its last known mirror (fail open on what it has not
heard of), reconnects with backoff, asks the service to replay the database's recent
revocations (``on_resync``: Redis may have lost them) and reloads the mirror before trusting
it again. Before the first sync, checks go to Redis directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from auth.store import StoreUnavailable
from config import RedisConfig

_LOGGER = logging.getLogger(__name__)
FIRST_SYNC_TIMEOUT = 5.0
PING_INTERVAL = 2.0
CLOSE_ATTEMPTS = 50


@contextlib.contextmanager
def _unavailable_on_error() -> Iterator[None]:
    try:
        yield
    except (RedisError, OSError) as exc:
        raise StoreUnavailable(f"Redis: {exc}") from exc


class RedisStore:
    """Redis store with a pub/sub-fed local mirror of revoked sessions."""

    def __init__(self, cfg: RedisConfig) -> None:
        assert cfg.url is not None
        self._url = cfg.url
        self._redis = aioredis.from_url(
            cfg.url, socket_connect_timeout=2, socket_timeout=2, health_check_interval=30
        )
        self._prefix = cfg.key_prefix
        self._channel = f"{cfg.key_prefix}revocations"
        self._revoked: dict[str, float] = {}  # sid -> wall-clock expiry
        self._synced = False
        self._down_since: float | None = None
        self._first_sync = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.on_resync: Callable[[], Awaitable[None]] | None = None

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Start following revocations; wait (bounded) for the first full sync."""
        self._task = asyncio.create_task(self._follow(), name="redis-revocation-follower")
        try:
            await asyncio.wait_for(self._first_sync.wait(), FIRST_SYNC_TIMEOUT)
        except TimeoutError:
            _LOGGER.warning("Redis is not answering: starting with an empty revocation mirror")

    @property
    def synced(self) -> bool:
        """True while the mirror follows Redis."""
        return self._synced

    def status(self) -> dict[str, object]:
        """Whether the mirror is in sync, and since when Redis has been unreachable."""
        down = None if self._down_since is None else round(time.time() - self._down_since, 1)
        return {"backend": "redis", "synced": self._synced, "down_for_seconds": down}

    async def close(self) -> None:
        """Stop following and release connections."""
        self._closing = True
        if self._task is not None:
            # Cancel until it takes: on Python 3.11 asyncio.wait_for (used by redis-py while
            # subscribing) can swallow a cancellation that lands as its operation completes.
            for _ in range(CLOSE_ATTEMPTS):
                self._task.cancel()
                done, _ = await asyncio.wait({self._task}, timeout=0.1)
                if done:
                    break
            else:
                _LOGGER.warning("the Redis follower did not stop; abandoning it")
        await self._redis.aclose()

    # --- revocation ---------------------------------------------------------------------

    async def revoke_sessions(self, sids: Sequence[str], ttl: int) -> None:
        """Write the revocations, publish them to every replica, and mirror them here."""
        if not sids:
            return
        until = time.time() + ttl
        for sid in sids:
            self._revoked[sid] = until
        message = json.dumps({"sids": list(sids), "until": until})
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for sid in sids:
                    pipe.set(f"{self._prefix}revoked:{sid}", b"1", ex=max(ttl, 1))
                pipe.publish(self._channel, message)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            # The database already holds the revocation: other replicas get it from their
            # database feed, and a reconnecting replica replays it into Redis.
            _LOGGER.warning("could not publish %d revocation(s) to Redis: %s", len(sids), exc)

    async def is_session_revoked(self, sid: str) -> bool:
        """From the mirror when synced (no round trip); else Redis, else the last known mirror."""
        known = self.revoked_now(sid)
        if known is not None:
            return known
        try:
            return bool(await self._redis.exists(f"{self._prefix}revoked:{sid}"))
        except (RedisError, OSError):
            until = self._revoked.get(sid)
            return until is not None and until > time.time()

    def revoked_now(self, sid: str) -> bool | None:
        """The mirror's answer while it is synced (or Redis is down); ``None``: ask Redis."""
        if self._synced or self._down_since is not None:
            until = self._revoked.get(sid)
            return until is not None and until > time.time()
        return None

    async def remember_revoked(self, sids: Sequence[str], ttl: int) -> None:
        """Mirror revocations learned from the database (the writer already told Redis)."""
        until = time.time() + ttl
        for sid in sids:
            self._revoked[sid] = max(until, self._revoked.get(sid, 0.0))

    # --- rate limits --------------------------------------------------------------------

    async def incr(self, key: str, window: float, amount: int = 1) -> tuple[int, float]:
        """Fixed-window counter shared by every replica (INCRBY + PEXPIRE NX, atomically)."""
        name = f"{self._prefix}rate:{key}"
        with _unavailable_on_error():
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.incrby(name, amount)
                pipe.pexpire(name, max(int(window * 1000), 1), nx=True)
                pipe.pttl(name)
                count, _, ttl_ms = await pipe.execute()
        return int(count), max(int(ttl_ms), 1) / 1000

    async def count(self, key: str) -> tuple[int, float]:
        """The shared counter of ``key`` without counting."""
        name = f"{self._prefix}rate:{key}"
        with _unavailable_on_error():
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.get(name)
                pipe.pttl(name)
                value, ttl_ms = await pipe.execute()
        if value is None or int(ttl_ms) <= 0:
            return 0, 0.0
        return int(value), int(ttl_ms) / 1000

    async def reset(self, key: str) -> None:
        """Forget a shared counter."""
        with _unavailable_on_error():
            await self._redis.delete(f"{self._prefix}rate:{key}")

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        """A shared value with an expiry."""
        with _unavailable_on_error():
            await self._redis.set(f"{self._prefix}kv:{key}", value, px=max(int(ttl * 1000), 1))

    async def get(self, key: str) -> bytes | None:
        """A shared value, if present."""
        with _unavailable_on_error():
            value = await self._redis.get(f"{self._prefix}kv:{key}")
        if value is None:
            return None
        return value.encode() if isinstance(value, str) else bytes(value)

    async def ping(self) -> bool:
        """True when Redis answers."""
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError):
            return False

    # --- following ----------------------------------------------------------------------

    async def _follow(self) -> None:
        backoff = 0.1
        while not self._closing:
            listener = aioredis.from_url(self._url, socket_connect_timeout=2, socket_timeout=5)
            pubsub = listener.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel)
                if self.on_resync is not None:
                    await self.on_resync()
                await self._reload()
                self._synced, self._down_since = True, None
                self._first_sync.set()
                backoff = 0.1
                await self._listen(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Any failure must lead to a reconnect, never end the task: uvloop raises
                # RuntimeError when redis-py writes to a transport that was reset under it.
                if self._synced or self._down_since is None:
                    _LOGGER.warning("lost Redis (%s): serving the last known revocations", exc)
                self._synced = False
                self._down_since = self._down_since or time.time()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]
                with contextlib.suppress(Exception):
                    await listener.aclose()

    async def _listen(self, pubsub: aioredis.client.PubSub) -> None:
        last_ping = time.monotonic()
        while not self._closing:
            message = await pubsub.get_message(timeout=1.0)
            if message is not None and message.get("type") == "message":
                self._apply(message["data"])
            if time.monotonic() - last_ping > PING_INTERVAL:
                await pubsub.ping()
                last_ping = time.monotonic()
                self._prune()

    def _apply(self, data: bytes | str) -> None:
        try:
            payload = json.loads(data)
            until = float(payload["until"])
            for sid in payload["sids"]:
                self._revoked[str(sid)] = until
        except (ValueError, KeyError, TypeError):
            _LOGGER.warning("ignored a malformed revocation message")

    async def _reload(self) -> None:
        """Replace the mirror with every revoked key in Redis (with its remaining life)."""
        now = time.time()
        mirror: dict[str, float] = {}
        head = f"{self._prefix}revoked:"
        keys = [key async for key in self._redis.scan_iter(match=f"{head}*", count=1000)]
        for start in range(0, len(keys), 1000):
            batch = keys[start : start + 1000]
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in batch:
                    pipe.pttl(key)
                ttls = await pipe.execute()
            for key, ttl_ms in zip(batch, ttls, strict=True):
                if int(ttl_ms) > 0:
                    name = key.decode() if isinstance(key, bytes) else str(key)
                    mirror[name[len(head) :]] = now + int(ttl_ms) / 1000
        # Keep what this replica learned meanwhile (published during the scan).
        for sid, until in self._revoked.items():
            if until > now and mirror.get(sid, 0) < until:
                mirror[sid] = until
        self._revoked = mirror

    def _prune(self) -> None:
        if len(self._revoked) > 10_000:
            now = time.time()
            self._revoked = {k: v for k, v in self._revoked.items() if v > now}
