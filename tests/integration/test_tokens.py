"""The JWTs the gateway issues (SPEC §3): header, claims, lifetimes, iss/aud, forgeries."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import TestClient

from auth.errors import TokenInvalid
from config import ConfigError
from gateway.appkeys import SERVICES
from tests.fixtures.factories import create_user, login
from tests.fixtures.gateway import TEST_SECRET

ME = "/api/v1/auth/me"
REFRESH = "/api/v1/auth/refresh"
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
    "sid",
}
ENVELOPE_KEYS = {"isSuccess", "statusCode", "data", "errors", "timestamp"}
TIMESTAMP_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
OTHER_SECRET = "attacker-secret-that-is-long-enough-0123456789"

Client = TestClient[Any, Any]
StartGateway = Callable[..., Any]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_json(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode("utf-8"))


def unb64url(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def claims_of(token: str, audience: str | None = None) -> dict[str, Any]:
    """The payload of a token, verified with the test secret."""
    payload: dict[str, Any] = jwt.decode(
        token,
        TEST_SECRET,
        algorithms=["HS256"],
        audience=audience,
        options={"verify_aud": audience is not None},
    )
    return payload


def resign(
    token: str,
    key: str = TEST_SECRET,
    algorithm: str = "HS256",
    headers: dict[str, Any] | None = None,
    **changes: Any,
) -> str:
    """The payload of ``token`` with ``changes`` (None removes a claim), signed anew."""
    payload = jwt.decode(token, options={"verify_signature": False})
    for name, value in changes.items():
        if value is None:
            payload.pop(name, None)
        else:
            payload[name] = value
    return jwt.encode(payload, key, algorithm=algorithm, headers=headers)


async def me(client: Client, token: str) -> Any:
    return await client.get(ME, headers={"Authorization": f"Bearer {token}"})


async def assert_envelope(resp: Any, status: int, message: str) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    body: dict[str, Any] = await resp.json()
    assert set(body) == ENVELOPE_KEYS
    assert body["isSuccess"] is False
    assert body["statusCode"] == status
    assert body["data"] is None
    assert body["errors"][0] == message
    assert TIMESTAMP_RE.match(body["timestamp"])
    return body


async def assert_refused(client: Client, token: str) -> None:
    """401 on /me and TokenInvalid from the proxy's store-based check."""
    resp = await me(client, token)
    await assert_envelope(resp, 401, "Unauthorized")
    assert resp.headers.get("WWW-Authenticate", "").startswith("Bearer")
    with pytest.raises(TokenInvalid):
        await client.app[SERVICES].auth_service().authenticate(token)


async def assert_accepted(client: Client, token: str) -> None:
    resp = await me(client, token)
    assert resp.status == 200, await resp.text()
    await client.app[SERVICES].auth_service().authenticate(token)


# --- header and claims -------------------------------------------------------------------


async def test_header_is_exactly_hs256_jwt(client: Client) -> None:
    await create_user(client)
    body = await login(client)
    for name in ("access_token", "refresh_token"):
        assert jwt.get_unverified_header(body[name]) == {"alg": "HS256", "typ": "JWT"}
        header_part = body[name].split(".")[0]
        assert json.loads(unb64url(header_part)) == {"alg": "HS256", "typ": "JWT"}


async def test_claims_of_access_and_refresh_tokens(client: Client) -> None:
    user = await create_user(client, is_admin=True)
    before = int(time.time())
    body = await login(client)
    after = int(time.time())
    access = claims_of(body["access_token"])
    refresh = claims_of(body["refresh_token"])
    for claims, token_type in ((access, "access"), (refresh, "refresh")):
        assert set(claims) == CLAIMS
        assert type(claims["user_id"]) is int
        assert claims["user_id"] == user.id
        assert claims["sub"] == str(user.id)
        assert claims["email"] == "beyhan@beyhan.dev"
        assert claims["is_admin"] is True
        assert claims["first_name"] == "Beyhan"
        assert claims["last_name"] == "Oğur"
        assert claims["token_type"] == token_type
        assert type(claims["iat"]) is int
        assert type(claims["exp"]) is int
        assert before <= claims["iat"] <= after
        assert isinstance(claims["jti"], str) and claims["jti"]
        assert isinstance(claims["sid"], str) and claims["sid"]
    assert access["exp"] - access["iat"] == 7200
    assert refresh["exp"] - refresh["iat"] == 2592000
    assert body["expires_in"] == 7200
    assert body["refresh_expires_in"] == 2592000
    # Both tokens of one login belong to one session.
    assert access["sid"] == refresh["sid"]


