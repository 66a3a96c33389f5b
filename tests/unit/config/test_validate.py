"""Cross-field rules of ``gateway.yaml`` (config/validate.py)."""

from __future__ import annotations

from typing import Any

import pytest

from config import ConfigError, GatewayConfig, build_config
from config.validate import AUTH_PREFIX, MIN_SECRET_BYTES, validate

GOOD_SECRET = "k" * MIN_SECRET_BYTES
PG_URL = "postgresql+asyncpg://gateway:pw@db:5432/gateway"


def route(**fields: Any) -> dict[str, Any]:
    """A valid route, with ``fields`` changed."""
    base: dict[str, Any] = {"name": "orders", "prefix": "/api/v1/orders"}
    base["upstream"] = "http://127.0.0.1:9000"
    base.update(fields)
    return base


def check(raw: dict[str, Any]) -> list[str]:
    """Cross-field problems of a document whose types are valid."""
    return validate(GatewayConfig.model_validate(raw))


def check_routes(*routes: dict[str, Any]) -> list[str]:
    return check({"routes": list(routes)})


def test_defaults_are_sound() -> None:
    assert validate(GatewayConfig()) == []


def test_sound_full_config() -> None:
    raw = {
        "server": {"workers": 4},
        "database": {"url": PG_URL},
        "redis": {"url": "rediss://cache:6380/0"},
        "jwt": {"secret": GOOD_SECRET, "access_ttl": "15m", "refresh_ttl": "15m"},
        "auth": {"password": {"min_length": 12, "max_length": 12}},
        "email": {"backend": "smtp", "smtp": {"tls": True}},
        "cors": {
            "allow_origins": ["https://app.example.com", "http://localhost:3000"],
            "allow_methods": ["GET", "HEAD", "OPTIONS"],
        },
        "routes": [
            route(),
            route(name="root", prefix="/", upstream="https://web.internal"),
            route(name="admin", prefix="/admin", admin=True, methods=["GET", "DELETE"]),
            route(name="public", prefix="/api/v1/authx", auth="none"),
        ],
    }
    assert check(raw) == []


def test_build_config_runs_the_cross_field_rules() -> None:
    with pytest.raises(ConfigError) as info:
        build_config({"server": {"workers": 2}}, env={})
    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith("server.workers: ")


# --- database and redis


@pytest.mark.parametrize(
    "url",
    [
        "sqlite+aiosqlite:///./gateway.db",
        "sqlite+aiosqlite:////var/lib/gateway/gateway.db",
        "sqlite+aiosqlite:///:memory:",
        PG_URL,
        "postgresql+asyncpg://db/gateway",
    ],
)
def test_supported_database_urls(url: str) -> None:
    assert check({"database": {"url": url}, "jwt": {"secret": GOOD_SECRET}}) == []


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///gateway.db",  # sync driver
        "postgresql://db/gateway",  # sync driver
        "postgresql+psycopg://db/gateway",
        "mysql+aiomysql://db/gateway",
        "gateway.db",
        "",
    ],
)
def test_unsupported_database_urls(url: str) -> None:
    assert check({"database": {"url": url}, "jwt": {"secret": GOOD_SECRET}}) == [
        "database.url: must start with sqlite+aiosqlite:// or postgresql+asyncpg://"
    ]


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379/0", "rediss://:pw@cache:6380/1", "unix:///run/redis.sock"]
)
def test_supported_redis_urls(url: str) -> None:
    assert check({"redis": {"url": url}}) == []


@pytest.mark.parametrize("url", ["http://cache:6379", "127.0.0.1:6379", "cache", "memcached://x"])
def test_unsupported_redis_urls(url: str) -> None:
    assert check({"redis": {"url": url}}) == [
        "redis.url: must be a redis://, rediss:// or unix:// URL"
    ]


@pytest.mark.parametrize("workers", [2, 8, 256])
def test_several_workers_need_redis(workers: int) -> None:
    problems = check({"server": {"workers": workers}})
    assert len(problems) == 1
    assert problems[0].startswith("server.workers: more than one worker needs redis.url")


