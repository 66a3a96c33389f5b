"""Issue and verify the gateway's JWTs (SPEC §3).

Verification pins the configured algorithm (never ``none``, never another family); with a key
pair algorithm the token's ``kid`` picks one of the configured public keys (a token without a
known ``kid`` is invalid, whatever it claims to be signed with). It requires
``exp``, ``iat``, ``sub``, ``jti`` and ``sid``, checks ``token_type``, and, when configured,
``iss`` and ``aud``. Revocation is not decided here: the caller checks ``sid`` against the store.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any, Literal

import jwt

from auth.errors import TokenInvalid
from auth.keys import SigningKeys
from auth.opaque import new_id
from config import JwtConfig

TokenType = Literal["access", "refresh"]
_REQUIRED = ["exp", "iat", "sub", "jti", "sid", "user_id", "token_type"]


@dataclass(frozen=True, slots=True)
class Claims:
    """The verified claims the gateway relies on."""

    user_id: int
    email: str
    is_admin: bool
    first_name: str
    last_name: str
    token_type: TokenType
    sid: str
    jti: str
    iat: int
    exp: int


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A signed token with the claims it carries."""

    token: str
    jti: str
    iat: int
    exp: int


@dataclass(frozen=True, slots=True)
class TokenUser:
    """What a token says about its user."""

    id: int
    email: str
    is_admin: bool
    first_name: str
    last_name: str


class TokenService:
    """Signs access and refresh tokens with one key and one algorithm; verifies them."""

    def __init__(self, cfg: JwtConfig, keys: SigningKeys) -> None:
        self._cfg = cfg
        self._key = keys.signing_key
        self._headers = None if keys.kid is None else {"kid": keys.kid}
        self._verifying = keys.verifying
        self.keys = keys
        self.algorithm = cfg.algorithm
        self.access_ttl = int(cfg.access_ttl)
        self.refresh_ttl = int(cfg.refresh_ttl)

    def derive_key(self, purpose: str) -> bytes:
        """A 256-bit key for ``purpose``, derived from the signing key (HMAC-SHA256).

        Other secrets of the service (the keyed hash of email codes) come from here, so there
        is one secret to manage; a derived key reveals nothing about the signing key.
        Rotating the signing key invalidates what was hashed under the old derived key.
        """
        label = f"auth-gateway derived key: {purpose}".encode()
        return hmac.new(self.keys.derivation_secret, label, hashlib.sha256).digest()

    def issue(self, user: TokenUser, token_type: TokenType, sid: str) -> IssuedToken:
        """Sign a new token of ``token_type`` for ``user`` in session ``sid``."""
        now = int(time.time())
        ttl = self.access_ttl if token_type == "access" else self.refresh_ttl
        jti = new_id()
        payload: dict[str, Any] = {
            "user_id": user.id,
            "email": user.email,
            "is_admin": user.is_admin,
            "first_name": user.first_name,
            "last_name": user.last_name,
            "token_type": token_type,
            "sub": str(user.id),
            "exp": now + ttl,
            "iat": now,
            "jti": jti,
            "sid": sid,
        }
        if self._cfg.issuer:
            payload["iss"] = self._cfg.issuer
        if self._cfg.audience:
            payload["aud"] = self._cfg.audience
        token = jwt.encode(payload, self._key, algorithm=self.algorithm, headers=self._headers)
        return IssuedToken(token=token, jti=jti, iat=now, exp=now + ttl)

    def verify(self, token: str, expected: TokenType) -> Claims:
        """Return the claims of a valid ``expected``-type token, or raise TokenInvalid."""
        if not token.isascii():  # (a JWS compact serialisation is; pyjwt would raise a
            raise TokenInvalid("token is invalid")  # UnicodeEncodeError on a lone surrogate)
        try:
            key = self._key if not self._verifying else self._verifying_key(token)
            payload = jwt.decode(
                token,
                key,
                algorithms=[self.algorithm],
                issuer=self._cfg.issuer,
                audience=self._cfg.audience,
                leeway=self._cfg.leeway,
                options={"require": _REQUIRED, "verify_aud": self._cfg.audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise TokenInvalid("token has expired") from None
        except jwt.PyJWTError:
            raise TokenInvalid("token is invalid") from None
        return _claims(payload, expected)

    def _verifying_key(self, token: str) -> Any:
        """The public key the ``kid`` of ``token`` names; ``TokenInvalid`` if none does."""
        kid = jwt.get_unverified_header(token).get("kid")
        key = self._verifying.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise TokenInvalid("token is invalid")
        return key


def _claims(payload: dict[str, Any], expected: TokenType) -> Claims:
    if payload.get("token_type") != expected:
        raise TokenInvalid("not an access token" if expected == "access" else "not a refresh token")
    user_id = payload.get("user_id")
    fields_ok = (
        type(user_id) is int
        and payload.get("sub") == str(user_id)
        and isinstance(payload.get("sid"), str)
        and isinstance(payload.get("jti"), str)
        and isinstance(payload.get("email"), str)
        and isinstance(payload.get("is_admin"), bool)
        and type(payload.get("iat")) is int
        and type(payload.get("exp")) is int
    )
    if not fields_ok:
        raise TokenInvalid("token is invalid")
    assert isinstance(user_id, int)
    return Claims(
        user_id=user_id,
        email=payload["email"],
        is_admin=payload["is_admin"],
        first_name=str(payload.get("first_name", "")),
        last_name=str(payload.get("last_name", "")),
        token_type=expected,
        sid=payload["sid"],
        jti=payload["jti"],
        iat=payload["iat"],
        exp=payload["exp"],
    )
