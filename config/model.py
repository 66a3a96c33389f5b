"""Typed, frozen models of ``gateway.yaml``; every default is named here.

Unknown keys are errors (``extra="forbid"``) and values are never coerced across kinds
(``strict`` on scalars), so a typo or a wrong type stops start-up with its key path.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictBool,
    StrictInt,
    StrictStr,
)

from config.units import format_duration, format_size, parse_duration, parse_size

Duration = Annotated[
    float, BeforeValidator(parse_duration), PlainSerializer(format_duration, return_type=str)
]
Size = Annotated[int, BeforeValidator(parse_size), PlainSerializer(format_size, return_type=str)]


def _int_from_text(value: object) -> object:
    """Accept "8080" as 8080, so that ``${PORT}`` and ``GATEWAY_*`` values can fill int keys."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return value


def _bool_from_text(value: object) -> object:
    """Accept true/false/yes/no/1/0 spelled as text, for ``${VAR}`` and ``GATEWAY_*`` values."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "yes", "on", "1"):
            return True
        if text in ("false", "no", "off", "0"):
            return False
    return value


Int = Annotated[StrictInt, BeforeValidator(_int_from_text)]
Bool = Annotated[StrictBool, BeforeValidator(_bool_from_text)]


def _empty_to_none(value: object) -> object:
    """``${VAR}`` with VAR unset expands to "": treat that as "not configured"."""
    return None if value == "" else value


OptionalSecret = Annotated[StrictStr | None, BeforeValidator(_empty_to_none)]
OptionalStr = Annotated[StrictStr | None, BeforeValidator(_empty_to_none)]

HTTP_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)


def _check_network(value: str) -> str:
    ipaddress.ip_network(value, strict=False)
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Model):
    """Listening socket, process count and request limits."""

    host: StrictStr = "127.0.0.1"
    port: Int = Field(default=8080, ge=0, le=65535)
    workers: Int = Field(default=1, ge=1, le=256)
    max_body_size: Size = 10 * 1024 * 1024
    trusted_proxies: list[Annotated[StrictStr, AfterValidator(_check_network)]] = []
    shutdown_timeout: Duration = 10.0
    access_log: Bool = True


class DatabaseConfig(_Model):
    """SQLAlchemy URL: ``sqlite+aiosqlite:///path`` (embedded) or ``postgresql+asyncpg://…``."""

    url: StrictStr = "sqlite+aiosqlite:///./gateway.db"
    pool_size: Int = Field(default=10, ge=1)
    echo: Bool = False


class RedisConfig(_Model):
    """Shared state between replicas; ``url: null`` keeps it in-process (one process only)."""

    url: OptionalStr = None
    key_prefix: StrictStr = "gateway:"


KEY_PAIR_ALGORITHMS = frozenset({"RS256", "ES256", "EdDSA"})


class JwtConfig(_Model):
    """Token signing. Only the configured algorithm is accepted when verifying.

    HS256/384/512 sign with ``secret``; RS256, ES256 and EdDSA with the PEM private key in
    ``private_key_file``, and the PEM public keys in ``public_key_files`` are accepted (and
    published in the JWKS) too: the keys that signed before a rotation, or the next one.
    """

    algorithm: Literal["HS256", "HS384", "HS512", "RS256", "ES256", "EdDSA"] = "HS256"
    secret: OptionalSecret = None
    private_key_file: OptionalStr = None
    public_key_files: list[StrictStr] = []
    access_ttl: Duration = Field(default=7200.0, gt=0)
    refresh_ttl: Duration = Field(default=2592000.0, gt=0)
    issuer: OptionalStr = None
    audience: OptionalStr = None
    leeway: Duration = 0.0


class PasswordConfig(_Model):
    """Password policy and bcrypt work factor."""

    min_length: Int = Field(default=6, ge=1, le=1024)
    max_length: Int = Field(default=1024, ge=8, le=4096)
    bcrypt_cost: Int = Field(default=12, ge=4, le=31)


class RateLimitConfig(_Model):
    """At most ``requests`` per ``per`` (a fixed window)."""

    requests: Int = Field(ge=1)
    per: Duration = Field(gt=0)


class AuthRateLimits(_Model):
    """Limits of the auth API, shared by every replica through the store."""

    login_per_account: RateLimitConfig = RateLimitConfig(requests=5, per=900.0)
    login_per_ip: RateLimitConfig = RateLimitConfig(requests=50, per=900.0)
    email_per_address: RateLimitConfig = RateLimitConfig(requests=5, per=3600.0)
    email_per_ip: RateLimitConfig = RateLimitConfig(requests=30, per=3600.0)


