"""POST /login and GET /me (SPEC §2, §3) on both backends."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from auth.models import User
from gateway.appkeys import SERVICES
from tests.fixtures.envelopes import compact, envelope
from tests.fixtures.factories import DEFAULT_PASSWORD, create_user, login
from tests.fixtures.gateway import TEST_SECRET

Client = TestClient[Any, Any]
GatewayClient = Callable[..., Any]

AUTH = "/api/v1/auth"
LOGIN = f"{AUTH}/login"
ME = f"{AUTH}/me"
EMAIL = "beyhan@beyhan.dev"
ACCESS_TTL = 7200
REFRESH_TTL = 2592000
JSON_UTF8 = "application/json; charset=utf-8"
CLAIMS = {
    "user_id",
    "email",
    "is_admin",
    "first_name",
    "last_name",
    "token_type",
    "sub",
    "exp",
    "iat",
    "jti",
}


def engine_of(client: Client) -> AsyncEngine:
    engine: AsyncEngine | None = client.app[SERVICES].engine
    assert engine is not None
    return engine


async def set_user(client: Client, user_id: int, **values: Any) -> None:
    async with engine_of(client).begin() as conn:
        await conn.execute(update(User).where(User.id == user_id).values(**values))


def claims_of(token: str) -> dict[str, Any]:
    """The payload of a token, unverified (to forge variants of it)."""
    payload: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return payload


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unsigned_token(payload: dict[str, Any]) -> str:
    """An ``alg: none`` token (empty signature)."""
    header = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    body = b64url(json.dumps(payload).encode())
    return f"{header}.{body}."


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def post_login(client: Client, email: str, password: str) -> ClientResponse:
    return await client.post(LOGIN, json={"email": email, "password": password})


# --- POST /login ------------------------------------------------------------------------------


async def test_login_body_per_seed(client: Client) -> None:
    user = await create_user(client, is_admin=True)
    resp = await post_login(client, EMAIL, DEFAULT_PASSWORD)
    raw = await resp.read()
    assert resp.status == 200, raw
    assert resp.headers["Content-Type"] == JSON_UTF8
    body = json.loads(raw)
    assert set(body) == {
        "access_token",
        "refresh_token",
        "expires_in",
        "refresh_expires_in",
        "user",
    }
    assert body["expires_in"] == ACCESS_TTL
    assert body["refresh_expires_in"] == REFRESH_TTL
    assert body["user"] == {
        "email": EMAIL,
        "first_name": "Beyhan",
        "id": user.id,
        "is_admin": True,
        "last_name": "Oğur",
        "username": "Beyhan Oğur",
    }
    assert isinstance(body["access_token"], str)
    assert isinstance(body["refresh_token"], str)
    assert body["access_token"] != body["refresh_token"]
    assert "Oğur".encode() in raw  # raw UTF-8 as in the seed


async def test_login_tokens_carry_the_spec_claims(client: Client) -> None:
    user = await create_user(client, is_admin=True)
    body = await login(client)
    for name, token_type, ttl in [
        ("access_token", "access", ACCESS_TTL),
        ("refresh_token", "refresh", REFRESH_TTL),
    ]:
        header = jwt.get_unverified_header(body[name])
        assert header["alg"] == "HS256"
        claims = jwt.decode(body[name], TEST_SECRET, algorithms=["HS256"])
        assert CLAIMS <= set(claims), claims
        assert claims["user_id"] == user.id
        assert claims["sub"] == str(user.id)
        assert claims["email"] == EMAIL
        assert claims["is_admin"] is True
        assert claims["first_name"] == "Beyhan"
        assert claims["last_name"] == "Oğur"
        assert claims["token_type"] == token_type
        assert claims["exp"] - claims["iat"] == ttl
        assert abs(claims["iat"] - time.time()) < 60
    assert claims_of(body["access_token"])["jti"] != claims_of(body["refresh_token"])["jti"]


@pytest.mark.parametrize("email", ["BEYHAN@BEYHAN.DEV", "Beyhan@Beyhan.Dev", "beyhan@BEYHAN.dev"])
async def test_login_email_is_case_insensitive(client: Client, email: str) -> None:
    user = await create_user(client)
    resp = await post_login(client, email, DEFAULT_PASSWORD)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["user"]["id"] == user.id
    assert body["user"]["email"] == EMAIL


async def test_login_wrong_password_and_unknown_email_look_the_same(client: Client) -> None:
    user = await create_user(client)
    wrong = await post_login(client, EMAIL, "not the password")
    wrong_errors = await envelope(wrong, 401)
    unknown = await post_login(client, "nobody@beyhan.dev", DEFAULT_PASSWORD)
    unknown_errors = await envelope(unknown, 401)
    assert wrong_errors == unknown_errors
    assert wrong.headers["WWW-Authenticate"] == unknown.headers["WWW-Authenticate"]
    # A password-less account (created by email code) cannot be opened with any password.
    await set_user(client, user.id, password_hash=None)
    for password in (DEFAULT_PASSWORD, "x"):
        resp = await post_login(client, EMAIL, password)
        assert await envelope(resp, 401) == wrong_errors


async def test_login_wrong_password_on_unverified_account_is_401(client: Client) -> None:
    """Without the password nobody learns that the address waits for verification."""
    await create_user(client, email_verified=False)
    wrong = await envelope(await post_login(client, EMAIL, "not the password"), 401)
    unknown = await envelope(await post_login(client, "nobody@beyhan.dev", "whatever"), 401)
    assert wrong == unknown
    errors = await envelope(await post_login(client, EMAIL, DEFAULT_PASSWORD), 403)
    assert "email not verified" in errors


async def test_login_deactivated_user_is_403(client: Client) -> None:
    user = await create_user(client)
    before = await login(client)
    await set_user(client, user.id, is_active=False)
    await envelope(await post_login(client, EMAIL, DEFAULT_PASSWORD), 403)
    # A wrong password still answers like any wrong password.
    await envelope(await post_login(client, EMAIL, "not the password"), 401)
    # Tokens from before the deactivation no longer open /me.
    await envelope(await client.get(ME, headers=bearer(before["access_token"])), 401)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"password": DEFAULT_PASSWORD}, "email"),
        ({"email": EMAIL}, "password"),
        ({"email": 42, "password": DEFAULT_PASSWORD}, "email"),
        ({"email": EMAIL, "password": ["x"]}, "password"),
        ({"email": EMAIL, "password": None}, "password"),
    ],
    ids=["no-email", "no-password", "email-number", "password-list", "password-null"],
)
async def test_login_invalid_body_is_400(client: Client, body: dict[str, Any], field: str) -> None:
    await create_user(client)
    errors = await envelope(await client.post(LOGIN, json=body), 400)
    assert any(e.startswith(f"{field}: ") for e in errors[1:]), errors


# --- GET /me ----------------------------------------------------------------------------------


async def test_me_per_seed(client: Client) -> None:
    user = await create_user(client, is_admin=True)
    tokens = await login(client)
    resp = await client.get(ME, headers=bearer(tokens["access_token"]))
    raw = await resp.read()
    assert resp.status == 200, raw
    assert resp.headers["Content-Type"] == JSON_UTF8
    expected = {
        "user": {
            "email": EMAIL,
            "first_name": "Beyhan",
            "id": user.id,
            "is_admin": True,
            "last_name": "Oğur",
        }
    }
    assert json.loads(raw) == expected
    assert raw == compact(expected)


async def test_me_accepts_lowercase_bearer_scheme(client: Client) -> None:
    await create_user(client)
    tokens = await login(client)
    resp = await client.get(ME, headers={"Authorization": f"bearer {tokens['access_token']}"})
    assert resp.status == 200, await resp.text()


async def test_me_with_two_authorization_headers_is_400(client: Client) -> None:
    """Two tokens (even the same one twice): the API does not guess which counts."""
    await create_user(client)
    access = (await login(client))["access_token"]
    twice = [("Authorization", f"Bearer {access}"), ("Authorization", f"Bearer {access}")]
    resp = await client.get(ME, headers=twice)
    errors = await envelope(resp, 400)
    assert "more than one Authorization header" in errors, errors


def _forged(tokens: dict[str, Any], kind: str) -> dict[str, str] | None:
    """Headers for /me that must all be refused with 401."""
    access = tokens["access_token"]
    claims = claims_of(access)
    now = int(time.time())
    if kind == "no-header":
        return None
    if kind == "basic":
        return {"Authorization": "Basic " + base64.b64encode(b"beyhan:pw").decode()}
    if kind == "basic-with-token":
        return {"Authorization": f"Basic {access}"}
    if kind == "bearer-empty":
        return {"Authorization": "Bearer "}
    if kind == "token-without-scheme":
        return {"Authorization": access}
    if kind == "garbage":
        return bearer("not-a-jwt")
    if kind == "garbage-dots":
        return bearer("aaa.bbb.ccc")
    if kind == "tampered-signature":
        head, body, sig = access.split(".")
        return bearer(f"{head}.{body}.{sig[:-4]}AAAA")
    if kind == "tampered-payload":
        head, _, sig = access.split(".")
        body = b64url(json.dumps({**claims, "is_admin": True, "user_id": 999}).encode())
        return bearer(f"{head}.{body}.{sig}")
    if kind == "refresh-token":
        return bearer(tokens["refresh_token"])
    if kind == "other-secret":
        return bearer(jwt.encode(claims, "another-secret-that-is-long-enough-0123456789"))
    if kind == "alg-none":
        return bearer(unsigned_token(claims))
    if kind == "hs512-right-secret":
        return bearer(jwt.encode(claims, TEST_SECRET, algorithm="HS512"))
    if kind == "expired":
        expired = {**claims, "iat": now - 3 * ACCESS_TTL, "exp": now - 60}
        return bearer(jwt.encode(expired, TEST_SECRET, algorithm="HS256"))
    if kind == "no-exp":
        no_exp = {k: v for k, v in claims.items() if k != "exp"}
        return bearer(jwt.encode(no_exp, TEST_SECRET, algorithm="HS256"))
    if kind == "unknown-sid":
        return bearer(jwt.encode({**claims, "sid": "0" * 32}, TEST_SECRET, algorithm="HS256"))
    if kind == "other-user-same-sid":
        other = {**claims, "user_id": claims["user_id"] + 1, "sub": str(claims["user_id"] + 1)}
        return bearer(jwt.encode(other, TEST_SECRET, algorithm="HS256"))
    raise AssertionError(kind)


REFUSED = [
    "no-header",
    "basic",
    "basic-with-token",
    "bearer-empty",
    "token-without-scheme",
    "garbage",
    "garbage-dots",
    "tampered-signature",
    "tampered-payload",
    "refresh-token",
    "other-secret",
    "alg-none",
    "hs512-right-secret",
    "expired",
    "no-exp",
    "unknown-sid",
    "other-user-same-sid",
]


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
@pytest.mark.parametrize("kind", REFUSED)
async def test_me_refuses_bad_credentials(client: Client, kind: str) -> None:
    await create_user(client)
    tokens = await login(client)
    # The genuine token works: any refusal below is due to what was changed.
    assert (await client.get(ME, headers=bearer(tokens["access_token"]))).status == 200
    resp = await client.get(ME, headers=_forged(tokens, kind))
    await envelope(resp, 401)


# --- api.json_case: camel ---------------------------------------------------------------------


async def test_camel_case_responses(gateway_client: GatewayClient) -> None:
    client = await gateway_client(api={"json_case": "camel"})
    user = await create_user(client, is_admin=True)
    resp = await post_login(client, EMAIL, DEFAULT_PASSWORD)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"] == JSON_UTF8
    body = await resp.json()
    assert set(body) == {"accessToken", "refreshToken", "expiresIn", "refreshExpiresIn", "user"}
    assert body["expiresIn"] == ACCESS_TTL
    assert body["refreshExpiresIn"] == REFRESH_TTL
    assert body["user"] == {
        "email": EMAIL,
        "firstName": "Beyhan",
        "id": user.id,
        "isAdmin": True,
        "lastName": "Oğur",
        "username": "Beyhan Oğur",
    }
    resp = await client.get(ME, headers=bearer(body["accessToken"]))
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {
        "user": {
            "email": EMAIL,
            "firstName": "Beyhan",
            "id": user.id,
            "isAdmin": True,
            "lastName": "Oğur",
        }
    }


async def test_camel_case_leaves_error_envelopes_alone(
    gateway_client: GatewayClient, client: Client
) -> None:
    camel = await gateway_client(api={"json_case": "camel"})
    await create_user(camel)
    snake_wrong = await envelope(await post_login(client, EMAIL, "not the password"), 401)
    camel_wrong = await envelope(await post_login(camel, EMAIL, "not the password"), 401)
    assert camel_wrong == snake_wrong
    await envelope(await camel.get(ME), 401)
    snake_400 = await envelope(await client.post(LOGIN, json={"email": EMAIL}), 400)
    camel_400 = await envelope(await camel.post(LOGIN, json={"email": EMAIL}), 400)
    assert camel_400 == snake_400