def test_several_workers_with_redis() -> None:
    assert check({"server": {"workers": 4}, "redis": {"url": "redis://cache:6379/0"}}) == []


def test_one_worker_without_redis() -> None:
    assert check({"server": {"workers": 1}, "redis": {"url": None}}) == []


# --- secrets


@pytest.mark.parametrize(
    "secret",
    [
        "x",
        "k" * (MIN_SECRET_BYTES - 1),
        "é" * 15 + "a",  # 31 bytes in UTF-8
    ],
)
def test_short_jwt_secret(secret: str) -> None:
    assert check({"jwt": {"secret": secret}}) == [
        f"jwt.secret: must be at least {MIN_SECRET_BYTES} bytes"
    ]


@pytest.mark.parametrize("secret", ["k" * MIN_SECRET_BYTES, "é" * 16, "k" * 200])
def test_long_enough_jwt_secret(secret: str) -> None:
    assert check({"jwt": {"secret": secret}}) == []


def test_secret_length_is_counted_in_bytes_not_characters() -> None:
    # 16 characters but 32 bytes: accepted; 31 ASCII characters: refused.
    assert check({"jwt": {"secret": "é" * 16}}) == []
    assert check({"jwt": {"secret": "k" * 31}}) != []


def test_short_secret_is_refused_with_sqlite_too() -> None:
    assert check({"jwt": {"secret": "short"}})[0].startswith("jwt.secret: ")


def test_postgres_without_a_secret_is_a_sound_config() -> None:
    """``gateway migrate`` needs no signing secret; where a key is needed, ``auth.keys``
    refuses it (tests/unit/auth/test_keys.py, and the CLI's tests)."""
    assert check({"database": {"url": PG_URL}}) == []


def test_postgres_with_secret() -> None:
    assert check({"database": {"url": PG_URL}, "jwt": {"secret": GOOD_SECRET}}) == []


def test_sqlite_generates_its_own_secret() -> None:
    assert check({"jwt": {"secret": None}}) == []


def test_postgres_with_unset_secret_variable() -> None:
    """The shipped ``secret: ${GATEWAY_JWT_SECRET}`` with nothing set, on PostgreSQL: none."""
    cfg = build_config(
        {"jwt": {"secret": "${GATEWAY_JWT_SECRET}"}}, env={"GATEWAY_DATABASE_URL": PG_URL}
    )
    assert cfg.jwt.secret is None


@pytest.mark.parametrize("algorithm", ["RS256", "ES256", "EdDSA"])
def test_key_pair_needs_a_private_key_not_a_secret(algorithm: str) -> None:
    assert check({"jwt": {"algorithm": algorithm}}) == [
        f"jwt.private_key_file: required with {algorithm} (the PEM private key that signs tokens)"
    ]
    assert check(
        {"jwt": {"algorithm": algorithm, "private_key_file": "k.pem", "secret": GOOD_SECRET}}
    ) == [
        f"jwt.secret: not used with {algorithm} (tokens are signed with jwt.private_key_file); "
        "remove it, or unset GATEWAY_JWT_SECRET"
    ]


def test_key_pair_on_postgres_needs_no_secret() -> None:
    raw = {
        "database": {"url": PG_URL},
        "jwt": {"algorithm": "ES256", "private_key_file": "k.pem", "public_key_files": ["o.pem"]},
    }
    assert check(raw) == []


def test_key_pair_with_unset_secret_variable() -> None:
    """``secret: ${GATEWAY_JWT_SECRET}`` left in the file, nothing set: not a secret."""
    cfg = build_config(
        {"jwt": {"algorithm": "EdDSA", "private_key_file": "k.pem", "secret": "${X}"}},
        env={"GATEWAY_DATABASE_URL": PG_URL},
    )
    assert cfg.jwt.secret is None


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"private_key_file": "k.pem"}, "jwt.private_key_file"),
        ({"public_key_files": ["o.pem"]}, "jwt.public_key_files"),
    ],
)
def test_key_files_only_with_key_pairs(section: dict[str, Any], key: str) -> None:
    assert check({"jwt": {"secret": GOOD_SECRET, **section}}) == [
        f"{key}: only with RS256, ES256 or EdDSA (HS256 signs with jwt.secret)"
    ]


