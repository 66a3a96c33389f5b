"""A proxied request end to end: token checked, forged headers stripped, identity injected."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestServer

from tests.fixtures.factories import create_user, login
from tests.fixtures.gateway import both_listeners  # noqa: F401  (edge and aiohttp)
from tests.fixtures.upstream import upstream_base


async def test_proxy_injects_identity(
    gateway_client: Callable[..., Any], upstream: TestServer
) -> None:
    client = await gateway_client(
        routes=[{"name": "orders", "prefix": "/api/v1/orders", "upstream": upstream_base(upstream)}]
    )
    user = await create_user(client, is_admin=True)
    tokens = await login(client)
    resp = await client.get(
        "/api/v1/orders/42?x=1",
        headers={
            "Authorization": f"Bearer {tokens['access_token']}",
            "X-User-Id": "999",
            "x_is_admin": "true",
        },
    )
    assert resp.status == 200
    echo = await resp.json()
    assert echo["path"] == "/api/v1/orders/42"
    assert echo["query"] == "x=1"
    assert echo["headers"]["x-user-id"] == [str(user.id)]
    assert echo["headers"]["x-is-admin"] == ["true"]
    assert "x_is_admin" not in echo["headers"]
    assert resp.headers["X-Request-Id"] == echo["headers"]["x-request-id"][0]
    resp = await client.get("/api/v1/orders/42")
    assert resp.status == 401
