"""``/api/v1/auth``: HTTP in and out of AuthService (SPEC §2); no rules live here."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from auth.schemas import (
    EmailInput,
    LoginInput,
    RefreshInput,
    RegisterInput,
    VerifyEmailInput,
    parse_input,
)
from auth.service import AuthService, LoginResult, TokenPair, UserView
from config import GatewayConfig
from gateway.api.bodies import bearer_token, read_json_object
from gateway.appkeys import CONFIG, SERVICES
from gateway.envelope import json_response
from gateway.errors import Unauthorized

PREFIX = "/api/v1/auth"
MAX_AUTH_BODY = 64 * 1024


def _service(request: web.Request) -> AuthService:
    return request.config_dict[SERVICES].auth_service()


def _cfg(request: web.Request) -> GatewayConfig:
    return request.config_dict[CONFIG]


async def _body(request: web.Request) -> dict[str, Any]:
    limit = min(MAX_AUTH_BODY, _cfg(request).server.max_body_size)
    return await read_json_object(request, limit)


def _reply(request: web.Request, data: dict[str, Any], status: int = 200) -> web.Response:
    return json_response(data, status=status, camel=_cfg(request).api.json_case == "camel")


def _client_ip(request: web.Request) -> str:
    return request.config_dict[SERVICES].trusted.client_ip(request)


def _token(request: web.Request) -> str:
    token = bearer_token(request)
    if token is None:
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


def login_body(result: LoginResult) -> dict[str, Any]:
    """The /login answer."""
    return {**tokens_body(result.tokens), "user": user_body(result.user)}


async def register(request: web.Request) -> web.Response:
    """POST /register → 201."""
    data = parse_input(RegisterInput, await _body(request), _cfg(request).auth.password)
    user = await _service(request).register(data, _client_ip(request))
    return _reply(
        request,
        {
            "message": "registration successful, please verify your email before login",
            "user": user_body(user, verified=True),
        },
        201,
    )


async def verify_email(request: web.Request) -> web.Response:
    """GET /verify-email?token=…"""
    data = parse_input(VerifyEmailInput, dict(request.query))
    await _service(request).verify_email(data.token)
    return _reply(request, {"message": "email verified successfully"})


async def resend_verification(request: web.Request) -> web.Response:
    """POST /resend-verification: the same answer for every address."""
    data = parse_input(EmailInput, await _body(request))
    await _service(request).resend_verification(data.email, _client_ip(request))
    return _reply(request, {"message": "verification email has been sent"})


async def login(request: web.Request) -> web.Response:
    """POST /login."""
    data = parse_input(LoginInput, await _body(request))
    result = await _service(request).login(data.email, data.password, _client_ip(request))
    return _reply(request, login_body(result))


async def me(request: web.Request) -> web.Response:
    """GET /me."""
    _, user = await _service(request).current_user(_token(request))
    return _reply(request, {"user": user_body(user, username=False)})


async def refresh(request: web.Request) -> web.Response:
    """POST /refresh: rotate the refresh token."""
    data = parse_input(RefreshInput, await _body(request))
    pair = await _service(request).refresh(
        data.refresh_token, _client_ip(request), request.headers.get("User-Agent")
    )
    return _reply(request, tokens_body(pair))


async def logout(request: web.Request) -> web.Response:
    """POST /logout: end every session of the user."""
    await _service(request).logout(_token(request))
    return _reply(request, {"message": "logged out from all sessions"})


def setup_auth_routes(app: web.Application) -> None:
    """Mount the auth API as a sub-application at ``/api/v1/auth``.

    A sub-application owns every path under the prefix, so unknown paths there are a 404 and
    wrong methods a 405 (with ``Allow``) from its own router: nothing under the reserved prefix
    can fall through to the proxy's catch-all route.
    """
    api = web.Application()
    router = api.router
    router.add_post("/register", register)
    router.add_get("/verify-email", verify_email, allow_head=False)
    router.add_post("/resend-verification", resend_verification)
    router.add_post("/login", login)
    router.add_get("/me", me, allow_head=False)
    router.add_post("/refresh", refresh)
    router.add_post("/logout", logout)
    app.add_subapp(PREFIX, api)
