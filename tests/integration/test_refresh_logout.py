"""POST /refresh (rotation, reuse detection) and POST /logout (every session) — SPEC §2-§3."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import update

from auth.errors import TokenInvalid
from auth.models import User
from gateway.appkeys import SERVICES
from tests.fixtures.backends import Backend, forget_redis_keys
from tests.fixtures.factories import create_user, login
from tests.fixtures.gateway import TEST_SECRET

ME = "/api/v1/auth/me"
REFRESH = "/api/v1/auth/refresh"
LOGOUT = "/api/v1/auth/logout"
PAIR_KEYS = {"access_token", "refresh_token", "expires_in", "refresh_expires_in"}
CAMEL_PAIR_KEYS = {"accessToken", "refreshToken", "expiresIn", "refreshExpiresIn"}
ENVELOPE_KEYS = {"isSuccess", "statusCode", "data", "errors", "timestamp"}
TIMESTAMP_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
GENERAL = {400: "Validation failed", 401: "Unauthorized"}
LOGGED_OUT = {"message": "logged out from all sessions"}
OTHER = {"email": "other@example.test", "username": "Other User", "first_name": "Other"}

Client = TestClient[Any, Any]
StartGateway = Callable[..., Any]


def claims_of(token: str) -> dict[str, Any]:
    """The verified claims of ``token``, expired or not (a 1 s token can expire while the test
    reads it; whether the gateway refuses it is what the tests ask)."""
    payload: dict[str, Any] = jwt.decode(
        token, TEST_SECRET, algorithms=["HS256"], options={"verify_exp": False}
    )
    return payload


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def envelope(resp: Any, status: int) -> dict[str, Any]:
    """Assert ``resp`` is the error envelope with ``status``; return its body."""
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body: dict[str, Any] = await resp.json()
    assert set(body) == ENVELOPE_KEYS
    assert body["isSuccess"] is False
    assert body["statusCode"] == status
    assert body["data"] is None
    assert body["errors"][0] == GENERAL[status]
    assert TIMESTAMP_RE.match(body["timestamp"])
    return body


async def refresh(client: Client, token: Any, key: str = "refresh_token") -> Any:
    return await client.post(REFRESH, json={key: token})


async def refreshed(client: Client, token: str) -> dict[str, Any]:
    """POST /refresh that must succeed; the new pair."""
    resp = await refresh(client, token)
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    assert set(body) == PAIR_KEYS
    return body


async def me_status(client: Client, token: str) -> int:
    resp = await client.get(ME, headers=bearer(token))
    if resp.status != 200:
        await envelope(resp, 401)
    return resp.status


async def store_accepts(client: Client, token: str) -> bool:
    """The proxy's check (store only, no database)."""
    try:
        await client.app[SERVICES].auth_service().authenticate(token)
    except TokenInvalid:
        return False
    return True


async def assert_access_works(client: Client, token: str) -> None:
    assert await me_status(client, token) == 200
    assert await store_accepts(client, token)


async def assert_access_refused(client: Client, token: str) -> None:
    assert await me_status(client, token) == 401
    assert not await store_accepts(client, token)


async def assert_refresh_refused(client: Client, token: str) -> None:
    await envelope(await refresh(client, token), 401)


async def set_user(client: Client, user_id: int, **values: Any) -> None:
    """Change a user row behind the gateway's back."""
    service = client.app[SERVICES].auth_service()
    async with service.sessions() as session, session.begin():
        await session.execute(update(User).where(User.id == user_id).values(**values))


# --- POST /refresh -----------------------------------------------------------------------


@pytest.mark.parametrize("key", ["refresh_token", "refreshToken"])
async def test_refresh_returns_exactly_a_new_pair(client: Client, key: str) -> None:
    user = await create_user(client)
    first = await login(client)
    resp = await refresh(client, first["refresh_token"], key)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert set(body) == PAIR_KEYS
    assert body["expires_in"] == 7200
    assert body["refresh_expires_in"] == 2592000
    assert body["access_token"] != first["access_token"]
    assert body["refresh_token"] != first["refresh_token"]
    access, refresh_claims = claims_of(body["access_token"]), claims_of(body["refresh_token"])
    assert access["token_type"] == "access"
    assert refresh_claims["token_type"] == "refresh"
    assert access["user_id"] == refresh_claims["user_id"] == user.id
    # The new pair works: the access token on /me, the refresh token for the next rotation.
    await assert_access_works(client, body["access_token"])
    me = await (await client.get(ME, headers=bearer(body["access_token"]))).json()
    assert me["user"]["id"] == user.id
    third = await refreshed(client, body["refresh_token"])
    await assert_access_works(client, third["access_token"])


