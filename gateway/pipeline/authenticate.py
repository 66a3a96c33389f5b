"""Bearer token → Principal. ``None`` means "no credentials"; bad credentials raise 401."""

from __future__ import annotations

from auth.errors import TokenInvalid
from auth.service import AuthService
from gateway.api.bodies import bearer_from_header
from gateway.errors import Unauthorized
from gateway.pipeline.principal import Principal


async def authenticate_header(authorization: str | None, service: AuthService) -> Principal | None:
    """Check a request's bearer token exactly as the auth API does (revocation included).

    ``authorization`` is the ``Authorization`` header's value. No ``Bearer`` token → ``None``
    (anonymous). A token that is present but invalid, expired, revoked or not an access token
    → ``Unauthorized``, on every auth mode.
    """
    token = bearer_from_header(authorization)
    if token is None:
        return None
    try:
        claims = await service.authenticate(token)
    except TokenInvalid as exc:
        raise Unauthorized(*exc.details) from None
    return Principal.from_claims(claims)