async def test_non_admin_claims(client: Client) -> None:
    await create_user(client, is_admin=False, first_name="Ada", last_name="")
    claims = claims_of((await login(client))["access_token"])
    assert claims["is_admin"] is False
    assert claims["first_name"] == "Ada"
    assert claims["last_name"] == ""


async def test_jti_unique_per_token_and_sid_per_login(client: Client) -> None:
    await create_user(client)
    first = await login(client)
    second = await login(client)
    resp = await client.post(REFRESH, json={"refresh_token": first["refresh_token"]})
    assert resp.status == 200, await resp.text()
    rotated = await resp.json()
    tokens = [
        first["access_token"],
        first["refresh_token"],
        second["access_token"],
        second["refresh_token"],
        rotated["access_token"],
        rotated["refresh_token"],
    ]
    jtis = [claims_of(t)["jti"] for t in tokens]
    assert len(set(jtis)) == len(jtis)
    assert claims_of(first["access_token"])["sid"] != claims_of(second["access_token"])["sid"]


# --- lifetimes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("access_ttl", "refresh_ttl", "access_seconds", "refresh_seconds"),
    [("10m", "1d", 600, 86400), ("90s", "2h", 90, 7200), (300, 3600, 300, 3600)],
)
async def test_lifetimes_follow_config(
    gateway_client: StartGateway,
    access_ttl: Any,
    refresh_ttl: Any,
    access_seconds: int,
    refresh_seconds: int,
) -> None:
    client = await gateway_client(jwt={"access_ttl": access_ttl, "refresh_ttl": refresh_ttl})
    await create_user(client)
    body = await login(client)
    access = claims_of(body["access_token"])
    refresh = claims_of(body["refresh_token"])
    assert access["exp"] - access["iat"] == access_seconds
    assert refresh["exp"] - refresh["iat"] == refresh_seconds
    assert body["expires_in"] == access_seconds
    assert body["refresh_expires_in"] == refresh_seconds
    resp = await client.post(REFRESH, json={"refresh_token": body["refresh_token"]})
    assert resp.status == 200, await resp.text()
    rotated = await resp.json()
    assert rotated["expires_in"] == access_seconds
    assert rotated["refresh_expires_in"] == refresh_seconds
    new_access = claims_of(rotated["access_token"])
    new_refresh = claims_of(rotated["refresh_token"])
    assert new_access["exp"] - new_access["iat"] == access_seconds
    assert new_refresh["exp"] - new_refresh["iat"] == refresh_seconds


@pytest.mark.parametrize("ttl", ["500ms", "1.5s", "0.9"])
@pytest.mark.parametrize("key", ["access_ttl", "refresh_ttl"])
async def test_lifetimes_must_be_whole_seconds(
    gateway_client: StartGateway, key: str, ttl: str
) -> None:
    """JWT times are whole seconds: a lifetime that is not would make tokens born expired."""
    with pytest.raises(ConfigError) as raised:
        await gateway_client(jwt={key: ttl})
    assert any(p.startswith(f"jwt.{key}:") for p in raised.value.problems)


async def test_expired_access_token_is_refused(gateway_client: StartGateway) -> None:
    client = await gateway_client(jwt={"access_ttl": "2s"})
    await create_user(client)
    body = await login(client)
    await assert_accepted(client, body["access_token"])
    exp = claims_of(body["access_token"])["exp"]
    await asyncio.sleep(max(exp + 0.2 - time.time(), 0))
    await assert_refused(client, body["access_token"])


# --- issuer and audience -----------------------------------------------------------------

ISSUER = "https://auth.example.test"
AUDIENCE = "example-api"


async def test_no_iss_or_aud_unless_configured(client: Client) -> None:
    await create_user(client)
    claims = claims_of((await login(client))["access_token"])
    assert "iss" not in claims
    assert "aud" not in claims