async def test_refresh_camel_case_responses(gateway_client: StartGateway) -> None:
    client = await gateway_client(api={"json_case": "camel"})
    await create_user(client)
    first = await login(client)
    assert {"accessToken", "refreshToken", "expiresIn", "refreshExpiresIn", "user"} == set(first)
    token = first["refreshToken"]
    for key in ("refreshToken", "refresh_token"):
        resp = await refresh(client, token, key)
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        assert set(body) == CAMEL_PAIR_KEYS
        assert body["expiresIn"] == 7200
        assert body["refreshExpiresIn"] == 2592000
        await assert_access_works(client, body["accessToken"])
        token = body["refreshToken"]
    # Errors keep the envelope's own (already camelCase) keys.
    await envelope(await refresh(client, "garbage", "refreshToken"), 401)


async def test_reuse_of_a_rotated_refresh_token_revokes_the_whole_chain(client: Client) -> None:
    await create_user(client)
    other_session = await login(client)
    first = await login(client)
    second = await refreshed(client, first["refresh_token"])
    third = await refreshed(client, second["refresh_token"])
    await assert_access_works(client, third["access_token"])

    # The first refresh token again: theft. The call fails…
    await assert_refresh_refused(client, first["refresh_token"])
    # …and the legit holder's newest refresh token is dead too,
    await assert_refresh_refused(client, third["refresh_token"])
    # as is every access token of that session, on /me and for the proxy.
    for pair in (first, second, third):
        await assert_access_refused(client, pair["access_token"])
    # Presenting the stolen token again changes nothing: still 401.
    await assert_refresh_refused(client, first["refresh_token"])
    await assert_refresh_refused(client, second["refresh_token"])

    # Another login of the same user is a different chain: untouched.
    await assert_access_works(client, other_session["access_token"])
    rotated = await refreshed(client, other_session["refresh_token"])
    await assert_access_works(client, rotated["access_token"])


async def test_reuse_of_the_direct_parent_revokes_the_child(client: Client) -> None:
    await create_user(client)
    first = await login(client)
    second = await refreshed(client, first["refresh_token"])
    await assert_refresh_refused(client, first["refresh_token"])
    await assert_refresh_refused(client, second["refresh_token"])
    await assert_access_refused(client, second["access_token"])
    await assert_access_refused(client, first["access_token"])


async def test_concurrent_use_of_one_refresh_token_yields_no_live_pair(client: Client) -> None:
    await create_user(client)
    first = await login(client)
    responses = await asyncio.gather(*(refresh(client, first["refresh_token"]) for _ in range(3)))
    statuses = sorted(r.status for r in responses)
    assert statuses.count(200) <= 1, statuses
    assert all(s in (200, 401) for s in statuses), statuses
    # Whatever won, the token was presented more than once: the chain is revoked.
    for resp in responses:
        if resp.status == 200:
            body = await resp.json()
            await assert_refresh_refused(client, body["refresh_token"])
            await assert_access_refused(client, body["access_token"])
        else:
            await envelope(resp, 401)
    await assert_access_refused(client, first["access_token"])


async def test_refresh_with_an_access_token_is_401(client: Client) -> None:
    await create_user(client)
    body = await login(client)
    await assert_refresh_refused(client, body["access_token"])
    # Refused without side effects: the session still works.
    await assert_access_works(client, body["access_token"])
    await refreshed(client, body["refresh_token"])


@pytest.mark.parametrize(
    "token",
    ["garbage", "a.b.c", "eyJhbGciOiJIUzI1NiJ9.e30.", "Bearer x.y.z", "x" * 8000],
    ids=["garbage", "three-parts", "empty-claims", "bearer-prefix", "long"],
)
async def test_refresh_with_an_invalid_token_is_401(client: Client, token: str) -> None:
    await envelope(await refresh(client, token), 401)
    await envelope(await refresh(client, token, "refreshToken"), 401)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"token": "x"},
        {"refresh_token": 123},
        {"refresh_token": 1.5},
        {"refresh_token": None},
        {"refresh_token": True},
        {"refresh_token": ["x"]},
        {"refresh_token": {"token": "x"}},
        {"refreshToken": 123},
    ],
    ids=lambda b: repr(b),
)
async def test_refresh_with_missing_or_mistyped_field_is_400(
    client: Client, body: dict[str, Any]
) -> None:
    resp = await client.post(REFRESH, json=body)
    envelope_body = await envelope(resp, 400)
    assert any("refresh" in detail.lower() for detail in envelope_body["errors"][1:])