class AuthConfig(_Model):
    """Account rules of the auth API."""

    password: PasswordConfig = PasswordConfig()
    email_verification_ttl: Duration = Field(default=86400.0, gt=0)
    require_verified_email: Bool = True
    resend_interval: Duration = 60.0
    rate_limits: AuthRateLimits = AuthRateLimits()
    email_code_ttl: Duration = Field(default=600.0, gt=0)
    email_code_max_attempts: Int = Field(default=5, ge=1, le=100)
    registration_token_ttl: Duration = Field(default=900.0, gt=0)
    password_reset_ttl: Duration = Field(default=3600.0, gt=0)


class SessionsConfig(_Model):
    """How session state (revocations, admin flags, deactivation) reaches every replica."""

    poll_interval: Duration = Field(default=0.5, gt=0, le=60)
    refresh_grace: Duration = Field(default=2.0, ge=0, le=300)
    max_staleness: Duration = Field(default=30.0, gt=0)
    on_stale: Literal["open", "closed"] = "open"
    revocation_checks: Bool = True
    """False trusts a valid signature alone on proxied routes (benchmarking only)."""


class SmtpConfig(_Model):
    """Outgoing mail server for ``email.backend: smtp``."""

    host: StrictStr = "127.0.0.1"
    port: Int = Field(default=25, ge=1, le=65535)
    username: OptionalStr = None
    password: OptionalSecret = None
    starttls: Bool = False
    tls: Bool = False
    timeout: Duration = 10.0


class EmailConfig(_Model):
    """Where mail goes: the log (embedded default) or an SMTP server."""

    backend: Literal["log", "smtp"] = "log"
    from_: StrictStr = Field(default="Gateway <no-reply@example.com>", alias="from")
    smtp: SmtpConfig = SmtpConfig()
    verify_url: StrictStr = "http://localhost:8080/api/v1/auth/verify-email?token={token}"
    reset_url: StrictStr = "http://localhost:8080/reset-password?token={token}"
    templates_dir: OptionalStr = None
    """Folder of mail templates overriding the built-in ones (file by file)."""


class CorsConfig(_Model):
    """The one CORS policy applied at the edge to every route."""

    allow_origins: list[StrictStr] = ["http://localhost:8080"]
    allow_credentials: Bool = True
    allow_headers: list[StrictStr] = [
        "Authorization",
        "Content-Type",
        "Accept",
        "Origin",
        "X-Requested-With",
    ]
    allow_methods: list[StrictStr] = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    expose_headers: list[StrictStr] = []
    max_age: Int = Field(default=600, ge=0)


class ApiConfig(_Model):
    """Shape of the auth API's JSON responses."""

    json_case: Literal["snake", "camel"] = "snake"


class LoggingConfig(_Model):
    """Log level of the ``gateway`` process."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class RouteRateLimit(RateLimitConfig):
    """Per-route limit, counted per user (anonymous: per IP) or per client IP."""

    key: Literal["user", "ip"] = "user"


class RouteConfig(_Model):
    """One proxied route: requests under ``prefix`` go to ``upstream``."""

    name: StrictStr
    prefix: StrictStr
    upstream: StrictStr
    auth: Literal["required", "optional", "none"] = "required"
    admin: Bool = False
    methods: list[StrictStr] | None = None
    strip_prefix: Bool = False
    timeout: Duration = Field(default=30.0, gt=0)
    preserve_host: Bool = False
    rate_limit: RouteRateLimit | None = None


class GatewayConfig(_Model):
    """The whole of ``gateway.yaml``."""

    server: ServerConfig = ServerConfig()
    database: DatabaseConfig = DatabaseConfig()
    redis: RedisConfig = RedisConfig()
    jwt: JwtConfig = JwtConfig()
    auth: AuthConfig = AuthConfig()
    sessions: SessionsConfig = SessionsConfig()
    email: EmailConfig = EmailConfig()
    cors: CorsConfig = CorsConfig()
    api: ApiConfig = ApiConfig()
    logging: LoggingConfig = LoggingConfig()
    routes: list[RouteConfig] = []

    @property
    def uses_sqlite(self) -> bool:
        """True when the embedded SQLite database is configured."""
        return self.database.url.startswith("sqlite")
