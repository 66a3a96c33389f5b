"""Bearer token → Principal. ``None`` means "no credentials"; bad credentials raise 401."""

from __future__ import annotations

from enum import Enum
from typing import Final, Literal

from auth.errors import TokenInvalid
from auth.service import AuthService
from gateway.api.bodies import bearer_from_header
from gateway.errors import Unauthorized
from gateway.pipeline.principal import Principal


class _Pending(Enum):
    PENDING = "pending"


PENDING: Final = _Pending.PENDING
"""What ``authenticate_header_now`` returns when the answer needs a round trip to the store."""


async def authenticate_header(authorization: str | None, service: AuthService) -> Principal | None:
    """Check a request's bearer token exactly as the auth API does (revocation included).

    ``authorization`` is the ``Authorization`` header's value. No ``Bearer`` token → ``None``
    (anonymous). A token that is present but invalid, expired, revoked or not an access token
    → ``Unauthorized``, on every auth mode.
    """
    found = authenticate_header_now(authorization, service)
    if found is not PENDING:
        return found
    token = bearer_from_header(authorization)
    assert token is not None  # PENDING is only returned for a token
    try:
        return Principal.from_claims(await service.authenticate(token))
    except TokenInvalid as exc:
        raise Unauthorized(*exc.details) from None


def authenticate_header_now(
    authorization: str | None, service: AuthService
) -> Principal | Literal[_Pending.PENDING] | None:
    """``authenticate_header`` without waiting: its answer, or ``PENDING`` if it must wait."""
    token = bearer_from_header(authorization)
    if token is None:
        return None
    try:
        claims = service.authenticate_now(token)
    except TokenInvalid as exc:
        raise Unauthorized(*exc.details) from None
    return PENDING if claims is None else Principal.from_claims(claims)