# --- email


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:8080/api/v1/auth/verify-email",
        "https://app.example.com/verify?token=",
        "https://app.example.com/verify?token={TOKEN}",
        "https://app.example.com/verify?token={ token }",
    ],
)
def test_verify_url_needs_the_token_placeholder(url: str) -> None:
    assert check({"email": {"verify_url": url}}) == [
        "email.verify_url: must contain the placeholder {token}"
    ]


@pytest.mark.parametrize(
    "url",
    [
        "https://app.example.com/verify?token={token}",
        "https://app.example.com/verify/{token}",
        "myapp://verify?t={token}",
    ],
)
def test_verify_url_with_the_placeholder(url: str) -> None:
    assert check({"email": {"verify_url": url}}) == []


@pytest.mark.parametrize("sender", ["Gateway", "no-reply", ""])
def test_email_from_needs_an_address(sender: str) -> None:
    assert check({"email": {"from": sender}}) == ["email.from: must contain an email address"]


def test_email_from_plain_address() -> None:
    assert check({"email": {"from": "no-reply@example.com"}}) == []


def test_smtp_tls_and_starttls_are_exclusive() -> None:
    assert check({"email": {"smtp": {"tls": True, "starttls": True}}}) == [
        "email.smtp: tls and starttls cannot both be true"
    ]
    assert check({"email": {"smtp": {"tls": True}}}) == []
    assert check({"email": {"smtp": {"starttls": True}}}) == []


# --- CORS


def test_wildcard_origin_with_credentials() -> None:
    assert check({"cors": {"allow_origins": ["*"], "allow_credentials": True}}) == [
        "cors.allow_origins[0]: '*' cannot be combined with allow_credentials"
    ]


def test_wildcard_origin_names_its_index() -> None:
    raw = {"cors": {"allow_origins": ["https://a.example.com", "*"]}}
    assert check(raw) == ["cors.allow_origins[1]: '*' cannot be combined with allow_credentials"]


def test_wildcard_origin_without_credentials() -> None:
    assert check({"cors": {"allow_origins": ["*"], "allow_credentials": False}}) == []


@pytest.mark.parametrize(
    "origin",
    [
        "https://app.example.com",
        "http://localhost:8080",
        "http://127.0.0.1:3000",
        "http://[::1]:8080",
    ],
)
def test_good_origins(origin: str) -> None:
    assert check({"cors": {"allow_origins": [origin]}}) == []


@pytest.mark.parametrize(
    "origin",
    [
        "localhost:8080",
        "app.example.com",
        "https://app.example.com/",  # browsers never send a trailing slash
        "https://app.example.com/path",
        "ftp://files.example.com",
        "https://",
        "null",
        "",
    ],
)
def test_bad_origins(origin: str) -> None:
    raw = {"cors": {"allow_origins": ["http://ok.example.com", origin]}}
    assert check(raw) == [f"cors.allow_origins[1]: must be scheme://host[:port], got {origin!r}"]


@pytest.mark.parametrize("method", ["FETCH", "get", "Post", "", "GET "])
def test_bad_cors_methods(method: str) -> None:
    assert check({"cors": {"allow_methods": ["GET", method]}}) == [
        f"cors.allow_methods[1]: unknown HTTP method {method!r}"
    ]


def test_all_standard_methods_are_known() -> None:
    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"]
    assert check({"cors": {"allow_methods": methods}}) == []
    assert check_routes(route(methods=methods)) == []


# --- routes


def test_duplicate_route_names() -> None:
    problems = check_routes(
        route(name="a", prefix="/a"),
        route(name="b", prefix="/b"),
        route(name="a", prefix="/c"),
        route(name="a", prefix="/d"),
    )
    assert problems == [
        "routes[2].name: duplicate of routes[0]",
        "routes[3].name: duplicate of routes[0]",
    ]


def test_duplicate_route_prefixes() -> None:
    problems = check_routes(
        route(name="a", prefix="/x"),
        route(name="b", prefix="/y"),
        route(name="c", prefix="/y"),
    )
    assert problems == ["routes[2].prefix: duplicate of routes[1]"]


