"""``/api/v1/auth``: HTTP in and out of AuthService (SPEC §2); no rules live here."""

from __future__ import annotations

from aiohttp import web

from auth.schemas import (
    EmailInput,
    LoginInput,
    RefreshInput,
    RegisterInput,
    VerifyEmailInput,
    parse_input,
)
from gateway.api.account_routes import add_account_routes
from gateway.api.admin_routes import add_admin_routes
from gateway.api.shared import (
    access_token,
    auth_service,
    client_ip,
    gateway_config,
    json_body,
    login_body,
    reply,
    tokens_body,
    user_body,
)

PREFIX = "/api/v1/auth"


async def register(request: web.Request) -> web.Response:
    """POST /register → 201."""
    password_policy = gateway_config(request).auth.password
    data = parse_input(RegisterInput, await json_body(request), password_policy)
    user = await auth_service(request).register(data, client_ip(request))
    return reply(
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
    await auth_service(request).verify_email(data.token)
    return reply(request, {"message": "email verified successfully"})


async def resend_verification(request: web.Request) -> web.Response:
    """POST /resend-verification: the same answer for every address."""
    data = parse_input(EmailInput, await json_body(request))
    await auth_service(request).resend_verification(data.email, client_ip(request))
    return reply(request, {"message": "verification email has been sent"})


async def login(request: web.Request) -> web.Response:
    """POST /login."""
    data = parse_input(LoginInput, await json_body(request))
    result = await auth_service(request).login(data.email, data.password, client_ip(request))
    return reply(request, login_body(result))


async def me(request: web.Request) -> web.Response:
    """GET /me."""
    _, user = await auth_service(request).current_user(access_token(request))
    return reply(request, {"user": user_body(user, username=False)})


async def refresh(request: web.Request) -> web.Response:
    """POST /refresh: rotate the refresh token."""
    data = parse_input(RefreshInput, await json_body(request))
    pair = await auth_service(request).refresh(
        data.refresh_token, client_ip(request), request.headers.get("User-Agent")
    )
    return reply(request, tokens_body(pair))


async def logout(request: web.Request) -> web.Response:
    """POST /logout: end every session of the user."""
    await auth_service(request).logout(access_token(request))
    return reply(request, {"message": "logged out from all sessions"})


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
    add_account_routes(router)
    add_admin_routes(router)
    app.add_subapp(PREFIX, api)