async def test_refresh_with_empty_string_is_rejected(client: Client) -> None:
    for key in ("refresh_token", "refreshToken"):
        resp = await refresh(client, "", key)
        assert resp.status in (400, 401), await resp.text()
        await envelope(resp, resp.status)


@pytest.mark.parametrize(
    "raw", [b"", b"not json", b"[]", b'"refresh"', b"null", b'{"refresh_token": '], ids=repr
)
async def test_refresh_with_unreadable_body_is_400(client: Client, raw: bytes) -> None:
    resp = await client.post(REFRESH, data=raw, headers={"Content-Type": "application/json"})
    await envelope(resp, 400)


async def test_expired_refresh_token_is_401(gateway_client: StartGateway) -> None:
    client = await gateway_client(jwt={"access_ttl": "1s", "refresh_ttl": "1s"})
    await create_user(client)
    body = await login(client)
    exp = claims_of(body["refresh_token"])["exp"]
    await asyncio.sleep(max(exp + 0.2 - time.time(), 0))
    await assert_refresh_refused(client, body["refresh_token"])
    await assert_access_refused(client, body["access_token"])


async def test_refreshed_tokens_carry_fresh_user_data(client: Client) -> None:
    user = await create_user(client, is_admin=False)
    first = await login(client)
    assert claims_of(first["access_token"])["is_admin"] is False
    await set_user(client, user.id, first_name="Yeni", last_name="Soyad", is_admin=True)
    body = await refreshed(client, first["refresh_token"])
    for name in ("access_token", "refresh_token"):
        claims = claims_of(body[name])
        assert claims["first_name"] == "Yeni"
        assert claims["last_name"] == "Soyad"
        assert claims["is_admin"] is True
        assert claims["user_id"] == user.id
    resp = await client.get(ME, headers=bearer(body["access_token"]))
    me = (await resp.json())["user"]
    assert (me["first_name"], me["last_name"], me["is_admin"]) == ("Yeni", "Soyad", True)
    # And back again: a demoted admin loses the claim at the next rotation.
    await set_user(client, user.id, is_admin=False)
    again = await refreshed(client, body["refresh_token"])
    assert claims_of(again["access_token"])["is_admin"] is False


# --- POST /logout ------------------------------------------------------------------------


async def test_logout_answers_the_message(client: Client) -> None:
    await create_user(client)
    body = await login(client)
    resp = await client.post(LOGOUT, headers=bearer(body["access_token"]))
    assert resp.status == 200, await resp.text()
    assert await resp.json() == LOGGED_OUT


async def test_logout_ends_every_session_of_the_user(client: Client) -> None:
    await create_user(client)
    one = await login(client)
    two = await login(client)
    two_rotated = await refreshed(client, two["refresh_token"])
    for token in (one["access_token"], two["access_token"], two_rotated["access_token"]):
        await assert_access_works(client, token)

    resp = await client.post(LOGOUT, headers=bearer(one["access_token"]))
    assert resp.status == 200, await resp.text()
    assert await resp.json() == LOGGED_OUT

    for token in (one["access_token"], two["access_token"], two_rotated["access_token"]):
        await assert_access_refused(client, token)
    for token in (one["refresh_token"], two_rotated["refresh_token"]):
        await assert_refresh_refused(client, token)
    # The logged-out token cannot log out again.
    await envelope(await client.post(LOGOUT, headers=bearer(one["access_token"])), 401)


async def test_login_right_after_logout_works(client: Client) -> None:
    await create_user(client)
    old = await login(client)
    resp = await client.post(LOGOUT, headers=bearer(old["access_token"]))
    assert resp.status == 200, await resp.text()
    logged_out_at = int(time.time())
    new = await login(client)
    # Typically within the same second as the logout: a fresh session is not caught by it.
    assert claims_of(new["access_token"])["iat"] - logged_out_at <= 1
    await assert_access_works(client, new["access_token"])
    rotated = await refreshed(client, new["refresh_token"])
    await assert_access_works(client, rotated["access_token"])
    await assert_access_refused(client, old["access_token"])
    await assert_refresh_refused(client, old["refresh_token"])
    # And that session can itself be logged out.
    resp = await client.post(LOGOUT, headers=bearer(rotated["access_token"]))
    assert resp.status == 200, await resp.text()
    await assert_access_refused(client, rotated["access_token"])