async def test_iss_and_aud_present_when_configured(gateway_client: StartGateway) -> None:
    client = await gateway_client(jwt={"issuer": ISSUER, "audience": AUDIENCE})
    await create_user(client)
    body = await login(client)
    for name in ("access_token", "refresh_token"):
        claims = claims_of(body[name], audience=AUDIENCE)
        assert set(claims) == CLAIMS | {"iss", "aud"}
        assert claims["iss"] == ISSUER
        assert claims["aud"] == AUDIENCE
    await assert_accepted(client, body["access_token"])
    resp = await client.post(REFRESH, json={"refresh_token": body["refresh_token"]})
    assert resp.status == 200, await resp.text()
    rotated = await resp.json()
    assert claims_of(rotated["access_token"], audience=AUDIENCE)["iss"] == ISSUER
    await assert_accepted(client, rotated["access_token"])


@pytest.mark.parametrize(
    "changes",
    [
        {"aud": "someone-else"},
        {"aud": ["someone-else", "another"]},
        {"aud": None},
        {"iss": "https://evil.example.test"},
        {"iss": None},
    ],
    ids=["wrong-aud", "wrong-aud-list", "no-aud", "wrong-iss", "no-iss"],
)
async def test_iss_and_aud_enforced(gateway_client: StartGateway, changes: dict[str, Any]) -> None:
    client = await gateway_client(jwt={"issuer": ISSUER, "audience": AUDIENCE})
    await create_user(client)
    body = await login(client)
    await assert_refused(client, resign(body["access_token"], **changes))
    resp = await client.post(
        REFRESH, json={"refresh_token": resign(body["refresh_token"], **changes)}
    )
    await assert_envelope(resp, 401, "Unauthorized")
    # The genuine tokens still work: the forgery did not touch the session.
    await assert_accepted(client, body["access_token"])


async def test_token_without_aud_refused_by_gateway_that_requires_it(
    client: Client, gateway_client: StartGateway
) -> None:
    await create_user(client)
    plain = await login(client)
    strict = await gateway_client(jwt={"issuer": ISSUER, "audience": AUDIENCE})
    await assert_refused(strict, plain["access_token"])
    resp = await strict.post(REFRESH, json={"refresh_token": plain["refresh_token"]})
    await assert_envelope(resp, 401, "Unauthorized")


# --- forgeries ---------------------------------------------------------------------------


async def test_tampered_payload_keeping_signature_is_refused(client: Client) -> None:
    await create_user(client, is_admin=False)
    body = await login(client)
    header, payload, signature = body["access_token"].split(".")
    claims = json.loads(unb64url(payload))
    assert claims["is_admin"] is False
    claims["is_admin"] = True
    forged = f"{header}.{b64url_json(claims)}.{signature}"
    await assert_refused(client, forged)
    header, payload, signature = body["refresh_token"].split(".")
    claims = json.loads(unb64url(payload))
    claims["is_admin"] = True
    resp = await client.post(
        REFRESH, json={"refresh_token": f"{header}.{b64url_json(claims)}.{signature}"}
    )
    await assert_envelope(resp, 401, "Unauthorized")
    await assert_accepted(client, body["access_token"])


async def test_stripped_signature_is_refused(client: Client) -> None:
    await create_user(client)
    body = await login(client)
    header, payload, _ = body["access_token"].split(".")
    await assert_refused(client, f"{header}.{payload}.")
    await assert_refused(client, f"{header}.{payload}")
    header, payload, _ = body["refresh_token"].split(".")
    resp = await client.post(REFRESH, json={"refresh_token": f"{header}.{payload}."})
    await assert_envelope(resp, 401, "Unauthorized")


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
async def test_alg_none_is_refused(client: Client, alg: str) -> None:
    await create_user(client, is_admin=False)
    body = await login(client)
    for name in ("access_token", "refresh_token"):
        payload = jwt.decode(body[name], options={"verify_signature": False})
        payload["is_admin"] = True
        unsigned = f"{b64url_json({'alg': alg, 'typ': 'JWT'})}.{b64url_json(payload)}."
        if name == "access_token":
            await assert_refused(client, unsigned)
        else:
            resp = await client.post(REFRESH, json={"refresh_token": unsigned})
            await assert_envelope(resp, 401, "Unauthorized")


