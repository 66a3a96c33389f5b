"""The keys that sign and verify the gateway's JWTs (SPEC §3).

``load_signing_keys`` gives them for the configured algorithm. With RS256, ES256 or EdDSA: the
PEM private key of ``jwt.private_key_file`` signs, and its public key and those of
``jwt.public_key_files`` verify; each has a ``kid``, its RFC 7638 thumbprint (the same in every
worker and replica with no setting), carried in the header of the tokens it signs and published
in the JWKS. With HS256/384/512, the secret below signs and verifies, and there is no JWKS.

The HMAC secret: configured (``jwt.secret`` / ``GATEWAY_JWT_SECRET``), it is used as is (config
validation has already required 32 bytes or more). Not configured and the embedded SQLite
database in use: a 64-byte random secret is generated on first start and kept next to the
database file (``<db>.jwt-secret``, mode 0600), so tokens survive restarts. PostgreSQL without a
secret is refused here (``SecretUnavailable``): by ``serve``, ``check-config`` and ``users`` at
start, never by ``migrate``, which needs no key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwt.algorithms import get_default_algorithms

from auth.db import sqlite_path
from config import KEY_PAIR_ALGORITHMS, GatewayConfig

_LOGGER = logging.getLogger(__name__)
MIN_RSA_BITS = 2048
"""RFC 7518 §3.3: RSA keys of 2048 bits or more."""
MAX_KEY_FILE_BYTES = 64 * 1024


class SecretUnavailable(Exception):
    """No usable signing key; the message starts with the config key it comes from.

    PostgreSQL without ``jwt.secret``, an unreadable secret file, a PEM file that is missing,
    malformed, encrypted or of the wrong kind of key for ``jwt.algorithm``.
    """


@dataclass(frozen=True, slots=True)
class SigningKeys:
    """What ``TokenService`` signs and verifies with."""

    algorithm: str
    signing_key: Any
    """The HMAC secret (``str``), or the private key."""
    kid: str | None
    """The ``kid`` of the signing key (``None`` with HMAC: tokens carry none)."""
    verifying: Mapping[str, Any]
    """Public keys by ``kid`` (empty with HMAC)."""
    jwks: Mapping[str, list[dict[str, str]]] | None
    """The JWKS of the public keys, signing key first (``None`` with HMAC)."""
    derivation_secret: bytes
    """Key material for the service's other keyed hashes (``TokenService.derive_key``)."""


def load_signing_keys(cfg: GatewayConfig) -> SigningKeys:
    """The keys of ``cfg.jwt``; raises ``SecretUnavailable`` naming the key that is wrong."""
    algorithm = cfg.jwt.algorithm
    if algorithm not in KEY_PAIR_ALGORITHMS:
        secret = resolve_jwt_secret(cfg)
        return SigningKeys(algorithm, secret, None, {}, None, secret.encode("utf-8"))
    if cfg.jwt.private_key_file is None:  # config validation refuses this first
        raise SecretUnavailable(f"jwt.private_key_file: required with {algorithm}")
    private = _load_pem(cfg.jwt.private_key_file, "jwt.private_key_file", algorithm, private=True)
    public_keys = [private.public_key()]
    for index, path in enumerate(cfg.jwt.public_key_files):
        public_keys.append(
            _load_pem(path, f"jwt.public_key_files[{index}]", algorithm, private=False)
        )
    verifying: dict[str, Any] = {}
    published: list[dict[str, str]] = []
    for key in public_keys:
        jwk = public_jwk(key, algorithm)
        if jwk["kid"] not in verifying:
            verifying[jwk["kid"]] = key
            published.append(jwk)
    material = private.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return SigningKeys(
        algorithm, private, published[0]["kid"], verifying, {"keys": published}, material
    )


_THUMBPRINT_MEMBERS = {
    "RSA": ("e", "kty", "n"),
    "EC": ("crv", "kty", "x", "y"),
    "OKP": ("crv", "kty", "x"),
}


def public_jwk(key: Any, algorithm: str) -> dict[str, str]:
    """The public JWK of ``key`` for the JWKS: its members, ``kid``, ``use`` and ``alg``.

    ``kid`` is the key's RFC 7638 thumbprint: SHA-256 over its required members, base64url.
    """
    members: dict[str, Any] = get_default_algorithms()[algorithm].to_jwk(key, as_dict=True)
    required = {name: members[name] for name in _THUMBPRINT_MEMBERS[members["kty"]]}
    canonical = json.dumps(required, separators=(",", ":"), sort_keys=True).encode("utf-8")
    kid = base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()
    return {**required, "kid": kid, "use": "sig", "alg": algorithm}


