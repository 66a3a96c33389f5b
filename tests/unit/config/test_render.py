"""``gateway check-config`` output: the effective config as YAML, secrets masked."""

from __future__ import annotations

import math
from typing import Any

import pytest
import yaml

from config import ConfigError, GatewayConfig, build_config, mask_url, render
from config.render import MASK

JWT_SECRET = "jwt-secret-0123456789-abcdefghijklmnop"
SMTP_PASSWORD = "smtp-pass-XYZ"
DB_PASSWORD = "db-pass-QRS"
REDIS_PASSWORD = "redis-pass-TUV"


def rendered(cfg: GatewayConfig) -> dict[str, Any]:
    """``render(cfg)`` parsed back into data."""
    data = yaml.safe_load(render(cfg))
    assert isinstance(data, dict)
    return data


def route(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "orders", "prefix": "/api/v1/orders"}
    base["upstream"] = "http://127.0.0.1:9000"
    base.update(fields)
    return base


@pytest.fixture
def secret_cfg() -> GatewayConfig:
    return build_config(
        {
            "server": {"workers": 2},
            "database": {"url": f"postgresql+asyncpg://gateway:{DB_PASSWORD}@db:5432/gw"},
            "redis": {"url": "${REDIS_URL}"},
            "jwt": {"secret": "${JWT}"},
            "email": {"smtp": {"username": "mailer", "password": SMTP_PASSWORD}},
        },
        env={"JWT": JWT_SECRET, "REDIS_URL": f"redis://default:{REDIS_PASSWORD}@cache:6379/0"},
    )


# --- masking


def test_no_secret_appears_in_the_output(secret_cfg: GatewayConfig) -> None:
    text = render(secret_cfg)
    for secret in (JWT_SECRET, SMTP_PASSWORD, DB_PASSWORD, REDIS_PASSWORD):
        assert secret not in text


def test_jwt_secret_is_masked(secret_cfg: GatewayConfig) -> None:
    assert rendered(secret_cfg)["jwt"]["secret"] == MASK


def test_smtp_password_is_masked_username_kept(secret_cfg: GatewayConfig) -> None:
    smtp = rendered(secret_cfg)["email"]["smtp"]
    assert smtp["password"] == MASK
    assert smtp["username"] == "mailer"


def test_password_inside_database_url_is_masked(secret_cfg: GatewayConfig) -> None:
    assert rendered(secret_cfg)["database"]["url"] == (
        f"postgresql+asyncpg://gateway:{MASK}@db:5432/gw"
    )


def test_password_inside_redis_url_is_masked(secret_cfg: GatewayConfig) -> None:
    assert rendered(secret_cfg)["redis"]["url"] == f"redis://default:{MASK}@cache:6379/0"


def test_render_does_not_change_the_config(secret_cfg: GatewayConfig) -> None:
    render(secret_cfg)
    assert secret_cfg.jwt.secret == JWT_SECRET
    assert secret_cfg.email.smtp.password == SMTP_PASSWORD
    assert DB_PASSWORD in secret_cfg.database.url


def test_unset_secrets_are_shown_as_null() -> None:
    data = rendered(build_config({"jwt": {"secret": "${UNSET}"}}, env={}))
    assert data["jwt"]["secret"] is None
    assert data["email"]["smtp"]["password"] is None
    assert data["redis"]["url"] is None


def test_urls_without_password_are_unchanged() -> None:
    cfg = build_config(
        {
            "database": {"url": "sqlite+aiosqlite:///./gateway.db"},
            "redis": {"url": "redis://cache:6379/0"},
            "cors": {"allow_origins": ["https://app.example.com", "http://localhost:8080"]},
            "email": {"verify_url": "https://app.example.com/verify?token={token}"},
            "routes": [route(upstream="http://orders.internal:9000/base")],
        },
        env={},
    )
    data = rendered(cfg)
    assert data["database"]["url"] == "sqlite+aiosqlite:///./gateway.db"
    assert data["redis"]["url"] == "redis://cache:6379/0"
    assert data["cors"]["allow_origins"] == ["https://app.example.com", "http://localhost:8080"]
    assert data["email"]["verify_url"] == "https://app.example.com/verify?token={token}"
    assert data["routes"][0]["upstream"] == "http://orders.internal:9000/base"


def test_route_upstream_credentials_are_masked() -> None:
    cfg = build_config({"routes": [route(upstream="http://svc:s3cr3t@orders:9000")]}, env={})
    assert rendered(cfg)["routes"][0]["upstream"] == f"http://svc:{MASK}@orders:9000"


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql+asyncpg://u:pw@db/gw", f"postgresql+asyncpg://u:{MASK}@db/gw"),
        ("postgresql+asyncpg://u:pw@db:5432/gw", f"postgresql+asyncpg://u:{MASK}@db:5432/gw"),
        ("redis://:pw@cache:6379/0", f"redis://:{MASK}@cache:6379/0"),
        ("rediss://user:p:w@cache", f"rediss://user:{MASK}@cache"),
        ("REDIS://u:pw@cache", f"REDIS://u:{MASK}@cache"),
        ("redis://cache:6379/0", "redis://cache:6379/0"),
        ("redis://user@cache:6379/0", "redis://user@cache:6379/0"),
        ("sqlite+aiosqlite:///./gateway.db", "sqlite+aiosqlite:///./gateway.db"),
        ("not a url", "not a url"),
        ("", ""),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_mask_url_hides_a_password_containing_at() -> None:
    cfg = build_config({"redis": {"url": "redis://:p@ss-word@cache:6379/0"}}, env={})
    assert rendered(cfg)["redis"]["url"] == f"redis://:{MASK}@cache:6379/0"


