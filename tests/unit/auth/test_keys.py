"""Signing keys (``auth.keys``) and the tokens signed with them (``auth.tokens``): key pairs."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from jwt.algorithms import RSAAlgorithm, get_default_algorithms

from auth.errors import TokenInvalid
from auth.keys import SecretUnavailable, SigningKeys, load_signing_keys, public_jwk
from auth.tokens import TokenService, TokenUser
from config import GatewayConfig, build_config
from tests.fixtures.keys import (
    KIND_OF,
    new_key,
    private_pem,
    public_pem,
    write_private,
    write_public,
)

USER = TokenUser(7, "kim@example.com", False, "Kim", "Lee")
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}
# RFC 7638 §3.1: this RSA key's JWK thumbprint.
RFC7638_JWK = {
    "kty": "RSA",
    "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc"
    "_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FD"
    "W2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQ"
    "Fh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
    "e": "AQAB",
}
RFC7638_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def config(algorithm: str, private: str | None, public: list[str] | None = None) -> GatewayConfig:
    jwt_section: dict[str, Any] = {"algorithm": algorithm, "private_key_file": private}
    if public:
        jwt_section["public_key_files"] = public
    return build_config({"jwt": jwt_section}, env={})


def keys_for(tmp_path: Path, algorithm: str, *public: Any, key: Any = None) -> SigningKeys:
    key = key if key is not None else new_key(KIND_OF[algorithm])
    private = write_private(tmp_path, "signing", key)
    files = [write_public(tmp_path, f"public{i}", k) for i, k in enumerate(public)]
    return load_signing_keys(config(algorithm, private, files))


def service(keys: SigningKeys, algorithm: str) -> TokenService:
    return TokenService(config(algorithm, "unused.pem").jwt, keys)


def header_of(token: str) -> dict[str, Any]:
    part = token.split(".")[0]
    value: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return value


def problem(tmp_path: Path, cfg: GatewayConfig) -> str:
    with pytest.raises(SecretUnavailable) as info:
        load_signing_keys(cfg)
    return str(info.value)


# --- kid and JWKS


def test_kid_is_the_rfc7638_thumbprint() -> None:
    key = RSAAlgorithm.from_jwk(json.dumps(RFC7638_JWK))
    jwk = public_jwk(key, "RS256")
    assert jwk["kid"] == RFC7638_THUMBPRINT
    assert jwk == {**RFC7638_JWK, "kid": RFC7638_THUMBPRINT, "use": "sig", "alg": "RS256"}


@pytest.mark.parametrize("algorithm", sorted(KIND_OF))
def test_jwks_lists_public_members_only_signing_key_first(tmp_path: Path, algorithm: str) -> None:
    older = new_key(KIND_OF[algorithm])
    signing = new_key(KIND_OF[algorithm])
    keys = keys_for(tmp_path, algorithm, older, signing, key=signing)  # its own public: once
    assert keys.jwks is not None
    published = keys.jwks["keys"]
    assert [jwk["kid"] for jwk in published] == list(keys.verifying)
    assert len(published) == 2
    assert published[0]["kid"] == keys.kid == public_jwk(signing.public_key(), algorithm)["kid"]
    assert published[1]["kid"] == public_jwk(older.public_key(), algorithm)["kid"]
    for jwk in published:
        assert not PRIVATE_MEMBERS & set(jwk)
        assert jwk["use"] == "sig" and jwk["alg"] == algorithm
        # A verifier builds the key from the JWK alone.
        assert jwt.PyJWK(jwk).key_id == jwk["kid"]


def test_kid_is_the_same_for_the_same_key_in_every_process(tmp_path: Path) -> None:
    key = new_key("p256")
    first = keys_for(tmp_path, "ES256", key=key)
    second = load_signing_keys(config("ES256", write_private(tmp_path, "copy", key)))
    assert first.kid == second.kid
    assert first.derivation_secret == second.derivation_secret


def test_each_key_derives_its_own_secrets(tmp_path: Path) -> None:
    one = keys_for(tmp_path, "EdDSA")
    other = keys_for(tmp_path, "EdDSA")
    assert one.derivation_secret != other.derivation_secret
    assert service(one, "EdDSA").derive_key("email-code") != service(other, "EdDSA").derive_key(
        "email-code"
    )


def test_hmac_keys_have_no_kid_and_no_jwks() -> None:
    cfg = build_config({"jwt": {"secret": "s" * 40}}, env={})
    keys = load_signing_keys(cfg)
    assert keys.kid is None and keys.jwks is None and not keys.verifying
    token = TokenService(cfg.jwt, keys).issue(USER, "access", "sid-1").token
    assert "kid" not in header_of(token)


# --- signing and verifying


@pytest.mark.parametrize("algorithm", sorted(KIND_OF))
def test_round_trip_with_kid(tmp_path: Path, algorithm: str) -> None:
    keys = keys_for(tmp_path, algorithm)
    tokens = service(keys, algorithm)
    token = tokens.issue(USER, "access", "sid-1").token
    assert header_of(token) == {"alg": algorithm, "kid": keys.kid, "typ": "JWT"}
    claims = tokens.verify(token, "access")
    assert (claims.user_id, claims.sid) == (7, "sid-1")
    with pytest.raises(TokenInvalid):
        tokens.verify(token, "refresh")


def test_ed448_key_signs_eddsa(tmp_path: Path) -> None:
    keys = keys_for(tmp_path, "EdDSA", key=new_key("ed448"))
    tokens = service(keys, "EdDSA")
    assert tokens.verify(tokens.issue(USER, "access", "s").token, "access").user_id == 7


def test_token_of_a_rotated_out_key_still_verifies(tmp_path: Path) -> None:
    old = new_key("rsa2048")
    before = service(keys_for(tmp_path, "RS256", key=old), "RS256")
    token = before.issue(USER, "access", "sid-1").token
    new = new_key("rsa2048")
    after_rotation = service(keys_for(tmp_path, "RS256", old, key=new), "RS256")
    assert after_rotation.verify(token, "access").user_id == 7
    assert (
        header_of(after_rotation.issue(USER, "access", "s").token)["kid"] != header_of(token)["kid"]
    )
    dropped = service(keys_for(tmp_path, "RS256", key=new), "RS256")
    with pytest.raises(TokenInvalid):
        dropped.verify(token, "access")


def forge(token: str, key: Any, algorithm: str, **header: Any) -> str:
    payload = jwt.decode(token, options={"verify_signature": False})
    return jwt.encode(payload, key, algorithm=algorithm, headers=header)


def test_forgeries_are_invalid(tmp_path: Path) -> None:
    signing = new_key("p256")
    keys = keys_for(tmp_path, "ES256", key=signing)
    tokens = service(keys, "ES256")
    token = tokens.issue(USER, "access", "sid-1").token
    kid = keys.kid
    attacker = new_key("p256")
    pem_public = public_pem(signing)
    forgeries = {
        "another key, the right kid": forge(token, attacker, "ES256", kid=kid),
        "another key, its own kid": forge(
            token, attacker, "ES256", kid=public_jwk(attacker.public_key(), "ES256")["kid"]
        ),
        "no kid": forge(token, signing, "ES256"),
        "unknown kid": forge(token, signing, "ES256", kid="not-a-kid"),
        "kid of another type": _raw_signed(token, signing, {"alg": "ES256", "kid": [kid]}),
        # RFC 8725 §2.1: the public key used as an HMAC secret.
        "HS256 with the public key as secret": _hmac_token(token, pem_public, kid),
        "alg none": _unsigned(token, kid),
        "tampered payload": _tampered(token),
        "not a JWT": "abc.def",
        "garbage header": "!!!." + token.split(".", 1)[1],
    }
    for name, forged in forgeries.items():
        with pytest.raises(TokenInvalid):
            tokens.verify(forged, "access")
            pytest.fail(name)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _raw_signed(token: str, key: Any, header: dict[str, Any]) -> str:
    """``token``'s payload under ``header`` (which PyJWT would refuse to write), signed."""
    head = _b64(json.dumps(header).encode())
    body = token.split(".")[1]
    algorithm = get_default_algorithms()[header["alg"]]
    signature = algorithm.sign(f"{head}.{body}".encode(), algorithm.prepare_key(key))
    return f"{head}.{body}.{_b64(signature)}"


