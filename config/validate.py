"""Cross-field rules of ``gateway.yaml``; each returns messages prefixed with their key path."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from config.model import HTTP_METHODS, KEY_PAIR_ALGORITHMS, GatewayConfig

AUTH_PREFIX = "/api/v1/auth"
MIN_SECRET_BYTES = 32


def validate(cfg: GatewayConfig) -> list[str]:
    """Return every cross-field problem of ``cfg`` (empty when it is sound)."""
    return [
        *_check_database(cfg),
        *_check_secrets(cfg),
        *_check_email(cfg),
        *_check_cors(cfg),
        *_check_routes(cfg),
        *_check_misc(cfg),
    ]


def _check_database(cfg: GatewayConfig) -> list[str]:
    errors = []
    scheme = cfg.database.url.split("://", 1)[0]
    if scheme not in ("sqlite+aiosqlite", "postgresql+asyncpg"):
        errors.append("database.url: must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
    if cfg.redis.url is not None and urlsplit(cfg.redis.url).scheme not in (
        "redis",
        "rediss",
        "unix",
    ):
        errors.append("redis.url: must be a redis://, rediss:// or unix:// URL")
    if cfg.server.workers > 1 and cfg.redis.url is None:
        errors.append(
            "server.workers: more than one worker needs redis.url "
            "(the in-process store cannot be shared between processes)"
        )
    return errors


def _check_secrets(cfg: GatewayConfig) -> list[str]:
    jwt = cfg.jwt
    secret = jwt.secret
    if jwt.algorithm in KEY_PAIR_ALGORITHMS:
        errors = []
        if jwt.private_key_file is None:
            errors.append(
                f"jwt.private_key_file: required with {jwt.algorithm} "
                "(the PEM private key that signs tokens)"
            )
        if secret is not None:
            errors.append(
                f"jwt.secret: not used with {jwt.algorithm} (tokens are signed with "
                "jwt.private_key_file); remove it, or unset GATEWAY_JWT_SECRET"
            )
        return errors
    if jwt.private_key_file is not None or jwt.public_key_files:
        key = "jwt.private_key_file" if jwt.private_key_file is not None else "jwt.public_key_files"
        return [f"{key}: only with RS256, ES256 or EdDSA ({jwt.algorithm} signs with jwt.secret)"]
    if secret is not None and len(secret.encode()) < MIN_SECRET_BYTES:
        return [f"jwt.secret: must be at least {MIN_SECRET_BYTES} bytes"]
    # No secret with PostgreSQL is refused where a key is needed (``auth.keys``): everywhere
    # but ``gateway migrate``, which must not need the signing secret.
    return []


def _check_email(cfg: GatewayConfig) -> list[str]:
    errors = []
    if "{token}" not in cfg.email.verify_url:
        errors.append("email.verify_url: must contain the placeholder {token}")
    if "{token}" not in cfg.email.reset_url:
        errors.append("email.reset_url: must contain the placeholder {token}")
    templates = cfg.email.templates_dir
    if templates is not None and not Path(templates).is_dir():
        errors.append(f"email.templates_dir: {templates!r} is not a directory")
    if "@" not in cfg.email.from_:
        errors.append("email.from: must contain an email address")
    if cfg.email.smtp.tls and cfg.email.smtp.starttls:
        errors.append("email.smtp: tls and starttls cannot both be true")
    return errors


def _check_cors(cfg: GatewayConfig) -> list[str]:
    errors = []
    for i, origin in enumerate(cfg.cors.allow_origins):
        if origin == "*":
            if cfg.cors.allow_credentials:
                errors.append(
                    f"cors.allow_origins[{i}]: '*' cannot be combined with allow_credentials"
                )
            continue
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
            errors.append(f"cors.allow_origins[{i}]: must be scheme://host[:port], got {origin!r}")
    for i, method in enumerate(cfg.cors.allow_methods):
        if method not in HTTP_METHODS:
            errors.append(f"cors.allow_methods[{i}]: unknown HTTP method {method!r}")
    return errors


def _check_routes(cfg: GatewayConfig) -> list[str]:
    errors: list[str] = []
    names: dict[str, int] = {}
    prefixes: dict[str, int] = {}
    for i, route in enumerate(cfg.routes):
        key = f"routes[{i}]"
        if route.name in names:
            errors.append(f"{key}.name: duplicate of routes[{names[route.name]}]")
        names.setdefault(route.name, i)
        errors.extend(f"{key}.prefix: {problem}" for problem in _prefix_problems(route.prefix))
        if route.prefix in prefixes:
            errors.append(f"{key}.prefix: duplicate of routes[{prefixes[route.prefix]}]")
        prefixes.setdefault(route.prefix, i)
        errors.extend(f"{key}.upstream: {p}" for p in _upstream_problems(route.upstream))
        for j, method in enumerate(route.methods or []):
            if method not in HTTP_METHODS:
                errors.append(f"{key}.methods[{j}]: unknown HTTP method {method!r}")
        if route.admin and route.auth != "required":
            errors.append(f"{key}.admin: needs auth: required")
    return errors


def _prefix_problems(prefix: str) -> list[str]:
    if not prefix.startswith("/"):
        return ["must start with /"]
    problems = []
    if prefix != "/" and prefix.endswith("/"):
        problems.append("must not end with / (a prefix matches on segment boundaries)")
    if "//" in prefix or any(seg in (".", "..") for seg in prefix.split("/")):
        problems.append("must be a normalised path (no //, . or .. segments)")
    if any(ch in prefix for ch in "%?#;\\") or any(ord(ch) < 0x21 for ch in prefix):
        problems.append("must not contain %, ?, #, ;, \\, spaces or control characters")
    if prefix == AUTH_PREFIX or prefix.startswith(AUTH_PREFIX + "/"):
        problems.append(f"{AUTH_PREFIX} is reserved for the gateway's own auth API")
    return problems


def _upstream_problems(upstream: str) -> list[str]:
    parts = urlsplit(upstream)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return [f"must be an http:// or https:// URL with a host, got {upstream!r}"]
    problems = []
    if parts.query or parts.fragment:
        problems.append("must not have a query or a fragment")
    try:
        _ = parts.port
    except ValueError:
        problems.append("has an invalid port")
    return problems


def _check_misc(cfg: GatewayConfig) -> list[str]:
    errors = []
    if cfg.auth.password.min_length > cfg.auth.password.max_length:
        errors.append("auth.password.min_length: cannot exceed auth.password.max_length")
    for key in ("access_ttl", "refresh_ttl"):
        ttl = getattr(cfg.jwt, key)
        if ttl < 1 or ttl != int(ttl):
            errors.append(f"jwt.{key}: must be a whole number of seconds, at least 1s")
    if cfg.jwt.refresh_ttl < cfg.jwt.access_ttl:
        errors.append("jwt.refresh_ttl: must not be shorter than jwt.access_ttl")
    for key in ("email_code_ttl", "registration_token_ttl", "password_reset_ttl"):
        ttl = getattr(cfg.auth, key)
        if ttl < 1 or ttl != int(ttl):
            errors.append(f"auth.{key}: must be a whole number of seconds, at least 1s")
    return errors
