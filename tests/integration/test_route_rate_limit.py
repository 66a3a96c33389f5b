"""Per-route rate limits from gateway.yaml: per user (anonymous: per IP) or per client IP."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from tests.fixtures.backends import Backend
from tests.fixtures.factories import create_user, login
from tests.fixtures.gateway import both_listeners  # noqa: F401  (edge and aiohttp)
from tests.fixtures.upstream import upstream_base

Start = Callable[..., Any]


def _routes(upstream: TestServer, key: str, auth: str = "required") -> list[dict[str, Any]]:
    return [
        {
            "name": "limited",
            "prefix": "/limited",
            "upstream": upstream_base(upstream),
            "auth": auth,
            "rate_limit": {"requests": 3, "per": "1m", "key": key},
        },
        {"name": "free", "prefix": "/free", "upstream": upstream_base(upstream)},
    ]


async def _get(client: TestClient[Any, Any], path: str, **headers: str) -> Any:
    return await client.get(path, headers=headers)


async def test_per_user_limit_counts_each_user_alone(
    gateway_client: Start, upstream: TestServer
) -> None:
    client = await gateway_client(routes=_routes(upstream, "user"))
    await create_user(client)
    await create_user(client, email="other@example.com", username="other")
    mine = {"Authorization": f"Bearer {(await login(client))['access_token']}"}
    theirs = {
        "Authorization": f"Bearer {(await login(client, 'other@example.com'))['access_token']}"
    }
    for _ in range(3):
        assert (await _get(client, "/limited/x", **mine)).status == 200
    refused = await _get(client, "/limited/x", **mine)
    assert refused.status == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    body = await refused.json()
    assert body["errors"][0] == "Too many requests"
    assert any("route:limited" in detail for detail in body["errors"][1:])
    assert (await _get(client, "/limited/x", **theirs)).status == 200
    assert (await _get(client, "/free/x", **mine)).status == 200  # other routes unaffected


async def test_per_ip_limit_believes_forwarded_for_only_from_trusted_proxies(
    gateway_client: Start, upstream: TestServer
) -> None:
    client = await gateway_client(
        routes=_routes(upstream, "ip", auth="none"),
        server={"trusted_proxies": ["127.0.0.1/32"]},
    )
    for _ in range(3):
        assert (
            await _get(client, "/limited/x", **{"X-Forwarded-For": "203.0.113.7"})
        ).status == 200
    assert (await _get(client, "/limited/x", **{"X-Forwarded-For": "203.0.113.7"})).status == 429
    assert (await _get(client, "/limited/x", **{"X-Forwarded-For": "203.0.113.8"})).status == 200

    untrusted = await gateway_client(routes=_routes(upstream, "ip", auth="none"))
    for n in range(3):
        resp = await _get(untrusted, "/limited/x", **{"X-Forwarded-For": f"198.51.100.{n}"})
        assert resp.status == 200
    # Without trusted proxies every request counts for the socket peer, whatever it claims.
    resp = await _get(untrusted, "/limited/x", **{"X-Forwarded-For": "198.51.100.99"})
    assert resp.status == 429


async def test_replicas_share_the_route_limit(
    gateway_client: Start, upstream: TestServer, backend: Backend
) -> None:
    a = await gateway_client(routes=_routes(upstream, "user"))
    b = await gateway_client(routes=_routes(upstream, "user"))
    await create_user(a)
    bearer = {"Authorization": f"Bearer {(await login(a))['access_token']}"}
    statuses = [(await _get(replica, "/limited/x", **bearer)).status for replica in (a, b, a, b)]
    if backend.redis_url is None:
        # The in-process store counts per process: each replica allows its own three.
        assert statuses == [200, 200, 200, 200]
    else:
        assert statuses == [200, 200, 200, 429]