@pytest.mark.filterwarnings("ignore:The HMAC key is")
@pytest.mark.parametrize("alg", ["HS384", "HS512"])
async def test_other_algorithm_with_our_secret_is_refused(client: Client, alg: str) -> None:
    await create_user(client)
    body = await login(client)
    await assert_refused(client, resign(body["access_token"], algorithm=alg))


async def test_kid_and_jku_headers_do_not_choose_the_key(client: Client) -> None:
    await create_user(client)
    body = await login(client)
    elsewhere = {
        "kid": "attacker-key",
        "jku": "https://evil.example.test/.well-known/jwks.json",
        "x5u": "https://evil.example.test/cert.pem",
    }
    # Signed with a key the header points to: refused.
    await assert_refused(client, resign(body["access_token"], key=OTHER_SECRET, headers=elsewhere))
    # The kid is a path-traversal / injection attempt: refused too.
    await assert_refused(
        client,
        resign(body["access_token"], key=OTHER_SECRET, headers={"kid": "../../../../dev/null"}),
    )
    # Signed with our key: the foreign headers are ignored and our key verifies it.
    await assert_accepted(client, resign(body["access_token"], headers=elsewhere))


async def test_token_signed_with_another_secret_is_refused(client: Client) -> None:
    await create_user(client)
    body = await login(client)
    await assert_refused(client, resign(body["access_token"], key=OTHER_SECRET))


@pytest.mark.parametrize(
    "changes",
    [
        {"user_id": "STR"},
        {"user_id": 1.0},
        {"user_id": True},
        {"user_id": None},
        {"sub": "999999"},
        {"sub": None},
        {"exp": None},
        {"iat": None},
        {"jti": None},
        {"sid": None},
        {"token_type": None},
        {"token_type": "refresh"},
        {"token_type": "ACCESS"},
        {"is_admin": "true"},
        {"email": None},
    ],
    ids=lambda c: "-".join(f"{k}={v!r}" for k, v in c.items()),
)
async def test_well_signed_but_malformed_claims_are_refused(
    client: Client, changes: dict[str, Any]
) -> None:
    user = await create_user(client)
    body = await login(client)
    if changes.get("user_id") == "STR":
        changes = {"user_id": str(user.id)}
    await assert_refused(client, resign(body["access_token"], **changes))


async def test_user_id_as_string_is_refused(client: Client) -> None:
    user = await create_user(client)
    body = await login(client)
    as_string = resign(body["access_token"], user_id=str(user.id))
    assert claims_of(as_string)["user_id"] == str(user.id)
    await assert_refused(client, as_string)
    resp = await client.post(
        REFRESH, json={"refresh_token": resign(body["refresh_token"], user_id=str(user.id))}
    )
    await assert_envelope(resp, 401, "Unauthorized")


async def test_claims_naming_an_unknown_session_are_refused(client: Client) -> None:
    await create_user(client)
    body = await login(client)
    # Only the database knows the session does not exist (the proxy's store-based check
    # trusts what our own key signed), so this is about /me.
    resp = await me(client, resign(body["access_token"], sid="0" * 32))
    await assert_envelope(resp, 401, "Unauthorized")


async def test_claims_naming_another_user_are_refused(client: Client) -> None:
    await create_user(client)
    other = await create_user(client, email="other@example.test", username="other")
    body = await login(client)
    forged = resign(body["access_token"], user_id=other.id, sub=str(other.id))
    resp = await me(client, forged)
    await assert_envelope(resp, 401, "Unauthorized")


async def test_refresh_token_is_not_an_access_token(client: Client) -> None:
    await create_user(client)
    body = await login(client)
    await assert_refused(client, body["refresh_token"])


@pytest.mark.parametrize(
    "authorization",
    ["", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer not-a-jwt", "Bearer a.b.c"],
)
async def test_malformed_authorization_is_401(client: Client, authorization: str) -> None:
    resp = await client.get(ME, headers={"Authorization": authorization})
    await assert_envelope(resp, 401, "Unauthorized")


async def test_me_without_authorization_is_401(client: Client) -> None:
    await assert_envelope(await client.get(ME), 401, "Unauthorized")