async def test_logout_and_login_in_a_tight_loop(client: Client) -> None:
    await create_user(client)
    for _ in range(4):
        body = await login(client)
        await assert_access_works(client, body["access_token"])
        resp = await client.post(LOGOUT, headers=bearer(body["access_token"]))
        assert resp.status == 200, await resp.text()
        await assert_access_refused(client, body["access_token"])


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer garbage"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
    ],
    ids=["none", "empty", "bearer-only", "garbage", "basic"],
)
async def test_logout_without_a_valid_token_is_401(client: Client, headers: dict[str, str]) -> None:
    await create_user(client)
    body = await login(client)
    resp = await client.post(LOGOUT, headers=headers)
    await envelope(resp, 401)
    assert resp.headers.get("WWW-Authenticate", "").startswith("Bearer")
    await assert_access_works(client, body["access_token"])


async def test_logout_with_a_refresh_token_is_401(client: Client) -> None:
    await create_user(client)
    body = await login(client)
    await envelope(await client.post(LOGOUT, headers=bearer(body["refresh_token"])), 401)
    await assert_access_works(client, body["access_token"])
    await refreshed(client, body["refresh_token"])


async def test_logout_leaves_other_users_alone(client: Client) -> None:
    await create_user(client)
    await create_user(client, **OTHER)
    mine = await login(client)
    theirs = await login(client, email=OTHER["email"])
    theirs_too = await login(client, email=OTHER["email"])
    resp = await client.post(LOGOUT, headers=bearer(mine["access_token"]))
    assert resp.status == 200, await resp.text()
    await assert_access_refused(client, mine["access_token"])
    for pair in (theirs, theirs_too):
        await assert_access_works(client, pair["access_token"])
        rotated = await refreshed(client, pair["refresh_token"])
        await assert_access_works(client, rotated["access_token"])


async def test_store_check_refuses_tokens_after_logout(client: Client) -> None:
    await create_user(client)
    one = await login(client)
    two = await login(client)
    service = client.app[SERVICES].auth_service()
    assert (await service.authenticate(one["access_token"])).user_id == claims_of(
        one["access_token"]
    )["user_id"]
    resp = await client.post(LOGOUT, headers=bearer(two["access_token"]))
    assert resp.status == 200, await resp.text()
    for pair in (one, two):
        with pytest.raises(TokenInvalid):
            await service.authenticate(pair["access_token"])


async def test_restarted_gateway_still_refuses_logged_out_tokens(
    client: Client, gateway_client: StartGateway
) -> None:
    await create_user(client)
    await create_user(client, **OTHER)
    one = await login(client)
    two = await login(client)
    bystander = await login(client, email=OTHER["email"])
    resp = await client.post(LOGOUT, headers=bearer(one["access_token"]))
    assert resp.status == 200, await resp.text()
    fresh = await login(client)

    restarted = await gateway_client()
    assert restarted.app[SERVICES].auth_service() is not client.app[SERVICES].auth_service()
    for pair in (one, two):
        assert not await store_accepts(restarted, pair["access_token"])
        assert await me_status(restarted, pair["access_token"]) == 401
        await assert_refresh_refused(restarted, pair["refresh_token"])
    await assert_access_works(restarted, fresh["access_token"])
    await assert_access_works(restarted, bystander["access_token"])


async def test_restarted_gateway_refuses_a_chain_revoked_by_reuse(
    client: Client, gateway_client: StartGateway
) -> None:
    await create_user(client)
    first = await login(client)
    second = await refreshed(client, first["refresh_token"])
    await assert_refresh_refused(client, first["refresh_token"])
    restarted = await gateway_client()
    for pair in (first, second):
        assert not await store_accepts(restarted, pair["access_token"])
        assert await me_status(restarted, pair["access_token"]) == 401


async def test_store_is_rebuilt_from_the_database_when_its_state_is_lost(
    client: Client, gateway_client: StartGateway, clean: Backend
) -> None:
    """Redis flushed (or the in-process store gone): a new gateway replays revocations."""
    await create_user(client)
    one = await login(client)
    two = await login(client)
    resp = await client.post(LOGOUT, headers=bearer(one["access_token"]))
    assert resp.status == 200, await resp.text()
    await forget_redis_keys(clean)
    restarted = await gateway_client()
    for pair in (one, two):
        assert not await store_accepts(restarted, pair["access_token"])