def _hmac_token(token: str, secret: bytes, kid: str | None) -> str:
    import hashlib
    import hmac

    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = token.split(".")[1]
    signature = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{_b64(signature)}"


def _unsigned(token: str, kid: str | None) -> str:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": kid}).encode())
    return f"{header}.{token.split('.')[1]}."


def _tampered(token: str) -> str:
    header, body, signature = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload["is_admin"] = True
    return f"{header}.{_b64(json.dumps(payload).encode())}.{signature}"


# --- what is refused at start-up, with the key that says it


@pytest.mark.parametrize(
    ("algorithm", "kind", "expected"),
    [
        ("RS256", "p256", "is not an RSA key (RS256 needs one)"),
        ("RS256", "rsa1024", "is an RSA key of 1024 bits; RS256 needs 2048 or more"),
        ("ES256", "rsa2048", "is not an EC P-256 key (ES256 needs one)"),
        ("ES256", "p384", "is not an EC P-256 key (ES256 needs one)"),
        ("EdDSA", "p256", "is not an Ed25519 or Ed448 key (EdDSA needs one)"),
    ],
)
def test_key_of_the_wrong_kind(tmp_path: Path, algorithm: str, kind: str, expected: str) -> None:
    path = write_private(tmp_path, "k", new_key(kind))
    assert problem(tmp_path, config(algorithm, path)) == f"jwt.private_key_file: {path} {expected}"


