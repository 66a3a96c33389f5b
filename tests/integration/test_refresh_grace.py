"""The refresh grace window (issue 4): two tabs refreshing at once stay logged in.

Within ``sessions.refresh_grace`` of a rotation, the same refresh token presented again by the
same client (IP and User-Agent) gets the pair the rotation issued; from another client, or
after the window, it is reuse and revokes the whole chain (SPEC §2).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from tests.fixtures.backends import Backend
from tests.fixtures.factories import create_user, login

ME = "/api/v1/auth/me"
REFRESH = "/api/v1/auth/refresh"
PAIR_KEYS = ("access_token", "refresh_token")

Client = TestClient[Any, Any]
Start = Callable[..., Any]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def pair_of(body: dict[str, Any]) -> tuple[str, str]:
    return body["access_token"], body["refresh_token"]


async def refresh(client: Client, token: str, headers: dict[str, str] | None = None) -> Any:
    return await client.post(REFRESH, json={"refresh_token": token}, headers=headers)


async def refreshed(client: Client, token: str, headers: dict[str, str] | None = None) -> Any:
    """POST /refresh expecting 200; return the new (access, refresh)."""
    resp = await refresh(client, token, headers)
    assert resp.status == 200, await resp.text()
    return pair_of(await resp.json())


async def assert_logged_in(client: Client, pair: tuple[str, str]) -> None:
    """The pair works: /me answers and the refresh token rotates once more."""
    access, refresh_token = pair
    resp = await client.get(ME, headers=bearer(access))
    assert resp.status == 200, await resp.text()
    newer = await refreshed(client, refresh_token)
    resp = await client.get(ME, headers=bearer(newer[0]))
    assert resp.status == 200, await resp.text()


async def assert_revoked(client: Client, pair: tuple[str, str]) -> None:
    """Neither half of the pair is accepted any more."""
    access, refresh_token = pair
    resp = await client.get(ME, headers=bearer(access))
    assert resp.status == 401, await resp.text()
    resp = await refresh(client, refresh_token)
    assert resp.status == 401, await resp.text()


async def refused(resp: Any) -> None:
    assert resp.status == 401, await resp.text()
    body = await resp.json()
    assert body["isSuccess"] is False
    assert body["errors"][0] == "Unauthorized"


async def start_logged_in(gateway_client: Start, **sections: Any) -> tuple[Client, str]:
    client = await gateway_client(**sections)
    await create_user(client)
    return client, (await login(client))["refresh_token"]


GRACE_5S = {"refresh_grace": "5s"}


async def test_racing_refreshes_get_the_same_pair(gateway_client: Start) -> None:
    client, token = await start_logged_in(gateway_client, sessions=GRACE_5S)
    first, second = await asyncio.gather(refresh(client, token), refresh(client, token))
    assert first.status == 200, await first.text()
    assert second.status == 200, await second.text()
    pair = pair_of(await first.json())
    assert pair_of(await second.json()) == pair
    assert pair[1] != token
    await assert_logged_in(client, pair)


async def test_many_racing_refreshes_get_the_same_pair(gateway_client: Start) -> None:
    client, token = await start_logged_in(gateway_client, sessions=GRACE_5S)
    answers = await asyncio.gather(*(refresh(client, token) for _ in range(4)))
    pairs = set()
    for resp in answers:
        assert resp.status == 200, await resp.text()
        pairs.add(pair_of(await resp.json()))
    assert len(pairs) == 1
    await assert_logged_in(client, pairs.pop())


async def test_sequential_reuse_within_the_window_gets_the_same_pair(
    gateway_client: Start,
) -> None:
    client, token = await start_logged_in(gateway_client, sessions=GRACE_5S)
    pair = await refreshed(client, token)
    assert await refreshed(client, token) == pair
    assert await refreshed(client, token) == pair
    await assert_logged_in(client, pair)


async def test_reuse_from_another_user_agent_revokes(gateway_client: Start) -> None:
    client, token = await start_logged_in(gateway_client, sessions=GRACE_5S)
    pair = await refreshed(client, token, {"User-Agent": "tab/1"})
    await refused(await refresh(client, token, {"User-Agent": "thief/1"}))
    await assert_revoked(client, pair)


async def test_racing_refresh_from_another_user_agent_is_not_handed_the_pair(
    gateway_client: Start,
) -> None:
    client, token = await start_logged_in(gateway_client, sessions=GRACE_5S)
    answers = await asyncio.gather(
        refresh(client, token, {"User-Agent": "tab/1"}),
        refresh(client, token, {"User-Agent": "thief/1"}),
    )
    statuses = sorted(resp.status for resp in answers)
    assert statuses == [200, 401], statuses
    winner = next(resp for resp in answers if resp.status == 200)
    await assert_revoked(client, pair_of(await winner.json()))


async def test_reuse_from_another_forwarded_client_revokes(gateway_client: Start) -> None:
    client, token = await start_logged_in(
        gateway_client, sessions=GRACE_5S, server={"trusted_proxies": ["127.0.0.1/32"]}
    )
    pair = await refreshed(client, token, {"X-Forwarded-For": "203.0.113.1"})
    # Same client (same address behind the proxy, same User-Agent): the same pair.
    assert await refreshed(client, token, {"X-Forwarded-For": "203.0.113.1"}) == pair
    await refused(await refresh(client, token, {"X-Forwarded-For": "203.0.113.2"}))
    await assert_revoked(client, pair)


async def test_forwarded_for_is_not_believed_from_untrusted_peers(gateway_client: Start) -> None:
    """Without trusted proxies the header is ignored: the client is the same socket peer."""
    client, token = await start_logged_in(gateway_client, sessions=GRACE_5S)
    pair = await refreshed(client, token, {"X-Forwarded-For": "203.0.113.1"})
    assert await refreshed(client, token, {"X-Forwarded-For": "203.0.113.2"}) == pair
    await assert_logged_in(client, pair)


async def test_reuse_after_the_window_revokes(gateway_client: Start) -> None:
    client, token = await start_logged_in(gateway_client, sessions={"refresh_grace": "1s"})
    pair = await refreshed(client, token)
    await asyncio.sleep(1.5)
    await refused(await refresh(client, token))
    await assert_revoked(client, pair)


async def test_zero_grace_is_strict(gateway_client: Start) -> None:
    client, token = await start_logged_in(gateway_client, sessions={"refresh_grace": "0s"})
    pair = await refreshed(client, token)
    await refused(await refresh(client, token))
    await assert_revoked(client, pair)


async def test_zero_grace_race_has_one_winner_and_revokes(gateway_client: Start) -> None:
    client, token = await start_logged_in(gateway_client, sessions={"refresh_grace": "0s"})
    answers = await asyncio.gather(refresh(client, token), refresh(client, token))
    assert sorted(resp.status for resp in answers) == [200, 401]
    winner = next(resp for resp in answers if resp.status == 200)
    await assert_revoked(client, pair_of(await winner.json()))


async def test_a_rotated_token_of_the_new_pair_is_not_graced_by_the_old_one(
    gateway_client: Start,
) -> None:
    """The grace entry belongs to the old token: the new refresh token is single-use on its own
    (after its own rotation, reusing it from elsewhere still revokes)."""
    client, token = await start_logged_in(gateway_client, sessions=GRACE_5S)
    pair = await refreshed(client, token)
    newer = await refreshed(client, pair[1])
    await refused(await refresh(client, pair[1], {"User-Agent": "thief/1"}))
    await assert_revoked(client, newer)


async def test_race_across_two_replicas(gateway_client: Start, backend: Backend) -> None:
    if backend.redis_url is None:
        pytest.skip("the in-process store serves one process only (replicas need Redis)")
    a = await gateway_client(sessions=GRACE_5S)
    b = await gateway_client(sessions=GRACE_5S)
    await create_user(a)
    for _ in range(3):  # a few rounds: either replica may win the row
        token = (await login(a))["refresh_token"]
        first, second = await asyncio.gather(refresh(a, token), refresh(b, token))
        assert first.status == 200, await first.text()
        assert second.status == 200, await second.text()
        pair = pair_of(await first.json())
        assert pair_of(await second.json()) == pair
        await assert_logged_in(b, pair)


async def test_sequential_reuse_on_another_replica(gateway_client: Start, backend: Backend) -> None:
    if backend.redis_url is None:
        pytest.skip("the in-process store serves one process only (replicas need Redis)")
    a = await gateway_client(sessions=GRACE_5S)
    b = await gateway_client(sessions=GRACE_5S)
    await create_user(a)
    token = (await login(a))["refresh_token"]
    pair = await refreshed(a, token)
    assert await refreshed(b, token) == pair
    await refused(await refresh(b, token, {"User-Agent": "thief/1"}))
    await assert_revoked(a, pair)


async def test_grace_entry_in_redis_holds_no_token_in_clear(
    gateway_client: Start, backend: Backend
) -> None:
    if backend.redis_url is None:
        pytest.skip("the in-process store keeps nothing outside the process")
    client, token = await start_logged_in(gateway_client, sessions=GRACE_5S)
    access, new_refresh = await refreshed(client, token)
    redis = aioredis.from_url(backend.redis_url)
    try:
        keys = [k async for k in redis.scan_iter(match=f"{backend.redis_prefix}kv:grace:*")]
        assert len(keys) == 1, keys
        value = await redis.get(keys[0])
        ttl_ms = await redis.pttl(keys[0])
    finally:
        await redis.aclose()
    assert value is not None
    raw = value.encode() if isinstance(value, str) else bytes(value)
    text = raw.decode("latin-1")
    for secret in (access, new_refresh, token):
        assert secret not in text
        for part in secret.split("."):  # nor any JWT segment (payload or signature)
            assert part not in text
    assert 0 < ttl_ms <= 5000
