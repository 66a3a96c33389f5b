"""Tokens signed with a key pair (RS256, ES256, EdDSA) and the JWKS that publishes it (SPEC §3).

On both backends; the proxied requests through the edge and through aiohttp's server alike.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.appkeys import SERVICES
from tests.fixtures.envelopes import envelope
from tests.fixtures.factories import create_user, login
from tests.fixtures.gateway import both_listeners  # noqa: F401  (edge and aiohttp)
from tests.fixtures.keys import KIND_OF, new_key, write_private, write_public
from tests.fixtures.smtp import Mailbox
from tests.fixtures.upstream import upstream_base
from tests.integration.account_helpers import LOGIN_CODE, bearer, ok, request_code

JWKS = "/.well-known/jwks.json"
ME = "/api/v1/auth/me"
REFRESH = "/api/v1/auth/refresh"
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}

Client = TestClient[Any, Any]
StartGateway = Callable[..., Any]


def key_pair_jwt(algorithm: str, private: str, *public: str) -> dict[str, Any]:
    """The ``jwt`` section for a key pair (the test config's HMAC secret taken out)."""
    return {
        "algorithm": algorithm,
        "secret": None,
        "private_key_file": private,
        "public_key_files": list(public),
    }


def routes(upstream: TestServer) -> list[dict[str, Any]]:
    return [{"name": "orders", "prefix": "/orders", "upstream": upstream_base(upstream)}]


async def published_keys(client: Client) -> jwt.PyJWKSet:
    resp = await client.get(JWKS)
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("application/json")
    assert resp.headers["Cache-Control"] == "public, max-age=300"
    body = await resp.json()
    assert set(body) == {"keys"}
    for jwk in body["keys"]:
        assert not PRIVATE_MEMBERS & set(jwk), jwk
    return jwt.PyJWKSet.from_dict(body)


def verify_with(keys: jwt.PyJWKSet, token: str, algorithm: str) -> dict[str, Any]:
    """What a resource server does with the JWKS: the token's ``kid`` picks the key."""
    kid = jwt.get_unverified_header(token)["kid"]
    claims: dict[str, Any] = jwt.decode(token, keys[kid].key, algorithms=[algorithm])
    return claims


@pytest.mark.parametrize("algorithm", sorted(KIND_OF))
async def test_tokens_verify_with_the_published_keys(
    gateway_client: StartGateway, upstream: TestServer, tmp_path: Path, algorithm: str
) -> None:
    private = write_private(tmp_path, "signing", new_key(KIND_OF[algorithm]))
    client = await gateway_client(jwt=key_pair_jwt(algorithm, private), routes=routes(upstream))
    user = await create_user(client, is_admin=True)
    tokens = await login(client)
    keys = await published_keys(client)
    assert len(keys.keys) == 1
    claims = verify_with(keys, tokens["access_token"], algorithm)
    assert (claims["user_id"], claims["token_type"]) == (user.id, "access")
    assert verify_with(keys, tokens["refresh_token"], algorithm)["token_type"] == "refresh"
    # The gateway itself: the auth API and a proxied route.
    me = await ok(await client.get(ME, headers=bearer(tokens["access_token"])))
    assert me["user"]["id"] == user.id
    resp = await client.get("/orders/1", headers=bearer(tokens["access_token"]))
    assert resp.status == 200
    echo = await resp.json()
    assert echo["headers"]["x-user-id"] == [str(user.id)]
    assert echo["headers"]["x-is-admin"] == ["true"]
    refreshed = await ok(
        await client.post(REFRESH, json={"refresh_token": tokens["refresh_token"]})
    )
    assert verify_with(keys, refreshed["access_token"], algorithm)["user_id"] == user.id


async def test_forged_tokens_are_refused_on_every_path(
    gateway_client: StartGateway, upstream: TestServer, tmp_path: Path
) -> None:
    signing = new_key("p256")
    client = await gateway_client(
        jwt=key_pair_jwt("ES256", write_private(tmp_path, "signing", signing)),
        routes=routes(upstream),
    )
    await create_user(client)
    token = (await login(client))["access_token"]
    kid = jwt.get_unverified_header(token)["kid"]
    payload = jwt.decode(token, options={"verify_signature": False})
    forgeries = {
        "another key, the same kid": jwt.encode(
            payload, new_key("p256"), algorithm="ES256", headers={"kid": kid}
        ),
        "the right key, no kid": jwt.encode(payload, signing, algorithm="ES256"),
        "admin claim added": jwt.encode(
            {**payload, "is_admin": True}, new_key("p256"), algorithm="ES256", headers={"kid": kid}
        ),
    }
    for name, forged in forgeries.items():
        for path in (ME, "/orders/1"):
            resp = await client.get(path, headers=bearer(forged))
            assert resp.status == 401, (name, path)
            await envelope(resp, 401)


async def test_rotation_keeps_tokens_of_the_previous_key(
    gateway_client: StartGateway, upstream: TestServer, tmp_path: Path
) -> None:
    old, new = new_key("ed25519"), new_key("ed25519")
    old_private = write_private(tmp_path, "old", old)
    before = await gateway_client(jwt=key_pair_jwt("EdDSA", old_private), routes=routes(upstream))
    await create_user(before)
    token = (await login(before))["access_token"]

    # The new key signs; the old one's public key is still published and accepted.
    new_private = write_private(tmp_path, "new", new)
    old_public = write_public(tmp_path, "old", old)
    rotated = await gateway_client(
        jwt=key_pair_jwt("EdDSA", new_private, old_public), routes=routes(upstream)
    )
    keys = await published_keys(rotated)
    new_token = (await login(rotated))["access_token"]
    assert [key.key_id for key in keys.keys] == [
        jwt.get_unverified_header(new_token)["kid"],
        jwt.get_unverified_header(token)["kid"],
    ]
    for path in (ME, "/orders/1"):
        assert (await rotated.get(path, headers=bearer(token))).status == 200
        assert (await rotated.get(path, headers=bearer(new_token))).status == 200

    # Once the old key is dropped, its tokens are refused.
    after = await gateway_client(jwt=key_pair_jwt("EdDSA", new_private), routes=routes(upstream))
    assert len((await published_keys(after)).keys) == 1
    for path in (ME, "/orders/1"):
        await envelope(await after.get(path, headers=bearer(token)), 401)
        assert (await after.get(path, headers=bearer(new_token))).status == 200


async def test_email_code_login_with_a_key_pair(
    gateway_client: StartGateway, mailbox: Mailbox, tmp_path: Path
) -> None:
    """The keyed hash of email codes comes from the private key when there is no secret."""
    private = write_private(tmp_path, "signing", new_key("p256"))
    client = await gateway_client(jwt=key_pair_jwt("ES256", private))
    await create_user(client)
    code = await request_code(client, mailbox, "beyhan@beyhan.dev")
    body = await ok(
        await client.post(LOGIN_CODE, json={"email": "beyhan@beyhan.dev", "code": code})
    )
    keys = await published_keys(client)
    assert verify_with(keys, str(body["access_token"]), "ES256")["email"] == "beyhan@beyhan.dev"
    service = client.app[SERVICES].auth_service()
    assert service.code_key == service.tokens.derive_key("email-code")


async def test_no_jwks_with_an_hmac_secret(
    gateway_client: StartGateway, upstream: TestServer
) -> None:
    client = await gateway_client()
    await envelope(await client.get(JWKS), 404)
    # The path is an ordinary one then: a route may take it.
    client = await gateway_client(
        routes=[
            {"name": "root", "prefix": "/", "upstream": upstream_base(upstream), "auth": "none"}
        ]
    )
    resp = await client.get(JWKS)
    assert resp.status == 200
    assert (await resp.json())["path"] == JWKS


async def test_jwks_is_the_gateways_even_under_a_catch_all_route(
    gateway_client: StartGateway, upstream: TestServer, tmp_path: Path
) -> None:
    private = write_private(tmp_path, "signing", new_key("p256"))
    client = await gateway_client(
        jwt=key_pair_jwt("ES256", private),
        routes=[
            {"name": "root", "prefix": "/", "upstream": upstream_base(upstream), "auth": "none"}
        ],
    )
    assert len((await published_keys(client)).keys) == 1