def test_mask_url_leaves_an_at_sign_in_the_path_alone() -> None:
    cfg = build_config({"routes": [route(upstream="http://127.0.0.1:9000/users/@me")]}, env={})
    assert rendered(cfg)["routes"][0]["upstream"] == "http://127.0.0.1:9000/users/@me"


# --- units and shape


def test_durations_and_sizes_are_rendered_in_units() -> None:
    cfg = build_config(
        {
            "server": {"max_body_size": "10MiB", "shutdown_timeout": 10},
            "jwt": {"access_ttl": "2h", "refresh_ttl": "30d"},
            "routes": [route(timeout="250ms")],
        },
        env={},
    )
    data = rendered(cfg)
    assert data["server"]["max_body_size"] == "10MiB"
    assert data["server"]["shutdown_timeout"] == "10s"
    assert data["jwt"]["access_ttl"] == "2h"
    assert data["jwt"]["refresh_ttl"] == "30d"
    assert data["routes"][0]["timeout"] == "250ms"


def test_durations_written_as_seconds_render_in_largest_unit() -> None:
    cfg = build_config({"jwt": {"access_ttl": 7200, "refresh_ttl": "2592000"}}, env={})
    data = rendered(cfg)
    assert data["jwt"]["access_ttl"] == "2h"
    assert data["jwt"]["refresh_ttl"] == "30d"


def test_sizes_written_as_bytes_render_in_binary_units() -> None:
    data = rendered(build_config({"server": {"max_body_size": 10 * 1024 * 1024}}, env={}))
    assert data["server"]["max_body_size"] == "10MiB"


def test_render_uses_yaml_key_names_and_order() -> None:
    data = rendered(build_config({}, env={}))
    assert list(data) == [
        "server",
        "database",
        "redis",
        "jwt",
        "auth",
        "sessions",
        "email",
        "cors",
        "api",
        "logging",
        "routes",
    ]
    assert "from" in data["email"]
    assert "from_" not in data["email"]


def test_render_of_defaults_is_plain_yaml() -> None:
    text = render(GatewayConfig())
    assert "!!python" not in text
    assert text.startswith("server:\n")


def test_render_keeps_non_ascii_text() -> None:
    cfg = build_config({"email": {"from": "Geçit <no-reply@example.com>"}}, env={})
    assert "Geçit" in render(cfg)


# --- round trips


@pytest.mark.parametrize(
    "raw",
    [
        {},
        {
            "server": {
                "host": "0.0.0.0",
                "port": 9000,
                "workers": 2,
                "max_body_size": "512KB",
                "trusted_proxies": ["10.0.0.0/8", "::1"],
                "shutdown_timeout": "1500ms",
                "access_log": False,
            },
            "redis": {"url": "redis://cache:6379/0", "key_prefix": "gw:"},
            "jwt": {
                "algorithm": "HS512",
                "access_ttl": "10m",
                "refresh_ttl": "7d",
                "issuer": "gateway",
                "audience": "apps",
                "leeway": "30s",
            },
            "auth": {
                "password": {"min_length": 10, "max_length": 128, "bcrypt_cost": 4},
                "email_verification_ttl": "2d",
                "require_verified_email": False,
                "resend_interval": 90,
            },
            "email": {
                "backend": "smtp",
                "from": "Ops <ops@example.org>",
                "smtp": {"host": "mx", "port": 587, "username": "u", "starttls": True},
                "verify_url": "https://app.example.com/v/{token}",
            },
            "cors": {
                "allow_origins": ["https://app.example.com"],
                "allow_credentials": False,
                "expose_headers": ["X-Request-Id"],
                "max_age": 0,
            },
            "api": {"json_case": "camel"},
            "logging": {"level": "DEBUG"},
            "routes": [
                route(),
                route(
                    name="admin",
                    prefix="/admin",
                    upstream="https://admin.internal/base",
                    admin=True,
                    methods=["GET"],
                    strip_prefix=True,
                    timeout="2m",
                    preserve_host=True,
                ),
                route(name="open", prefix="/open", auth="none", timeout="250ms"),
            ],
        },
    ],
)
def test_render_round_trips(raw: dict[str, Any]) -> None:
    """Without secrets, the rendered YAML loads back into the same config."""
    cfg = build_config(raw, env={})
    assert build_config(yaml.safe_load(render(cfg)), env={}) == cfg


def test_render_round_trips_except_for_masked_secrets(secret_cfg: GatewayConfig) -> None:
    data = yaml.safe_load(render(secret_cfg))
    data["jwt"]["secret"] = JWT_SECRET
    data["email"]["smtp"]["password"] = SMTP_PASSWORD
    data["database"]["url"] = secret_cfg.database.url
    data["redis"]["url"] = secret_cfg.redis.url
    assert build_config(data, env={}) == secret_cfg


@pytest.mark.parametrize("text", ["2h", "30d", "10m", "30s", "250ms", "1d", "90m"])
def test_duration_round_trips_through_render(text: str) -> None:
    cfg = build_config({"routes": [route(timeout=text)]}, env={})
    assert rendered(cfg)["routes"][0]["timeout"] == text


@pytest.mark.parametrize("text", ["10MiB", "512KiB", "1GiB", "1000"])
def test_size_round_trips_through_render(text: str) -> None:
    cfg = build_config({"server": {"max_body_size": text}}, env={})
    assert str(rendered(cfg)["server"]["max_body_size"]) == text


def test_an_accepted_config_always_renders() -> None:
    try:
        cfg = build_config({"routes": [route(timeout=math.inf)]}, env={})
    except ConfigError:
        return  # refusing it at load time would be fine too
    render(cfg)
