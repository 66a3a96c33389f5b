"""The seed login flow end to end on both backends."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.fixtures.factories import create_user, login


async def test_login_and_me(client: TestClient[Any, Any]) -> None:
    user = await create_user(client, is_admin=True)
    body = await login(client)
    assert body["user"] == {
        "email": "beyhan@beyhan.dev",
        "first_name": "Beyhan",
        "id": user.id,
        "is_admin": True,
        "last_name": "Oğur",
        "username": "Beyhan Oğur",
    }
    resp = await client.get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert resp.status == 200
    assert await resp.json() == {
        "user": {
            "email": "beyhan@beyhan.dev",
            "first_name": "Beyhan",
            "id": user.id,
            "is_admin": True,
            "last_name": "Oğur",
        }
    }
