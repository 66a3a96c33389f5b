"""Loading and validating ``gateway.yaml``. Imports nothing from ``auth`` or ``gateway``."""

from config.loader import ENV_OVERRIDES, ConfigError, build_config, load_config
from config.model import (
    KEY_PAIR_ALGORITHMS,
    ApiConfig,
    AuthConfig,
    CorsConfig,
    DatabaseConfig,
    EmailConfig,
    GatewayConfig,
    JwtConfig,
    PasswordConfig,
    RateLimitConfig,
    RedisConfig,
    RouteConfig,
    RouteRateLimit,
    ServerConfig,
    SessionsConfig,
    SmtpConfig,
)
from config.render import mask_url, render

__all__ = [
    "ENV_OVERRIDES",
    "KEY_PAIR_ALGORITHMS",
    "ApiConfig",
    "AuthConfig",
    "ConfigError",
    "CorsConfig",
    "DatabaseConfig",
    "EmailConfig",
    "GatewayConfig",
    "JwtConfig",
    "PasswordConfig",
    "RateLimitConfig",
    "RedisConfig",
    "RouteConfig",
    "RouteRateLimit",
    "ServerConfig",
    "SessionsConfig",
    "SmtpConfig",
    "build_config",
    "load_config",
    "mask_url",
    "render",
]