def test_nested_prefixes_are_not_duplicates() -> None:
    problems = check_routes(
        route(name="a", prefix="/api"),
        route(name="b", prefix="/api/v1"),
        route(name="c", prefix="/api/v1/orders"),
        route(name="d", prefix="/api/v1/ordersx"),
    )
    assert problems == []


@pytest.mark.parametrize(
    "prefix",
    ["/", "/a", "/api/v1/orders", "/api/v1/authx", "/api/v1", "/api", "/v1.2/x", "/a-b_c~d"],
)
def test_good_prefixes(prefix: str) -> None:
    assert check_routes(route(prefix=prefix)) == []


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        ("api/v1/orders", "must start with /"),
        ("", "must start with /"),
        ("/api/v1/orders/", "must not end with / (a prefix matches on segment boundaries)"),
        ("/a//b", "must be a normalised path (no //, . or .. segments)"),
        ("/a/./b", "must be a normalised path (no //, . or .. segments)"),
        ("/a/../b", "must be a normalised path (no //, . or .. segments)"),
        ("/..", "must be a normalised path (no //, . or .. segments)"),
        ("/a%2fb", "must not contain %, ?, #, ;, \\, spaces or control characters"),
        ("/a?b=1", "must not contain %, ?, #, ;, \\, spaces or control characters"),
        ("/a#b", "must not contain %, ?, #, ;, \\, spaces or control characters"),
        ("/a;b", "must not contain %, ?, #, ;, \\, spaces or control characters"),
        ("/a\\b", "must not contain %, ?, #, ;, \\, spaces or control characters"),
        ("/a b", "must not contain %, ?, #, ;, \\, spaces or control characters"),
        ("/a\tb", "must not contain %, ?, #, ;, \\, spaces or control characters"),
        ("/a\x00b", "must not contain %, ?, #, ;, \\, spaces or control characters"),
        (AUTH_PREFIX, "/api/v1/auth is reserved for the gateway's own auth API"),
        ("/api/v1/auth/login", "/api/v1/auth is reserved for the gateway's own auth API"),
    ],
)
def test_bad_prefixes(prefix: str, message: str) -> None:
    problems = check_routes(route(name="ok", prefix="/ok"), route(prefix=prefix))
    assert problems == [f"routes[1].prefix: {message}"]


def test_reserved_prefix_constant() -> None:
    assert AUTH_PREFIX == "/api/v1/auth"


def test_prefix_with_several_faults_reports_each() -> None:
    problems = check_routes(route(prefix="/api/v1/auth//x/"))
    assert problems == [
        "routes[0].prefix: must not end with / (a prefix matches on segment boundaries)",
        "routes[0].prefix: must be a normalised path (no //, . or .. segments)",
        "routes[0].prefix: /api/v1/auth is reserved for the gateway's own auth API",
    ]


@pytest.mark.parametrize(
    "upstream",
    [
        "http://127.0.0.1:9000",
        "https://orders.internal",
        "http://orders:8000/base/path",
        "http://[::1]:8080",
        "HTTP://orders.internal",
    ],
)
def test_good_upstreams(upstream: str) -> None:
    assert check_routes(route(upstream=upstream)) == []


@pytest.mark.parametrize(
    "upstream",
    [
        "127.0.0.1:9000",
        "orders.internal",
        "ftp://orders.internal",
        "ws://orders.internal",
        "http://",
        "http:///path",
        "",
    ],
)
def test_upstream_must_be_http_url_with_host(upstream: str) -> None:
    assert check_routes(route(upstream=upstream)) == [
        f"routes[0].upstream: must be an http:// or https:// URL with a host, got {upstream!r}"
    ]


@pytest.mark.parametrize(
    "upstream", ["http://orders?x=1", "http://orders/#frag", "http://orders/p?q#f"]
)
def test_upstream_without_query_or_fragment(upstream: str) -> None:
    assert check_routes(route(upstream=upstream)) == [
        "routes[0].upstream: must not have a query or a fragment"
    ]


