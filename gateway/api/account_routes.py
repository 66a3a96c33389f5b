"""``/api/v1/auth``: passwordless login by email code, sign-up, password reset and change."""

from __future__ import annotations

from aiohttp import web

from auth.schemas import (
    ChangePasswordInput,
    CompleteRegistrationInput,
    EmailCodeLoginInput,
    EmailInput,
    ResetPasswordInput,
    parse_input,
)
from auth.views import RegistrationRequired
from gateway.api.shared import (
    access_token,
    auth_service,
    client_ip,
    gateway_config,
    json_body,
    login_body,
    reply,
)


async def email_code(request: web.Request) -> web.Response:
    """POST /email-code: the same answer for every address."""
    data = parse_input(EmailInput, await json_body(request))
    await auth_service(request).request_email_code(data.email, client_ip(request))
    return reply(request, {"message": "verification code has been sent"})


async def login_email_code(request: web.Request) -> web.Response:
    """POST /login/email-code: the /login body, or a registration offer for a new address."""
    data = parse_input(EmailCodeLoginInput, await json_body(request))
    result = await auth_service(request).login_with_code(data.email, data.code, client_ip(request))
    if isinstance(result, RegistrationRequired):
        return reply(
            request,
            {
                "registration_required": True,
                "registration_token": result.registration_token,
                "expires_in": result.expires_in,
            },
        )
    return reply(request, login_body(result))


async def register_complete(request: web.Request) -> web.Response:
    """POST /register/complete → 201 with tokens and the new (verified) user."""
    password_policy = gateway_config(request).auth.password
    data = parse_input(CompleteRegistrationInput, await json_body(request), password_policy)
    result = await auth_service(request).complete_registration(data)
    return reply(request, login_body(result, verified=True), 201)


async def password_forgot(request: web.Request) -> web.Response:
    """POST /password/forgot: the same answer for every address."""
    data = parse_input(EmailInput, await json_body(request))
    await auth_service(request).forgot_password(data.email, client_ip(request))
    return reply(request, {"message": "password reset email has been sent"})


async def password_reset(request: web.Request) -> web.Response:
    """POST /password/reset: new password, every session ended."""
    password_policy = gateway_config(request).auth.password
    data = parse_input(ResetPasswordInput, await json_body(request), password_policy)
    await auth_service(request).reset_password(data.token, data.password)
    return reply(request, {"message": "password has been reset"})


async def password_change(request: web.Request) -> web.Response:
    """POST /password/change (Bearer): a fresh token pair; every other session ended."""
    token = access_token(request)
    password_policy = gateway_config(request).auth.password
    data = parse_input(ChangePasswordInput, await json_body(request), password_policy)
    result = await auth_service(request).change_password(
        token, data.current_password, data.new_password, client_ip(request)
    )
    return reply(request, login_body(result))


def add_account_routes(router: web.UrlDispatcher) -> None:
    """Register these handlers on the auth sub-application's router."""
    router.add_post("/email-code", email_code)
    router.add_post("/login/email-code", login_email_code)
    router.add_post("/register/complete", register_complete)
    router.add_post("/password/forgot", password_forgot)
    router.add_post("/password/reset", password_reset)
    router.add_post("/password/change", password_change)
