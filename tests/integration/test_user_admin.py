"""Admin user management: GET/PATCH/DELETE /users…, the last-admin rule, on both backends."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from sqlalchemy import func, select

from auth.models import AuthSession, User
from tests.fixtures.envelopes import envelope
from tests.fixtures.factories import DEFAULT_PASSWORD, create_user, login
from tests.fixtures.smtp import Mailbox
from tests.fixtures.upstream import upstream_base
from tests.integration.account_helpers import (
    LOGIN,
    ME,
    REFRESH,
    USERS,
    Client,
    GatewayClient,
    bearer,
    engine_of,
    ok,
    service_of,
)

ADMIN = "admin@example.com"
USER = "user@example.com"
LAST_ADMIN = "the last active admin cannot be demoted, deactivated or deleted"
ADMIN_USER_KEYS = {
    "email",
    "email_verified",
    "first_name",
    "id",
    "is_active",
    "is_admin",
    "last_name",
    "username",
}


async def admin_and_user(client: Client) -> tuple[str, str, int, int]:
    """An admin and a plain user, both logged in: (admin token, user token, ids)."""
    admin = await create_user(client, email=ADMIN, username="admin", is_admin=True)
    user = await create_user(client, email=USER, username="user")
    return (
        (await login(client, ADMIN))["access_token"],
        (await login(client, USER))["access_token"],
        admin.id,
        user.id,
    )


async def patch(client: Client, token: str, user_id: int, **changes: Any) -> Any:
    return await client.patch(f"{USERS}/{user_id}", json=changes, headers=bearer(token))


async def updated_at(client: Client, user_id: int) -> Any:
    async with engine_of(client).connect() as conn:
        return await conn.scalar(select(User.updated_at).where(User.id == user_id))


# --- who may -----------------------------------------------------------------------------------


async def test_non_admins_get_403_everywhere(client: Client, mailbox: Mailbox) -> None:
    _, user_token, admin_id, user_id = await admin_and_user(client)
    headers = bearer(user_token)
    for resp in (
        await client.get(USERS, headers=headers),
        await client.get(f"{USERS}/{admin_id}", headers=headers),
        await client.patch(f"{USERS}/{user_id}", json={"is_admin": True}, headers=headers),
        await client.delete(f"{USERS}/{admin_id}", headers=headers),
    ):
        assert "admin rights are required" in await envelope(resp, 403)
    body = await ok(await client.get(ME, headers=headers))
    assert body["user"]["is_admin"] is False


async def test_no_or_bad_token_is_401(client: Client, mailbox: Mailbox) -> None:
    _, _, admin_id, _ = await admin_and_user(client)
    refresh = (await login(client, ADMIN))["refresh_token"]
    for headers in ({}, bearer("garbage"), bearer(refresh)):
        await envelope(await client.get(USERS, headers=headers), 401)
        await envelope(await client.get(f"{USERS}/{admin_id}", headers=headers), 401)
        await envelope(await client.delete(f"{USERS}/{admin_id}", headers=headers), 401)


async def test_the_database_decides_not_the_admin_claim(client: Client, mailbox: Mailbox) -> None:
    admin_token, _, _, _ = await admin_and_user(client)
    await create_user(client, email="second@example.com", username="second", is_admin=True)
    await service_of(client).update_user(ADMIN, is_admin=False)
    # The token still says is_admin: true, the database no longer does.
    await envelope(await client.get(USERS, headers=bearer(admin_token)), 403)


# --- GET /users ----------------------------------------------------------------------------------


async def test_list_is_paginated_by_id(client: Client, mailbox: Mailbox) -> None:
    admin_token, _, admin_id, user_id = await admin_and_user(client)
    for i in range(5):
        await create_user(client, email=f"bulk{i}@example.com", username=f"bulk{i}")
    body = await ok(await client.get(USERS, headers=bearer(admin_token)))
    assert body["total"] == 7 and body["limit"] == 50 and body["offset"] == 0
    ids = [u["id"] for u in body["users"]]
    assert ids == sorted(ids) and ids[:2] == [admin_id, user_id]
    assert set(body["users"][0]) == ADMIN_USER_KEYS
    assert body["users"][0] == {
        "email": ADMIN,
        "email_verified": True,
        "first_name": "Beyhan",
        "id": admin_id,
        "is_active": True,
        "is_admin": True,
        "last_name": "Oğur",
        "username": "admin",
    }
    page = await ok(
        await client.get(USERS, params={"limit": "3", "offset": "2"}, headers=bearer(admin_token))
    )
    assert [u["id"] for u in page["users"]] == ids[2:5]
    assert (page["total"], page["limit"], page["offset"]) == (7, 3, 2)
    past = await ok(await client.get(USERS, params={"offset": "100"}, headers=bearer(admin_token)))
    assert past["users"] == [] and past["total"] == 7


async def test_list_filters_by_email_prefix(client: Client, mailbox: Mailbox) -> None:
    admin_token, _, _, _ = await admin_and_user(client)
    await create_user(client, email="Bulk_1@Example.com", username="b1")
    await create_user(client, email="bulkx1@example.com", username="b2")
    for prefix, expected in (
        ("BULK", ["Bulk_1@Example.com", "bulkx1@example.com"]),
        ("bulk_", ["Bulk_1@Example.com"]),  # "_" is not a LIKE wildcard here
        ("%", []),
        ("user@", [USER]),
        ("", [ADMIN, USER, "Bulk_1@Example.com", "bulkx1@example.com"]),
    ):
        resp = await client.get(USERS, params={"email_prefix": prefix}, headers=bearer(admin_token))
        body = await ok(resp)
        assert [u["email"] for u in body["users"]] == expected, prefix
        assert body["total"] == len(expected)


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"limit": "0"}, "limit: must be at least 1"),
        ({"limit": "201"}, "limit: must be at most 200"),
        ({"limit": "ten"}, "limit: must be an integer"),
        ({"offset": "-1"}, "offset: must be at least 0"),
        ({"offset": "99999999999999999999"}, "offset: must be at most 2147483647"),
        ({"email_prefix": "x" * 255}, "email_prefix: is too long"),
    ],
)
async def test_bad_list_parameters_are_400(
    client: Client, mailbox: Mailbox, params: dict[str, str], detail: str
) -> None:
    admin_token, _, _, _ = await admin_and_user(client)
    resp = await client.get(USERS, params=params, headers=bearer(admin_token))
    assert detail in await envelope(resp, 400)


async def test_list_in_camel_case(gateway_client: GatewayClient, mailbox: Mailbox) -> None:
    client = await gateway_client(api={"json_case": "camel"})
    await create_user(client, email=ADMIN, username="admin", is_admin=True)
    resp = await client.post(LOGIN, json={"email": ADMIN, "password": DEFAULT_PASSWORD})
    token = (await ok(resp))["accessToken"]
    body = await ok(await client.get(USERS, params={"emailPrefix": "adm"}, headers=bearer(token)))
    assert body["users"][0]["isAdmin"] is True and body["total"] == 1


# --- GET /users/{id} -----------------------------------------------------------------------------


async def test_get_one_user(client: Client, mailbox: Mailbox) -> None:
    admin_token, _, _, user_id = await admin_and_user(client)
    body = await ok(await client.get(f"{USERS}/{user_id}", headers=bearer(admin_token)))
    assert body["user"]["email"] == USER and set(body["user"]) == ADMIN_USER_KEYS


@pytest.mark.parametrize("path", ["999", "0", "2147483648", "99999999999999999999"])
async def test_unknown_ids_are_404(client: Client, mailbox: Mailbox, path: str) -> None:
    admin_token, _, _, _ = await admin_and_user(client)
    headers = bearer(admin_token)
    await envelope(await client.get(f"{USERS}/{path}", headers=headers), 404)
    await envelope(await client.patch(f"{USERS}/{path}", json={}, headers=headers), 404)
    await envelope(await client.delete(f"{USERS}/{path}", headers=headers), 404)


async def test_non_numeric_ids_are_404(client: Client, mailbox: Mailbox) -> None:
    admin_token, _, _, _ = await admin_and_user(client)
    for path in ("abc", "-1", "1.5", "1e3", "0x1"):
        resp = await client.get(f"{USERS}/{path}", headers=bearer(admin_token))
        assert resp.status == 404, path


# --- PATCH /users/{id} ---------------------------------------------------------------------------


async def test_patch_names_and_verification(client: Client, mailbox: Mailbox) -> None:
    admin_token, user_token, _, user_id = await admin_and_user(client)
    before = await updated_at(client, user_id)
    resp = await patch(
        client, admin_token, user_id, firstName="Yeni", last_name="Ad", email_verified=False
    )
    user = (await ok(resp))["user"]
    assert (user["first_name"], user["last_name"], user["email_verified"]) == ("Yeni", "Ad", False)
    assert user["is_admin"] is False and user["is_active"] is True
    assert await updated_at(client, user_id) > before
    me = await ok(await client.get(ME, headers=bearer(user_token)))
    assert me["user"]["first_name"] == "Yeni"
    # Nulls and an empty body change nothing.
    same = (await ok(await patch(client, admin_token, user_id, first_name=None)))["user"]
    assert same == user


@pytest.mark.parametrize(
    ("changes", "detail"),
    [
        ({"is_admin": "yes"}, "is_admin: must be a boolean"),
        ({"is_active": 1}, "is_active: must be a boolean"),
        ({"first_name": "x" * 101}, "first_name: must be at most 100 characters"),
        ({"last_name": "a\u0000b"}, "last_name: must not contain NUL characters"),
        ({"email": "new@example.com"}, "email: unknown field"),
        ({"password_hash": "x"}, "password_hash: unknown field"),
    ],
)
async def test_bad_patches_are_400(
    client: Client, mailbox: Mailbox, changes: dict[str, Any], detail: str
) -> None:
    admin_token, _, _, user_id = await admin_and_user(client)
    resp = await patch(client, admin_token, user_id, **changes)
    assert detail in await envelope(resp, 400)
    body = await ok(await client.get(f"{USERS}/{user_id}", headers=bearer(admin_token)))
    assert body["user"]["email"] == USER and body["user"]["is_admin"] is False


async def test_promotion_and_demotion_apply_to_issued_tokens(
    gateway_client: GatewayClient, mailbox: Mailbox, upstream: TestServer
) -> None:
    routes = [
        {"name": "admin", "prefix": "/admin", "upstream": upstream_base(upstream), "admin": True}
    ]
    client = await gateway_client(routes=routes)
    admin_token, user_token, _, user_id = await admin_and_user(client)
    assert (await client.get("/admin/x", headers=bearer(user_token))).status == 403
    await ok(await patch(client, admin_token, user_id, is_admin=True))
    # The token issued before says is_admin: false; it works as an admin's at once.
    resp = await client.get("/admin/x", headers=bearer(user_token))
    assert resp.status == 200
    assert (await resp.json())["headers"]["x-is-admin"] == ["true"]
    await ok(await client.get(USERS, headers=bearer(user_token)))
    await ok(await patch(client, admin_token, user_id, is_admin=False))
    assert (await client.get("/admin/x", headers=bearer(user_token))).status == 403
    await envelope(await client.get(USERS, headers=bearer(user_token)), 403)


async def test_deactivation_ends_every_session(client: Client, mailbox: Mailbox) -> None:
    admin_token, _, _, user_id = await admin_and_user(client)
    tokens = await login(client, USER)
    user = (await ok(await patch(client, admin_token, user_id, is_active=False)))["user"]
    assert user["is_active"] is False
    await envelope(await client.get(ME, headers=bearer(tokens["access_token"])), 401)
    await envelope(await client.post(REFRESH, json={"refresh_token": tokens["refresh_token"]}), 401)
    with pytest.raises(Exception, match=r"revoked|deactivated"):
        await service_of(client).authenticate(tokens["access_token"])
    resp = await client.post(LOGIN, json={"email": USER, "password": DEFAULT_PASSWORD})
    assert "account is deactivated" in await envelope(resp, 403)
    # Reactivated: a new login works (old sessions stay ended).
    await ok(await patch(client, admin_token, user_id, is_active=True))
    await login(client, USER)
    await envelope(await client.get(ME, headers=bearer(tokens["access_token"])), 401)


# --- the last active admin -----------------------------------------------------------------------


async def test_the_last_admin_cannot_be_removed(client: Client, mailbox: Mailbox) -> None:
    admin_token, _, admin_id, _ = await admin_and_user(client)
    for changes in (
        {"is_admin": False},
        {"is_active": False},
        {"is_admin": True, "is_active": False},
    ):
        resp = await patch(client, admin_token, admin_id, **changes)
        assert LAST_ADMIN in await envelope(resp, 409)
    resp = await client.delete(f"{USERS}/{admin_id}", headers=bearer(admin_token))
    assert LAST_ADMIN in await envelope(resp, 409)
    body = await ok(await client.get(f"{USERS}/{admin_id}", headers=bearer(admin_token)))
    assert body["user"]["is_admin"] is True and body["user"]["is_active"] is True
    # Harmless changes to the last admin are fine.
    await ok(await patch(client, admin_token, admin_id, is_admin=True, first_name="Still"))


async def test_an_inactive_admin_does_not_count(client: Client, mailbox: Mailbox) -> None:
    admin_token, _, admin_id, _ = await admin_and_user(client)
    await create_user(client, email="idle@example.com", username="idle", is_admin=True)
    await service_of(client).update_user("idle@example.com", is_active=False)
    await envelope(await patch(client, admin_token, admin_id, is_admin=False), 409)


async def test_with_two_admins_one_may_go(client: Client, mailbox: Mailbox) -> None:
    admin_token, _, admin_id, _ = await admin_and_user(client)
    second = await create_user(client, email="second@example.com", username="second", is_admin=True)
    await ok(await patch(client, admin_token, admin_id, is_admin=False))  # demotes itself
    await envelope(await client.get(USERS, headers=bearer(admin_token)), 403)
    second_token = (await login(client, "second@example.com"))["access_token"]
    resp = await patch(client, second_token, second.id, is_admin=False)
    assert LAST_ADMIN in await envelope(resp, 409)


async def test_admins_demoting_each_other_at_once(client: Client, mailbox: Mailbox) -> None:
    a = await create_user(client, email="a@example.com", username="a", is_admin=True)
    b = await create_user(client, email="b@example.com", username="b", is_admin=True)
    a_token = (await login(client, "a@example.com"))["access_token"]
    b_token = (await login(client, "b@example.com"))["access_token"]
    for field in ("is_admin", "is_active", "is_admin", "is_active", "is_admin"):
        results = await asyncio.gather(
            patch(client, a_token, b.id, **{field: False}),
            patch(client, b_token, a.id, **{field: False}),
        )
        statuses = sorted(r.status for r in results)
        assert statuses[0] == 200 and statuses[1] in (403, 409), statuses
        async with engine_of(client).connect() as conn:
            admins = await conn.scalar(
                select(func.count()).select_from(User).where(User.is_admin, User.is_active)
            )
        assert admins == 1
        # Restore both (directly: the loser may have lost its session) and go again.
        for email in ("a@example.com", "b@example.com"):
            await service_of(client).update_user(email, is_admin=True, is_active=True)
        a_token = (await login(client, "a@example.com"))["access_token"]
        b_token = (await login(client, "b@example.com"))["access_token"]


async def test_parallel_deletes_keep_one_admin(client: Client, mailbox: Mailbox) -> None:
    a = await create_user(client, email="a@example.com", username="a", is_admin=True)
    b = await create_user(client, email="b@example.com", username="b", is_admin=True)
    a_token = (await login(client, "a@example.com"))["access_token"]
    b_token = (await login(client, "b@example.com"))["access_token"]
    results = await asyncio.gather(
        client.delete(f"{USERS}/{b.id}", headers=bearer(a_token)),
        client.delete(f"{USERS}/{a.id}", headers=bearer(b_token)),
    )
    statuses = sorted(r.status for r in results)
    assert statuses[0] == 200 and statuses[1] in (401, 409), statuses
    async with engine_of(client).connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(User)) == 1


# --- DELETE /users/{id} --------------------------------------------------------------------------


async def test_delete_ends_every_session(client: Client, mailbox: Mailbox) -> None:
    admin_token, _, _, user_id = await admin_and_user(client)
    tokens = await login(client, USER)
    resp = await client.delete(f"{USERS}/{user_id}", headers=bearer(admin_token))
    assert await ok(resp) == {"message": "user has been deleted"}
    await envelope(await client.get(f"{USERS}/{user_id}", headers=bearer(admin_token)), 404)
    await envelope(await client.delete(f"{USERS}/{user_id}", headers=bearer(admin_token)), 404)
    await envelope(await client.get(ME, headers=bearer(tokens["access_token"])), 401)
    await envelope(await client.post(REFRESH, json={"refresh_token": tokens["refresh_token"]}), 401)
    with pytest.raises(Exception, match=r"revoked|deactivated"):
        await service_of(client).authenticate(tokens["access_token"])
    async with engine_of(client).connect() as conn:
        left = await conn.scalar(
            select(func.count()).select_from(AuthSession).where(AuthSession.user_id == user_id)
        )
    assert left == 0
    # The address is free again, and the new account gets a new id.
    again = await create_user(client, email=USER, username="user")
    assert again.id != user_id


async def test_an_admin_may_delete_itself_when_not_the_last(
    client: Client, mailbox: Mailbox
) -> None:
    admin_token, _, admin_id, _ = await admin_and_user(client)
    await create_user(client, email="second@example.com", username="second", is_admin=True)
    await ok(await client.delete(f"{USERS}/{admin_id}", headers=bearer(admin_token)))
    await envelope(await client.get(USERS, headers=bearer(admin_token)), 401)