@pytest.mark.parametrize("upstream", ["http://orders:99999", "http://orders:abc", "http://o:-1"])
def test_upstream_with_invalid_port(upstream: str) -> None:
    assert check_routes(route(upstream=upstream)) == ["routes[0].upstream: has an invalid port"]


@pytest.mark.parametrize("method", ["get", "FETCH", "", "*"])
def test_unknown_route_methods(method: str) -> None:
    assert check_routes(route(methods=["GET", "POST", method])) == [
        f"routes[0].methods[2]: unknown HTTP method {method!r}"
    ]


def test_absent_and_empty_methods_are_accepted() -> None:
    assert check_routes(route(methods=None)) == []
    assert check_routes(route(methods=[])) == []


@pytest.mark.parametrize("auth", ["optional", "none"])
def test_admin_route_needs_required_auth(auth: str) -> None:
    assert check_routes(route(admin=True, auth=auth)) == ["routes[0].admin: needs auth: required"]


def test_admin_route_with_required_auth() -> None:
    assert check_routes(route(admin=True, auth="required")) == []


def test_route_problems_are_all_reported_in_order() -> None:
    problems = check_routes(
        route(name="a", prefix="/a"),
        route(name="a", prefix="/a/", upstream="ftp://x", methods=["get"], admin=True, auth="none"),
    )
    assert problems == [
        "routes[1].name: duplicate of routes[0]",
        "routes[1].prefix: must not end with / (a prefix matches on segment boundaries)",
        "routes[1].upstream: must be an http:// or https:// URL with a host, got 'ftp://x'",
        "routes[1].methods[0]: unknown HTTP method 'get'",
        "routes[1].admin: needs auth: required",
    ]


# --- password policy and TTLs


def test_min_length_above_max_length() -> None:
    raw = {"auth": {"password": {"min_length": 20, "max_length": 16}}}
    assert check(raw) == ["auth.password.min_length: cannot exceed auth.password.max_length"]


def test_min_length_equal_to_max_length() -> None:
    assert check({"auth": {"password": {"min_length": 16, "max_length": 16}}}) == []


@pytest.mark.parametrize(
    ("access", "refresh"), [("2h", "1h"), ("30d", "29d"), ("61s", "1m"), (7201, "2h")]
)
def test_refresh_ttl_shorter_than_access_ttl(access: Any, refresh: Any) -> None:
    assert check({"jwt": {"access_ttl": access, "refresh_ttl": refresh}}) == [
        "jwt.refresh_ttl: must not be shorter than jwt.access_ttl"
    ]


@pytest.mark.parametrize(("access", "refresh"), [("2h", "2h"), ("15m", "30d"), (60, "1m")])
def test_refresh_ttl_not_shorter(access: Any, refresh: Any) -> None:
    assert check({"jwt": {"access_ttl": access, "refresh_ttl": refresh}}) == []


# --- all together


def test_every_rule_reported_at_once() -> None:
    raw = {
        "server": {"workers": 3},
        "database": {"url": "mysql://db/gw"},
        "redis": {"url": None},
        "jwt": {"secret": "short", "access_ttl": "1d", "refresh_ttl": "1h"},
        "auth": {"password": {"min_length": 64, "max_length": 32}},
        "email": {
            "from": "nobody",
            "verify_url": "https://x/v",
            "smtp": {"tls": True, "starttls": True},
        },
        "cors": {"allow_origins": ["*", "x"], "allow_methods": ["YELL"]},
        "routes": [route(), route(prefix="/api/v1/auth", upstream="x", methods=["x"])],
    }
    keys = [problem.split(": ", 1)[0] for problem in check(raw)]
    assert keys == [
        "database.url",
        "server.workers",
        "jwt.secret",
        "email.verify_url",
        "email.from",
        "email.smtp",
        "cors.allow_origins[0]",
        "cors.allow_origins[1]",
        "cors.allow_methods[0]",
        "routes[1].name",
        "routes[1].prefix",
        "routes[1].upstream",
        "routes[1].methods[0]",
        "auth.password.min_length",
        "jwt.refresh_ttl",
    ]
