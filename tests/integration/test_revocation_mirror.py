"""Revocation across replicas: a logout on one gateway is refused by another, from memory.

Two apps on the same database and Redis stand for two replicas. With Redis, each keeps a
pub/sub-fed mirror of revoked sessions, so proxied requests need no Redis round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer

from auth.errors import TokenInvalid
from gateway.appkeys import SERVICES
from tests.fixtures.backends import Backend
from tests.fixtures.factories import create_user, login
from tests.fixtures.upstream import upstream_base

Start = Callable[..., Any]


async def _replicas(
    gateway_client: Start, upstream: TestServer
) -> tuple[TestClient[Any, Any], ...]:
    routes = [{"name": "app", "prefix": "/app", "upstream": upstream_base(upstream)}]
    a = await gateway_client(routes=routes)
    b = await gateway_client(routes=routes)
    return a, b


async def _refused_within(client: TestClient[Any, Any], token: str, seconds: float) -> float:
    """Poll a proxied route with ``token`` until it is refused; return how long it took."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        resp = await client.get("/app/x", headers={"Authorization": f"Bearer {token}"})
        if resp.status == 401:
            return time.monotonic() - start
        assert resp.status == 200
        await asyncio.sleep(0.01)
    raise AssertionError(f"token still accepted after {seconds}s")


async def test_logout_on_one_replica_is_refused_by_the_other(
    gateway_client: Start, upstream: TestServer, backend: Backend
) -> None:
    if backend.redis_url is None:
        pytest.skip("the in-process store serves one process only (replicas need Redis)")
    a, b = await _replicas(gateway_client, upstream)
    await create_user(a)
    tokens = await login(a)
    access = tokens["access_token"]
    resp = await b.get("/app/x", headers={"Authorization": f"Bearer {access}"})
    assert resp.status == 200
    resp = await a.post("/api/v1/auth/logout", headers={"Authorization": f"Bearer {access}"})
    assert resp.status == 200
    assert await _refused_within(b, access, 1.0) < 1.0


async def test_synced_replica_answers_without_redis(
    gateway_client: Start, upstream: TestServer, backend: Backend
) -> None:
    if backend.redis_url is None:
        pytest.skip("the in-process store has no Redis to avoid")
    a, b = await _replicas(gateway_client, upstream)
    store_b: Any = b.app[SERVICES].store
    assert store_b.status()["synced"] is True
    await create_user(a)
    access = (await login(a))["access_token"]
    await a.post("/api/v1/auth/logout", headers={"Authorization": f"Bearer {access}"})
    await _refused_within(b, access, 1.0)

    async def no_round_trips(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a Redis round trip on the hot path")

    store_b._redis.exists = no_round_trips
    fresh = (await login(a))["access_token"]
    for _ in range(5):
        resp = await b.get("/app/x", headers={"Authorization": f"Bearer {fresh}"})
        assert resp.status == 200
        resp = await b.get("/app/x", headers={"Authorization": f"Bearer {access}"})
        assert resp.status == 401


async def test_replica_fails_open_then_resyncs_from_the_database(
    gateway_client: Start, upstream: TestServer, backend: Backend
) -> None:
    """While a replica is cut off it serves its last known revocations; on reconnecting it
    replays the database (Redis may have lost the keys) and refuses what was revoked meanwhile.
    """
    if backend.redis_url is None:
        pytest.skip("needs Redis")
    a, b = await _replicas(gateway_client, upstream)
    await create_user(a)
    access = (await login(a))["access_token"]
    store_b: Any = b.app[SERVICES].store
    follower = store_b._task
    follower.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await follower
    store_b._synced, store_b._down_since = False, time.time()  # what a lost connection leaves
    admin = aioredis.from_url(backend.redis_url)
    try:
        await a.post("/api/v1/auth/logout", headers={"Authorization": f"Bearer {access}"})
        keys = [k async for k in admin.scan_iter(match=f"{backend.redis_prefix}revoked:*")]
        assert keys
        await admin.delete(*keys)  # as if Redis had restarted empty
        resp = await b.get("/app/x", headers={"Authorization": f"Bearer {access}"})
        assert resp.status == 200  # fail open on the last known state, by design
        assert (await b.get("/readyz")).status == 200
        assert (await (await b.get("/readyz")).json())["status"] == "degraded"
        store_b._task = asyncio.create_task(store_b._follow())
        assert await _refused_within(b, access, 2.0) < 2.0
        # The replay refuses the token as soon as it is in the mirror; the store counts as
        # synced once it has also reloaded Redis's keys, a moment later.
        for _ in range(200):
            if store_b.status()["synced"] is True:
                break
            await asyncio.sleep(0.01)
        assert store_b.status()["synced"] is True
        assert [k async for k in admin.scan_iter(match=f"{backend.redis_prefix}revoked:*")]
    finally:
        await admin.aclose()


async def test_replica_reconnects_after_its_subscription_is_killed(
    gateway_client: Start, upstream: TestServer, backend: Backend
) -> None:
    if backend.redis_url is None:
        pytest.skip("needs Redis")
    a, b = await _replicas(gateway_client, upstream)
    await create_user(a)
    store_b: Any = b.app[SERVICES].store
    admin = aioredis.from_url(backend.redis_url)
    try:
        await admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    finally:
        await admin.aclose()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not (  # noqa: ASYNC110
        store_b.status()["synced"] and store_b._down_since is None
    ):
        await asyncio.sleep(0.05)
    access = (await login(a))["access_token"]
    await a.post("/api/v1/auth/logout", headers={"Authorization": f"Bearer {access}"})
    assert await _refused_within(b, access, 2.0) < 2.0


async def test_authenticate_caches_verification_not_revocation(
    gateway_client: Start, upstream: TestServer
) -> None:
    a, _ = await _replicas(gateway_client, upstream)
    await create_user(a)
    access = (await login(a))["access_token"]
    service = a.app[SERVICES].auth_service()
    first = await service.authenticate(access)
    assert await service.authenticate(access) is first
    await a.post("/api/v1/auth/logout", headers={"Authorization": f"Bearer {access}"})
    with pytest.raises(TokenInvalid):
        await service.authenticate(access)
    tampered = access[:-2] + ("AA" if not access.endswith("AA") else "BB")
    with pytest.raises(TokenInvalid):
        await service.authenticate(tampered)
