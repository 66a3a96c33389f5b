"""``/.well-known/jwks.json``: the public keys that verify the gateway's tokens (SPEC §3).

Served only with a key pair algorithm (RS256, ES256, EdDSA); with an HMAC secret there is no
public key, and the path is an ordinary one (a proxy route may take it). The signing key comes
first; the keys of ``jwt.public_key_files`` follow, so a verifier that caches the set knows a
key published ahead of a rotation and still knows the one rotated out.
"""

from __future__ import annotations

from aiohttp import web

from config import KEY_PAIR_ALGORITHMS, GatewayConfig
from gateway.appkeys import SERVICES
from gateway.envelope import json_response

JWKS_PATH = "/.well-known/jwks.json"
JWKS_MAX_AGE = 300
"""Seconds a verifier may cache the set (``Cache-Control``): a rotation is published this long
ahead of signing with the new key (see the README)."""


async def jwks(request: web.Request) -> web.Response:
    """The JWK Set of the verifying public keys (never a private member)."""
    jwks = request.app[SERVICES].auth_service().tokens.keys.jwks
    response = json_response(dict(jwks or {}))
    response.headers["Cache-Control"] = f"public, max-age={JWKS_MAX_AGE}"
    return response


def setup_jwks_route(app: web.Application, cfg: GatewayConfig) -> None:
    """Register ``/.well-known/jwks.json`` when tokens are signed with a key pair."""
    if cfg.jwt.algorithm in KEY_PAIR_ALGORITHMS:
        app.router.add_get(JWKS_PATH, jwks)