def _load_pem(path: str, where: str, algorithm: str, *, private: bool) -> Any:
    """The key in the PEM file ``path``, checked against ``algorithm``."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_KEY_FILE_BYTES + 1)
            mode = os.fstat(handle.fileno()).st_mode
    except OSError as exc:
        raise SecretUnavailable(f"{where}: cannot read {path}: {exc.strerror or exc}") from None
    kind = "private" if private else "public"
    if len(data) > MAX_KEY_FILE_BYTES:
        raise SecretUnavailable(f"{where}: {path} is too large for a PEM {kind} key")
    try:
        if private:
            key: Any = serialization.load_pem_private_key(data, password=None)
        else:
            key = serialization.load_pem_public_key(data)
    except TypeError:  # a passphrase-protected private key
        raise SecretUnavailable(
            f"{where}: {path} is encrypted; give the key without a passphrase"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        hint = ""
        if not private and b"PRIVATE KEY" in data:
            hint = " (it holds a private key: give its public key, never the private one)"
        raise SecretUnavailable(f"{where}: {path} is not a PEM {kind} key{hint}") from None
    problem = _unfit(key.public_key() if private else key, algorithm)
    if problem:
        raise SecretUnavailable(f"{where}: {path} {problem}")
    if private and mode & 0o077:
        _LOGGER.warning(
            "%s: %s can be read by other users (mode %03o); chmod 600 it", where, path, mode & 0o777
        )
    return key


def _unfit(key: Any, algorithm: str) -> str | None:
    """Why the public ``key`` cannot serve ``algorithm``, or ``None``."""
    if algorithm == "RS256":
        if not isinstance(key, rsa.RSAPublicKey):
            return "is not an RSA key (RS256 needs one)"
        if key.key_size < MIN_RSA_BITS:
            return f"is an RSA key of {key.key_size} bits; RS256 needs {MIN_RSA_BITS} or more"
        return None
    if algorithm == "ES256":
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
            return "is not an EC P-256 key (ES256 needs one)"
        return None
    if not isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return "is not an Ed25519 or Ed448 key (EdDSA needs one)"
    return None


def secret_file_for(database_url: str) -> Path | None:
    """The generated-secret file kept beside a SQLite database, or None."""
    path = sqlite_path(database_url)
    return None if path is None else path.with_name(path.name + ".jwt-secret")


def resolve_jwt_secret(cfg: GatewayConfig) -> str:
    """The configured secret, or the embedded database's generated one."""
    if cfg.jwt.secret is not None:
        return cfg.jwt.secret
    if not cfg.uses_sqlite:
        raise SecretUnavailable(
            "jwt.secret: required with PostgreSQL (set GATEWAY_JWT_SECRET to at least 32 "
            "random bytes); only the embedded database generates one"
        )
    path = secret_file_for(cfg.database.url)
    if path is None:
        _LOGGER.warning(
            "no jwt.secret configured and an in-memory database: using a random secret "
            "that lasts until the process exits"
        )
        return secrets.token_urlsafe(64)
    try:
        return _read_or_create(path)
    except OSError as exc:
        raise SecretUnavailable(f"cannot read or create {path}: {exc.strerror or exc}") from None


def _read_or_create(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        return _read(path)
    # Write a complete file under a temporary name, then link it into place: a second process
    # starting at the same moment either wins the link or reads the winner's whole secret.
    secret = secrets.token_urlsafe(64)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(secret + "\n")
        os.link(tmp, path)
    except FileExistsError:
        return _read(path)
    finally:
        tmp.unlink(missing_ok=True)
    _LOGGER.warning(
        "no jwt.secret configured: generated one and stored it in %s (mode 0600); "
        "set GATEWAY_JWT_SECRET to manage it yourself",
        path,
    )
    return secret


def _read(path: Path) -> str:
    secret = path.read_text(encoding="ascii").strip()
    if len(secret) < 32:
        raise SecretUnavailable(f"{path} holds a secret shorter than 32 bytes")
    return secret
