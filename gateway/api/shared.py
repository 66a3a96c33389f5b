"""What every handler of ``/api/v1/auth`` uses: the service, JSON in, replies and bodies out."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from auth.service import AuthService, LoginResult, TokenPair, UserView
from config import GatewayConfig
from gateway.api.bodies import bearer_token, read_json_object
from gateway.appkeys import CONFIG, SERVICES
from gateway.envelope import json_response
from gateway.errors import Unauthorized

MAX_AUTH_BODY = 64 * 1024


def auth_service(request: web.Request) -> AuthService:
    """The AuthService of the running gateway."""
    return request.config_dict[SERVICES].auth_service()


def gateway_config(request: web.Request) -> GatewayConfig:
    """The gateway's configuration."""
    return request.config_dict[CONFIG]


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object (at most 64 KiB)."""
    limit = min(MAX_AUTH_BODY, gateway_config(request).server.max_body_size)
    return await read_json_object(request, limit)


def reply(request: web.Request, data: dict[str, Any], status: int = 200) -> web.Response:
    """A JSON success body, in the configured key case."""
    camel = gateway_config(request).api.json_case == "camel"
    return json_response(data, status=status, camel=camel)


def client_ip(request: web.Request) -> str:
    """The client's address (X-Forwarded-For only from trusted proxies)."""
    return request.config_dict[SERVICES].trusted.client_ip(request)


def access_token(request: web.Request) -> str:
    """The bearer token of the request, or 401."""
    token = bearer_token(request)
    if not token:
        raise Unauthorized("missing bearer token")
    return token


def user_body(user: UserView, *, username: bool = True, verified: bool = False) -> dict[str, Any]:
    """The ``user`` object of the seed examples."""
    body: dict[str, Any] = {
        "email": user.email,
        "first_name": user.first_name,
        "id": user.id,
        "is_admin": user.is_admin,
        "last_name": user.last_name,
    }
    if username:
        body["username"] = user.username
    if verified:
        body["email_verified"] = user.email_verified
    return body


def tokens_body(pair: TokenPair) -> dict[str, Any]:
    """The token fields of /login and /refresh."""
    return {
        "access_token": pair.access_token,
        "refresh_token": pair.refresh_token,
        "expires_in": pair.expires_in,
        "refresh_expires_in": pair.refresh_expires_in,
    }


def login_body(result: LoginResult, *, verified: bool = False) -> dict[str, Any]:
    """The /login answer (``verified``: with the user's ``email_verified``)."""
    return {**tokens_body(result.tokens), "user": user_body(result.user, verified=verified)}