def test_public_key_of_the_wrong_kind(tmp_path: Path) -> None:
    private = write_private(tmp_path, "k", new_key("ed25519"))
    other = write_public(tmp_path, "other", new_key("p256"))
    assert problem(tmp_path, config("EdDSA", private, [other, private])) == (
        f"jwt.public_key_files[0]: {other} is not an Ed25519 or Ed448 key (EdDSA needs one)"
    )
    ok = write_public(tmp_path, "ok", new_key("ed25519"))
    assert problem(tmp_path, config("EdDSA", private, [ok, private])) == (
        f"jwt.public_key_files[1]: {private} is not a PEM public key "
        "(it holds a private key: give its public key, never the private one)"
    )


def test_unreadable_encrypted_and_malformed_files(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.pem")
    assert problem(tmp_path, config("ES256", missing)) == (
        f"jwt.private_key_file: cannot read {missing}: No such file or directory"
    )
    encrypted = tmp_path / "encrypted.pem"
    encrypted.write_bytes(private_pem(new_key("p256"), passphrase=b"correct horse"))
    assert problem(tmp_path, config("ES256", str(encrypted))) == (
        f"jwt.private_key_file: {encrypted} is encrypted; give the key without a passphrase"
    )
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----\n")
    assert problem(tmp_path, config("ES256", str(garbage))) == (
        f"jwt.private_key_file: {garbage} is not a PEM private key"
    )
    public_only = write_public(tmp_path, "pub", new_key("p256"))
    assert problem(tmp_path, config("ES256", public_only)) == (
        f"jwt.private_key_file: {public_only} is not a PEM private key"
    )
    huge = tmp_path / "huge.pem"
    huge.write_bytes(b"x" * 70_000)
    assert problem(tmp_path, config("ES256", str(huge))) == (
        f"jwt.private_key_file: {huge} is too large for a PEM private key"
    )


def test_der_is_not_pem(tmp_path: Path) -> None:
    key = new_key("p256")
    der = tmp_path / "key.der"
    der.write_bytes(
        key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    assert problem(tmp_path, config("ES256", str(der))) == (
        f"jwt.private_key_file: {der} is not a PEM private key"
    )


def test_a_private_key_others_can_read_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_private(tmp_path, "k", new_key("p256"))
    os.chmod(path, 0o600)
    load_signing_keys(config("ES256", path))
    assert not caplog.records
    os.chmod(path, 0o644)
    load_signing_keys(config("ES256", path))
    assert [r.getMessage() for r in caplog.records] == [
        f"jwt.private_key_file: {path} can be read by other users (mode 644); chmod 600 it"
    ]


def test_postgres_without_a_secret_has_no_key() -> None:
    cfg = build_config({"database": {"url": "postgresql+asyncpg://u@db/gateway"}}, env={})
    with pytest.raises(SecretUnavailable) as info:
        load_signing_keys(cfg)
    assert str(info.value) == (
        "jwt.secret: required with PostgreSQL (set GATEWAY_JWT_SECRET to at least 32 random "
        "bytes); only the embedded database generates one"
    )
